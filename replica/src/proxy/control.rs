//! What a role change does to the upstream (DESIGN.md, "Proxy mode"):
//!
//! - **Standby** (every replica starts so): the upstream is made a Redis
//!   replica of this process's feed (`REPLICAOF 127.0.0.1 <feed port>`,
//!   with the feed's secret as `masterauth`); the tap stops; sessions of the
//!   old role end.
//! - **Active**: once the log is committed to its end and the upstream has
//!   applied all of it, the feed lets go and the upstream becomes a master
//!   (`REPLICAOF NO ONE`: Redis keeps the old replication id as its second,
//!   so offsets continue); then the tap connects and continues the history
//!   (a cluster's first active starts it). Only then do sessions run.

use std::sync::Arc;
use std::time::Duration;

use redis_protocol::resp2::types::BytesFrame;
use tokio_util::sync::CancellationToken;

use super::core::ProxyCore;
use super::entry::ReplId;
pub use super::error::ControlError;
use super::error::TapError;
use super::tap;
use super::upstream::{error_text, info_field, text, Conn};
use crate::node::Node;
use crate::role::ActiveGuard;

/// Longest a promotion waits for the log to commit and the upstream to
/// apply it.
const CATCH_UP: Duration = Duration::from_secs(10);
/// How often the upstream's offset is polled meanwhile.
const POLL: Duration = Duration::from_millis(2);
/// Pause before the tap reconnects after its link broke.
const TAP_RETRY: Duration = Duration::from_millis(10);
/// Pause before making the upstream follow the feed again after a failure.
const FOLLOW_RETRY: Duration = Duration::from_millis(500);
/// How often a standby checks that its upstream still follows the feed.
const WATCH_EVERY: Duration = Duration::from_millis(500);

impl ProxyCore {
    async fn admin(&self) -> Result<Conn, ControlError> {
        Conn::connect(
            &self.settings.upstream,
            self.settings.upstream_password.as_deref(),
            None,
        )
        .await
        .map_err(ControlError::Call)
    }

    fn upstream_error(&self, why: String) -> ControlError {
        ControlError::Upstream {
            addr: self.settings.upstream.clone(),
            why,
        }
    }

    async fn call(&self, conn: &mut Conn, args: &[&str]) -> Result<BytesFrame, ControlError> {
        let reply = conn.call(args.iter().map(|a| a.to_string())).await?;
        if let Some(e) = error_text(&reply) {
            return Err(self.upstream_error(format!("{} answered {e}", args.join(" "))));
        }
        Ok(reply)
    }

    /// Makes the upstream a replica of this process's feed.
    pub async fn follow(&self) -> Result<(), ControlError> {
        let mut conn = self.admin().await?;
        let port = self.feed.port.to_string();
        self.call(
            &mut conn,
            &["CONFIG", "SET", "masterauth", self.feed.secret()],
        )
        .await?;
        // Also after a restart of the upstream, which forgot it: RDBs of
        // it (checkpoints, refills of other upstreams) start at once.
        super::start::prepare_for_resyncs(&mut conn, &self.settings.upstream).await;
        let info = self.call(&mut conn, &["INFO", "replication"]).await?;
        let info = text(&info).unwrap_or_default();
        let already = info_field(&info, "role").as_deref() == Some("slave")
            && info_field(&info, "master_host").as_deref() == Some("127.0.0.1")
            && info_field(&info, "master_port").as_deref() == Some(port.as_str());
        if !already {
            self.call(&mut conn, &["REPLICAOF", "127.0.0.1", &port])
                .await?;
            tracing::info!(upstream = %self.settings.upstream, feed_port = %port,
                "the upstream follows this replica's feed");
        }
        self.set_problem(None);
        Ok(())
    }

    /// Begins the active role on the upstream for `guard`'s term, in the
    /// background (the heartbeat loop goes on meanwhile): see the module
    /// docs. Sessions wait for it (`ready`); if it fails, the upstream is
    /// reported unusable and this replica steps down at its next heartbeat.
    pub fn begin_lead(self: &Arc<Self>, node: Arc<Node>, guard: ActiveGuard) {
        self.feed.out_of_step();
        self.end_sessions();
        self.set_ready(None);
        let stop = CancellationToken::new();
        if let Some(old) = self.tap.lock().replace(stop.clone()) {
            old.cancel();
        }
        let core = self.clone();
        tokio::spawn(async move {
            let epoch = guard.epoch();
            match core.prepare_lead(&node).await {
                Ok(history) => {
                    *core.logged.lock() = history;
                    core.run_tap(node, guard, stop).await
                }
                Err(e) => {
                    tracing::error!(epoch = %epoch, error = %e, "cannot lead the upstream");
                    core.set_problem(Some(format!("cannot lead the upstream: {e}")));
                }
            }
        });
    }

    /// Steps 1–3 of leading: the log committed, the upstream caught up and
    /// made a master. Returns the history the tap continues.
    async fn prepare_lead(&self, node: &Node) -> Result<Option<(ReplId, u64)>, ControlError> {
        let last = node.reader.last().index;
        let mut commit = node.commit.commit_index();
        tokio::time::timeout(CATCH_UP, commit.wait_for(|c| *c >= last))
            .await
            .map_err(|_| ControlError::NotCommitted(CATCH_UP.as_secs()))?
            .map_err(|_| ControlError::NotCommitted(0))?;
        let history = self.machine.current();
        let mut conn = self.admin().await?;
        if let Some((replid, want)) = &history {
            self.caught_up(&mut conn, replid, *want).await?;
        }
        self.feed.drop_link();
        self.call(&mut conn, &["REPLICAOF", "NO", "ONE"]).await?;
        Ok(history)
    }

    /// Waits until the upstream has applied the stream up to `want`: as a
    /// replica of the feed at that offset, or as a master whose offset is
    /// exactly there on the same history (an active restarted before its
    /// upstream was demoted).
    async fn caught_up(
        &self,
        conn: &mut Conn,
        replid: &ReplId,
        want: u64,
    ) -> Result<(), ControlError> {
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        loop {
            let info = self.call(conn, &["INFO", "replication"]).await?;
            let info = text(&info).unwrap_or_default();
            let role = info_field(&info, "role").unwrap_or_default();
            let offset: Option<u64> = match role.as_str() {
                "slave" => info_field(&info, "slave_repl_offset").and_then(|o| o.parse().ok()),
                _ => info_field(&info, "master_repl_offset").and_then(|o| o.parse().ok()),
            };
            let same_history = info_field(&info, "master_replid").as_deref()
                == Some(replid.as_str())
                || info_field(&info, "master_replid2").as_deref() == Some(replid.as_str());
            if offset == Some(want) && (role == "slave" || same_history) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ControlError::Behind {
                    secs: CATCH_UP.as_secs(),
                    at: offset,
                    want,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs the tap for the term, reconnecting when its link breaks; an
    /// upstream that lost the history, or that the tap cannot reach again
    /// right after its link broke (killed, crashed, restarting), makes this
    /// replica unusable: it steps down at its next heartbeat, and a standby
    /// with a healthy upstream takes over as after a crash of this replica.
    /// It is refilled as a standby once its upstream is back.
    async fn run_tap(
        self: Arc<Self>,
        node: Arc<Node>,
        guard: ActiveGuard,
        stop: CancellationToken,
    ) {
        // The link broke and has not been followed again since.
        let mut broke = false;
        loop {
            let start = tap::Start {
                history: self.logged.lock().clone(),
            };
            let (up_tx, up_rx) = tokio::sync::oneshot::channel();
            let run = tap::run(
                node.clone(),
                guard.clone(),
                start,
                self.committed_offset(),
                up_tx,
                stop.clone(),
            );
            tokio::pin!(run);
            let result = tokio::select! {
                r = &mut run => r,
                _ = up_rx => {
                    broke = false;
                    self.set_ready(Some(guard.epoch()));
                    run.await
                }
            };
            match result {
                Ok(()) | Err(TapError::TermEnded) => return,
                Err(e @ (TapError::LostHistory { .. } | TapError::Rdb(_) | TapError::Log(_))) => {
                    self.set_problem(Some(e.to_string()));
                    return;
                }
                Err(e) if broke => {
                    // Not reachable again at once: not a dropped
                    // connection (`CLIENT KILL`) but an upstream that is
                    // gone.
                    self.set_problem(Some(format!(
                        "the upstream stopped answering: its replication link broke and it \
                         cannot be reached again ({e})"
                    )));
                    return;
                }
                Err(e) => {
                    broke = true;
                    tracing::warn!(error = %e, "tap: the link to the upstream broke; reconnecting");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(TAP_RETRY) => {}
                    }
                    if guard.term().has_ended() {
                        return;
                    }
                }
            }
        }
    }

    /// Stops what the active role ran, then makes the upstream follow the
    /// feed, in the background, until it does (or the role changes again).
    pub fn begin_follow(self: &Arc<Self>, node: Arc<Node>) {
        self.feed.out_of_step();
        self.stop_tap();
        self.set_ready(None);
        self.end_sessions();
        let core = self.clone();
        tokio::spawn(async move {
            loop {
                if node.role().state.term().is_some() {
                    return;
                }
                match core.follow().await {
                    Ok(()) => return,
                    Err(e) => {
                        core.set_problem(Some(format!("cannot make the upstream follow: {e}")));
                        tokio::time::sleep(FOLLOW_RETRY).await;
                    }
                }
            }
        });
    }

    /// Until `stop`: on a standby, an upstream that stopped following the
    /// feed (it was restarted, or someone ran REPLICAOF on it) is made to
    /// follow it again, and so is refilled by the feed; one that cannot be
    /// reached is reported (the replica is then unhealthy: out of the sync
    /// set, not a candidate). Checked every `WATCH_EVERY`, and at once when
    /// the upstream's link to the feed ends.
    pub async fn watch_upstream(self: Arc<Self>, node: Arc<Node>, stop: CancellationToken) {
        let port = self.feed.port.to_string();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(WATCH_EVERY) => {}
                _ = self.feed.link_ended.notified() => {}
            }
            if !matches!(node.role().state, crate::role::RoleState::Standby { .. }) {
                continue;
            }
            let following = match self.admin().await {
                Ok(mut conn) => match self.call(&mut conn, &["INFO", "replication"]).await {
                    Ok(info) => {
                        let info = text(&info).unwrap_or_default();
                        info_field(&info, "role").as_deref() == Some("slave")
                            && info_field(&info, "master_port").as_deref() == Some(port.as_str())
                    }
                    Err(_) => continue,
                },
                Err(e) => {
                    // Worded as the follow loop words it: one problem, not
                    // two alternating in the log.
                    self.set_problem(Some(format!("cannot make the upstream follow: {e}")));
                    continue;
                }
            };
            if !following {
                tracing::warn!(upstream = %self.settings.upstream,
                    "the upstream no longer follows this replica's feed (restarted?); following again");
                if let Err(e) = self.follow().await {
                    self.set_problem(Some(format!("cannot make the upstream follow: {e}")));
                }
            } else if self.problem().is_some() {
                self.set_problem(None);
            }
        }
    }

    /// Stops the tap of the current term, if one runs.
    pub fn stop_tap(&self) {
        if let Some(stop) = self.tap.lock().take() {
            stop.cancel();
        }
    }

    /// Records the end of what the tap logged (its restart point).
    pub(super) fn logged_to(&self, replid: &ReplId, end: u64) {
        *self.logged.lock() = Some((replid.clone(), end));
    }
}
