//! Who may be made active, and why everyone else may not.
//!
//! The ranking is the same everywhere: **position** first (existing data
//! wins), then **priority**, then the lowest **node id**. Eligibility
//! differs by occasion:
//!
//! - *First formation* (DESIGN.md, "Formation"): any live, healthy
//!   replica with `priority > 0`.
//! - *Failover with `k ≥ 1`*: additionally a member of the current sync set
//!   **and** of its confirmed part. Only those hold every acknowledged write
//!   (DESIGN.md, "Commit rule and the sync set"; proto-common
//!   `HeartbeatReply::sync_version`). An empty or unconfirmed set yields no
//!   candidate at all: the acknowledged writes may exist only on the lost
//!   active, and promoting anyone would silently drop them.
//! - *Failover with `k = 0`* (async): any live, healthy standby with
//!   `priority > 0` no more than `max_lag_on_failover` entries behind the
//!   active's last reported index; the entries it lacks are reported as
//!   possibly lost.
//!
//! "Live" means a heartbeat within the last `2 · heartbeat_ms` (the
//! suspicion window): a candidate is promoted only while it demonstrably
//! runs, so a standby that died together with the active (a rack losing
//! power) is not promoted only to leave the cluster without anyone able to
//! take the grant. A live candidate loses nothing by this: it is promoted
//! inside its own heartbeat. A replica not heard since this arbiter took
//! office is not live.

use std::cmp::Reverse;

use proto_common::{NodeId, Position};

use super::detector::Detector;
use super::time::Millis;
use crate::store::ClusterState;

/// Why a replica may not be made active now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// Started with `priority = 0`.
    PriorityZero,
    /// Not heard from since this arbiter took office.
    NeverHeard,
    /// Silent longer than the liveness window.
    Silent { ms: u64 },
    /// Reports itself unhealthy.
    Unhealthy { detail: Option<String> },
    /// Healthy, but reports it cannot lead now (proxy mode: its upstream
    /// is being refilled).
    CannotLead { detail: String },
    /// Not in the current sync set (`k ≥ 1`).
    NotInSyncSet,
    /// In the sync set, but the active has not confirmed it holds every
    /// acknowledged write.
    NotConfirmed {
        sync_version: u64,
        confirmed_version: u64,
    },
    /// Async mode: too far behind the active's last reported index.
    TooFarBehind {
        index: u64,
        active_index: u64,
        max: u64,
    },
    /// Ordered to reinitialize (`arbiter reinit`) and not yet done.
    Reinitializing { order: u64 },
}

impl Why {
    /// A stable short key, free of changing numbers, for repeat suppression.
    pub fn key(&self) -> &'static str {
        match self {
            Why::PriorityZero => "priority_zero",
            Why::NeverHeard => "never_heard",
            Why::Silent { .. } => "silent",
            Why::Unhealthy { .. } => "unhealthy",
            Why::CannotLead { .. } => "cannot_lead",
            Why::NotInSyncSet => "not_in_sync_set",
            Why::NotConfirmed { .. } => "not_confirmed",
            Why::TooFarBehind { .. } => "too_far_behind",
            Why::Reinitializing { .. } => "reinitializing",
        }
    }

    /// The reason in words, about `node`.
    pub fn describe(&self, node: &NodeId) -> String {
        match self {
            Why::PriorityZero => format!("{node} has priority 0 (never promoted)"),
            Why::NeverHeard => format!("{node} has not heartbeated since this arbiter took office"),
            Why::Silent { ms } => format!("{node} silent for {ms} ms"),
            Why::Unhealthy { detail } => match detail {
                Some(d) => format!("{node} reports unhealthy ({d})"),
                None => format!("{node} reports unhealthy"),
            },
            Why::CannotLead { detail } => format!("{node} cannot lead yet ({detail})"),
            Why::NotInSyncSet => format!("{node} is not in the sync set"),
            Why::NotConfirmed {
                sync_version,
                confirmed_version,
            } => format!(
                "{node} is in sync set v{sync_version} but the active has not confirmed it holds every acknowledged write (last confirmed v{confirmed_version})"
            ),
            Why::TooFarBehind {
                index,
                active_index,
                max,
            } => format!(
                "{node} at index {index} is {} entries behind the active's last reported index {active_index} (max_lag_on_failover={max})",
                active_index.saturating_sub(*index)
            ),
            Why::Reinitializing { order } => format!(
                "{node} is being reinitialized (order {order}): it is discarding its data"
            ),
        }
    }
}

/// A replica that may be made active.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Who.
    pub node: NodeId,
    /// Its last reported position.
    pub position: Position,
    /// Its priority (a tie-breaker after position).
    pub priority: u32,
    /// Async mode: entries the failed active may hold that it lacks.
    pub entries_lost: Option<u64>,
}

/// Eligible replicas (best first) and the reasons for the others.
#[derive(Clone, Debug, Default)]
pub struct Ranking {
    /// Best first.
    pub eligible: Vec<Candidate>,
    /// Everyone else considered, with the first reason that rules them out.
    pub ineligible: Vec<(NodeId, Why)>,
}

impl Ranking {
    /// The replica to promote, if any.
    pub fn best(&self) -> Option<&Candidate> {
        self.eligible.first()
    }

    /// "b is not in the sync set; c has priority 0", or a note that nobody
    /// was considered.
    pub fn explain(&self) -> String {
        if self.ineligible.is_empty() {
            return "no standby is known".into();
        }
        self.ineligible
            .iter()
            .map(|(n, w)| w.describe(n))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A key that changes only when the set of reasons does.
    pub fn key(&self) -> String {
        self.ineligible
            .iter()
            .map(|(n, w)| format!("{n}:{}", w.key()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Inputs shared by both rankings.
pub struct View<'a> {
    /// The persisted state.
    pub state: &'a ClusterState,
    /// What this process has heard.
    pub detector: &'a Detector,
    /// Now, on the arbiter's clock.
    pub now: Millis,
    /// The liveness window in ms (`2 · heartbeat_ms`).
    pub live_ms: u64,
}

impl View<'_> {
    /// Every replica known: stored members and those heard since.
    fn nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.state.members.keys().cloned().collect();
        for (n, _) in self.detector.observed() {
            if !self.state.members.contains_key(n) {
                nodes.push(n.clone());
            }
        }
        nodes.sort();
        nodes
    }

    fn priority(&self, node: &NodeId) -> u32 {
        match self.detector.observation(node) {
            Some(o) => o.report.priority,
            None => self.state.members.get(node).map_or(0, |m| m.priority),
        }
    }

    /// The checks every occasion shares: priority, liveness, health.
    fn basic(&self, node: &NodeId) -> Result<Position, Why> {
        if self.priority(node) == 0 {
            return Err(Why::PriorityZero);
        }
        let Some(obs) = self.detector.observation(node) else {
            return Err(Why::NeverHeard);
        };
        if !self.detector.heard_within(node, self.now, self.live_ms) {
            return Err(Why::Silent {
                ms: self.detector.silence_ms(node, self.now),
            });
        }
        if !obs.report.healthy {
            return Err(Why::Unhealthy {
                detail: obs.report.detail.clone(),
            });
        }
        if let Some(detail) = &obs.report.cannot_lead {
            return Err(Why::CannotLead {
                detail: detail.clone(),
            });
        }
        Ok(obs.report.position)
    }

    /// The active's last reported log index (live report, else the stored one).
    fn active_index(&self, active: &NodeId) -> u64 {
        let live = self
            .detector
            .observation(active)
            .map_or(0, |o| o.report.position.index.0);
        let stored = self
            .state
            .members
            .get(active)
            .map_or(0, |m| m.position.index.0);
        live.max(stored)
    }
}

/// Ranks replicas for the first active of a cluster.
pub fn for_formation(view: &View<'_>) -> Ranking {
    rank(view, |view, node| view.basic(node).map(|p| (p, None)))
}

/// Ranks standbys to replace the recorded active.
pub fn for_failover(view: &View<'_>) -> Ranking {
    let state = view.state;
    let Some(active) = state.active_id() else {
        return Ranking::default();
    };
    let k = state.params.sync_standbys;
    let active_index = view.active_index(active);
    rank(view, |view, node| {
        if k >= 1 {
            if view.priority(node) == 0 {
                return Err(Why::PriorityZero);
            }
            if !state.in_sync_set(node) {
                return Err(Why::NotInSyncSet);
            }
            if !state.is_confirmed(node) {
                return Err(Why::NotConfirmed {
                    sync_version: state.sync_version,
                    confirmed_version: state.confirmed_sync_version,
                });
            }
            view.basic(node).map(|p| (p, None))
        } else {
            let position = view.basic(node)?;
            let max = state.params.max_lag_on_failover;
            let index = position.index.0;
            if index.saturating_add(max) < active_index {
                return Err(Why::TooFarBehind {
                    index,
                    active_index,
                    max,
                });
            }
            Ok((position, Some(active_index.saturating_sub(index))))
        }
    })
}

/// Ranks replicas to replace a recorded active that reported it lost its
/// role (it restarted or stepped down, see `Heartbeat::active_epoch`). The
/// usual failover candidates, plus the old active itself: it acknowledged
/// only what was durable on its own disk, so it holds every acknowledged
/// write and may lead again — in a new epoch.
pub fn for_lost_role(view: &View<'_>) -> Ranking {
    let mut ranking = for_failover(view);
    let Some(active) = view.state.active_id() else {
        return ranking;
    };
    match view.basic(active) {
        Ok(position) => ranking.eligible.push(Candidate {
            node: active.clone(),
            position,
            priority: view.priority(active),
            entries_lost: None,
        }),
        Err(why) => ranking.ineligible.push((active.clone(), why)),
    }
    ranking
        .eligible
        .sort_by_key(|c| (Reverse(c.position), Reverse(c.priority), c.node.clone()));
    ranking
}

/// Applies `check` to every known replica except the recorded active and
/// sorts the eligible ones: position, then priority (both descending), then
/// node id (ascending).
fn rank(
    view: &View<'_>,
    check: impl Fn(&View<'_>, &NodeId) -> Result<(Position, Option<u64>), Why>,
) -> Ranking {
    let mut ranking = Ranking::default();
    for node in view.nodes() {
        if view.state.is_active(&node) {
            continue;
        }
        if let Some(&order) = view.state.reinit.get(&node) {
            ranking
                .ineligible
                .push((node, Why::Reinitializing { order }));
            continue;
        }
        match check(view, &node) {
            Ok((position, entries_lost)) => ranking.eligible.push(Candidate {
                priority: view.priority(&node),
                node,
                position,
                entries_lost,
            }),
            Err(why) => ranking.ineligible.push((node, why)),
        }
    }
    ranking
        .eligible
        .sort_by_key(|c| (Reverse(c.position), Reverse(c.priority), c.node.clone()));
    ranking
}
