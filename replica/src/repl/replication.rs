//! Replication's role switches: what runs while this replica is the active
//! (a listener serving standbys), what runs while it is a standby (a task
//! following the active), and the transitions between them.
//!
//! Everything tied to a role lives under one cancellation token, replaced
//! on every switch, so a demoted active drops every standby connection at
//! once and a promoted standby stops following before it takes a write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use proto_common::auth::Token;
use proto_common::heartbeat::{ActiveInfo, Following};
use proto_common::tls::{self, MaybeTls, Side};
use proto_common::{clock, Epoch, Position};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::error::ReplError;
use super::progress::Followers;
use super::{receiver, sender};
use crate::node::{Node, PromotionError};
use crate::role::{Action, Term};
use crate::sync_set::SyncSet;

/// Replication for one node.
pub struct Replication {
    pub node: Arc<Node>,
    /// Proves membership in the cluster on the replication port.
    pub token: Token,
    /// The active's view of its standbys.
    pub followers: Followers,
    /// Cancelled when the current role ends.
    scope: Mutex<CancellationToken>,
    /// The standby's stream from the active it follows is up.
    connected: AtomicBool,
    /// Wakes the heartbeat loop early (the stream from the active ended).
    pub heartbeat_wake: tokio::sync::Notify,
}

impl Replication {
    pub fn new(node: Arc<Node>) -> Arc<Replication> {
        let token = node
            .settings
            .token
            .clone()
            .unwrap_or_else(Token::loopback_only);
        let followers = Followers::new(node.metrics.clone());
        Arc::new(Replication {
            node,
            token,
            followers,
            scope: Mutex::new(CancellationToken::new()),
            connected: AtomicBool::new(false),
            heartbeat_wake: tokio::sync::Notify::new(),
        })
    }

    /// Accepts standby connections until `shutdown`. A connection that
    /// arrives while this replica is not the active is refused with a reason.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let scope = self.scope.lock().child_token();
                    let repl = self.clone();
                    tokio::spawn(async move {
                        let stream = match &repl.node.settings.tls {
                            None => MaybeTls::Plain(stream),
                            Some(tls) => match tls.accept(stream, Side::Peers).await {
                                Ok(s) => s,
                                Err(e) => return tls::log_handshake_failure(peer, &e),
                            },
                        };
                        sender::serve_standby(repl, stream, peer, scope).await
                    });
                }
                Err(e) => tracing::warn!(error = %e, "accepting a replication connection failed"),
            }
        }
    }

    /// Ends the current role's tasks and starts a new scope.
    fn new_scope(&self) -> CancellationToken {
        let mut scope = self.scope.lock();
        scope.cancel();
        *scope = CancellationToken::new();
        scope.clone()
    }

    /// Carries out the role machine's actions, in order. A promotion that
    /// fails is undone (the role steps down) and the rest of the actions,
    /// which were for the active it did not become, are dropped; the
    /// reason is returned.
    pub async fn execute(self: &Arc<Self>, actions: Vec<Action>) -> Result<(), PromotionError> {
        for action in actions {
            match action {
                Action::NoteEpoch(e) => {
                    if let Err(why) = self.node.persist_epoch(e) {
                        tracing::error!(error = %why, "cannot record the epoch");
                    }
                }
                Action::Promote { term, sync } => {
                    if let Err(why) = self.promote(&term, sync).await {
                        tracing::error!(epoch = %term.epoch(), code = why.code(), error = %why,
                            "promotion failed");
                        let undo = self
                            .node
                            .roles
                            .promotion_failed(term.epoch(), &why.to_string());
                        for undo in undo {
                            if let Action::Demote { term, why } = undo {
                                self.demote(&term, &why).await;
                            }
                        }
                        return Err(why);
                    }
                }
                Action::SetSyncSet(sync) => self.node.commit.set_sync_set(sync),
                Action::Demote { term, why } => self.demote(&term, &why).await,
                Action::Follow { active, epoch } => {
                    if let Err(why) = self.start_following(active, epoch) {
                        tracing::error!(error = %why, "cannot follow the active");
                    }
                }
                Action::Fence { target } => {
                    tracing::info!(target = %target, "switchover: fencing writes and draining");
                    self.node.log_barrier().await;
                }
                Action::Unfence => tracing::info!("switchover cancelled: taking writes again"),
                Action::Warn(why) => tracing::warn!("{why}"),
            }
        }
        Ok(())
    }

    /// Becomes the active in `term`: stops following first; then opens the
    /// epoch (a `Noop` entry), starts committing under the sync-set rule,
    /// and only then takes writes (`Roles::opened`), so a promotion that
    /// fails (the epoch refused, the disk failed) has committed and applied
    /// nothing. The entries it already holds are committed once the sync
    /// set has the `Noop` (DESIGN.md, "Visibility follows commit").
    async fn promote(&self, term: &Arc<Term>, sync: SyncSet) -> Result<Position, PromotionError> {
        self.new_scope();
        self.connected.store(false, Ordering::SeqCst);
        self.followers.clear();
        let epoch = term.epoch();
        let pos = self.node.open_term(epoch).await?;
        self.node.commit.lead(term.clone(), sync);
        if self.node.roles.opened(epoch).is_some() {
            tracing::info!(epoch = %epoch, position = %pos, "promoted to active");
            // Proxy mode: the upstream becomes a master and the tap starts,
            // in the background; sessions wait for it.
            if let (Some(core), Ok(guard)) = (&self.node.proxy, self.node.roles.writer()) {
                core.begin_lead(self.node.clone(), guard);
            }
        } else {
            tracing::warn!(epoch = %epoch, "the term ended while its epoch was opened");
        }
        Ok(pos)
    }

    /// `term` ended: waits for the appends begun under it, tells the
    /// clients still waiting that their outcome is unknown, and drops every
    /// standby connection.
    async fn demote(&self, term: &Arc<Term>, why: &str) {
        self.node.log_barrier().await;
        self.node.commit.stop_leading(term, why);
        if let Some(core) = &self.node.proxy {
            core.begin_follow(self.node.clone());
        }
        self.new_scope();
        self.followers.clear();
        self.connected.store(false, Ordering::SeqCst);
        tracing::warn!(epoch = %term.epoch(), reason = %why, "stepped down to standby");
    }

    /// Follows `active`: a receiver on a thread of its own, in a new scope.
    fn start_following(
        self: &Arc<Self>,
        active: ActiveInfo,
        epoch: Epoch,
    ) -> Result<(), ReplError> {
        let scope = self.new_scope();
        self.followers.clear();
        self.connected.store(false, Ordering::SeqCst);
        if let Some(core) = &self.node.proxy {
            // Sessions forwarded to the old active end; clients reconnect.
            core.set_active(None, None);
            core.end_sessions();
        }
        tracing::info!(active = %active.node_id, epoch = %epoch, "following");
        self.spawn_receiver(active, scope)
    }

    /// Follows `active` in `epoch`, as a heartbeat reply naming it would
    /// (ending this replica's term first, if it had one). Idempotent.
    pub async fn follow(
        self: &Arc<Self>,
        active: ActiveInfo,
        epoch: Epoch,
    ) -> Result<(), PromotionError> {
        let actions = self.node.roles.follow(active, epoch);
        self.execute(actions).await
    }

    /// Becomes (or stays) the active in `epoch` with `sync`, with a lease
    /// of `lease` from now, as a heartbeat reply granting it would.
    /// Returns the durable position.
    pub async fn grant(
        self: &Arc<Self>,
        epoch: Epoch,
        sync: SyncSet,
        lease: Duration,
    ) -> Result<Position, PromotionError> {
        let actions = self
            .node
            .roles
            .grant(epoch, sync, (clock::now_nanos(), lease));
        self.execute(actions).await?;
        Ok(self.node.commit.durable())
    }

    /// Stops new writes for a planned switchover to `target`, as a reply
    /// naming it would.
    pub async fn fence(self: &Arc<Self>, target: proto_common::NodeId) {
        let actions = self.node.roles.fence(target);
        let _ = self.execute(actions).await;
    }

    /// Stops being the active because a newer epoch exists; follows nobody
    /// until told whom to follow.
    pub async fn deposed(self: &Arc<Self>, epoch: Epoch, why: &str) {
        let actions = self.node.roles.deposed(epoch, why);
        let _ = self.execute(actions).await;
    }

    /// Stops being the active (a failed log, an unusable upstream).
    pub async fn step_down(self: &Arc<Self>, why: &str) {
        let actions = self.node.roles.step_down(why);
        let _ = self.execute(actions).await;
    }

    /// Runs the standby's side on a thread of its own, with its own
    /// single-threaded runtime: it reads a frame, appends and fsyncs, and
    /// acknowledges, all on that thread (no handoff on the path every
    /// synchronous write waits for), and a slow fsync there blocks none of
    /// the tasks that serve clients and heartbeats. It ends when `scope`
    /// is cancelled (the role changed).
    fn spawn_receiver(
        self: &Arc<Self>,
        active: ActiveInfo,
        scope: CancellationToken,
    ) -> Result<(), ReplError> {
        let spawn = |what| {
            move |e| ReplError::Spawn {
                what,
                source: Arc::new(e),
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(spawn("replication runtime"))?;
        let repl = self.clone();
        std::thread::Builder::new()
            .name("standby-receiver".into())
            .spawn(move || runtime.block_on(receiver::follow(repl, active, scope)))
            .map_err(spawn("replication thread"))?;
        Ok(())
    }

    /// Stops whatever the current role runs (shutdown).
    pub fn stop(&self) {
        self.scope.lock().cancel();
    }

    pub(super) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::SeqCst);
    }

    /// The standby's stream, for heartbeats and status.
    pub fn following(&self) -> Option<Following> {
        self.node.role().state.following().map(|a| Following {
            active: a.node_id.clone(),
            connected: self.connected.load(Ordering::SeqCst),
        })
    }
}
