//! What a proxy-mode replica holds besides its node: the settings, the
//! upstream's command table and limits, the stream machine, the feed, where
//! the active's RESP port and upstream are, and the tasks of the current
//! role (the tap while active; the client sessions of either role).

use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::config::ProxySettings;
use super::entry::ReplId;
use super::feed::Feed;
use super::stream::StreamMachine;
use super::table::CommandTable;
use super::upstream::UpstreamError;

/// A proxy-mode replica's shared parts.
pub struct ProxyCore {
    pub settings: ProxySettings,
    /// The upstream's own command table (`COMMAND`), read at start.
    pub table: CommandTable,
    /// Its `proto-max-bulk-len`: the largest argument a client may send.
    max_bulk: u64,
    /// The largest command it takes from a client (and so the largest
    /// entry the tap may log).
    largest_command: u64,
    pub machine: Arc<StreamMachine>,
    pub feed: Arc<Feed>,
    /// The active's RESP address, learned in the replication handshake.
    active_resp: Mutex<Option<String>>,
    /// Cancelled whenever the role changes: sessions of the old role end.
    sessions: Mutex<CancellationToken>,
    /// Cancelled at `CLIENT KILL TYPE replica`: clients that follow the
    /// stream (`follow.rs`) are cut off.
    followers: Mutex<CancellationToken>,
    /// Stops the tap of the current term.
    pub(super) tap: Mutex<Option<CancellationToken>>,
    /// Where the logged stream ends: the tap continues from here.
    pub(super) logged: Mutex<Option<(ReplId, u64)>>,
    /// The upstream as last read (`report.rs`), for the heartbeat.
    pub(super) health: Mutex<Option<proto_common::heartbeat::UpstreamHealth>>,
    /// Why the upstream cannot be used now, if it cannot.
    problem: Mutex<Option<String>>,
    /// Set while the upstream leaves PINGs unanswered (`liveness.rs`).
    hung: Mutex<Option<String>>,
    /// The epoch whose tap follows the upstream: sessions of that term may
    /// use it.
    ready: tokio::sync::watch::Sender<Option<proto_common::Epoch>>,
    /// The feed's listener until the server takes it.
    feed_listener: Mutex<Option<tokio::net::TcpListener>>,
    /// The offset probe, started by the first session that needs it (on
    /// the RESP thread).
    probe: std::sync::OnceLock<Arc<super::probe::Probe>>,
    /// The shared lane of the current term, opened by its first session
    /// (`lane.rs`).
    lane: tokio::sync::Mutex<Option<(proto_common::Epoch, Arc<super::lane::Lane>)>>,
}

impl ProxyCore {
    pub fn new(
        settings: ProxySettings,
        table: CommandTable,
        max_bulk: u64,
        largest_command: u64,
        machine: Arc<StreamMachine>,
        feed: Arc<Feed>,
    ) -> ProxyCore {
        ProxyCore {
            settings,
            table,
            max_bulk,
            largest_command,
            machine,
            feed,
            active_resp: Mutex::new(None),
            sessions: Mutex::new(CancellationToken::new()),
            followers: Mutex::new(CancellationToken::new()),
            tap: Mutex::new(None),
            logged: Mutex::new(None),
            health: Mutex::new(None),
            problem: Mutex::new(None),
            hung: Mutex::new(None),
            ready: tokio::sync::watch::channel(None).0,
            feed_listener: Mutex::new(None),
            probe: std::sync::OnceLock::new(),
            lane: tokio::sync::Mutex::new(None),
        }
    }

    /// The offset probe (started on the calling runtime on first use).
    pub fn probe(self: &Arc<Self>) -> Arc<super::probe::Probe> {
        self.probe
            .get_or_init(|| {
                super::probe::Probe::start(
                    self.session_target(),
                    self.settings.upstream_password.clone(),
                )
            })
            .clone()
    }

    /// The shared lane of `epoch`'s term, opened if there is none that
    /// works; `None` if the upstream cannot be reached (the session opens
    /// its own connection, and says why if that fails too). A lane of an
    /// earlier term is closed: its sessions have ended.
    pub async fn lane(&self, epoch: proto_common::Epoch) -> Option<Arc<super::lane::Lane>> {
        let mut lane = self.lane.lock().await;
        match lane.as_ref() {
            Some((e, l)) if *e == epoch && l.is_open() => return Some(l.clone()),
            Some((_, l)) => l.close(),
            None => {}
        }
        *lane = None;
        let stream = self.session_upstream().await.ok()?;
        let opened = super::lane::Lane::start(stream, self.max_bulk);
        *lane = Some((epoch, opened.clone()));
        Some(opened)
    }

    pub(super) fn set_feed_listener(&self, l: tokio::net::TcpListener) {
        *self.feed_listener.lock() = Some(l);
    }

    /// The feed's listener, once (the server serves it).
    pub fn take_feed_listener(&self) -> Option<tokio::net::TcpListener> {
        self.feed_listener.lock().take()
    }

    pub(super) fn set_ready(&self, epoch: Option<proto_common::Epoch>) {
        self.ready.send_replace(epoch);
    }

    /// Waits (at most `limit`) until the tap of `epoch` follows the
    /// upstream: only then may a session of that term use it.
    pub async fn ready(&self, epoch: proto_common::Epoch, limit: std::time::Duration) -> bool {
        let mut ready = self.ready.subscribe();
        let waited = tokio::time::timeout(limit, ready.wait_for(|e| *e == Some(epoch)))
            .await
            .map(|r| r.is_ok());
        waited.unwrap_or(false)
    }

    pub fn max_bulk(&self) -> u64 {
        self.max_bulk
    }

    /// The replication frame this replica must send and take: one log
    /// entry holds one stream command at the most, as large as the
    /// upstream takes one, with room for the frame's own fields.
    pub fn frame_limit(&self, configured: usize) -> usize {
        const MARGIN: u64 = 1 << 20;
        let needed = self.largest_command.saturating_add(MARGIN);
        let cap = u64::from(u32::MAX) - MARGIN;
        configured.max(needed.min(cap) as usize)
    }

    /// Follows the committed stream offset (the reply gate's source).
    pub fn committed_offset(&self) -> tokio::sync::watch::Receiver<u64> {
        self.machine.committed_offset()
    }

    pub fn set_active(&self, resp: Option<String>, upstream: Option<String>) {
        *self.active_resp.lock() = resp;
        self.feed.set_active_upstream(upstream);
    }

    pub fn active_resp(&self) -> Option<String> {
        self.active_resp.lock().clone()
    }

    /// A token the sessions of the current role stop on.
    pub fn session_scope(&self) -> CancellationToken {
        self.sessions.lock().child_token()
    }

    /// A token a client that follows the stream stops on.
    pub fn follower_scope(&self) -> CancellationToken {
        self.followers.lock().child_token()
    }

    /// Cuts off every client that follows the stream now (`CLIENT KILL TYPE
    /// replica`); later ones are served.
    pub fn drop_followers(&self) {
        let mut followers = self.followers.lock();
        followers.cancel();
        *followers = CancellationToken::new();
    }

    /// Ends every session of the current role (the role changed: a client
    /// reconnects and finds the new one).
    pub fn end_sessions(&self) {
        let mut s = self.sessions.lock();
        s.cancel();
        *s = CancellationToken::new();
    }

    /// The upstream as last read, for the heartbeat; `None` before the
    /// first read.
    pub fn upstream_health(&self) -> Option<proto_common::heartbeat::UpstreamHealth> {
        self.health.lock().clone()
    }

    /// Why the upstream cannot be used now, if it cannot.
    pub fn problem(&self) -> Option<String> {
        self.hung
            .lock()
            .clone()
            .or_else(|| self.problem.lock().clone())
            .or_else(|| crate::state_machine::StateMachine::problem(&*self.machine))
    }

    /// Records whether the upstream leaves PINGs unanswered; logged when
    /// it changes.
    pub(super) fn set_hung(&self, hung: Option<String>) {
        let mut current = self.hung.lock();
        if current.is_some() == hung.is_some() {
            return;
        }
        match &hung {
            Some(why) => tracing::warn!(reason = %why, "the upstream cannot be used"),
            None => tracing::info!("the upstream answers again"),
        }
        *current = hung;
    }

    /// Records why the upstream cannot be used (`None`: it can); logged
    /// when it changes, not at every retry.
    pub fn set_problem(&self, problem: Option<String>) {
        let mut current = self.problem.lock();
        if *current == problem {
            return;
        }
        match &problem {
            Some(why) => tracing::warn!(reason = %why, "the upstream cannot be used"),
            None => tracing::info!("the upstream can be used again"),
        }
        *current = problem;
    }

    /// Whether every `key value` pair of a `CONFIG SET` is the upstream's
    /// value already (`CONFIG GET` on an administrative connection); an
    /// error counts as changed.
    pub async fn config_unchanged(&self, pairs: &[bytes::Bytes]) -> bool {
        if pairs.is_empty() || pairs.len() % 2 != 0 {
            return false;
        }
        let Ok(mut conn) = super::upstream::Conn::connect(
            &self.settings.upstream,
            self.settings.upstream_password.as_deref(),
            None,
        )
        .await
        else {
            return false;
        };
        for pair in pairs.chunks(2) {
            let reply = conn
                .call([
                    bytes::Bytes::from_static(b"CONFIG"),
                    "GET".into(),
                    pair[0].clone(),
                ])
                .await;
            let current = match &reply {
                Ok(redis_protocol::resp2::types::BytesFrame::Array(kv)) if kv.len() == 2 => {
                    super::upstream::text(&kv[1])
                }
                _ => None,
            };
            if current.as_deref().map(str::as_bytes) != Some(pair[1].as_ref()) {
                return false;
            }
        }
        true
    }

    /// A connection of a client session's own to the upstream, logged in.
    pub async fn session_upstream(&self) -> Result<super::upstream::SessionStream, UpstreamError> {
        super::upstream::session_connection(
            &self.session_target(),
            self.settings.upstream_password.as_deref(),
        )
        .await
    }

    /// Where sessions reach the upstream: its Unix socket if set, else TCP.
    pub fn session_target(&self) -> super::upstream::SessionTarget {
        match &self.settings.upstream_socket {
            Some(path) => super::upstream::SessionTarget::Unix(path.clone()),
            None => super::upstream::SessionTarget::Tcp(self.settings.upstream.clone()),
        }
    }
}
