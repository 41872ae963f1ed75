//! The feed (DESIGN.md, "Proxy mode"): on a standby, the master side of
//! Redis's replication protocol, served to this replica's own upstream only
//! (it is `REPLICAOF` a loopback port of this process and authenticates with
//! a secret the process set as its `masterauth`). It feeds committed
//! entries only, in order, so the upstream's replication id and offset
//! (`INFO replication`) are this replica's applied position.
//!
//! `PSYNC id offset+1` continues when the committed history allows it
//! (`history.rs`); an upstream ahead of what is committed is told to try
//! later (`-NOMASTERLINK`) until it is, or until the divergent tail it
//! holds is cut, which makes it a stranger to the history; a stranger gets
//! a full resync: an RDB fetched from the active's upstream when one is
//! known, else the newest local snapshot, then the log from its offset.
//! When the history's replication id changes (a promotion), the link is
//! closed so the upstream reconnects and learns the new id (`+CONTINUE id`);
//! so is it right after a full resync from a snapshot older than the
//! current id.

use std::sync::Arc;

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::entry::{ReplId, StreamEntry};
use super::follow::Ask;
use super::history::Continuation;
use super::rdb::{self, RdbError};
use super::request::RequestDecoder;
use super::stream::StreamMachine;
use crate::command::Command;
use crate::log::cursor::{Cursor, Next};

/// How long an RDB's position may take to be committed before another
/// RDB is used.
const COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The feed's shared state.
pub struct Feed {
    /// The loopback port the upstream replicates from.
    pub port: u16,
    /// The upstream's `masterauth`.
    secret: String,
    /// The active's upstream (`host:port`), where full resyncs fetch an RDB.
    active_upstream: Mutex<Option<String>>,
    /// The upstream's last acknowledged offset (`REPLCONF ACK`).
    acked: tokio::sync::watch::Sender<u64>,
    /// Cancelled to drop the upstream's link (this replica is promoted).
    scope: Mutex<CancellationToken>,
    /// The upstream holds a prefix of the committed history: it continued
    /// at a committed position, or acknowledged the RDB of a full resync.
    /// Cleared when its link is dropped and when the role changes (a
    /// demoted active's upstream may hold effects never committed).
    in_step: std::sync::atomic::AtomicBool,
    /// Told when the upstream's link ends by itself (the upstream went
    /// away, or stopped following): the upstream is checked at once.
    pub link_ended: tokio::sync::Notify,
    /// Why the upstream is being refilled (a full resync of a stream that
    /// has begun), until it has loaded the RDB or continues: this replica
    /// cannot lead meanwhile (it could not serve the committed data).
    refilling: Mutex<Option<String>>,
}

/// Why a feed link ended.
#[derive(Debug, thiserror::Error)]
pub(super) enum FeedError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    History(#[from] super::stream::HistoryError),
}

impl Feed {
    /// Binds the feed's loopback listener; the upstream authenticates with
    /// `secret`.
    pub async fn bind(secret: String) -> std::io::Result<(Arc<Feed>, TcpListener)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let feed = Arc::new(Feed {
            port,
            secret,
            active_upstream: Mutex::new(None),
            acked: tokio::sync::watch::channel(0).0,
            scope: Mutex::new(CancellationToken::new()),
            in_step: std::sync::atomic::AtomicBool::new(false),
            link_ended: tokio::sync::Notify::new(),
            refilling: Mutex::new(None),
        });
        Ok((feed, listener))
    }

    /// The `masterauth` the upstream must present.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn set_active_upstream(&self, addr: Option<String>) {
        *self.active_upstream.lock() = addr;
    }

    /// The active's upstream as last learned (`None` on the active).
    pub fn active_upstream(&self) -> Option<String> {
        self.active_upstream.lock().clone()
    }

    /// Follows the upstream's acknowledged offset.
    pub fn acked(&self) -> tokio::sync::watch::Receiver<u64> {
        self.acked.subscribe()
    }

    /// Drops the upstream's link now; it may reconnect (and is served
    /// again) unless the upstream is made a master meanwhile.
    pub fn drop_link(&self) {
        self.out_of_step();
        let mut scope = self.scope.lock();
        scope.cancel();
        *scope = CancellationToken::new();
    }

    /// Whether the upstream holds only committed effects (a standby may
    /// serve reads from it: `standby_reads = "local"`).
    pub fn in_step(&self) -> bool {
        self.in_step.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The upstream may hold effects never committed until its next link
    /// says otherwise.
    pub fn out_of_step(&self) {
        self.in_step
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn set_in_step(&self) {
        self.in_step
            .store(true, std::sync::atomic::Ordering::SeqCst);
        *self.refilling.lock() = None;
    }

    /// Why this replica's upstream is being refilled, if it is.
    pub fn refilling(&self) -> Option<String> {
        self.refilling.lock().clone()
    }

    /// Serves the upstream's replication links until `stop`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        machine: Arc<StreamMachine>,
        settings: super::ProxySettings,
        tls: Option<Arc<proto_common::tls::Tls>>,
        data_dir: std::path::PathBuf,
        stop: CancellationToken,
    ) {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((stream, peer)) = accepted else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let feed = self.clone();
            let machine = machine.clone();
            let settings = settings.clone();
            let tls = tls.clone();
            let scope = self.scope.lock().child_token();
            let link = Link::new(
                feed,
                machine,
                settings.upstream_password.clone(),
                tls,
                &data_dir,
            );
            tokio::spawn(async move {
                let feed = link.feed.clone();
                tokio::select! {
                    _ = scope.cancelled() => {}
                    r = link.serve(stream) => {
                        if let Err(e) = r {
                            tracing::info!(peer = %peer, reason = %e, "feed: the upstream's link ended");
                        }
                        feed.link_ended.notify_one();
                    }
                }
            });
        }
    }
}

/// An RDB for a full resync, open, with where streaming starts after it.
pub(super) struct Chosen {
    file: tokio::fs::File,
    pub len: u64,
    pub replid: ReplId,
    pub offset: u64,
    /// The entry, offset and id streaming continues from.
    pub start: (proto_common::LogIndex, u64, ReplId),
}

/// Whom an RDB is for, which decides where it may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// This replica's own upstream: a fetched RDB is kept (it replaces the
    /// older ones), and the newest kept one serves when none can be
    /// fetched.
    Kept,
    /// A client that asked to follow: a fetched RDB goes to an unnamed
    /// file that is gone with it; `or_kept`: the newest kept one may serve
    /// instead (a follower that takes the stream after it, not a client
    /// that wants the data as it is now).
    Client { or_kept: bool },
}

/// Sends an RDB as a master does after `SYNC` (`$<len>` and the bytes),
/// behind `+FULLRESYNC <id> <offset>` after `PSYNC` (`fullresync`).
pub(super) async fn send_rdb<W: AsyncWrite + Unpin>(
    write: &mut W,
    chosen: &mut Chosen,
    fullresync: bool,
) -> Result<(), FeedError> {
    let mut head = String::new();
    if fullresync {
        head = format!("+FULLRESYNC {} {}\r\n", chosen.replid, chosen.offset);
    }
    head.push_str(&format!("${}\r\n", chosen.len));
    write.write_all(head.as_bytes()).await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = chosen.len;
    while left > 0 {
        let n = chosen.file.read(&mut buf).await?;
        if n == 0 {
            return Err(FeedError::Protocol(format!(
                "the RDB at {} ended {left} bytes early",
                chosen.offset
            )));
        }
        let n = (n as u64).min(left) as usize;
        write.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}

/// One link with a follower: this replica's upstream, or a client.
pub(super) struct Link {
    feed: Arc<Feed>,
    machine: Arc<StreamMachine>,
    /// The upstreams' shared password (to fetch an RDB from the active's).
    password: Option<String>,
    tls: Option<Arc<proto_common::tls::Tls>>,
    dir: std::path::PathBuf,
}

impl Link {
    pub(super) fn new(
        feed: Arc<Feed>,
        machine: Arc<StreamMachine>,
        password: Option<String>,
        tls: Option<Arc<proto_common::tls::Tls>>,
        data_dir: &std::path::Path,
    ) -> Link {
        Link {
            feed,
            machine,
            password,
            tls,
            dir: data_dir.join("rdb"),
        }
    }

    /// Whether a follower at `(replid, offset)` continues the committed
    /// history, and from where.
    pub(super) fn continuation(&self, replid: &ReplId, offset: u64) -> Continuation {
        self.machine.continuation(Some(replid), offset)
    }

    async fn serve(self, stream: TcpStream) -> Result<(), FeedError> {
        let (read, mut write) = stream.into_split();
        let mut requests = FramedRead::new(read, RequestDecoder::new(1 << 20, true));
        let mut authenticated = false;
        // The handshake, up to PSYNC.
        let (replid, offset) = loop {
            let Some(req) = requests.next().await else {
                return Ok(());
            };
            let req = req.map_err(|e| FeedError::Protocol(e.to_string()))?;
            let answer: &[u8] = match &*req.name() {
                "ping" => b"+PONG\r\n",
                "auth" => {
                    let given = req.argv.last().cloned().unwrap_or_default();
                    authenticated =
                        proto_common::auth::constant_time_eq(&given, self.feed.secret.as_bytes());
                    if authenticated {
                        b"+OK\r\n"
                    } else {
                        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
                    }
                }
                _ if !authenticated => b"-NOAUTH Authentication required.\r\n",
                "replconf" => b"+OK\r\n",
                "psync" | "sync" => match Ask::of(&req) {
                    Ask::Psync { replid, offset } => break (replid, offset),
                    Ask::Sync => break (None, 0),
                },
                _ => b"-ERR this port serves only the replication of this replica's upstream\r\n",
            };
            write.write_all(answer).await?;
        };
        let (mut index, mut sent, current) = match self
            .machine
            .continuation(replid.as_ref(), offset)
        {
            Continuation::From { index, current } => {
                write
                    .write_all(format!("+CONTINUE {current}\r\n").as_bytes())
                    .await?;
                tracing::info!(offset, replid = %current, "feed: the upstream continues");
                self.feed.set_in_step();
                (index, offset, current)
            }
            Continuation::NotYetCommitted if offset <= self.machine.logged_end()? => {
                // Its effects are in the log: they commit, or are cut.
                write
                    .write_all(b"-NOMASTERLINK the upstream is ahead of what is committed\r\n")
                    .await?;
                return Ok(());
            }
            other => {
                let why = match other {
                    Continuation::FullResync(why) => why,
                    _ => format!(
                        "the upstream is at offset {offset}, beyond this replica's log: it \
                             ran effects the cluster never logged"
                    ),
                };
                tracing::info!(reason = %why, "feed: the upstream needs a full resync");
                if self.machine.current().is_some() {
                    *self.feed.refilling.lock() =
                        Some(format!("its upstream is being refilled: {why}"));
                }
                let from = self.feed.active_upstream.lock().clone();
                let Some(mut chosen) = self.choose(from.as_deref(), Source::Kept).await? else {
                    write
                        .write_all(b"-NOMASTERLINK no RDB of the stream can be had yet\r\n")
                        .await?;
                    return Ok(());
                };
                send_rdb(&mut write, &mut chosen, true).await?;
                tracing::info!(replid = %chosen.replid, offset = chosen.offset, bytes = chosen.len,
                    "feed: full resync of the upstream sent");
                let (index, sent, snapshot_id) = chosen.start;
                if self.id_after(&snapshot_id, sent) {
                    // The stream goes on under a later id (a promotion at
                    // or after the snapshot): the upstream learns it by
                    // reconnecting (`PSYNC` of the snapshot's id, then
                    // `+CONTINUE` with the current one), as Redis's own
                    // replicas do after a failover.
                    tracing::info!(replid = %snapshot_id, offset = sent,
                        "feed: the snapshot's id is not the stream's current one; the upstream reconnects");
                    return Ok(());
                }
                (index, sent, snapshot_id)
            }
        };
        // Acknowledgements come back on the same socket; the first after a
        // full resync says the RDB is loaded.
        let acked = self.feed.acked.clone();
        let feed = self.feed.clone();
        let acks = tokio::spawn(async move {
            while let Some(Ok(req)) = requests.next().await {
                if &*req.name() == "replconf" && req.arg_is(1, "ack") {
                    if let Some(o) = req
                        .argv
                        .get(2)
                        .and_then(|a| std::str::from_utf8(a).ok()?.parse::<u64>().ok())
                    {
                        acked.send_replace(o);
                        feed.set_in_step();
                    }
                }
            }
        });
        let result = self
            .stream(&mut write, &mut index, &mut sent, Some(&current))
            .await;
        acks.abort();
        result
    }

    /// Whether the stream after `offset` goes on under another id than
    /// `replid`, the one an upstream holding a snapshot at `offset` has.
    fn id_after(&self, replid: &ReplId, offset: u64) -> bool {
        matches!(
            self.machine.continuation(Some(replid), offset),
            Continuation::From { current, .. } if current != *replid
        )
    }

    /// The newest RDB kept here that the stream can continue from: the
    /// last one fetched or logged, or the checkpoint's (whose log entries
    /// may be gone, so an older RDB may no longer do).
    fn newest_local(&self) -> Result<Option<rdb::Snapshot>, FeedError> {
        let checkpoints = self.dir.with_file_name("checkpoint");
        let mut kept: Vec<rdb::Snapshot> = rdb::newest(&self.dir)?.into_iter().collect();
        kept.extend(super::checkpoint::newest(&checkpoints)?.map(|c| c.rdb));
        kept.sort_by_key(|s| std::cmp::Reverse(s.offset));
        Ok(kept.into_iter().find(|s| {
            !matches!(
                self.machine.continuation(Some(&s.replid), s.offset),
                Continuation::FullResync(_)
            )
        }))
    }

    /// Where streaming starts after an RDB at `(replid, offset)`, once the
    /// history holds that position (waiting, at most [`COMMIT_WAIT`], for
    /// it to be committed); `None` if it is not on the history.
    async fn start_of(
        &self,
        replid: &ReplId,
        offset: u64,
    ) -> Option<(proto_common::LogIndex, u64, ReplId)> {
        let deadline = tokio::time::Instant::now() + COMMIT_WAIT;
        loop {
            match self.machine.continuation(Some(replid), offset) {
                // The upstream takes the snapshot's id: streaming must
                // reconnect it at the next change of id, as after `+CONTINUE`.
                Continuation::From { index, .. } => return Some((index, offset, replid.clone())),
                Continuation::NotYetCommitted => {
                    let mut c = self.machine.committed_offset();
                    let committed = tokio::time::timeout_at(deadline, async {
                        c.wait_for(|o| *o >= offset).await.is_ok()
                    })
                    .await;
                    if committed != Ok(true) {
                        tracing::warn!(%replid, offset,
                            "feed: the RDB's position was not committed in time");
                        return None;
                    }
                }
                Continuation::FullResync(why) => {
                    tracing::warn!(reason = %why, %replid, offset,
                        "feed: the RDB is not on this replica's history");
                    return None;
                }
            }
        }
    }

    /// An RDB for a full resync: fetched from `from` (an upstream of the
    /// active's history) once its position is committed, else (as
    /// `source` allows) the newest one kept here.
    pub(super) async fn choose(
        &self,
        from: Option<&str>,
        source: Source,
    ) -> Result<Option<Chosen>, FeedError> {
        if let Some(addr) = from {
            match self.fetch(addr, source).await {
                Ok(Some(chosen)) => return Ok(Some(chosen)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(from = %addr, error = %e, "feed: fetching an RDB failed")
                }
            }
        }
        if matches!(source, Source::Client { or_kept: false }) {
            return Ok(None);
        }
        let Some(s) = self.newest_local()? else {
            return Ok(None);
        };
        let Some(start) = self.start_of(&s.replid, s.offset).await else {
            return Ok(None);
        };
        Ok(Some(Chosen {
            file: tokio::fs::File::open(&s.path).await?,
            len: s.len,
            replid: s.replid,
            offset: s.offset,
            start,
        }))
    }

    /// Fetches an RDB from `addr`; `None` when its position is not on the
    /// history (never, or not committed in time). A fetched RDB replaces
    /// the ones kept here only once it is known to be on the history.
    async fn fetch(&self, addr: &str, source: Source) -> Result<Option<Chosen>, RdbError> {
        let (password, tls) = (self.password.as_deref(), self.tls.as_deref());
        if let Source::Client { .. } = source {
            let (replid, offset, file, len) =
                rdb::fetch_unnamed(addr, password, tls, &self.dir).await?;
            return Ok(self.start_of(&replid, offset).await.map(|start| Chosen {
                file,
                len,
                replid,
                offset,
                start,
            }));
        }
        let s = rdb::fetch(addr, password, tls, &self.dir).await?;
        let Some(start) = self.start_of(&s.replid, s.offset).await else {
            let _ = tokio::fs::remove_file(&s.path).await;
            return Ok(None);
        };
        let (dir, keep) = (self.dir.clone(), s.path.clone());
        let kept = tokio::task::spawn_blocking(move || rdb::keep_only(&dir, &keep)).await;
        if let Ok(Err(e)) = kept {
            tracing::warn!(error = %e, "feed: cannot delete older RDBs");
        }
        let file = tokio::fs::File::open(&s.path)
            .await
            .map_err(|source| RdbError::Io {
                path: s.path.clone(),
                source,
            })?;
        Ok(Some(Chosen {
            file,
            len: s.len,
            replid: s.replid,
            offset: s.offset,
            start,
        }))
    }

    /// Streams committed entries from `index`, the follower being at
    /// `sent`, until the stream's id is no longer `current` (`None`: a
    /// follower that keeps no id, `SYNC`'s).
    pub(super) async fn stream<W: AsyncWrite + Unpin>(
        &self,
        write: &mut W,
        index: &mut proto_common::LogIndex,
        sent: &mut u64,
        current: Option<&ReplId>,
    ) -> Result<(), FeedError> {
        let mut committed = self.machine.committed_offset();
        let mut cursor = Cursor::new(self.machine.reader().clone(), *index);
        loop {
            let upto = *committed.borrow_and_update();
            while *sent < upto {
                let (position, payload) = match cursor.read_next()? {
                    Next::Record(p, b) => (p, b),
                    Next::End => break,
                    Next::Compacted => {
                        return Err(FeedError::Protocol(format!(
                            "log entry {} was compacted away",
                            cursor.index()
                        )))
                    }
                };
                let entry = match Command::decode(&payload) {
                    Ok(Command::Stream(e)) => e,
                    Ok(_) => continue,
                    Err(e) => {
                        return Err(FeedError::Protocol(format!("log entry {position}: {e}")))
                    }
                };
                match entry {
                    StreamEntry::Chunk { from, bytes } => {
                        let end = from + bytes.len() as u64;
                        if end <= *sent {
                            continue;
                        }
                        let skip = sent.saturating_sub(from) as usize;
                        write.write_all(&bytes[skip..]).await?;
                        *sent = end;
                    }
                    StreamEntry::Begin { replid, .. } if current.is_some_and(|c| replid != *c) => {
                        // The upstream must learn the new id: reconnect.
                        tracing::info!(replid = %replid, offset = *sent,
                            "feed: the stream's id changed; the upstream reconnects");
                        return Ok(());
                    }
                    StreamEntry::Begin { .. } | StreamEntry::Rdb { .. } => {}
                }
                *index = position.index.next();
            }
            write.flush().await?;
            if committed.changed().await.is_err() {
                return Ok(());
            }
        }
    }
}
