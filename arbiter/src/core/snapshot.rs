//! `Core::status`: the snapshot behind `GET /v1/status`, assembled from the
//! persisted state, the detector's observations and the decision log.

use proto_common::heartbeat::Role;
use proto_common::NodeId;

use super::arbiter::Core;
use super::candidates;
use super::time::{arbiter_wait_ms, Millis};
use crate::status::{ClusterStatus, FailoverStatus, ReplicaStatus, SwitchoverStatus};

impl Core {
    /// The status at `now`.
    pub fn status(&self, now: Millis) -> ClusterStatus {
        let state = &self.state;
        let wait = arbiter_wait_ms(&state.params);
        let ranking = candidates::for_failover(&self.view(now));
        let active = state.active_id();
        let active_report = active
            .and_then(|a| self.detector.observation(a))
            .map(|o| &o.report);
        let active_index = active_report.map(|r| r.position.index.0).or_else(|| {
            active
                .and_then(|a| state.members.get(a))
                .map(|m| m.position.index.0)
        });

        let mut nodes: Vec<NodeId> = state.members.keys().cloned().collect();
        nodes.extend(
            self.detector
                .observed()
                .map(|(n, _)| n.clone())
                .filter(|n| !state.members.contains_key(n)),
        );
        nodes.sort();

        let replicas = nodes
            .into_iter()
            .map(|node| {
                let obs = self.detector.observation(&node);
                let member = state.members.get(&node);
                let report = obs.map(|o| &o.report);
                let progress =
                    active_report.and_then(|r| r.standbys.iter().find(|s| s.node_id == node));
                let position = report
                    .map(|r| r.position)
                    .or(member.map(|m| m.position))
                    .unwrap_or_default();
                let is_active = state.is_active(&node);
                let lag_entries = if is_active {
                    None
                } else {
                    progress
                        .map(|p| p.lag_entries)
                        .or_else(|| active_index.map(|a| a.saturating_sub(position.index.0)))
                };
                let not_eligible = ranking
                    .ineligible
                    .iter()
                    .find(|(n, _)| *n == node)
                    .map(|(n, why)| why.describe(n));
                ReplicaStatus {
                    role: if is_active {
                        Role::Active
                    } else {
                        Role::Standby
                    },
                    reported_role: report.map(|r| r.role),
                    reported_epoch: report.map(|r| r.epoch),
                    client_url: report
                        .map(|r| r.client_url.clone())
                        .or(member.map(|m| m.client_url.clone()))
                        .unwrap_or_default(),
                    repl_addr: report
                        .map(|r| r.repl_addr.clone())
                        .or(member.map(|m| m.repl_addr.clone()))
                        .unwrap_or_default(),
                    position,
                    commit_index: report.map(|r| r.commit_index),
                    lag_entries,
                    // Unknown (None) for the active itself and while the
                    // active has not reported since we took office.
                    connected_to_active: match (is_active, active_report) {
                        (false, Some(_)) => Some(progress.is_some_and(|p| p.connected)),
                        _ => None,
                    },
                    last_heartbeat_age_ms: obs.map(|o| now.since(o.last_heartbeat)),
                    in_sync_set: state.in_sync_set(&node),
                    sync_confirmed: state.is_confirmed(&node),
                    priority: report
                        .map(|r| r.priority)
                        .or(member.map(|m| m.priority))
                        .unwrap_or(0),
                    quarantined_entries: report
                        .map(|r| r.quarantined_entries)
                        .or(member.map(|m| m.quarantined_entries))
                        .unwrap_or(0),
                    healthy: report.is_none_or(|r| r.healthy),
                    detail: report.and_then(|r| r.detail.clone()),
                    following: report.and_then(|r| r.following.clone()),
                    not_eligible,
                    upstream: report.and_then(|r| r.upstream.clone()),
                    disk: report.and_then(|r| r.disk.clone()),
                    node_id: node,
                }
            })
            .collect();

        let best = ranking.best();
        ClusterStatus {
            cluster: state.cluster.clone(),
            leader: None,
            is_leader: false,
            epoch: state.epoch,
            active: active.cloned(),
            state_version: state.version,
            maintenance: state.maintenance,
            degraded: state.degraded,
            sync_set: state.sync_set.clone(),
            sync_version: state.sync_version,
            confirmed_sync: state.confirmed_sync.clone(),
            confirmed_sync_version: state.confirmed_sync_version,
            params: state.params.clone(),
            replicas,
            failover: FailoverStatus {
                lease_wait_left_ms: now.until(self.detector.lease_end(wait)),
                active_silent_ms: active.map(|a| self.detector.silence_ms(a, now)),
                candidate: best.map(|c| c.node.clone()),
                entries_at_risk: best.and_then(|c| c.entries_lost),
            },
            switchover: self.switchover.as_ref().map(|sw| SwitchoverStatus {
                from: sw.from.clone(),
                target: sw.target.clone(),
                elapsed_ms: now.since(sw.started),
                time_left_ms: now.until(sw.deadline),
            }),
            write_in_flight: self.pending.is_some(),
            recent_decisions: self.decisions.recent().cloned().collect(),
            history: state.history.iter().cloned().collect(),
            now_unix_ms: self.stamp(now).unix_ms,
        }
    }
}
