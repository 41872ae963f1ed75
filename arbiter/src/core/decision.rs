//! Decision records: every decision the arbiter takes, and every one it
//! does *not* take, with the reason — so an operator can always answer "why
//! did / didn't it fail over?" (DESIGN.md, "Decision records").
//!
//! [`DecisionLog`] keeps the recent ones in memory for `GET /v1/status` and
//! writes each to the tracing log once. Decisions *not* taken repeat every
//! tick while their cause lasts; the log keeps one per topic until the
//! cause changes (its dedup key differs) or the topic is cleared. Decisions
//! that change the stored state also go into `ClusterState::history`, which
//! survives restarts.

use std::collections::{BTreeMap, VecDeque};

use proto_common::{Epoch, NodeId};
use serde::{Deserialize, Serialize};

/// How many decisions the in-memory log keeps.
pub const RECENT_DECISIONS: usize = 200;

/// What a decision was about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Naming the first active of a cluster.
    Formation,
    /// Promoting a standby because the active is gone.
    Failover,
    /// Planned handover to a chosen standby.
    Switchover,
    /// Adding, removing or confirming sync-set members.
    SyncSet,
    /// Members joining, changing address, or being dropped.
    Membership,
    /// Maintenance mode switched on or off.
    Maintenance,
    /// Cluster parameters changed (`POST /v1/params`).
    Params,
    /// Telling a replica it is not (or no longer) the active.
    Fencing,
    /// The arbiter's own state: taking office, store conflicts and
    /// failures, and how they were reconciled.
    Store,
    /// Things that should not happen (a replica ahead of the store's epoch).
    Anomaly,
}

/// One decision, taken or not, as shown to operators and persisted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Wall-clock time in ms since the Unix epoch, for people. Derived from
    /// the arbiter's monotonic clock and its start time; never used to decide.
    pub unix_ms: u64,
    /// The cluster's epoch when decided (after the change, for epoch bumps).
    pub epoch: Epoch,
    /// What it was about.
    pub kind: DecisionKind,
    /// Whether the arbiter acted (`false`: a decision deliberately not taken).
    pub taken: bool,
    /// The replica it is mainly about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    /// Why, in words that name the values involved.
    pub reason: String,
    /// For a new active's first heartbeat as active after a failover or
    /// switchover: how long writes stopped, as the arbiter saw it (from
    /// the old active's last heartbeat to this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_gap_ms: Option<u64>,
}

/// Time and epoch to stamp decisions with, so helpers need not see the core.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    /// Wall-clock ms for [`DecisionRecord::unix_ms`].
    pub unix_ms: u64,
    /// Epoch for [`DecisionRecord::epoch`].
    pub epoch: Epoch,
}

impl Stamp {
    /// A decision taken.
    pub fn taken(
        &self,
        kind: DecisionKind,
        node: Option<&NodeId>,
        reason: impl Into<String>,
    ) -> DecisionRecord {
        self.record(kind, true, node, reason)
    }

    /// A decision deliberately not taken.
    pub fn not_taken(
        &self,
        kind: DecisionKind,
        node: Option<&NodeId>,
        reason: impl Into<String>,
    ) -> DecisionRecord {
        self.record(kind, false, node, reason)
    }

    fn record(
        &self,
        kind: DecisionKind,
        taken: bool,
        node: Option<&NodeId>,
        reason: impl Into<String>,
    ) -> DecisionRecord {
        DecisionRecord {
            unix_ms: self.unix_ms,
            epoch: self.epoch,
            kind,
            taken,
            node: node.cloned(),
            reason: reason.into(),
            write_gap_ms: None,
        }
    }
}

/// The recent decisions, with repeat suppression for decisions not taken.
#[derive(Clone, Debug, Default)]
pub struct DecisionLog {
    /// Newest last; bounded by [`RECENT_DECISIONS`].
    recent: VecDeque<DecisionRecord>,
    /// Per topic, the dedup key of the last decision-not-taken logged, so the
    /// same cause is logged once rather than every tick.
    quiet: BTreeMap<String, String>,
    /// Decisions recorded since the log was created (never decreases), so
    /// the shell can count new ones for metrics after `recent` is trimmed.
    recorded: u64,
}

impl DecisionLog {
    /// Records a decision that was taken (or an event worth keeping).
    pub fn record(&mut self, record: DecisionRecord) {
        emit(&record);
        self.recorded += 1;
        self.recent.push_back(record);
        while self.recent.len() > RECENT_DECISIONS {
            self.recent.pop_front();
        }
    }

    /// Records a decision not taken unless the same `key` was the last one
    /// logged for `topic`. Returns whether it was recorded.
    pub fn not_taken(&mut self, topic: &str, key: &str, record: DecisionRecord) -> bool {
        if self.quiet.get(topic).map(String::as_str) == Some(key) {
            return false;
        }
        self.quiet.insert(topic.to_string(), key.to_string());
        self.record(record);
        true
    }

    /// Forgets the topic's last key: the cause went away, so its next
    /// occurrence is news again.
    pub fn clear(&mut self, topic: &str) {
        self.quiet.remove(topic);
    }

    /// Forgets every topic whose name starts with `prefix`.
    pub fn clear_prefix(&mut self, prefix: &str) {
        self.quiet.retain(|topic, _| !topic.starts_with(prefix));
    }

    /// How many decisions were recorded in all (including those trimmed).
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// Recent decisions, oldest first.
    pub fn recent(&self) -> impl DoubleEndedIterator<Item = &DecisionRecord> {
        self.recent.iter()
    }
}

/// One structured log line per decision.
fn emit(r: &DecisionRecord) {
    let node = r.node.as_ref().map(|n| n.as_str()).unwrap_or("-");
    let kind = serde_json::to_value(r.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    match (r.taken, r.kind) {
        (_, DecisionKind::Anomaly) | (false, DecisionKind::Store) => {
            tracing::error!(epoch = %r.epoch, kind = %kind, node, taken = r.taken, "{}", r.reason)
        }
        (true, _) => {
            tracing::info!(epoch = %r.epoch, kind = %kind, node, taken = true, "{}", r.reason)
        }
        (false, _) => {
            tracing::warn!(epoch = %r.epoch, kind = %kind, node, taken = false, "{}", r.reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(reason: &str) -> DecisionRecord {
        DecisionRecord {
            unix_ms: 0,
            epoch: Epoch(1),
            kind: DecisionKind::Failover,
            taken: false,
            node: None,
            reason: reason.into(),
            write_gap_ms: None,
        }
    }

    #[test]
    fn repeated_causes_are_logged_once_until_cleared() {
        let mut log = DecisionLog::default();
        assert!(log.not_taken("failover", "lease", rec("waiting 640 ms more")));
        assert!(!log.not_taken("failover", "lease", rec("waiting 540 ms more")));
        assert!(log.not_taken("failover", "no-candidate", rec("no eligible standby")));
        assert!(log.not_taken("failover", "lease", rec("waiting again")));
        log.clear("failover");
        assert!(log.not_taken("failover", "lease", rec("waiting after recovery")));
        let reasons: Vec<_> = log.recent().map(|r| r.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "waiting 640 ms more",
                "no eligible standby",
                "waiting again",
                "waiting after recovery"
            ]
        );
    }

    #[test]
    fn the_log_is_bounded() {
        let mut log = DecisionLog::default();
        for i in 0..RECENT_DECISIONS + 5 {
            log.record(rec(&format!("#{i}")));
        }
        assert_eq!(log.recent().count(), RECENT_DECISIONS);
        assert_eq!(log.recorded(), RECENT_DECISIONS as u64 + 5);
        assert_eq!(log.recent().next().unwrap().reason, "#5");
    }
}
