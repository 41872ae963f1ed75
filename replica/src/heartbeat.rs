//! The heartbeat loop: every `heartbeat_ms` (or sooner, when the arbiter
//! asks) report to the arbiter, feed the reply to the role's owner
//! (`role::Roles`), and have its actions carried out — promote, follow,
//! demote, fence. The lease is renewed by the role itself.
//!
//! The loop is strictly sequential: a reply's actions finish before the
//! next heartbeat is built, so a heartbeat always describes a settled role.
//! The lease is extended from the time the granting heartbeat was *sent*
//! (`clock::now_nanos()` just before the request), as the lease rule needs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use proto_common::heartbeat::{Handoff, Heartbeat, HeartbeatReply, Role};
use proto_common::http_client::HttpClient;
use proto_common::params::ClusterParams;
use tokio_util::sync::CancellationToken;

use crate::repl::Replication;
use crate::role::{Action, RoleState};
use crate::unhealthy::Unhealthy;
use proto_common::clock;

/// Longest connecting to an arbiter may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// How often a fenced active re-checks whether it has drained.
const DRAIN_POLL: Duration = Duration::from_millis(1);

/// Talks to the arbiter(s) on behalf of one replica.
pub struct HeartbeatLoop {
    repl: Arc<Replication>,
    client: HttpClient,
    /// Arbiter URLs in the order given; `current` is the one in use.
    arbiters: Vec<String>,
    current: usize,
    seq: u64,
    /// Timing as last told by the arbiter (defaults until the first reply).
    params: ClusterParams,
    /// The last refusal or arbiter problem, reported as `detail`.
    detail: Option<String>,
    /// Whether the arbiter was reachable at the last attempt (log on change).
    reachable: bool,
}

impl HeartbeatLoop {
    pub fn new(repl: Arc<Replication>) -> HeartbeatLoop {
        let node = &repl.node;
        HeartbeatLoop {
            arbiters: node.settings.arbiters.clone(),
            client: HttpClient::new(CONNECT_TIMEOUT, node.settings.tls.clone()),
            current: 0,
            seq: 0,
            params: ClusterParams::default(),
            detail: None,
            reachable: true,
            repl,
        }
    }

    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            self.step_down_on_storage_failure().await;
            self.seq += 1;
            let hb = self.build();
            if let Some(handoff) = hb.handoff.as_ref().filter(|h| h.drained) {
                // A promise this heartbeat makes: the target holds every
                // entry of this term, and no other will be written in it.
                self.repl.node.roles.drained(&handoff.target);
            }
            let t_send = clock::now_nanos();
            let started = tokio::time::Instant::now();
            let reply = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                r = self.send(&hb) => r,
            };
            let mut delay = Duration::from_millis(self.params.heartbeat_ms);
            if let Some(reply) = reply {
                if let Some(n) = reply.reinit {
                    self.reinit(n);
                }
                self.params = reply.params.clone();
                delay = Duration::from_millis(
                    reply.next_heartbeat_ms.unwrap_or(reply.params.heartbeat_ms),
                );
                let actions = self.repl.node.roles.on_reply(hb.seq, t_send, &reply);
                self.execute(actions).await;
            }
            let mut next = started + delay;
            loop {
                if self.fenced_and_drained() {
                    next = tokio::time::Instant::now();
                }
                let fenced = matches!(self.repl.node.role().state, RoleState::Fenced { .. });
                let wake = if fenced {
                    next.min(tokio::time::Instant::now() + DRAIN_POLL)
                } else {
                    next
                };
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    // The stream from the active ended: the active may have
                    // handed over (switchover) or died; ask the arbiter now.
                    _ = self.repl.heartbeat_wake.notified() => break,
                    _ = tokio::time::sleep_until(wake) => {}
                }
                if tokio::time::Instant::now() >= next || self.fenced_and_drained() {
                    break;
                }
            }
        }
    }

    /// Carries out the operator's reinit order `n` (see `reinit.rs`): a
    /// standby that has not yet done so restarts in place to discard its
    /// data. Returns only when it cannot (the reason goes into `detail`).
    fn reinit(&mut self, n: u64) {
        let node = &self.repl.node;
        if n <= node.node_state().reinitialized
            || node.role().state.term().is_some()
            || node.settings.proxy.is_some()
        {
            return;
        }
        let why = crate::reinit::order(node.data_dir(), n);
        tracing::error!(order = n, error = %why, "cannot reinitialize");
        self.detail = Some(format!("reinit {n} failed: {why}"));
    }

    /// An active whose write log failed takes no more writes; it steps
    /// down (and reports itself unhealthy), so the arbiter names a healthy
    /// replica once the lease of its last grant has ended.
    async fn step_down_on_storage_failure(&mut self) {
        let node = &self.repl.node;
        if node.role().state.term().is_none() {
            return;
        }
        let why = match node.commit.failure().or_else(|| node.upstream_problem()) {
            Some(why @ Unhealthy::LogFailed(_)) => format!(
                "the write log failed ({why}); stepped down so that a healthy replica can take \
                 over. Fix the disk and restart this replica"
            ),
            Some(why @ Unhealthy::UpstreamUnusable(_)) => format!(
                "the upstream cannot be served ({why}); stepped down so that a healthy replica \
                 can take over; it is resynced once it follows the new active"
            ),
            // A state machine that cannot apply now is reported in the
            // heartbeat, not a reason to step down by itself.
            Some(Unhealthy::StateMachine(_)) | None => return,
        };
        self.repl.step_down(&why).await;
    }

    fn build(&self) -> Heartbeat {
        let node = &self.repl.node;
        let settings = &node.settings;
        let role = node.role();
        let state = node.node_state();
        let durable = node.commit.durable();
        let active = role.state.term().is_some();
        let failure = node.health_problem();
        Heartbeat {
            cluster: settings.cluster.clone(),
            node_id: settings.node_id.clone(),
            seq: self.seq,
            client_url: settings.advertise_url.clone(),
            repl_addr: settings.advertise_repl.clone().unwrap_or_default(),
            role: if active { Role::Active } else { Role::Standby },
            epoch: role.seen,
            active_epoch: state.active_epoch,
            position: durable,
            commit_index: node.commit.commit_index_now(),
            priority: settings.priority,
            quarantined_entries: state.quarantined_entries,
            healthy: failure.is_none(),
            detail: failure
                .map(|why| why.to_string())
                .or_else(|| self.detail.clone()),
            following: if active { None } else { self.repl.following() },
            sync_version: node.commit.confirmed_sync_version(),
            standbys: if active {
                self.repl.followers.report(durable.index)
            } else {
                Vec::new()
            },
            handoff: role.state.fenced_for().map(|target| Handoff {
                drained: self.drained_for(target),
                target: target.clone(),
            }),
            reinitialized: state.reinitialized,
            can_reinit: settings.proxy.is_none(),
            upstream: node.proxy.as_ref().and_then(|p| p.upstream_health()),
            disk: node.snapshots.disk.lock().clone(),
            cannot_lead: match &node.proxy {
                Some(p) if !active => p.feed.refilling(),
                _ => None,
            },
        }
    }

    /// Every accepted write is committed and `target` holds our last entry.
    fn drained_for(&self, target: &proto_common::NodeId) -> bool {
        let node = &self.repl.node;
        let durable = node.commit.durable();
        let committed = node.commit.commit_index_now() >= durable.index;
        let acked = self
            .repl
            .followers
            .report(durable.index)
            .iter()
            .any(|p| p.node_id == *target && p.acked == durable);
        committed && acked
    }

    fn fenced_and_drained(&self) -> bool {
        match self.repl.node.role().state.fenced_for() {
            Some(target) => self.drained_for(target),
            None => false,
        }
    }

    /// Sends one heartbeat, following a redirect to the leader and moving on
    /// to the next arbiter URL when one does not answer.
    async fn send(&mut self, hb: &Heartbeat) -> Option<HeartbeatReply> {
        let body = Bytes::from(serde_json::to_vec(hb).expect("heartbeats serialize"));
        let timeout =
            Duration::from_millis((self.params.lease_ms / 2).max(self.params.heartbeat_ms));
        for _ in 0..self.arbiters.len().max(1) * 2 {
            let url = self.arbiters[self.current].clone();
            match self.post(&url, body.clone(), timeout).await {
                Ok(reply) => {
                    if !self.reachable {
                        tracing::info!(arbiter = %url, "arbiter reachable again");
                    }
                    self.reachable = true;
                    return Some(reply);
                }
                Err(Failure::Redirect(leader)) => {
                    tracing::info!(from = %url, leader = %leader, "following the arbiter leader");
                    match self.arbiters.iter().position(|u| *u == leader) {
                        Some(i) => self.current = i,
                        None => {
                            self.arbiters.push(leader);
                            self.current = self.arbiters.len() - 1;
                        }
                    }
                }
                Err(Failure::Other(why)) => {
                    if self.reachable {
                        tracing::warn!(arbiter = %url, reason = %why, "heartbeat failed");
                    }
                    self.reachable = false;
                    self.current = (self.current + 1) % self.arbiters.len();
                }
            }
        }
        None
    }

    async fn post(
        &self,
        url: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<HeartbeatReply, Failure> {
        let req = HttpClient::request(
            Method::POST,
            &format!("{url}/v1/heartbeat"),
            Some(body),
            self.repl.node.settings.token.as_ref(),
        )
        .map_err(|e| Failure::Other(e.to_string()))?;
        let answer = self
            .client
            .send(req, timeout)
            .await
            .map_err(|e| Failure::Other(e.to_string()))?;
        let status = answer.status;
        if status.is_success() {
            return serde_json::from_slice(&answer.body)
                .map_err(|e| Failure::Other(format!("unreadable reply: {e}")));
        }
        let err = answer.error_body();
        let leader = err.as_ref().and_then(|e| e.leader.clone());
        if let Some(leader) = leader.or_else(|| answer.location()) {
            let leader = leader
                .trim_end_matches("/v1/heartbeat")
                .trim_end_matches('/')
                .to_string();
            if leader != url {
                return Err(Failure::Redirect(leader));
            }
        }
        Err(Failure::Other(match err {
            Some(e) => format!("{status}: {} ({})", e.message, e.error),
            None => format!("{status}"),
        }))
    }

    /// Has the actions carried out; the reason of a refusal or a failed
    /// promotion is reported as `detail` until the next success.
    async fn execute(&mut self, actions: Vec<Action>) {
        let mut warned = None;
        let mut rest = Vec::with_capacity(actions.len());
        for action in actions {
            match action {
                Action::Warn(why) => warned = Some(why),
                Action::Promote { .. } => {
                    self.detail = None;
                    rest.push(action);
                }
                other => rest.push(other),
            }
        }
        if let Some(why) = warned {
            if self.detail.as_deref() != Some(&why) {
                tracing::warn!("{why}");
            }
            self.detail = Some(why);
        }
        if let Err(why) = self.repl.execute(rest).await {
            self.detail = Some(why.to_string());
        }
    }
}

enum Failure {
    /// Another arbiter leads; talk to it.
    Redirect(String),
    Other(String),
}
