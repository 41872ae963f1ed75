//! The standby's side: connect to the active, prove ourselves, check the
//! active's proof, then apply what it sends — truncate (into quarantine),
//! install a snapshot, append entries — and acknowledge the durable position.
//! Entries are appended and fsynced right on the receiving task (see
//! `DirectLog`), every frame already buffered in one go, and the ack goes
//! out from the same task: no thread switch between the socket and the
//! disk and back.
//!
//! Every frame is checked before anything is written: its epoch must not be
//! below the highest this replica has seen (a deposed active is refused),
//! entries must continue exactly where the log ends, and every record's
//! checksum must hold. Any violation closes the connection with the reason
//! logged; nothing from the bad frame is applied.

use std::sync::Arc;
use std::time::Duration;

use super::transport::{self, ReplRead, ReplWrite};
use bytes::Bytes;
use futures::{FutureExt, SinkExt, StreamExt};
use proto_common::heartbeat::ActiveInfo;
use proto_common::record::{self, HEADER_LEN};
use proto_common::wire::frame::MAX_HELLO_EPOCHS;
use proto_common::wire::{Envelope, Frame, Hello, ReplCodec};
use proto_common::{auth, Epoch, LogIndex, Position};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::error::{ReplError, Violation};
use super::snapshot_install::Incoming;
use super::Replication;
use crate::command::Command;
use crate::log::group_commit::LogRequest;
use crate::node::StorageError;
use crate::pending::PendingEntry;
use crate::snapshot;

/// Follows `active` until `scope` is cancelled, reconnecting with backoff.
pub async fn follow(repl: Arc<Replication>, active: ActiveInfo, scope: CancellationToken) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let result = tokio::select! {
            _ = scope.cancelled() => return,
            r = session(&repl, &active) => r,
        };
        repl.set_connected(false);
        repl.heartbeat_wake.notify_one();
        match result {
            Ok(()) => backoff = Duration::from_millis(10),
            Err(why) => {
                tracing::warn!(active = %active.node_id, addr = %active.repl_addr, reason = %why,
                    code = why.code(), retryable = why.is_retryable(),
                    "replication stream from the active ended");
            }
        }
        // A failed write log takes nothing more until a restart: connecting
        // again would only look healthy to the active for a moment each
        // time, and keep it from dropping this replica from the sync set.
        if let Some(why) = repl.node.commit.failure() {
            tracing::error!(active = %active.node_id, reason = %why,
                "not following the active: this replica's write log failed; free the disk \
                 or fix the fault, then restart it");
            return;
        }
        tokio::select! {
            _ = scope.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

async fn session(repl: &Arc<Replication>, active: &ActiveInfo) -> Result<(), ReplError> {
    let node = &repl.node;
    let settings = &node.settings;
    let stream = proto_common::tls::connect(
        &active.repl_addr,
        settings.tls.as_deref(),
        Duration::from_secs(2),
    )
    .await
    .map_err(ReplError::Connect)?;
    let (rd, wr) = transport::split(stream);
    let codec = ReplCodec::new(node.frame_limit());
    let mut reader = FramedRead::new(rd, codec.clone());
    let mut writer = FramedWrite::new(wr, codec);

    let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next())
        .await
        .map_err(|_| ReplError::Timeout {
            waiting_for: "challenge",
            after: HANDSHAKE_TIMEOUT,
        })?;
    let (epoch, challenge) = match first {
        Some(Ok(Envelope {
            epoch,
            frame: Frame::Challenge(c),
        })) => (epoch, c),
        Some(Ok(Envelope {
            frame: Frame::Refuse(r),
            ..
        })) => return Err(refused(r)),
        Some(Ok(other)) => return Err(unexpected("a challenge", &other.frame)),
        Some(Err(e)) => return Err(ReplError::unreadable("frame", e)),
        None => return Err(ReplError::Closed("closed before the challenge")),
    };
    // Refusing a stale epoch changes nothing; a newer one is believed only
    // once the active has proved it holds the token (below).
    let seen = node.role().seen;
    if epoch < seen {
        return Err(ReplError::StaleEpoch { epoch, seen });
    }
    if challenge.cluster != settings.cluster {
        return Err(ReplError::WrongCluster {
            peer: active.repl_addr.clone(),
            theirs: challenge.cluster,
            ours: settings.cluster.clone(),
        });
    }
    if challenge.node_id != active.node_id {
        return Err(ReplError::WrongActive {
            expected: active.node_id.clone(),
            addr: active.repl_addr.clone(),
            found: challenge.node_id,
        });
    }
    let their_nonce = hex::decode(&challenge.nonce).unwrap_or_default();
    let our_nonce = auth::new_nonce();
    let (base, last, epochs) = node.reader.shape();
    let tail = epochs.len().saturating_sub(MAX_HELLO_EPOCHS);
    let hello = Hello {
        cluster: settings.cluster.clone(),
        node_id: settings.node_id.clone(),
        proof: hex::encode(repl.token.proof(
            "standby",
            &their_nonce,
            &settings.cluster,
            settings.node_id.as_str(),
        )),
        nonce: hex::encode(our_nonce),
        position: last,
        base,
        epochs: epochs[tail..].to_vec(),
    };
    writer
        .send(Envelope {
            epoch: seen,
            frame: Frame::Hello(hello),
        })
        .await
        .map_err(|e| ReplError::send("send", e))?;
    let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next())
        .await
        .map_err(|_| ReplError::Timeout {
            waiting_for: "welcome",
            after: HANDSHAKE_TIMEOUT,
        })?;
    let welcome = match answer {
        Some(Ok(Envelope {
            frame: Frame::Welcome(w),
            ..
        })) => w,
        Some(Ok(Envelope {
            frame: Frame::Refuse(r),
            ..
        })) => return Err(refused(r)),
        Some(Ok(other)) => return Err(unexpected("welcome", &other.frame)),
        Some(Err(e)) => return Err(ReplError::unreadable("frame", e)),
        None => return Err(ReplError::Closed("closed during the handshake")),
    };
    let proof = hex::decode(&welcome.proof).unwrap_or_default();
    if !repl.token.verify(
        "active",
        &our_nonce,
        &settings.cluster,
        active.node_id.as_str(),
        &proof,
    ) {
        return Err(ReplError::BadProof {
            peer: format!("active {}", active.node_id),
        });
    }
    check_epoch(repl, epoch)?;
    if let Some(core) = &node.proxy {
        // Where this replica's sessions go, and where its upstream's full
        // resyncs fetch an RDB.
        core.set_active(welcome.resp.clone(), welcome.upstream.clone());
    }
    repl.set_connected(true);
    tracing::info!(active = %active.node_id, position = %last, "following the active");

    let mut expected_prev = last;
    send_ack(repl, &mut writer).await?;
    let mut staged = Staged::default();
    loop {
        let received = reader.next().await;
        let mut next = match received {
            Some(Ok(env)) => Some(env),
            Some(Err(e)) => return Err(ReplError::unreadable("frame", e)),
            None => return Err(ReplError::Closed("the active closed the connection")),
        };
        // Take every frame already buffered: one fsync and one ack for all.
        while let Some(env) = next.take() {
            check_epoch(repl, env.epoch)?;
            match env.frame {
                Frame::Entries {
                    prev,
                    commit,
                    records,
                } => {
                    staged.add(prev, expected_prev, records)?;
                    expected_prev = staged.last;
                    staged.commit = staged.commit.max(commit);
                }
                Frame::Commit { commit } => staged.commit = staged.commit.max(commit),
                Frame::Truncate { after } => {
                    flush(repl, &mut writer, &mut staged).await?;
                    super::cut::cut_after(&repl.node, active, after).await?;
                    expected_prev = after;
                }
                Frame::SnapshotBegin { position, size } => {
                    flush(repl, &mut writer, &mut staged).await?;
                    install_snapshot(repl, &mut reader, position, size).await?;
                    expected_prev = position;
                }
                other => {
                    return Err(unexpected(
                        "entries, a commit, a truncation or a snapshot",
                        &other,
                    ))
                }
            }
            if staged.bytes() >= FLUSH_BYTES {
                break;
            }
            next = match reader.next().now_or_never() {
                Some(Some(Ok(env))) => Some(env),
                Some(Some(Err(e))) => return Err(ReplError::unreadable("frame", e)),
                Some(None) => {
                    flush(repl, &mut writer, &mut staged).await?;
                    return Err(ReplError::Closed("the active closed the connection"));
                }
                None => None,
            };
        }
        flush(repl, &mut writer, &mut staged).await?;
    }
}

/// How long the active may take with each handshake frame.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Stage up to this many bytes of entries before one fsync.
const FLUSH_BYTES: usize = 8 << 20;

/// Checked entries waiting for the next fsync, and the newest commit index
/// the active sent.
#[derive(Default)]
struct Staged {
    chunks: Vec<Bytes>,
    entries: Vec<(Position, u32)>,
    pending: Vec<PendingEntry>,
    size: usize,
    last: Position,
    commit: LogIndex,
}

impl Staged {
    fn bytes(&self) -> usize {
        self.size
    }

    /// Checks a batch (continuity, checksums, commands) and stages it.
    fn add(&mut self, prev: Position, expected: Position, records: Bytes) -> Result<(), Violation> {
        if prev != expected {
            return Err(Violation::Gap {
                prev,
                ours: expected,
            });
        }
        let checked = record::check_batch(&records, prev).map_err(Violation::BadEntries)?;
        for &(position, off) in &checked {
            let start = off as usize;
            let len = u32::from_le_bytes(records[start..start + 4].try_into().unwrap()) as usize;
            let payload = records.slice(start + HEADER_LEN..start + HEADER_LEN + len);
            let command = Command::decode(&payload)
                .map_err(|source| Violation::BadEntry { position, source })?;
            self.pending.push(PendingEntry {
                position,
                command,
                responder: None,
                received: None,
            });
            self.entries.push((position, self.size as u32 + off));
        }
        if let Some(&(last, _)) = checked.last() {
            self.last = last;
            self.size += records.len();
            self.chunks.push(records);
        }
        Ok(())
    }
}

/// Appends and fsyncs what is staged, applies the commit index, and acks.
async fn flush(
    repl: &Replication,
    writer: &mut FramedWrite<ReplWrite, ReplCodec>,
    staged: &mut Staged,
) -> Result<(), ReplError> {
    let staged = std::mem::take(staged);
    if !staged.entries.is_empty() {
        let _in_flight = repl.node.idle_poll.busy_for(staged.pending.len());
        let bytes = match staged.chunks.len() {
            1 => staged.chunks.into_iter().next().unwrap(),
            _ => {
                let mut all = bytes::BytesMut::with_capacity(staged.size);
                for c in &staged.chunks {
                    all.extend_from_slice(c);
                }
                all.freeze()
            }
        };
        // Appends and fsyncs right here, on the receiver's own thread
        // (`Replication::spawn_receiver`): no handoff to the log's thread on
        // the path every synchronous write waits for, and nothing else
        // waits behind the fsync.
        repl.node
            .log
            .direct()
            .append(&bytes, &staged.entries, staged.pending)
            .map_err(|e| StorageError::io("writing entries", e))?;
        send_ack(repl, writer).await?;
    }
    if staged.commit > LogIndex::ZERO {
        repl.node.commit.leader_commit(staged.commit);
    }
    Ok(())
}

/// Tells the active our durable position.
async fn send_ack(
    repl: &Replication,
    writer: &mut FramedWrite<ReplWrite, ReplCodec>,
) -> Result<(), ReplError> {
    let position = repl.node.commit.durable();
    let epoch = repl.node.role().seen;
    writer
        .send(Envelope {
            epoch,
            frame: Frame::Ack { position },
        })
        .await
        .map_err(|e| ReplError::send("sending an ack", e))
}

/// Drops frames from an epoch older than one we have seen; learns newer
/// ones, unless implausibly far ahead (`Epoch::check_plausible`). Only for
/// frames from an active that proved it holds the token.
fn check_epoch(repl: &Replication, epoch: Epoch) -> Result<Epoch, ReplError> {
    let seen = repl.node.role().seen;
    if epoch < seen {
        return Err(ReplError::StaleEpoch { epoch, seen });
    }
    epoch
        .check_plausible(seen)
        .map_err(|detail| Violation::ImplausibleEpoch {
            peer: "the active".into(),
            detail,
        })?;
    Ok(repl.node.note_epoch(epoch)?)
}

/// The active's refusal, as the error that ends the session.
fn refused(r: proto_common::wire::Refusal) -> ReplError {
    ReplError::Refused {
        code: r.code,
        reason: r.reason,
    }
}

/// A frame the protocol does not allow here.
fn unexpected(expected: &'static str, got: &Frame) -> ReplError {
    Violation::UnexpectedFrame {
        expected,
        got: got.name(),
    }
    .into()
}

/// The next chunk of a snapshot, counted into `got`; `None` at its end,
/// which must come after exactly `size` bytes.
async fn snapshot_chunk(
    repl: &Replication,
    reader: &mut FramedRead<ReplRead, ReplCodec>,
    got: &mut u64,
    size: u64,
) -> Result<Option<bytes::Bytes>, ReplError> {
    match reader.next().await {
        Some(Ok(Envelope {
            epoch,
            frame: Frame::SnapshotChunk { data },
        })) => {
            check_epoch(repl, epoch)?;
            *got += data.len() as u64;
            if *got > size {
                return Err(Violation::SnapshotSize {
                    got: *got,
                    announced: size,
                }
                .into());
            }
            Ok(Some(data))
        }
        Some(Ok(Envelope {
            frame: Frame::SnapshotEnd,
            ..
        })) if *got == size => Ok(None),
        Some(Ok(Envelope {
            frame: Frame::SnapshotEnd,
            ..
        })) => Err(Violation::SnapshotSize {
            got: *got,
            announced: size,
        }
        .into()),
        Some(Ok(other)) => Err(unexpected(
            "a snapshot chunk or the snapshot's end",
            &other.frame,
        )),
        Some(Err(e)) => Err(ReplError::unreadable("frame in a snapshot", e)),
        None => Err(ReplError::Closed("closed in the middle of a snapshot")),
    }
}

/// Proxy mode: the active's checkpoint (`proxy/checkpoint.rs`) replaces
/// this replica's log up to `position`; its upstream is refilled from it
/// (or from the active's upstream) by the feed.
async fn install_checkpoint(
    repl: &Replication,
    reader: &mut FramedRead<ReplRead, ReplCodec>,
    position: Position,
    size: u64,
) -> Result<(), ReplError> {
    use crate::proxy::checkpoint;
    use tokio::io::AsyncWriteExt;
    let node = &repl.node;
    let core = node.proxy.as_ref().expect("proxy mode");
    let _only = node.snapshots.checkpoint.lock().await;
    let dir = node.data_dir().join("checkpoint");
    let io = |doing: &'static str| move |e| StorageError::io(doing, e);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(io("creating checkpoint/"))?;
    let tmp = dir.join("incoming.tmp");
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(io("creating the incoming checkpoint"))?;
    tracing::info!(position = %position, bytes = size, "receiving a checkpoint from the active");
    let started = std::time::Instant::now();
    let mut got = 0u64;
    while let Some(data) = snapshot_chunk(repl, reader, &mut got, size).await? {
        file.write_all(&data)
            .await
            .map_err(io("writing the incoming checkpoint"))?;
    }
    file.flush()
        .await
        .map_err(io("writing the incoming checkpoint"))?;
    drop(file);
    let (d, t) = (dir.clone(), tmp.clone());
    let cp = tokio::task::spawn_blocking(move || -> std::io::Result<checkpoint::Checkpoint> {
        let cp = checkpoint::read(&t)?;
        if cp.position != position {
            return Ok(cp);
        }
        std::fs::File::open(&t)?.sync_all()?;
        let path = d.join(checkpoint::file_name(position));
        std::fs::rename(&t, &path)?;
        crate::log::writer::sync_dir(&d)?;
        checkpoint::remove_older(&d, position)?;
        checkpoint::read(&path)
    })
    .await
    .map_err(|source| StorageError::TaskFailed {
        task: "checkpoint",
        source,
    })?
    .map_err(io("installing the checkpoint"))?;
    if cp.position != position {
        return Err(Violation::SnapshotPosition {
            announced: position,
            holds: cp.position,
        }
        .into());
    }
    core.machine.set_seed(cp.seed.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.log
        .send(LogRequest::Reset {
            base: position,
            history: cp.epochs.clone(),
            done: tx,
        })
        .map_err(|_| StorageError::LogStopped)?;
    rx.await
        .map_err(|_| StorageError::LogStopped)?
        .map_err(|e| StorageError::io("resetting the log", e))?;
    node.commit.reset(position);
    node.update_node_state(|s| s.commit_hint = s.commit_hint.max(position.index))?;
    node.metrics
        .snapshot_transfers
        .get_or_create(&vec![("direction".into(), "received".into())])
        .inc();
    tracing::info!(
        position = %position,
        replid = %cp.rdb.replid,
        offset = cp.rdb.offset,
        seconds = started.elapsed().as_secs_f64(),
        "checkpoint installed; the log continues after it"
    );
    Ok(())
}

async fn install_snapshot(
    repl: &Replication,
    reader: &mut FramedRead<ReplRead, ReplCodec>,
    position: Position,
    size: u64,
) -> Result<(), ReplError> {
    let node = &repl.node;
    if node.proxy.is_some() {
        return install_checkpoint(repl, reader, position, size).await;
    }
    let dir = node.data_dir().join("snapshots");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| StorageError::io(format!("creating {}", dir.display()), e))?;
    let tmp = dir.join("incoming.tmp");
    let incoming = Incoming::start(tmp.clone())
        .map_err(|e| StorageError::io(format!("creating {}", tmp.display()), e))?;
    tracing::info!(position = %position, bytes = size, "receiving a snapshot from the active");
    let started = std::time::Instant::now();
    let mut got = 0u64;
    while let Some(data) = snapshot_chunk(repl, reader, &mut got, size).await? {
        incoming.push(data).await?;
    }
    let received = started.elapsed().as_secs_f64();
    let (state, history) = incoming
        .finish()
        .await
        .map_err(|e| StorageError::io("receiving the snapshot", e))?;
    // Checked before the file is published under the announced position's
    // name: a restart would otherwise load a state that is not what the
    // name says.
    if state.applied() != position {
        return Err(Violation::SnapshotPosition {
            announced: position,
            holds: state.applied(),
        }
        .into());
    }
    tokio::task::spawn_blocking(move || snapshot::publish(&dir, &tmp, position))
        .await
        .map_err(|source| StorageError::TaskFailed {
            task: "snapshot",
            source,
        })?
        .map_err(|e| StorageError::io("installing the snapshot", e))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.log
        .send(LogRequest::Reset {
            base: position,
            history,
            done: tx,
        })
        .map_err(|_| StorageError::LogStopped)?;
    rx.await
        .map_err(|_| StorageError::LogStopped)?
        .map_err(|e| StorageError::io("resetting the log", e))?;
    node.replace_state(state);
    node.update_node_state(|s| s.commit_hint = s.commit_hint.max(position.index))?;
    node.metrics
        .snapshot_transfers
        .get_or_create(&vec![("direction".into(), "received".into())])
        .inc();
    let installed = started.elapsed().as_secs_f64();
    tracing::info!(
        position = %position,
        received_s = received,
        installed_s = installed,
        mb_per_s = size as f64 / installed / 1e6,
        "snapshot installed"
    );
    Ok(())
}
