//! A planned switchover under way, as the core remembers it (in memory
//! only): who hands over to whom, in which epoch, and until when. How one
//! is started, completed and cancelled is in `switchover.rs`.

use proto_common::heartbeat::Heartbeat;
use proto_common::{Epoch, NodeId};

use super::time::Millis;

/// The heartbeat interval asked of the active and the target during a
/// switchover, so the handover completes in a few ms rather than a beat.
pub const SWITCHOVER_HEARTBEAT_MS: u64 = 5;

/// A switchover under way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switchover {
    /// The active handing over.
    pub from: NodeId,
    /// The standby taking over.
    pub target: NodeId,
    /// The epoch it started in; a different epoch means it is moot.
    pub epoch: Epoch,
    /// When it started.
    pub started: Millis,
    /// When it is cancelled if not complete.
    pub deadline: Millis,
}

impl Switchover {
    /// Whether the active's `report` completes the handover: drained to our
    /// target, in our epoch, and the target has acknowledged exactly the
    /// active's last position.
    pub fn is_complete(&self, report: &Heartbeat) -> bool {
        let drained = report
            .handoff
            .as_ref()
            .is_some_and(|h| h.drained && h.target == self.target);
        let target_acked = report
            .standbys
            .iter()
            .any(|s| s.node_id == self.target && s.acked == report.position);
        report.node_id == self.from && report.epoch == self.epoch && drained && target_acked
    }
}
