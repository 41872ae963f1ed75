//! Hot update of the cluster parameters (`POST /v1/params`, DESIGN.md,
//! "Timing parameters": a store write by the leader).
//!
//! The new parameters are validated as a whole (`ClusterParams::validate`,
//! whose messages name the values and the rule), written by the same
//! compare-and-swap as every other change, and reach the replicas in the
//! next heartbeat reply. Every arbiter that takes office later loads them.
//!
//! # A shorter lease wait must not shorten the leases already granted
//!
//! A replica computes its lease from the parameters in the reply that
//! granted it. Grants sent before the change carry the old `lease_ms` and
//! `drift`, so for them the arbiter must still wait the old
//! `lease·(1+drift)`. Whenever the core adopts parameters whose wait is
//! shorter — its own write landing, or another writer's state adopted after
//! a conflict — it raises the detector's floor to `now + (old − new)`, so
//! no promotion happens before `now + old wait`, which every earlier grant
//! (all sent before `now`) has run out by. A longer wait needs nothing.

use proto_common::params::ClusterParams;

use super::arbiter::Core;
use super::decision::DecisionKind;
use super::draft::{Draft, ProposedWrite};
use super::time::{arbiter_wait_ms, Millis};
use crate::error::ArbiterError;
use crate::ops::{describe_changes, ParamsUpdate, PARAM_NAMES};

impl Core {
    /// Changes the parameters named in `update`. Returns the write to make
    /// (`None` if nothing would change); they take effect once written.
    pub fn set_params(
        &mut self,
        update: &ParamsUpdate,
        now: Millis,
    ) -> Result<Option<ProposedWrite>, ArbiterError> {
        if update.is_empty() {
            return Err(ArbiterError::InvalidParams {
                detail: format!(
                    "the request names no parameter; name at least one of {}",
                    PARAM_NAMES.join(", ")
                ),
            });
        }
        let new = update.apply(&self.state.params);
        new.validate()
            .map_err(|detail| ArbiterError::InvalidParams { detail })?;
        if self.pending.is_some() {
            return Err(ArbiterError::WriteInProgress);
        }
        let changes = describe_changes(&self.state.params, &new);
        if changes.is_empty() {
            return Ok(None);
        }
        let mut draft = Draft::new(&self.state);
        draft.state.params = new;
        let reason = format!(
            "cluster parameters changed: {}; replicas take them from their next heartbeat reply",
            changes.join(", ")
        );
        draft.decide(self.stamp(now).taken(DecisionKind::Params, None, reason));
        let write = draft.finish(&self.state);
        Ok(Some(self.propose(write)))
    }

    /// Called after adopting a state: if its parameters shorten the lease
    /// wait, keep the old wait for the grants already sent (module docs).
    pub(super) fn keep_wait_for_old_grants(&mut self, old: &ClusterParams, now: Millis) {
        let (old_wait, new_wait) = (arbiter_wait_ms(old), arbiter_wait_ms(&self.state.params));
        if old_wait > new_wait {
            self.detector
                .restart_lease_clock(now + (old_wait - new_wait));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ClusterState;

    fn core() -> Core {
        let mut state = ClusterState::new("c", ClusterParams::default());
        state.version = 1;
        Core::take_office(state, Millis(0), 0)
    }

    #[test]
    fn a_change_is_validated_written_and_recorded() {
        let mut core = core();
        let update = ParamsUpdate {
            lease_ms: Some(1500),
            ..Default::default()
        };
        let write = core.set_params(&update, Millis(10)).unwrap().unwrap();
        assert_eq!(write.state.params.lease_ms, 1500);
        assert_eq!(write.expected_version, Some(1));
        assert!(write.decisions()[0]
            .reason
            .contains("lease_ms: 1000 -> 1500"));
        core.on_persisted(Millis(11));
        assert_eq!(core.state().params.lease_ms, 1500);
        assert!(
            core.set_params(&update, Millis(12)).unwrap().is_none(),
            "no change, no write"
        );
    }

    #[test]
    fn invalid_or_empty_updates_are_refused_naming_the_rule() {
        let mut core = core();
        let err = core
            .set_params(
                &ParamsUpdate {
                    lease_ms: Some(200),
                    ..Default::default()
                },
                Millis(1),
            )
            .unwrap_err();
        assert_eq!(err.code(), "invalid_params");
        let msg = err.to_string();
        assert!(
            msg.contains("lease_ms=200") && msg.contains("heartbeat_ms=100"),
            "{msg}"
        );
        let err = core
            .set_params(&ParamsUpdate::default(), Millis(1))
            .unwrap_err();
        assert!(err.to_string().contains("lease_ms"), "{err}");
        assert!(!core.write_in_flight());
    }

    #[test]
    fn a_shorter_wait_still_covers_grants_sent_under_the_old_one() {
        let mut core = core();
        // Taking office at 0: no promotion before 1100 (1000 · 1.1).
        let write = core
            .set_params(
                &ParamsUpdate {
                    lease_ms: Some(300),
                    ..Default::default()
                },
                Millis(500),
            )
            .unwrap()
            .unwrap();
        assert!(write.state.params.lease_ms == 300);
        core.on_persisted(Millis(500));
        // New wait 330 ms, but grants up to 500 ran under 1100 ms.
        let status = core.status(Millis(500));
        assert_eq!(status.failover.lease_wait_left_ms, 1100);
    }
}
