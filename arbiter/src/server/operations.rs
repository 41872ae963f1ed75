//! The operator requests a leading arbiter's [`Shell`] serves: a planned
//! switchover, maintenance mode and the cluster parameters. Each runs on
//! the core when no write is in flight (retrying for a moment while one
//! is), and the two that change the stored state wait until the change is
//! written — the answer says what is stored, not what was asked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_common::NodeId;

use super::shell::{write_outcome, Shell};
use crate::core::{Core, DecisionKind, Millis, ProposedWrite};
use crate::error::ArbiterError;
use crate::ops::{
    describe_changes, MaintenanceState, ParamsChanged, ParamsUpdate, Promoted, ReinitOrdered,
    Removed, SwitchoverStarted,
};
use crate::store::ClusterState;

/// The reason of the newest stored decision of `kind` about `node`.
fn last_reason(state: &ClusterState, node: &NodeId, kind: DecisionKind) -> String {
    state
        .history
        .iter()
        .rev()
        .find(|d| d.node.as_ref() == Some(node) && d.kind == kind)
        .map(|d| d.reason.clone())
        .unwrap_or_default()
}

/// How long an operator request waits for a write in flight to finish.
const OPERATOR_WAIT: Duration = Duration::from_secs(2);

impl Shell {
    /// Starts a planned switchover to `to`, or to the best candidate.
    pub async fn switchover(
        self: &Arc<Self>,
        to: Option<NodeId>,
    ) -> Result<SwitchoverStarted, ArbiterError> {
        self.with_core_when_idle(move |core, now| {
            let target = core.switchover(to.clone(), now)?;
            let from = core.state().active_id().cloned();
            let epoch = core.epoch().0;
            let message = format!(
                "switchover from {} to {target} started in epoch {epoch}: the active stops taking \
                 writes, {target} catches up, then becomes active in epoch {}; follow it in GET /v1/status",
                from.as_ref().map_or("?", |f| f.as_str()),
                epoch + 1
            );
            Ok(SwitchoverStarted {
                target,
                from,
                epoch,
                message,
            })
        })
        .await
    }

    /// Removes a member that is gone for good and waits until the removal
    /// is stored.
    pub async fn remove_member(self: &Arc<Self>, node: NodeId) -> Result<Removed, ArbiterError> {
        self.store_operation(|core, now| core.remove_member(&node, now))
            .await?;
        let g = self.lock().await;
        Ok(Removed {
            node,
            state_version: g.core.state().version,
        })
    }

    /// A reinit order (see `Core::reinit_member`), once stored.
    pub async fn reinit_member(
        self: &Arc<Self>,
        node: NodeId,
    ) -> Result<ReinitOrdered, ArbiterError> {
        self.store_operation(|core, now| core.reinit_member(&node, now))
            .await?;
        let g = self.lock().await;
        let state = g.core.state();
        Ok(ReinitOrdered {
            order: state.reinit.get(&node).copied().unwrap_or_default(),
            reason: last_reason(state, &node, DecisionKind::Membership),
            node,
        })
    }

    /// A forced promotion (see `Core::force_promote`), once stored.
    pub async fn force_promote(self: &Arc<Self>, node: NodeId) -> Result<Promoted, ArbiterError> {
        self.store_operation(|core, now| core.force_promote(&node, now))
            .await?;
        let g = self.lock().await;
        let state = g.core.state();
        Ok(Promoted {
            reason: last_reason(state, &node, DecisionKind::Failover),
            epoch: state.epoch,
            node,
        })
    }

    /// Runs an operator operation on the core (waiting out a write in
    /// flight) and waits until the write it proposes is stored.
    async fn store_operation(
        self: &Arc<Self>,
        mut operation: impl FnMut(&mut Core, Millis) -> Result<ProposedWrite, ArbiterError>,
    ) -> Result<(), ArbiterError> {
        let task = self
            .with_core_when_idle(|core, now| Ok(self.start_write(operation(core, now)?)))
            .await?;
        match write_outcome(task).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ArbiterError::WriteInProgress),
            Err(e) => Err(ArbiterError::Store(e)),
        }
    }

    /// Switches maintenance mode and waits until the change is stored.
    pub async fn set_maintenance(
        self: &Arc<Self>,
        on: bool,
    ) -> Result<MaintenanceState, ArbiterError> {
        let task = self
            .with_core_when_idle(|core, now| {
                let write = core.set_maintenance(on, now)?;
                Ok(write.map(|w| self.start_write(w)))
            })
            .await?;
        let changed = match task {
            None => false,
            Some(task) => match write_outcome(task).await {
                Ok(true) => true,
                // Someone else wrote first; the core adopted their state.
                Ok(false) => return Err(ArbiterError::WriteInProgress),
                Err(e) => return Err(ArbiterError::Store(e)),
            },
        };
        let g = self.lock().await;
        let state = g.core.state();
        Ok(MaintenanceState {
            maintenance: state.maintenance,
            changed,
            state_version: state.version,
            epoch: state.epoch.0,
        })
    }

    /// Changes the cluster parameters and waits until the change is stored.
    pub async fn set_params(
        self: &Arc<Self>,
        update: &ParamsUpdate,
    ) -> Result<ParamsChanged, ArbiterError> {
        let (old, task) = self
            .with_core_when_idle(|core, now| {
                let old = core.state().params.clone();
                let write = core.set_params(update, now)?;
                Ok((old, write.map(|w| self.start_write(w))))
            })
            .await?;
        if let Some(task) = task {
            match write_outcome(task).await {
                Ok(true) => {}
                Ok(false) => return Err(ArbiterError::WriteInProgress),
                Err(e) => return Err(ArbiterError::Store(e)),
            }
        }
        let g = self.lock().await;
        let state = g.core.state();
        Ok(ParamsChanged {
            changed: describe_changes(&old, &state.params),
            params: state.params.clone(),
            state_version: state.version,
        })
    }

    /// Runs `f` on the core, retrying while another write is in flight
    /// (an operator request racing an upkeep write should not fail).
    async fn with_core_when_idle<T>(
        &self,
        mut f: impl FnMut(&mut Core, Millis) -> Result<T, ArbiterError>,
    ) -> Result<T, ArbiterError> {
        let deadline = Instant::now() + OPERATOR_WAIT;
        loop {
            let result = {
                let mut g = self.lock().await;
                let now = self.clock.now();
                let result = f(&mut g.core, now);
                self.count_decisions(&mut g);
                result
            };
            match result {
                Err(ArbiterError::WriteInProgress) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => return other,
            }
        }
    }
}
