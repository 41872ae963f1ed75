//! The shared lane (DESIGN.md, "Proxy mode": "stateless commands may share
//! a pipelined one"): sessions on the active that hold no connection state
//! send their requests over one upstream connection together. Redis then
//! reads many clients' commands in one read and answers them in one write,
//! where a connection per client costs it a read and a write each; and one
//! `ROLE` behind a round of batches covers every batch in it.
//!
//! A session submits a *batch*: its requests' bytes, how many replies they
//! get (in RESP2 with replies on, one each), and whether it wants a `ROLE`
//! behind them. The writer joins the batches waiting into a *round*, sends
//! it with one `ROLE` behind if any batch asked for one, and tells the
//! reader the round's shape; the reader hands each session its replies in
//! order, and the `ROLE`'s answer to each that asked. A session's second
//! batch waits for the next round, so its `ROLE` answer comes between its
//! two batches' replies, as the session expects.
//!
//! A session leaves the lane for a connection of its own before its first
//! command that needs one (`relay.rs`); the lane never sees `SELECT`,
//! `MULTI`, `CLIENT`, `HELLO`, blocking or admin commands. If the
//! connection fails, every session on it sees its replies end, as it would
//! had its own connection failed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frame;
use super::upstream::{SessionRead, SessionStream, SessionWrite};

/// Batches waiting for the writer before a session waits.
const QUEUE: usize = 1024;
/// A round's bytes, past which the batches still waiting go in the next.
const ROUND_BYTES: usize = 256 * 1024;
/// A session submits what it has buffered once it holds this many
/// requests (as a `BufWriter` writes out when full): its replies start
/// coming before a long pipeline is all read.
const BATCH_REQUESTS: usize = 256;
const ROLE: &[u8] = b"*1\r\n$4\r\nROLE\r\n";
/// How long replies read while idle may wait for their round (the writer
/// hands the round over before it writes, so at most a moment).
const ROUND_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// One connection shared by sessions.
pub struct Lane {
    batches: mpsc::Sender<Batch>,
    closed: CancellationToken,
}

/// A session's requests, in order.
struct Batch {
    bytes: Bytes,
    replies: usize,
    role: bool,
    to: mpsc::UnboundedSender<Bytes>,
}

/// What the reader must hand out for one round, in order.
struct Round {
    batches: Vec<(usize, bool, mpsc::UnboundedSender<Bytes>)>,
    role: bool,
}

impl Lane {
    /// Starts the lane's writer and reader on `stream`, a connection to the
    /// upstream already logged in; frames are read with `max_bulk`.
    pub fn start(stream: SessionStream, max_bulk: u64) -> Arc<Lane> {
        let (batches, rx) = mpsc::channel(QUEUE);
        let closed = CancellationToken::new();
        let (read, write) = stream.into_split();
        let (rounds, rounds_rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(rx, BufWriter::new(write), rounds, closed.clone()));
        tokio::spawn(reader(rounds_rx, read, max_bulk, closed.clone()));
        Arc::new(Lane { batches, closed })
    }

    /// Whether the connection still works (as far as is known).
    pub fn is_open(&self) -> bool {
        !self.closed.is_cancelled()
    }

    /// Closes the connection: every session on it sees its replies end.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// A session's end of the lane: what it writes, and where its replies
    /// come.
    pub fn join(self: &Arc<Self>) -> (LaneWrite, LaneRead) {
        let (to, rx) = mpsc::unbounded_channel();
        let write = LaneWrite {
            lane: self.clone(),
            buf: BytesMut::new(),
            replies: 0,
            role: false,
            to,
        };
        let read = LaneRead {
            rx,
            current: Bytes::new(),
            closed: Box::pin(self.closed.clone().cancelled_owned()),
        };
        (write, read)
    }
}

/// A session's requests on their way to the lane.
pub struct LaneWrite {
    lane: Arc<Lane>,
    buf: BytesMut,
    replies: usize,
    role: bool,
    to: mpsc::UnboundedSender<Bytes>,
}

/// The lane has closed.
#[derive(Debug)]
pub struct LaneClosed;

impl LaneWrite {
    /// Adds one request, which gets one reply.
    pub async fn send(&mut self, raw: &[u8]) -> Result<(), LaneClosed> {
        self.buf.extend_from_slice(raw);
        self.replies += 1;
        if self.replies >= BATCH_REQUESTS {
            self.flush().await?;
        }
        Ok(())
    }

    /// Asks for a `ROLE` behind what was added; its answer comes after
    /// their replies.
    pub fn role(&mut self) {
        self.role = true;
    }

    /// Hands what was added to the lane.
    pub async fn flush(&mut self) -> Result<(), LaneClosed> {
        if self.replies == 0 && !self.role {
            return Ok(());
        }
        let batch = Batch {
            bytes: self.buf.split().freeze(),
            replies: std::mem::take(&mut self.replies),
            role: std::mem::take(&mut self.role),
            to: self.to.clone(),
        };
        self.lane.batches.send(batch).await.map_err(|_| LaneClosed)
    }
}

/// A session's replies from the lane, as a byte stream; it ends when the
/// lane closes (after the replies handed out before).
pub struct LaneRead {
    rx: mpsc::UnboundedReceiver<Bytes>,
    current: Bytes,
    closed: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl AsyncRead for LaneRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        while this.current.is_empty() {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(b)) => this.current = b,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    return match this.closed.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    }
                }
            }
        }
        let n = this.current.len().min(buf.remaining());
        buf.put_slice(&this.current.split_to(n));
        Poll::Ready(Ok(()))
    }
}

/// Joins waiting batches into rounds and sends them.
async fn writer(
    mut batches: mpsc::Receiver<Batch>,
    mut up: BufWriter<SessionWrite>,
    rounds: mpsc::UnboundedSender<Round>,
    closed: CancellationToken,
) {
    let mut next: Option<Batch> = None;
    loop {
        let first = match next.take() {
            Some(b) => b,
            None => tokio::select! {
                _ = closed.cancelled() => break,
                b = batches.recv() => match b { Some(b) => b, None => break },
            },
        };
        let mut round = Round {
            batches: Vec::new(),
            role: false,
        };
        let add = |b: Batch, round: &mut Round| {
            round.role |= b.role;
            round.batches.push((b.replies, b.role, b.to));
            b.bytes
        };
        let mut out = vec![add(first, &mut round)];
        let mut bytes = out[0].len();
        while bytes < ROUND_BYTES {
            let Ok(b) = batches.try_recv() else { break };
            // A session's second batch goes in the next round, behind the
            // ROLE that answers its first.
            if round
                .batches
                .iter()
                .any(|(_, _, to)| to.same_channel(&b.to))
            {
                next = Some(b);
                break;
            }
            bytes += b.bytes.len();
            out.push(add(b, &mut round));
        }
        let role = round.role;
        if rounds.send(round).is_err() {
            break;
        }
        let sent = async {
            for b in &out {
                up.write_all(b).await?;
            }
            if role {
                up.write_all(ROLE).await?;
            }
            up.flush().await
        };
        let ok = tokio::select! {
            _ = closed.cancelled() => false,
            r = sent => r.is_ok(),
        };
        if !ok {
            break;
        }
    }
    closed.cancel();
    let _ = up.shutdown().await;
}

/// Reads the replies of each round and hands them out.
async fn reader(
    mut rounds: mpsc::UnboundedReceiver<Round>,
    mut up: SessionRead,
    max_bulk: u64,
    closed: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'rounds: loop {
        // Idle, the connection is still read: a close (`CLIENT KILL`, the
        // upstream's `timeout`, a restart) is noticed now, not by the next
        // session's first command.
        let round = tokio::select! {
            biased;
            _ = closed.cancelled() => break,
            r = rounds.recv() => match r { Some(r) => r, None => break },
            n = up.read_buf(&mut buf), if buf.is_empty() => match n {
                Ok(0) | Err(_) => break,
                // The replies of a round the writer sent after `rounds` was
                // looked at: it is on its way. (None comes, and the lane
                // closes, only after a reply nobody asked for.)
                Ok(_) => match tokio::time::timeout(ROUND_WAIT, rounds.recv()).await {
                    Ok(Some(r)) => r,
                    _ => break,
                },
            },
        };
        for (replies, _, to) in &round.batches {
            let mut left = *replies;
            while left > 0 {
                let Some((bytes, n)) =
                    next_frames(&mut up, &mut buf, left, max_bulk, &closed).await
                else {
                    break 'rounds;
                };
                left -= n;
                // A session that has gone drops its replies.
                let _ = to.send(bytes);
            }
        }
        if round.role {
            let Some((f, _)) = next_frames(&mut up, &mut buf, 1, max_bulk, &closed).await else {
                break 'rounds;
            };
            for (_, role, to) in &round.batches {
                if *role {
                    let _ = to.send(f.clone());
                }
            }
        }
    }
    // Every session on the lane sees its replies end.
    closed.cancel();
}

/// Up to `want` whole frames, as many as are read (at least one), and how
/// many: a session is handed its replies read together in one piece.
/// `None` once the connection or the lane fails.
async fn next_frames(
    up: &mut SessionRead,
    buf: &mut BytesMut,
    want: usize,
    max_bulk: u64,
    closed: &CancellationToken,
) -> Option<(Bytes, usize)> {
    loop {
        match frame::run(buf, want, max_bulk, |_| false) {
            Ok((0, _)) => {}
            Ok((n, end)) => return Some((buf.split_to(end).freeze(), n)),
            Err(_) => return None,
        }
        let read = tokio::select! {
            _ = closed.cancelled() => return None,
            r = up.read_buf(buf) => r,
        };
        match read {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}
