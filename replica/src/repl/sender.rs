//! The active's side of one standby connection: challenge, check the
//! standby's proof and epoch, plan (truncate / snapshot / stream), then
//! ship the log — first from disk, then live batches as the group-commit
//! thread writes them — while a companion task reads acknowledgements.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use proto_common::auth;
use proto_common::wire::{Challenge, Envelope, Frame, Refusal, RefuseCode, ReplCodec, Welcome};
use proto_common::{Epoch, LogIndex, NodeId, Position};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::divergence::{self, LogShape};
use super::Replication;
use crate::log::ReadOutcome;
use crate::snapshot;
use proto_common::clock;

/// Bytes per catch-up read and per snapshot chunk.
const CHUNK: usize = 4 << 20;
/// How long a standby may take to say hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

type Writer = FramedWrite<OwnedWriteHalf, ReplCodec>;
type Reader = FramedRead<OwnedReadHalf, ReplCodec>;

/// Serves one standby connection until it closes or the role ends.
pub async fn serve_standby(
    repl: Arc<Replication>,
    stream: TcpStream,
    peer: SocketAddr,
    scope: CancellationToken,
) {
    let span = tracing::info_span!("standby_conn", peer = %peer, standby = tracing::field::Empty);
    async move {
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let codec = ReplCodec::new(repl.node.settings.max_frame_bytes);
        let reader = FramedRead::new(rd, codec.clone());
        let mut writer = FramedWrite::new(wr, codec);
        match session(&repl, reader, &mut writer, &scope).await {
            Ok(()) => tracing::info!("standby connection ended"),
            Err(why) => tracing::warn!(reason = %why, "standby connection closed"),
        }
    }
    .instrument(span)
    .await
}

async fn refuse(writer: &mut Writer, epoch: Epoch, code: RefuseCode, reason: String) -> String {
    let _ = writer
        .send(Envelope {
            epoch,
            frame: Frame::Refuse(Refusal {
                code,
                reason: reason.clone(),
            }),
        })
        .await;
    reason
}

async fn session(
    repl: &Arc<Replication>,
    mut reader: Reader,
    writer: &mut Writer,
    scope: &CancellationToken,
) -> Result<(), String> {
    let node = &repl.node;
    let settings = &node.settings;
    let role = node.role();
    let Some(epoch) = role.write_epoch else {
        let hint = role
            .active_url
            .map(|u| format!("; the active is at {u}"))
            .unwrap_or_default();
        let why = format!("{} is not the active{hint}", settings.node_id);
        return Err(refuse(writer, role.epoch, RefuseCode::NotActive, why).await);
    };
    let nonce = auth::new_nonce();
    send(
        writer,
        epoch,
        Frame::Challenge(Challenge {
            cluster: settings.cluster.clone(),
            node_id: settings.node_id.clone(),
            nonce: hex::encode(nonce),
        }),
    )
    .await?;
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next()).await {
        Err(_) => return Err("no hello within 5 s".into()),
        Ok(None) => return Err("closed before hello".into()),
        Ok(Some(Err(e))) => return Err(format!("unreadable hello: {e}")),
        Ok(Some(Ok(Envelope {
            epoch: their_epoch,
            frame: Frame::Hello(h),
        }))) => {
            if their_epoch > epoch {
                let why = format!(
                    "standby {} has seen epoch {their_epoch}, newer than ours ({epoch}): \
                     another replica is active; stepping down",
                    h.node_id
                );
                repl.deposed(their_epoch, &why).await;
                return Err(refuse(writer, epoch, RefuseCode::StaleEpoch, why).await);
            }
            h
        }
        Ok(Some(Ok(other))) => {
            let why = format!("expected hello, got {}", other.frame.name());
            return Err(refuse(writer, epoch, RefuseCode::Protocol, why).await);
        }
    };
    tracing::Span::current().record("standby", tracing::field::display(&hello.node_id));
    if hello.cluster != settings.cluster {
        let why = format!(
            "standby {} belongs to cluster {:?}, this is {:?}",
            hello.node_id, hello.cluster, settings.cluster
        );
        return Err(refuse(writer, epoch, RefuseCode::WrongCluster, why).await);
    }
    let proof = hex::decode(&hello.proof).unwrap_or_default();
    let cluster = &settings.cluster;
    if !repl
        .token
        .verify("standby", &nonce, cluster, hello.node_id.as_str(), &proof)
    {
        let why = format!(
            "standby {} did not prove it holds the cluster token (wrong token?)",
            hello.node_id
        );
        return Err(refuse(writer, epoch, RefuseCode::BadProof, why).await);
    }
    if hello.node_id == settings.node_id {
        let why = "a standby uses this active's own node id".to_string();
        return Err(refuse(writer, epoch, RefuseCode::Protocol, why).await);
    }
    let their_nonce = hex::decode(&hello.nonce).unwrap_or_default();
    let our_proof = repl
        .token
        .proof("active", &their_nonce, cluster, settings.node_id.as_str());
    send(
        writer,
        epoch,
        Frame::Welcome(Welcome {
            proof: hex::encode(our_proof),
            client_url: settings.advertise_url.clone(),
        }),
    )
    .await?;

    // Subscribe before looking at the log, so no batch falls between the
    // disk catch-up and the live stream.
    let mut written = node.commit.written();
    let mut commit_rx = node.commit.commit_index();
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
    if let Some(after) = plan.truncate {
        send(writer, epoch, Frame::Truncate { after }).await?;
    }
    repl.followers.connected(&id, plan.from);
    let conn = scope.child_token();
    let acks = tokio::spawn(read_acks(repl.clone(), id.clone(), reader, conn.clone()));
    let live = Live {
        written: &mut written,
        commit: &mut commit_rx,
    };
    let result = stream(repl, writer, epoch, &id, plan, live, &conn).await;
    conn.cancel();
    let _ = acks.await;
    repl.followers.disconnected(&id);
    result
}

async fn send(writer: &mut Writer, epoch: Epoch, frame: Frame) -> Result<(), String> {
    writer
        .send(Envelope { epoch, frame })
        .await
        .map_err(|e| format!("send failed: {e}"))
}

async fn feed(writer: &mut Writer, epoch: Epoch, frame: Frame) -> Result<(), String> {
    writer
        .feed(Envelope { epoch, frame })
        .await
        .map_err(|e| format!("send failed: {e}"))
}

/// The live feeds a sender follows.
struct Live<'a> {
    written: &'a mut tokio::sync::broadcast::Receiver<Arc<crate::commit::WrittenBatch>>,
    commit: &'a mut tokio::sync::watch::Receiver<LogIndex>,
}

/// Ships the log to one standby until the connection or the role ends.
async fn stream(
    repl: &Arc<Replication>,
    writer: &mut Writer,
    epoch: Epoch,
    id: &NodeId,
    plan: divergence::Plan,
    live: Live<'_>,
    conn: &CancellationToken,
) -> Result<(), String> {
    let node = &repl.node;
    let mut next = plan.from;
    let mut prev = node
        .reader
        .position_of(next.prev())
        .unwrap_or(Position::ZERO);
    if plan.snapshot {
        prev = send_snapshot(repl, writer, epoch, id).await?;
        next = prev.index.next();
        repl.followers.needs_from(id, next);
    }
    let mut sent_commit = LogIndex::ZERO;
    loop {
        // Catch up from disk while behind what has been written.
        while next <= node.reader.last().index {
            if conn.is_cancelled() {
                return Ok(());
            }
            match node
                .reader
                .read(next, CHUNK)
                .map_err(|e| format!("reading the log: {e}"))?
            {
                ReadOutcome::Entries {
                    bytes, first, last, ..
                } => {
                    debug_assert_eq!(first.index, next);
                    let commit = *live.commit.borrow();
                    let size = bytes.len();
                    feed(
                        writer,
                        epoch,
                        Frame::Entries {
                            prev,
                            commit,
                            records: bytes,
                        },
                    )
                    .await?;
                    repl.followers
                        .shipped(id, last.index, size, clock::now_nanos());
                    sent_commit = commit;
                    prev = last;
                    next = last.index.next();
                }
                ReadOutcome::Compacted => {
                    writer
                        .flush()
                        .await
                        .map_err(|e| format!("send failed: {e}"))?;
                    prev = send_snapshot(repl, writer, epoch, id).await?;
                    next = prev.index.next();
                }
                ReadOutcome::UpToDate => break,
            }
        }
        writer
            .flush()
            .await
            .map_err(|e| format!("send failed: {e}"))?;
        tokio::select! {
            biased;
            _ = conn.cancelled() => return Ok(()),
            batch = live.written.recv() => match batch {
                Ok(b) if b.last.index < next => {}
                Ok(b) if b.first.index == next => {
                    let commit = *live.commit.borrow();
                    let frame = Frame::Entries { prev, commit, records: b.bytes.clone() };
                    send(writer, epoch, frame).await?;
                    repl.followers.shipped(id, b.last.index, b.bytes.len(), b.written_at);
                    sent_commit = commit;
                    prev = b.last;
                    next = b.last.index.next();
                }
                // A gap (we lagged, or a batch straddles what the disk read
                // covered): the catch-up loop reads the rest from disk.
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return Err("the log closed".into()),
            },
            changed = live.commit.changed() => {
                if changed.is_err() {
                    return Err("the log closed".into());
                }
                let commit = *live.commit.borrow_and_update();
                if commit > sent_commit && commit <= prev.index {
                    send(writer, epoch, Frame::Commit { commit }).await?;
                    sent_commit = commit;
                }
            }
        }
    }
}

/// Streams the latest snapshot file; returns its position.
async fn send_snapshot(
    repl: &Arc<Replication>,
    writer: &mut Writer,
    epoch: Epoch,
    id: &NodeId,
) -> Result<Position, String> {
    let dir = repl.node.data_dir().join("snapshots");
    let snaps = snapshot::list(&dir).map_err(|e| format!("listing snapshots: {e}"))?;
    let Some((position, path)) = snaps.last().cloned() else {
        return Err("the log is compacted but no snapshot exists".into());
    };
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| format!("reading {}: {e}", path.display()))?
        .len();
    tracing::info!(standby = %id, position = %position, bytes = size, "sending snapshot");
    let started = std::time::Instant::now();
    feed(writer, epoch, Frame::SnapshotBegin { position, size }).await?;
    let mut left = size;
    while left > 0 {
        let mut buf = vec![0u8; (left as usize).min(CHUNK)];
        file.read_exact(&mut buf)
            .await
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        left -= buf.len() as u64;
        feed(writer, epoch, Frame::SnapshotChunk { data: buf.into() }).await?;
    }
    send(writer, epoch, Frame::SnapshotEnd).await?;
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
    Ok(position)
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
