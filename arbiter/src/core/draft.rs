//! `Draft` and `ProposedWrite`: how the core changes the stored state.
//!
//! The core never changes its `ClusterState` in place. It copies it into a
//! [`Draft`], applies one round of decisions, and — if anything that matters
//! changed — hands the shell a [`ProposedWrite`] to compare-and-swap. Only
//! when the store says `Written` does the core adopt the new state and log
//! the decisions as taken; replies are computed from the adopted state only.
//! One write is in flight at a time, so every draft starts from the version
//! in the store (or learns the newer one from the conflict).

use proto_common::NodeId;

use super::decision::DecisionRecord;
use crate::store::ClusterState;

/// A state being prepared from the stored one.
#[derive(Clone, Debug)]
pub struct Draft {
    /// The state to be written; starts as a copy of the stored one.
    pub state: ClusterState,
    /// Decisions that become true once the write lands.
    pub decisions: Vec<DecisionRecord>,
    /// The write names a new active (epoch bump): replies withhold grants
    /// while it is in flight.
    pub names_active: bool,
    /// The write completes a switchover whose old active reported a drained
    /// handoff: its grants no longer count once the write lands.
    pub fences_old_active: bool,
    /// Replicas dropped from membership: forgotten once the write lands.
    pub forget: Vec<NodeId>,
}

/// A write for the shell: `store.compare_and_swap(expected_version, &state)`,
/// then `Core::on_persisted` / `Core::on_conflict` / `Core::on_persist_failed`.
#[derive(Clone, Debug)]
pub struct ProposedWrite {
    /// The version the store must hold (`None`: nothing stored yet).
    pub expected_version: Option<u64>,
    /// The new state; its version is `expected_version + 1` (or 1).
    pub state: ClusterState,
    /// See [`Draft::decisions`].
    pub(crate) decisions: Vec<DecisionRecord>,
    /// See [`Draft::names_active`].
    pub(crate) names_active: bool,
    /// See [`Draft::fences_old_active`].
    pub(crate) fences_old_active: bool,
    /// See [`Draft::forget`].
    pub(crate) forget: Vec<NodeId>,
}

impl ProposedWrite {
    /// Whether this write names a new active.
    pub fn names_active(&self) -> bool {
        self.names_active
    }

    /// The decisions this write records, for logs before it lands.
    pub fn decisions(&self) -> &[DecisionRecord] {
        &self.decisions
    }
}

impl Draft {
    /// A draft equal to `base`.
    pub fn new(base: &ClusterState) -> Draft {
        Draft {
            state: base.clone(),
            decisions: Vec::new(),
            names_active: false,
            fences_old_active: false,
            forget: Vec::new(),
        }
    }

    /// Adds a decision to record once written.
    pub fn decide(&mut self, record: DecisionRecord) {
        self.decisions.push(record);
    }

    /// Whether the draft differs from `base` in anything worth a write.
    /// Positions and quarantine counts change with every heartbeat; they are
    /// saved along with other changes but never cause a write on their own.
    pub fn material_change(&self, base: &ClusterState) -> bool {
        !self.decisions.is_empty() || normalized(&self.state) != normalized(base)
    }

    /// Turns the draft into the write replacing `base`.
    pub fn finish(mut self, base: &ClusterState) -> ProposedWrite {
        self.state.version = base.version + 1;
        for d in &self.decisions {
            self.state.push_history(d.clone());
        }
        ProposedWrite {
            expected_version: base.expected_version(),
            state: self.state,
            decisions: self.decisions,
            names_active: self.names_active,
            fences_old_active: self.fences_old_active,
            forget: self.forget,
        }
    }
}

/// `state` without the fields that change on their own.
fn normalized(state: &ClusterState) -> ClusterState {
    let mut s = state.clone();
    s.history.clear();
    for m in s.members.values_mut() {
        m.position = Default::default();
        m.quarantined_entries = 0;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemberRecord;
    use proto_common::params::ClusterParams;
    use proto_common::Position;

    #[test]
    fn positions_alone_are_not_worth_a_write() {
        let mut base = ClusterState::new("c", ClusterParams::default());
        base.version = 4;
        base.members.insert(
            NodeId::new("a").unwrap(),
            MemberRecord {
                client_url: "http://a".into(),
                repl_addr: "a:1".into(),
                priority: 1,
                position: Position::new(1, 1),
                quarantined_entries: 0,
            },
        );
        let mut d = Draft::new(&base);
        d.state
            .members
            .values_mut()
            .for_each(|m| m.position = Position::new(1, 9));
        assert!(!d.material_change(&base));
        d.state.maintenance = true;
        assert!(d.material_change(&base));
        let w = d.finish(&base);
        assert_eq!(w.expected_version, Some(4));
        assert_eq!(w.state.version, 5);
        assert_eq!(
            w.state.members.values().next().unwrap().position,
            Position::new(1, 9)
        );
    }
}
