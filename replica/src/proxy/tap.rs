//! The tap (DESIGN.md, "Proxy mode"): on the active, a Redis replica of its
//! own upstream. It reads the upstream's replication stream — the effects
//! of every command the upstream ran — and logs it in chunks, under the
//! active's term; it acknowledges (`REPLCONF ACK`) only the offsets the log
//! has committed, so `WAIT 1` on the upstream means "committed".
//!
//! It continues the logged history (`PSYNC id offset+1`, answered
//! `+CONTINUE`): at a promotion the upstream answers with its new id, which
//! is logged as where the new id begins. Only a cluster's first active
//! starts a history (`PSYNC ? -1`): the RDB it gets is kept as a snapshot
//! and the history begins at its offset. An upstream that cannot continue
//! a history the log holds has lost data: the tap stops and says so, and
//! the active steps down.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::entry::{BeginKind, ReplId, StreamEntry};
pub use super::error::TapError;
use super::frame::{self, Scan};
use super::link::{Link, Psync};
use super::rdb::{self, RdbError};
use crate::command::Command;
use crate::node::Node;
use crate::role::ActiveGuard;

/// Largest chunk logged as one entry (well under the replication frame).
const MAX_CHUNK: usize = 1 << 20;
/// Most stream bytes logged and not yet committed before the tap stops
/// reading (the upstream then buffers them, as for a slow replica).
const MAX_UNCOMMITTED: u64 = 64 << 20;
/// The largest first-state RDB logged with the history's beginning.
const MAX_LOGGED_RDB: usize = 8 << 20;
/// An acknowledgement at least this often, as Redis replicas do.
const ACK_EVERY: Duration = Duration::from_secs(1);

/// Where the tap's history stands when it starts.
#[derive(Debug, Clone)]
pub struct Start {
    /// The logged history's id and end offset; `None`: no history yet.
    pub history: Option<(ReplId, u64)>,
}

/// Runs the tap for one term until `stop` or an error. `committed` follows
/// the log's committed stream offset.
pub async fn run(
    node: Arc<Node>,
    guard: ActiveGuard,
    start: Start,
    mut committed: watch::Receiver<u64>,
    ready: tokio::sync::oneshot::Sender<()>,
    stop: CancellationToken,
) -> Result<(), TapError> {
    let core = node.proxy.clone().expect("proxy mode");
    let settings = &core.settings;
    let mut link = Link::connect(&settings.upstream, None).await?;
    link.handshake(settings.upstream_password.as_deref(), 0, false)
        .await?;
    let (replid, mut logged) = match &start.history {
        Some((replid, end)) => match link.psync(Some(replid.as_str()), end + 1).await? {
            Psync::Continue { replid: new } => match new.as_deref().and_then(ReplId::parse) {
                Some(new) if new != *replid => {
                    let begin = StreamEntry::Begin {
                        kind: BeginKind::Promotion,
                        replid: new.clone(),
                        offset: *end,
                    };
                    append(&node, &guard, begin).await?;
                    (new, *end)
                }
                _ => (replid.clone(), *end),
            },
            Psync::FullResync { replid: id, offset } => {
                return Err(TapError::LostHistory {
                    why: format!(
                        "asked to continue {replid} after offset {end}, it offered a full \
                             resync of {id} at {offset}"
                    ),
                })
            }
        },
        None => match link.psync(None, 0).await? {
            Psync::FullResync { replid, offset } => {
                let replid = ReplId::parse(&replid).ok_or_else(|| TapError::LostHistory {
                    why: format!("a replication id that is not 40 hex digits: {replid}"),
                })?;
                let dir = node.data_dir().join("rdb");
                let mut writer = rdb::Writer::create(&dir).await?;
                link.read_rdb(&mut writer.file).await?;
                let snap = writer.finish(replid.clone(), offset).await?;
                tracing::info!(replid = %replid, offset, bytes = snap.len,
                    "the stream begins: the upstream's data kept as the first snapshot");
                let begin = StreamEntry::Begin {
                    kind: BeginKind::Formation,
                    replid: replid.clone(),
                    offset,
                };
                append(&node, &guard, begin).await?;
                // A small first state is logged too: every replica then
                // holds it (entry.rs).
                let limit = (node.settings.max_frame_bytes / 2).min(MAX_LOGGED_RDB) as u64;
                if snap.len <= limit {
                    let bytes =
                        tokio::fs::read(&snap.path)
                            .await
                            .map_err(|source| RdbError::Io {
                                path: snap.path.clone(),
                                source,
                            })?;
                    let rdb = StreamEntry::Rdb {
                        replid: replid.clone(),
                        offset,
                        bytes: bytes.into(),
                    };
                    append(&node, &guard, rdb).await?;
                }
                (replid, offset)
            }
            Psync::Continue { .. } => {
                return Err(TapError::LostHistory {
                    why: "a full resync was asked for and the upstream continued instead".into(),
                })
            }
        },
    };
    core.logged_to(&replid, logged);
    let _ = ready.send(());
    tracing::info!(offset = logged, "tap: following the upstream's stream");
    let mut pending = BytesMut::new();
    let mut cutter = Cutter::default();
    let mut acked = 0u64;
    // Acknowledgements follow the commit only while the upstream asked for
    // one (`REPLCONF GETACK`: a client waits in `WAIT`) that the commit has
    // not yet covered, and otherwise once every ACK_EVERY, as Redis's own
    // replicas do: one per commit would cost Redis a command to run for
    // every commit, right when the replies it covers are released.
    let mut asked: Option<u64> = None;
    let mut tick = tokio::time::interval(ACK_EVERY);
    loop {
        // Back-pressure: stop reading while too much waits for its commit.
        while logged.saturating_sub(*committed.borrow()) > MAX_UNCOMMITTED {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = committed.changed() => if r.is_err() { return Err(TapError::TermEnded) },
            }
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            r = committed.changed() => {
                if r.is_err() {
                    return Err(TapError::TermEnded);
                }
                let c = *committed.borrow_and_update();
                if let Some(until) = asked {
                    if c > acked {
                        link.ack(c).await?;
                        acked = c;
                    }
                    if c >= until {
                        asked = None;
                    }
                }
            }
            _ = tick.tick() => {
                let c = *committed.borrow();
                link.ack(c).await?;
                acked = c;
            }
            read = link.read_stream() => {
                pending.extend_from_slice(&read?);
                let (chunks, getack) = cutter.cut(&mut pending)?;
                for bytes in chunks {
                    let len = bytes.len() as u64;
                    append(&node, &guard, StreamEntry::Chunk { from: logged, bytes }).await?;
                    logged += len;
                }
                core.logged_to(&replid, logged);
                if getack {
                    let c = *committed.borrow();
                    link.ack(c).await?;
                    acked = c;
                    asked = (c < logged).then_some(logged);
                }
            }
        }
        // The term, not the lease: a lease that lapsed (a pause, a slow
        // heartbeat) is renewed in the same term, and the stream must go on
        // being logged for anything to commit again; nothing is answered
        // meanwhile (the gate asks the lease).
        if guard.term().has_ended() {
            return Err(TapError::TermEnded);
        }
    }
}

/// Where the tap stands in what it has read and not yet logged: scanning
/// resumes where it stopped, so a long transaction read over many reads is
/// scanned once, not again at each read.
#[derive(Debug, Default)]
struct Cutter {
    /// Bytes at the front of `pending` already scanned (whole commands).
    scanned: usize,
    /// The end of the last scanned command outside a transaction.
    settled: usize,
    /// A `MULTI` was scanned and its `EXEC` not yet.
    in_multi: bool,
}

impl Cutter {
    /// Takes the whole commands at the front of `pending`, in chunks of
    /// about `MAX_CHUNK` (a single larger command, or transaction, is one
    /// chunk; the replication frame's limit, `max_frame_bytes`, bounds it);
    /// says whether one was `REPLCONF GETACK` (the upstream wants an
    /// acknowledgement).
    ///
    /// A chunk never ends inside a transaction (`MULTI` … `EXEC`: how Redis
    /// sends a script's or a transaction's effects): what is logged, and so
    /// what a standby's upstream is fed, ends where a Redis replica's
    /// applied offset can stand. A replica counts a transaction's bytes as
    /// applied only at its `EXEC`; a log that ended after a `MULTI` whose
    /// `EXEC` never came (the active died between the two reads) left the
    /// promoted standby's upstream short of the log's end for good, and it
    /// could not lead. The part of a transaction read so far waits in
    /// `pending`.
    fn cut(&mut self, pending: &mut BytesMut) -> Result<(Vec<Bytes>, bool), frame::FrameError> {
        let mut chunks = Vec::new();
        let mut getack = false;
        while let Scan::Complete(n) = frame::scan(&pending[self.scanned..], u64::MAX)? {
            let cmd = &pending[self.scanned..self.scanned + n];
            getack |= is_getack(cmd);
            if cmd.eq_ignore_ascii_case(MULTI) {
                self.in_multi = true;
            } else if cmd.eq_ignore_ascii_case(EXEC) {
                self.in_multi = false;
            }
            self.scanned += n;
            if !self.in_multi {
                self.settled = self.scanned;
                if self.settled >= MAX_CHUNK {
                    chunks.push(pending.split_to(self.settled).freeze());
                    self.scanned = 0;
                    self.settled = 0;
                }
            }
        }
        if self.settled > 0 {
            chunks.push(pending.split_to(self.settled).freeze());
            self.scanned -= self.settled;
            self.settled = 0;
        }
        Ok((chunks, getack))
    }
}

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

/// `*3\r\n$8\r\nREPLCONF\r\n$6\r\nGETACK\r\n…`
fn is_getack(cmd: &[u8]) -> bool {
    cmd.len() < 64
        && cmd.starts_with(b"*3\r\n$8\r\n")
        && cmd[8..16].eq_ignore_ascii_case(b"REPLCONF")
        && cmd
            .get(18..28)
            .is_some_and(|s| s.eq_ignore_ascii_case(b"$6\r\nGETACK"))
}

/// Logs one entry under the term (without waiting for its commit).
async fn append(node: &Node, guard: &ActiveGuard, entry: StreamEntry) -> Result<(), TapError> {
    node.append(guard, Command::Stream(entry))
        .map(drop)
        .map_err(|e| TapError::Log(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::request::encode;

    fn cmd(args: &[&str]) -> Bytes {
        encode(
            &args
                .iter()
                .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn the_stream_is_cut_on_command_boundaries_and_getack_is_seen() {
        let set = cmd(&["SET", "k", "v"]);
        let getack = cmd(&["REPLCONF", "GETACK", "*"]);
        assert!(is_getack(&getack));
        assert!(!is_getack(&set));
        let mut pending = BytesMut::new();
        let mut cutter = Cutter::default();
        pending.extend_from_slice(&set);
        pending.extend_from_slice(&getack);
        pending.extend_from_slice(&set[..5]);
        let (chunks, ack) = cutter.cut(&mut pending).unwrap();
        assert!(ack);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].len(), set.len() + getack.len());
        assert_eq!(&pending[..], &set[..5], "the partial command waits");
    }

    #[test]
    fn a_chunk_never_ends_inside_a_transaction() {
        let set = cmd(&["SET", "k", "v"]);
        let multi = cmd(&["MULTI"]);
        let incr = cmd(&["INCR", "n"]);
        let exec = cmd(&["exec"]);
        let mut pending = BytesMut::new();
        let mut cutter = Cutter::default();
        pending.extend_from_slice(&set);
        pending.extend_from_slice(&multi);
        pending.extend_from_slice(&incr);
        let (chunks, _) = cutter.cut(&mut pending).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0], set, "only what is before the MULTI");
        assert_eq!(
            pending.len(),
            multi.len() + incr.len(),
            "the open transaction waits"
        );
        let (chunks, _) = cutter.cut(&mut pending).unwrap();
        assert!(chunks.is_empty(), "still no EXEC");
        pending.extend_from_slice(&exec);
        pending.extend_from_slice(&set);
        let (chunks, _) = cutter.cut(&mut pending).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            chunks[0].len(),
            multi.len() + incr.len() + exec.len() + set.len()
        );
        assert!(pending.is_empty());
        // A transaction larger than a chunk stays whole.
        let big = cmd(&["SET", "k", &"x".repeat(MAX_CHUNK / 2)]);
        pending.extend_from_slice(&multi);
        for _ in 0..3 {
            pending.extend_from_slice(&big);
        }
        let (chunks, _) = cutter.cut(&mut pending).unwrap();
        assert!(chunks.is_empty());
        pending.extend_from_slice(&exec);
        let (chunks, _) = cutter.cut(&mut pending).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].len(), multi.len() + 3 * big.len() + exec.len());
    }

    #[test]
    fn chunks_end_on_command_boundaries_even_for_a_large_command() {
        let small = cmd(&["SET", "k", "v"]);
        let big = cmd(&["SET", "k", &"x".repeat(MAX_CHUNK * 2)]);
        let mut pending = BytesMut::new();
        let mut cutter = Cutter::default();
        pending.extend_from_slice(&small);
        pending.extend_from_slice(&big[..100]);
        let (chunks, _) = cutter.cut(&mut pending).unwrap();
        assert_eq!(chunks.len(), 1);
        pending.extend_from_slice(&big[100..]);
        pending.extend_from_slice(&small);
        let (chunks, _) = cutter.cut(&mut pending).unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].len(), big.len());
        assert_eq!(chunks[1].len(), small.len());
        assert!(pending.is_empty());
    }
}
