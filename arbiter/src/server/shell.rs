//! `Shell`: the I/O around the decision core — one `Core` behind a tokio
//! mutex, the state store, the clock and the metrics.
//!
//! Every entry point follows the protocol in `core/mod.rs`: call the core,
//! and when it proposes a write, compare-and-swap it and report the outcome
//! (`on_persisted` / `on_conflict` / `on_persist_failed`). Two rules make
//! that safe under concurrency:
//!
//! - **The lock is never held across store I/O.** The core allows one
//!   write in flight and answers everyone else from the persisted state
//!   meanwhile, so heartbeats keep flowing while a write is fsynced.
//! - **A write's outcome is always reported.** The CAS and its report run
//!   in their own task, spawned in the same step in which the core proposed
//!   the write: if the HTTP request that triggered it is dropped (the client
//!   hung up), the core still learns the outcome — otherwise its write slot
//!   would stay taken and it could never decide again.
//!
//! A shell lives for one [`Term`] of leadership and is built over a fresh
//! `Core::take_office` (`server::tenure`). Every heartbeat reply is checked
//! against the term *after* the core built it: a reply — above all a
//! grant — is only sent while the term holds (the safety argument is in
//! [`crate::election`]). Writes need no such check: the store fences them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_common::heartbeat::{Heartbeat, HeartbeatReply, Role};
use tokio::sync::{Mutex, MutexGuard};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::metrics::{kind_name, Metrics};
use crate::clock::Clock;
use crate::core::{Core, DecisionKind, HeartbeatOutcome, ProposedWrite};
use crate::election::Term;
use crate::error::ArbiterError;
use crate::status::ClusterStatus;
use crate::store::{CasOutcome, StateStore, StoreError};

/// Rounds of "write, then ask again" per heartbeat (`HeartbeatOutcome`).
const HEARTBEAT_ROUNDS: usize = 3;
/// Writes one tick may make back to back (a decision, then its upkeep).
const TICK_ROUNDS: usize = 4;

/// The core and what the shell tracks about it, under one lock.
pub(super) struct Guarded {
    /// The decision core.
    pub(super) core: Core,
    /// `core.decisions_recorded()` when the metrics last counted decisions.
    decisions_counted: u64,
}

/// Drives one [`Core`] against one [`StateStore`].
pub struct Shell {
    /// The core. Never held across an await other than taking it; a tokio
    /// mutex so that waiting for it (behind a status snapshot or a tick)
    /// yields the worker thread instead of blocking it.
    guarded: Mutex<Guarded>,
    /// Where writes go (file, or etcd fenced by `term`: any `StateStore`).
    store: Arc<dyn StateStore>,
    /// The leadership term this shell decides in; replies are withheld once
    /// it no longer holds.
    term: Term,
    /// Monotonic time for the core, wall time for people.
    pub(super) clock: Clock,
    /// Counters bumped here, gauges set on scrape.
    metrics: Arc<Metrics>,
    /// This arbiter's URL, returned as `leader` in replies and status.
    leader_url: String,
}

impl Shell {
    /// A shell around `core` (already in office over the stored state),
    /// deciding while `term` holds.
    pub fn new(
        core: Core,
        store: Arc<dyn StateStore>,
        clock: Clock,
        metrics: Arc<Metrics>,
        leader_url: String,
        term: Term,
    ) -> Arc<Shell> {
        let shell = Shell {
            guarded: Mutex::new(Guarded {
                core,
                decisions_counted: 0,
            }),
            store,
            term,
            clock,
            metrics,
            leader_url,
        };
        Arc::new(shell)
    }

    /// This arbiter's advertised URL.
    pub fn leader_url(&self) -> &str {
        &self.leader_url
    }

    /// The metrics this shell updates.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The term this shell decides in.
    pub fn term(&self) -> &Term {
        &self.term
    }

    /// Answers a heartbeat, writing first whatever the core needs written
    /// (e.g. the sender's promotion) — at most [`HEARTBEAT_ROUNDS`] writes.
    /// Refused with `not_leader` if the term no longer holds once the reply
    /// is built (the grant it may hold is then never sent).
    pub async fn heartbeat(
        self: &Arc<Self>,
        hb: &Heartbeat,
    ) -> Result<HeartbeatReply, ArbiterError> {
        let result = self.heartbeat_rounds(hb).await.and_then(|reply| {
            if self.term.holds() {
                Ok(reply)
            } else {
                tracing::warn!(
                    node = %hb.node_id,
                    term = self.term.number(),
                    role = %reply.role,
                    "reply withheld: this arbiter's leadership term is over"
                );
                Err(ArbiterError::NotLeader { leader: None })
            }
        });
        let label = match &result {
            Ok(r) if r.role == Role::Active => "active",
            Ok(_) => "standby",
            Err(e) => e.code(),
        };
        self.metrics.count_heartbeat(label);
        result.map(|mut reply| {
            reply.leader = Some(self.leader_url.clone());
            reply
        })
    }

    async fn heartbeat_rounds(
        self: &Arc<Self>,
        hb: &Heartbeat,
    ) -> Result<HeartbeatReply, ArbiterError> {
        for _ in 0..HEARTBEAT_ROUNDS {
            let task = {
                let mut g = self.lock().await;
                let now = self.clock.now();
                let outcome = g.core.on_heartbeat(hb, now);
                self.count_decisions(&mut g);
                match outcome? {
                    HeartbeatOutcome::Reply(reply) => return Ok(reply),
                    HeartbeatOutcome::Persist(write) => self.start_write(write),
                }
            };
            // Its outcome is in the core now; the next round answers from it.
            let _ = write_outcome(task).await;
        }
        let mut g = self.lock().await;
        let now = self.clock.now();
        let reply = g.core.reply(hb, now);
        self.count_decisions(&mut g);
        Ok(reply)
    }

    /// One round of periodic decisions; returns how long to wait before the
    /// next (a quarter of the stored `heartbeat_ms`).
    pub async fn tick(self: &Arc<Self>) -> Duration {
        for _ in 0..TICK_ROUNDS {
            let task = {
                let mut g = self.lock().await;
                let now = self.clock.now();
                let write = g.core.tick(now);
                self.count_decisions(&mut g);
                write.map(|w| self.start_write(w))
            };
            let Some(task) = task else { break };
            if write_outcome(task).await.is_err() {
                // The core retries on a later tick; hammering a failing
                // store now would only flood the log.
                break;
            }
        }
        let g = self.lock().await;
        Duration::from_millis((g.core.state().params.heartbeat_ms / 4).max(1))
    }

    /// The status snapshot, as this (leading) arbiter sees it.
    pub async fn status(&self) -> ClusterStatus {
        let g = self.lock().await;
        let mut status = g.core.status(self.clock.now());
        status.leader = Some(self.leader_url.clone());
        status.is_leader = self.term.holds();
        status
    }

    /// Hands `write` to a task of its own that compare-and-swaps it and
    /// reports the outcome to the core (see the module docs). Not async on
    /// purpose: callers start it in the same step in which the core proposed
    /// the write (under the lock), so no await — where a dropped request
    /// would stop — lies between the proposal and its report.
    pub(super) fn start_write(self: &Arc<Self>, write: ProposedWrite) -> WriteTask {
        let epoch_change = write
            .names_active()
            .then(|| {
                write.decisions().iter().map(|d| d.kind).find(|k| {
                    matches!(
                        k,
                        DecisionKind::Formation | DecisionKind::Failover | DecisionKind::Switchover
                    )
                })
            })
            .flatten();
        // What the write is about, for its span: the epoch change, else the
        // first decision it records (maintenance, membership, …).
        let about = epoch_change
            .or_else(|| write.decisions().first().map(|d| d.kind))
            .map_or_else(|| "upkeep".to_string(), kind_name);
        let span = tracing::info_span!(
            "state_write",
            version = write.state.version,
            epoch = %write.state.epoch,
            kind = %about,
        );
        let shell = self.clone();
        tokio::spawn(
            async move {
                let store = shell.store.clone();
                let started = Instant::now();
                let (expected, state) = (write.expected_version, write.state.clone());
                // A panicking store must still end in a report to the core.
                let result =
                    tokio::spawn(async move { store.compare_and_swap(expected, &state).await })
                        .await
                        .unwrap_or_else(|join| {
                            Err(StoreError::Unavailable {
                                detail: format!("the store's compare_and_swap task failed: {join}"),
                            })
                        });
                shell
                    .metrics
                    .store_write_seconds
                    .observe(started.elapsed().as_secs_f64());
                // Test hook (`crate::failpoint`): die with the epoch bump
                // stored and its grant not yet sendable.
                if let (Ok(CasOutcome::Written), Some(kind)) = (&result, epoch_change) {
                    crate::failpoint::abort_after_epoch_bump(kind);
                }
                let mut g = shell.lock().await;
                let now = shell.clock.now();
                let outcome = match result {
                    Ok(CasOutcome::Written) => {
                        shell.metrics.count_store_write("written");
                        g.core.on_persisted(now);
                        if epoch_change == Some(DecisionKind::Failover) {
                            shell.metrics.failovers.inc();
                        } else if epoch_change == Some(DecisionKind::Switchover) {
                            shell.metrics.switchovers.inc();
                        }
                        Ok(true)
                    }
                    Ok(CasOutcome::Conflict(current)) => {
                        shell.metrics.count_store_write("conflict");
                        g.core.on_conflict(current, now);
                        Ok(false)
                    }
                    Err(e) => {
                        shell.metrics.count_store_write(e.code());
                        g.core.on_persist_failed(&e, now);
                        Err(e)
                    }
                };
                shell.count_decisions(&mut g);
                outcome
            }
            .instrument(span),
        )
    }

    pub(super) async fn lock(&self) -> MutexGuard<'_, Guarded> {
        self.guarded.lock().await
    }

    /// Counts decisions recorded since the last call (the core already
    /// logged each one, with `epoch`, `kind` and `node` fields).
    pub(super) fn count_decisions(&self, g: &mut Guarded) {
        let total = g.core.decisions_recorded();
        let new = total.saturating_sub(g.decisions_counted);
        if new > 0 {
            for d in g.core.recent_decisions().rev().take(new as usize) {
                self.metrics.count_decision(d);
            }
            g.decisions_counted = total;
        }
    }
}

/// A write handed to the store by [`Shell::start_write`]; `Ok(true)`:
/// written, `Ok(false)`: conflict (the core adopted the stored state).
pub(super) type WriteTask = JoinHandle<Result<bool, StoreError>>;

/// Waits for a write's outcome (already reported to the core).
pub(super) async fn write_outcome(task: WriteTask) -> Result<bool, StoreError> {
    task.await.unwrap_or_else(|join| {
        Err(StoreError::Unavailable {
            detail: format!("the state write task failed: {join}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ClusterState, MemoryStore, StoreFuture};
    use proto_common::params::ClusterParams;

    /// A store whose writes take 50 ms, so a request can be dropped mid-write.
    struct SlowStore(MemoryStore);

    impl StateStore for SlowStore {
        fn load(&self) -> StoreFuture<'_, Option<ClusterState>> {
            self.0.load()
        }
        fn compare_and_swap<'a>(
            &'a self,
            expected: Option<u64>,
            new: &'a ClusterState,
        ) -> StoreFuture<'a, CasOutcome> {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.0.compare_and_swap(expected, new).await
            })
        }
        fn describe(&self) -> String {
            "slow".into()
        }
    }

    #[tokio::test]
    async fn no_reply_is_sent_once_the_term_is_over() {
        use proto_common::heartbeat::Role;
        let clock = Clock::start();
        let mut state = ClusterState::new("c", ClusterParams::default());
        state.version = 1;
        let store = MemoryStore::with_state(state.clone());
        let term = Term::unbounded(clock);
        let core = Core::take_office(state, clock.now(), clock.unix_ms());
        let shell = Shell::new(
            core,
            Arc::new(store),
            clock,
            Arc::new(Metrics::new()),
            "http://127.0.0.1:1".into(),
            term.clone(),
        );
        let hb: Heartbeat = serde_json::from_value(serde_json::json!({
            "cluster": "c", "node_id": "a", "seq": 1, "client_url": "http://a", "repl_addr": "a:1",
            "role": "standby", "epoch": 0, "position": "0.0", "commit_index": 0, "priority": 1,
            "quarantined_entries": 0, "healthy": true
        }))
        .unwrap();
        let reply = shell
            .heartbeat(&hb)
            .await
            .expect("answered while the term holds");
        assert_eq!(reply.role, Role::Standby);
        assert!(shell.status().await.is_leader);
        term.end("lost the lease");
        let err = shell.heartbeat(&hb).await.unwrap_err();
        assert_eq!(err.code(), "not_leader", "{err}");
        assert!(!shell.status().await.is_leader);
    }

    #[tokio::test]
    async fn a_request_dropped_mid_write_still_reports_the_outcome() {
        let clock = Clock::start();
        let memory = MemoryStore::new();
        let state = ClusterState::new("c", ClusterParams::default());
        let core = Core::take_office(state, clock.now(), clock.unix_ms());
        let shell = Shell::new(
            core,
            Arc::new(SlowStore(memory.clone())),
            clock,
            Arc::new(Metrics::new()),
            "http://127.0.0.1:1".into(),
            Term::unbounded(clock),
        );
        let request = tokio::spawn({
            let shell = shell.clone();
            async move { shell.set_maintenance(true).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        request.abort(); // the client hung up while the write was in flight
        let off = shell
            .set_maintenance(false)
            .await
            .expect("the core is not stuck");
        assert!(!off.maintenance && off.changed, "{off:?}");
        assert_eq!(memory.snapshot().unwrap().version, 2, "both writes landed");
    }
}
