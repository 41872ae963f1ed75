//! Maintenance mode: the operator's switch for "no automatic failover"
//! (DESIGN.md, "Maintenance"). It is stored, so it survives arbiter
//! restarts and leader changes. While it is on the arbiter still answers
//! heartbeats, grants the active, keeps the sync set and honours planned
//! switchovers; it only records each failover it does not take.

use super::arbiter::Core;
use super::decision::DecisionKind;
use super::draft::{Draft, ProposedWrite};
use super::time::Millis;
use crate::error::ArbiterError;

impl Core {
    /// Switches maintenance mode. Returns the write to make (`None` if it is
    /// already in that mode); the change takes effect once it is written.
    pub fn set_maintenance(
        &mut self,
        on: bool,
        now: Millis,
    ) -> Result<Option<ProposedWrite>, ArbiterError> {
        if self.pending.is_some() {
            return Err(ArbiterError::WriteInProgress);
        }
        if self.state.maintenance == on {
            return Ok(None);
        }
        let mut draft = Draft::new(&self.state);
        draft.state.maintenance = on;
        let reason = if on {
            "maintenance mode on: no automatic failover until it is switched off"
        } else {
            "maintenance mode off: automatic failover resumes"
        };
        draft.decide(
            self.stamp(now)
                .taken(DecisionKind::Maintenance, None, reason),
        );
        self.decisions.clear_prefix("failover");
        self.decisions.clear_prefix("formation");
        let write = draft.finish(&self.state);
        Ok(Some(self.propose(write)))
    }
}
