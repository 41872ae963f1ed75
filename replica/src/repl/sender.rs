//! The active's side of one standby connection: challenge, check the
//! standby's proof and epoch, plan (truncate / snapshot / stream), then
//! ship the log — first from disk, then live batches as the group-commit
//! thread writes them — while a companion task reads acknowledgements.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use proto_common::auth;
use proto_common::tls::MaybeTls;
use proto_common::wire::{Challenge, Envelope, Frame, Refusal, RefuseCode, ReplCodec, Welcome};
use proto_common::{Epoch, LogIndex, NodeId, Position};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::divergence::{self, LogShape};
use super::error::{ReplError, Violation};
use super::outbox::Outbox;
use super::snapshot_send::Outgoing;
use super::transport::{self, ReplRead, ReplWrite};
use super::Replication;
use crate::commit::Shipper;
use crate::log::ReadOutcome;
use crate::node::StorageError;
use proto_common::clock;

/// Bytes per catch-up read.
const CHUNK: usize = 4 << 20;
/// How long a standby may take to say hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

type Writer = FramedWrite<ReplWrite, ReplCodec>;
type Reader = FramedRead<ReplRead, ReplCodec>;

/// Serves one standby connection until it closes or the role ends.
pub async fn serve_standby(
    repl: Arc<Replication>,
    stream: MaybeTls<TcpStream>,
    peer: SocketAddr,
    scope: CancellationToken,
) {
    let span = tracing::info_span!("standby_conn", peer = %peer, standby = tracing::field::Empty);
    async move {
        let (rd, wr) = transport::split(stream);
        let codec = ReplCodec::new(repl.node.frame_limit());
        let reader = FramedRead::new(rd, codec.clone());
        let writer = FramedWrite::new(wr, codec);
        match session(&repl, reader, writer, &scope).await {
            Ok(()) => tracing::info!("standby connection ended"),
            Err(why) => tracing::warn!(reason = %why, code = why.code(),
                retryable = why.is_retryable(), "standby connection closed"),
        }
    }
    .instrument(span)
    .await
}

/// Tells the standby why it is refused (with the code of the error's
/// kind, see [`ReplError::refuse_code`]) and returns the error that ends
/// the session.
async fn refuse(writer: &mut Writer, epoch: Epoch, why: ReplError) -> ReplError {
    let code = why.refuse_code().unwrap_or(RefuseCode::Protocol);
    let _ = writer
        .send(Envelope {
            epoch,
            frame: Frame::Refuse(Refusal {
                code,
                reason: why.to_string(),
            }),
        })
        .await;
    why
}

async fn session(
    repl: &Arc<Replication>,
    mut reader: Reader,
    mut writer: Writer,
    scope: &CancellationToken,
) -> Result<(), ReplError> {
    let node = &repl.node;
    let settings = &node.settings;
    let role = node.role();
    let Some(epoch) = role.state.term().map(|t| t.epoch()) else {
        let why = ReplError::NotActive {
            node: settings.node_id.clone(),
            active_url: role.active_url().map(str::to_string),
        };
        return Err(refuse(&mut writer, role.seen, why).await);
    };
    let nonce = auth::new_nonce();
    send(
        &mut writer,
        epoch,
        Frame::Challenge(Challenge {
            cluster: settings.cluster.clone(),
            node_id: settings.node_id.clone(),
            nonce: hex::encode(nonce),
        }),
    )
    .await?;
    // Nothing in the hello is believed, its epoch least of all, before the
    // cluster, the proof and the node id are checked: an epoch from anyone
    // who can reach this port would otherwise depose the active.
    let (their_epoch, hello) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next()).await {
        Err(_) => {
            return Err(ReplError::Timeout {
                waiting_for: "hello",
                after: HANDSHAKE_TIMEOUT,
            })
        }
        Ok(None) => return Err(ReplError::Closed("closed before hello")),
        Ok(Some(Err(e))) => return Err(ReplError::unreadable("hello", e)),
        Ok(Some(Ok(Envelope {
            epoch: their_epoch,
            frame: Frame::Hello(h),
        }))) => (their_epoch, h),
        Ok(Some(Ok(other))) => {
            let why = Violation::UnexpectedFrame {
                expected: "hello",
                got: other.frame.name(),
            };
            return Err(refuse(&mut writer, epoch, why.into()).await);
        }
    };
    tracing::Span::current().record("standby", tracing::field::display(&hello.node_id));
    if hello.cluster != settings.cluster {
        let why = ReplError::WrongCluster {
            peer: format!("standby {}", hello.node_id),
            theirs: hello.cluster.clone(),
            ours: settings.cluster.clone(),
        };
        return Err(refuse(&mut writer, epoch, why).await);
    }
    let proof = hex::decode(&hello.proof).unwrap_or_default();
    let cluster = &settings.cluster;
    if !repl
        .token
        .verify("standby", &nonce, cluster, hello.node_id.as_str(), &proof)
    {
        let why = ReplError::BadProof {
            peer: format!("standby {}", hello.node_id),
        };
        return Err(refuse(&mut writer, epoch, why).await);
    }
    if hello.node_id == settings.node_id {
        return Err(refuse(&mut writer, epoch, Violation::OwnNodeId.into()).await);
    }
    if hello.position.epoch > their_epoch || hello.base > hello.position {
        let why = Violation::ImpossibleLog {
            standby: hello.node_id.clone(),
            epoch: their_epoch,
            base: hello.base,
            last: hello.position,
        };
        return Err(refuse(&mut writer, epoch, why.into()).await);
    }
    if their_epoch > epoch {
        // Authenticated, but an epoch absurdly far ahead is still a
        // corrupted or forged number, not news of another active.
        if let Err(detail) = their_epoch.check_plausible(node.role().seen) {
            let why = Violation::ImplausibleEpoch {
                peer: format!("standby {}", hello.node_id),
                detail,
            };
            return Err(refuse(&mut writer, epoch, why.into()).await);
        }
        let why = ReplError::Deposed {
            standby: hello.node_id.clone(),
            theirs: their_epoch,
            ours: epoch,
        };
        repl.deposed(their_epoch, &why.to_string()).await;
        return Err(refuse(&mut writer, epoch, why).await);
    }
    let their_nonce = hex::decode(&hello.nonce).unwrap_or_default();
    let our_proof = repl
        .token
        .proof("active", &their_nonce, cluster, settings.node_id.as_str());
    send(
        &mut writer,
        epoch,
        Frame::Welcome(Welcome {
            proof: hex::encode(our_proof),
            client_url: settings.advertise_url.clone(),
            upstream: settings
                .proxy
                .as_ref()
                .map(|p| p.advertise_upstream.clone()),
            resp: settings.proxy.as_ref().map(|p| p.advertise_resp.clone()),
        }),
    )
    .await?;

    let (base, last, epochs) = node.reader.shape();
    let ours = LogShape { base, last, epochs };
    let theirs = LogShape {
        base: hello.base,
        last: hello.position,
        epochs: hello.epochs.clone(),
    };
    let plan = divergence::plan(&ours, &theirs);
    let id = hello.node_id.clone();
    tracing::info!(
        position = %hello.position,
        truncate = ?plan.truncate.map(|p| p.to_string()),
        snapshot = plan.snapshot,
        from = %plan.from,
        "standby connected"
    );
    let prev = node
        .reader
        .position_of(plan.from.prev())
        .unwrap_or(Position::ZERO);
    let sock = writer.into_inner();
    let codec = ReplCodec::new(repl.node.frame_limit());
    let outbox = Outbox::new(
        sock,
        epoch,
        codec,
        repl.clone(),
        id.clone(),
        prev,
        plan.from,
    );
    if let Some(after) = plan.truncate {
        let mut st = outbox.lock();
        outbox.push(&mut st, Frame::Truncate { after })?;
    }
    repl.followers.connected(&id, plan.from);
    let conn = scope.child_token();
    let acks = tokio::spawn(read_acks(repl.clone(), id.clone(), reader, conn.clone()));
    let registered = Registered::new(repl, &outbox);
    let result = stream(repl, &outbox, &id, plan.snapshot, &conn).await;
    drop(registered);
    conn.cancel();
    let _ = acks.await;
    repl.followers.disconnected(&id);
    // If it was a sync standby, writes wait for it until the arbiter drops
    // it from the set: tell the arbiter now, not at the next heartbeat.
    repl.heartbeat_wake.notify_one();
    result
}

/// An outbox fed by the log's writer until this is dropped — also when the
/// session's future is dropped mid-way (the outbox holds the replication
/// state, and the writer must not keep framing for a closed connection).
struct Registered<'a> {
    repl: &'a Replication,
    outbox: &'a Outbox,
    shipper: Arc<dyn Shipper>,
}

impl<'a> Registered<'a> {
    fn new(repl: &'a Replication, outbox: &'a Arc<Outbox>) -> Registered<'a> {
        let shipper: Arc<dyn Shipper> = outbox.clone();
        repl.node.commit.add_shipper(shipper.clone());
        Registered {
            repl,
            outbox,
            shipper,
        }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.outbox.close();
        self.repl.node.commit.remove_shipper(&self.shipper);
    }
}

async fn send(writer: &mut Writer, epoch: Epoch, frame: Frame) -> Result<(), ReplError> {
    writer
        .send(Envelope { epoch, frame })
        .await
        .map_err(|e| ReplError::send("send", e))
}

/// Ships the log to one standby until the connection or the role ends:
/// from disk while behind, then live, fed by the log's writer (see
/// [`Outbox`]) while this task only sends commit frames and drains what
/// the socket did not take at once.
async fn stream(
    repl: &Arc<Replication>,
    outbox: &Outbox,
    id: &NodeId,
    snapshot_first: bool,
    conn: &CancellationToken,
) -> Result<(), ReplError> {
    let node = &repl.node;
    let mut commit_rx = node.commit.commit_index();
    if snapshot_first {
        send_snapshot(repl, outbox, id).await?;
    }
    loop {
        if conn.is_cancelled() {
            return Ok(());
        }
        // Catch up from disk until live. Only this task moves `next` while
        // not live, so reading outside the lock is safe.
        let (live, next, pending) = {
            let mut st = outbox.lock();
            let live = outbox.go_live_if_caught_up(&mut st, node.reader.last().index);
            (live, st.next, outbox.check(&st)?)
        };
        if !live {
            catch_up_chunk(repl, outbox, id, next).await?;
            outbox.drain_to(CHUNK).await?;
            continue;
        }
        tokio::select! {
            biased;
            _ = conn.cancelled() => return Ok(()),
            r = outbox.drain_to(0), if pending => r?,
            _ = outbox.woken() => {}
            changed = commit_rx.changed() => {
                if changed.is_err() {
                    return Err(StorageError::LogStopped.into());
                }
                let commit = *commit_rx.borrow_and_update();
                let mut st = outbox.lock();
                if commit > st.sent_commit && commit <= st.prev.index {
                    outbox.push(&mut st, Frame::Commit { commit })?;
                    st.sent_commit = commit;
                }
            }
        }
    }
}

/// Frames one chunk of the log from `next` on (or a snapshot, if
/// the log was compacted past `next`).
async fn catch_up_chunk(
    repl: &Arc<Replication>,
    outbox: &Outbox,
    id: &NodeId,
    next: LogIndex,
) -> Result<(), ReplError> {
    let read = repl
        .node
        .reader
        .read(next, CHUNK)
        .map_err(|source| StorageError::ReadLog {
            doing: "reading the log for a standby",
            source,
        })?;
    match read {
        ReadOutcome::Entries {
            bytes, first, last, ..
        } => {
            debug_assert_eq!(first.index, next);
            let commit = outbox.commit_now();
            let mut st = outbox.lock();
            let prev = st.prev;
            outbox.push(
                &mut st,
                Frame::Entries {
                    prev,
                    commit,
                    records: bytes.clone(),
                },
            )?;
            st.sent_commit = st.sent_commit.max(commit);
            st.prev = last;
            st.next = last.index.next();
            drop(st);
            repl.followers
                .shipped(id, last.index, bytes.len(), clock::now_nanos());
        }
        ReadOutcome::Compacted => {
            outbox.drain_to(0).await?;
            send_snapshot(repl, outbox, id).await?;
        }
        // Written meanwhile: the next round goes live.
        ReadOutcome::UpToDate => {}
    }
    Ok(())
}

/// Streams a snapshot of the applied state (see [`Outgoing`]); the stream
/// continues right after it.
async fn send_snapshot(
    repl: &Arc<Replication>,
    outbox: &Outbox,
    id: &NodeId,
) -> Result<(), ReplError> {
    if repl.node.proxy.is_some() {
        return send_checkpoint(repl, outbox, id).await;
    }
    // Keep the log after the snapshot from compaction: the snapshot holds at
    // least what is applied now.
    repl.followers
        .needs_from(id, repl.node.applied().index.next());
    let mut outgoing =
        Outgoing::start(&repl.node).map_err(|e| StorageError::io("starting a snapshot", e))?;
    let (position, size) = (outgoing.position, outgoing.size);
    tracing::info!(standby = %id, position = %position, bytes = size, "sending snapshot");
    let started = std::time::Instant::now();
    outbox.push(&mut outbox.lock(), Frame::SnapshotBegin { position, size })?;
    let mut sent = 0u64;
    while let Some(chunk) = outgoing.next().await {
        let data = chunk.map_err(|e| StorageError::io("encoding the snapshot", e))?;
        sent += data.len() as u64;
        outbox.push(&mut outbox.lock(), Frame::SnapshotChunk { data })?;
        outbox.drain_to(CHUNK).await?;
    }
    if sent != size {
        return Err(ReplError::SnapshotEncoded {
            sent,
            announced: size,
        });
    }
    {
        let mut st = outbox.lock();
        outbox.push(&mut st, Frame::SnapshotEnd)?;
        st.prev = position;
        st.next = position.index.next();
    }
    repl.followers.needs_from(id, position.index.next());
    outbox.drain_to(0).await?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        standby = %id,
        position = %position,
        seconds = secs,
        mb_per_s = size as f64 / secs / 1e6,
        "snapshot sent"
    );
    repl.node
        .metrics
        .snapshot_transfers
        .get_or_create(&vec![("direction".into(), "sent".into())])
        .inc();
    Ok(())
}

/// Proxy mode: streams the newest checkpoint (`proxy/checkpoint.rs`) as
/// the file it is; the stream continues right after the entry it covers.
async fn send_checkpoint(
    repl: &Arc<Replication>,
    outbox: &Outbox,
    id: &NodeId,
) -> Result<(), ReplError> {
    use tokio::io::AsyncReadExt;
    let dir = repl.node.data_dir().join("checkpoint");
    let cp = tokio::task::spawn_blocking(move || crate::proxy::checkpoint::newest(&dir))
        .await
        .map_err(|source| StorageError::TaskFailed {
            task: "checkpoint",
            source,
        })?
        .map_err(|e| StorageError::io("reading the newest checkpoint", e))?
        .ok_or(StorageError::Compacted {
            doing: "sending a checkpoint (none is kept)",
            index: repl.node.reader.base().index,
        })?;
    let position = cp.position;
    // Keep the log after it from compaction.
    repl.followers.needs_from(id, position.index.next());
    // Open before anything else: a newer checkpoint may delete this file,
    // which stays readable through the open handle.
    let mut file = tokio::fs::File::open(&cp.rdb.path)
        .await
        .map_err(|e| StorageError::io("opening the checkpoint", e))?;
    tracing::info!(standby = %id, position = %position, bytes = cp.file_len, "sending checkpoint");
    let size = cp.file_len;
    outbox.push(&mut outbox.lock(), Frame::SnapshotBegin { position, size })?;
    let mut left = size;
    while left > 0 {
        let mut buf = vec![0u8; (left as usize).min(CHUNK)];
        file.read_exact(&mut buf)
            .await
            .map_err(|e| StorageError::io("reading the checkpoint", e))?;
        left -= buf.len() as u64;
        outbox.push(
            &mut outbox.lock(),
            Frame::SnapshotChunk {
                data: bytes::Bytes::from(buf),
            },
        )?;
        outbox.drain_to(CHUNK).await?;
    }
    {
        let mut st = outbox.lock();
        outbox.push(&mut st, Frame::SnapshotEnd)?;
        st.prev = position;
        st.next = position.index.next();
    }
    outbox.drain_to(0).await?;
    tracing::info!(standby = %id, position = %position, "checkpoint sent");
    repl.node
        .metrics
        .snapshot_transfers
        .get_or_create(&vec![("direction".into(), "sent".into())])
        .inc();
    Ok(())
}

/// Reads acknowledgements until the connection ends. An ack counts only if
/// it names a position of *our* log (a standby may report its old,
/// divergent position before it has processed the truncation).
async fn read_acks(
    repl: Arc<Replication>,
    id: NodeId,
    mut reader: Reader,
    conn: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            _ = conn.cancelled() => return,
            n = reader.next() => n,
        };
        match next {
            Some(Ok(Envelope {
                frame: Frame::Ack { position },
                ..
            })) => {
                if repl.node.reader.position_of(position.index) == Some(position) {
                    repl.followers.acked(&id, position);
                    repl.node.commit.ack(&id, position);
                }
            }
            Some(Ok(other)) => {
                tracing::warn!(standby = %id, frame = other.frame.name(), "unexpected frame from standby; closing");
                conn.cancel();
                return;
            }
            Some(Err(e)) => {
                tracing::warn!(standby = %id, error = %e, "unreadable frame from standby; closing");
                conn.cancel();
                return;
            }
            None => {
                conn.cancel();
                return;
            }
        }
    }
}
