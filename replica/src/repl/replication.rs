//! Replication's role switches: what runs while this replica is the active
//! (a listener serving standbys), what runs while it is a standby (a task
//! following the active), and the transitions between them.
//!
//! Everything tied to a role lives under one cancellation token, replaced
//! on every switch, so a demoted active drops every standby connection at
//! once and a promoted standby stops following before it takes a write.

use std::sync::Arc;

use parking_lot::Mutex;
use proto_common::auth::Token;
use proto_common::heartbeat::{ActiveInfo, Following};
use proto_common::tls::{self, MaybeTls, Side};
use proto_common::{Epoch, Position};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::progress::Followers;
use super::{receiver, sender};
use crate::node::Node;
use crate::sync_set::SyncSet;

/// Whom a standby follows and whether the stream is up.
#[derive(Debug, Clone, Default)]
struct FollowState {
    active: Option<ActiveInfo>,
    connected: bool,
}

/// Replication for one node.
pub struct Replication {
    pub node: Arc<Node>,
    /// Proves membership in the cluster on the replication port.
    pub token: Token,
    /// The active's view of its standbys.
    pub followers: Followers,
    /// Cancelled when the current role ends.
    scope: Mutex<CancellationToken>,
    follow: Mutex<FollowState>,
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
            follow: Mutex::new(FollowState::default()),
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

    /// Becomes the active in `epoch` with the given sync set. Stops
    /// following first; then opens the epoch (a `Noop` entry) and only then
    /// starts committing under the sync-set rule, so a promotion that fails
    /// (the epoch refused, the disk failed) has committed and applied
    /// nothing. The entries it already holds are committed once the sync
    /// set has the `Noop` (DESIGN.md, "Visibility follows commit").
    pub async fn promote(&self, epoch: Epoch, sync: SyncSet) -> Result<Position, String> {
        if self.node.role().write_epoch == Some(epoch) {
            self.node.commit.set_sync_set(sync);
            return Ok(self.node.commit.durable());
        }
        self.new_scope();
        *self.follow.lock() = FollowState::default();
        self.followers.clear();
        let pos = self.node.become_active(epoch).await?;
        self.node.commit.lead(sync);
        tracing::info!(epoch = %epoch, position = %pos, "promoted to active");
        Ok(pos)
    }

    /// Adopts a new sync set or rule (active only).
    pub fn set_sync_set(&self, sync: SyncSet) {
        self.node.commit.set_sync_set(sync);
    }

    /// Follows `active` in `epoch`. Demotes this replica first if it was the
    /// active. Idempotent: following the same active again changes nothing.
    pub async fn follow(self: &Arc<Self>, active: ActiveInfo, epoch: Epoch) -> Result<(), String> {
        self.node.note_epoch(epoch)?;
        if self.node.role().write_epoch.is_some() {
            self.node
                .stop_writes(&format!(
                    "this replica was demoted: {} is the active in epoch {epoch}",
                    active.node_id
                ))
                .await;
            tracing::warn!(epoch = %epoch, active = %active.node_id, "demoted to standby");
        } else if self.follow.lock().active.as_ref() == Some(&active) {
            return Ok(());
        }
        let scope = self.new_scope();
        self.followers.clear();
        *self.follow.lock() = FollowState {
            active: Some(active.clone()),
            connected: false,
        };
        self.node.set_standby_view(
            Some(active.client_url.clone()),
            format!(
                "this replica is a standby; the active is {}",
                active.node_id
            ),
        );
        self.spawn_receiver(active, scope)
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
    ) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the replication runtime: {e}"))?;
        let repl = self.clone();
        std::thread::Builder::new()
            .name("standby-receiver".into())
            .spawn(move || runtime.block_on(receiver::follow(repl, active, scope)))
            .map_err(|e| format!("cannot start the replication thread: {e}"))?;
        Ok(())
    }

    /// Stops being the active because a newer epoch exists; follows nobody
    /// until told whom to follow.
    pub async fn deposed(&self, epoch: Epoch, why: &str) {
        let _ = self.node.note_epoch(epoch);
        self.demote(why).await;
    }

    /// Stops taking writes and drops every standby connection.
    pub async fn demote(&self, why: &str) {
        self.node.stop_writes(why).await;
        self.new_scope();
        self.followers.clear();
        *self.follow.lock() = FollowState::default();
        tracing::warn!(reason = %why, "stepped down to standby");
    }

    /// Stops whatever the current role runs (shutdown).
    pub fn stop(&self) {
        self.scope.lock().cancel();
    }

    pub(super) fn set_connected(&self, connected: bool) {
        self.follow.lock().connected = connected;
    }

    /// The standby's stream, for heartbeats and status.
    pub fn following(&self) -> Option<Following> {
        let f = self.follow.lock();
        f.active.as_ref().map(|a| Following {
            active: a.node_id.clone(),
            connected: f.connected,
        })
    }
}
