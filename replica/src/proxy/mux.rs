//! One pipelined connection to the local upstream, shared by every client
//! session for reads.
//!
//! A read through a proxy costs four system calls (client in, upstream
//! out, upstream in, client out) where Redis alone needs two; on a busy
//! machine the upstream's half dominates. Sessions therefore hand their
//! reads to one task that writes whatever is waiting in one go and reads
//! the replies back in order: under load, many reads share each system
//! call on both sides (the same idea as a multiplexed Redis client). A
//! lone read costs one extra task wake-up.
//!
//! A job is written contiguously (a `MULTI … EXEC` block stays whole), and
//! preceded by a `SELECT` when its database differs from the connection's.

use std::collections::VecDeque;

use futures::{SinkExt, StreamExt};
use redis_protocol::resp2::types::BytesFrame;
use tokio::sync::{mpsc, oneshot};

use super::machine::UpstreamAddr;
use super::resp::command;
use super::upstream::{error_text, Conn, CALL_TIMEOUT};

/// Jobs waiting for the connection task before senders wait.
const QUEUE: usize = 4096;

/// A read for the upstream: frames to send in `db`, and where their
/// replies go (one per frame).
struct Job {
    db: u8,
    frames: Vec<BytesFrame>,
    reply: oneshot::Sender<Result<Vec<BytesFrame>, String>>,
}

/// Where the replies of a job written go, in order.
struct Expect {
    /// Replies to drop first (a `SELECT` put in front).
    skip: usize,
    count: usize,
    got: Vec<BytesFrame>,
    reply: oneshot::Sender<Result<Vec<BytesFrame>, String>>,
}

/// A handle to the shared connection.
#[derive(Clone)]
pub struct Mux {
    tx: mpsc::Sender<Job>,
}

impl Mux {
    /// Starts the connection task (it connects on first use, and again
    /// after a failure).
    pub fn start(upstream: UpstreamAddr) -> Mux {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(upstream, rx));
        Mux { tx }
    }

    /// Sends `frames` in database `db`; one reply per frame. The
    /// connection task gives up on an upstream silent for `CALL_TIMEOUT`,
    /// failing every job waiting (one timer for all, not one per call).
    pub async fn call(&self, db: u8, frames: Vec<BytesFrame>) -> Result<Vec<BytesFrame>, String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { db, frames, reply })
            .await
            .map_err(|_| "the upstream connection task stopped".to_string())?;
        rx.await
            .map_err(|_| "the upstream connection failed".to_string())?
    }
}

async fn run(upstream: UpstreamAddr, mut rx: mpsc::Receiver<Job>) {
    loop {
        // Wait for work before (re)connecting.
        let Some(first) = rx.recv().await else { return };
        let conn = match upstream.connect().await {
            Ok(c) => c,
            Err(e) => {
                let _ = first.reply.send(Err(e));
                continue;
            }
        };
        if let Err(e) = serve(conn, first, &mut rx).await {
            tracing::debug!(error = %e, "the shared upstream connection ended");
        }
    }
}

/// Serves jobs on one connection until it fails (or the sessions are gone).
async fn serve(conn: Conn, first: Job, rx: &mut mpsc::Receiver<Job>) -> Result<(), String> {
    let mut framed = conn.into_framed();
    let mut selected: u8 = 0;
    let mut waiting: VecDeque<Expect> = VecDeque::new();
    let mut next_job = Some(first);
    // Reset whenever a reply arrives: fires only if the upstream is silent
    // while replies are owed.
    let silence = tokio::time::sleep(CALL_TIMEOUT);
    tokio::pin!(silence);
    let result = loop {
        // Write every job already queued, then flush once.
        let idle = waiting.is_empty();
        let mut wrote = false;
        while let Some(job) = next_job.take().or_else(|| rx.try_recv().ok()) {
            let mut skip = 0;
            if job.db != selected {
                if let Err(e) = framed
                    .feed(command([
                        b"SELECT".to_vec(),
                        job.db.to_string().into_bytes(),
                    ]))
                    .await
                {
                    let _ = job.reply.send(Err(e.to_string()));
                    break;
                }
                selected = job.db;
                skip = 1;
            }
            let count = job.frames.len();
            let mut failed = None;
            for f in job.frames {
                if let Err(e) = framed.feed(f).await {
                    failed = Some(e.to_string());
                    break;
                }
            }
            if let Some(e) = failed {
                let _ = job.reply.send(Err(e.clone()));
                break;
            }
            waiting.push_back(Expect {
                skip,
                count,
                got: Vec::with_capacity(count),
                reply: job.reply,
            });
            wrote = true;
        }
        if wrote {
            if let Err(e) = SinkExt::<BytesFrame>::flush(&mut framed).await {
                break Err(e.to_string());
            }
            if idle {
                // Replies are owed from now on.
                silence
                    .as_mut()
                    .reset(tokio::time::Instant::now() + CALL_TIMEOUT);
            }
        }
        if waiting.is_empty() {
            match rx.recv().await {
                Some(job) => {
                    next_job = Some(job);
                    continue;
                }
                None => break Ok(()),
            }
        }
        tokio::select! {
            biased;
            frame = framed.next() => {
                let frame = match frame {
                    Some(Ok(f)) => f,
                    Some(Err(e)) => break Err(e.to_string()),
                    None => break Err("the upstream closed the connection".into()),
                };
                silence.as_mut().reset(tokio::time::Instant::now() + CALL_TIMEOUT);
                let head = waiting.front_mut().expect("a reply is awaited");
                if head.skip > 0 {
                    head.skip -= 1;
                    if let Some(e) = error_text(&frame) {
                        // The database cannot be selected: fail the job.
                        let head = waiting.pop_front().expect("head");
                        let _ = head.reply.send(Err(e.to_string()));
                        // Its own replies still come: drop them.
                        for _ in 0..head.count {
                            let _ = framed.next().await;
                        }
                    }
                    continue;
                }
                head.got.push(frame);
                if head.got.len() == head.count {
                    let done = waiting.pop_front().expect("head");
                    let _ = done.reply.send(Ok(done.got));
                }
            }
            job = rx.recv() => match job {
                Some(job) => next_job = Some(job),
                None => break Ok(()),
            },
            _ = &mut silence => {
                break Err(format!("the upstream did not answer within {CALL_TIMEOUT:?}"));
            }
        }
    };
    for e in waiting {
        let _ = e.reply.send(Err(match &result {
            Err(why) => why.clone(),
            Ok(()) => "shutting down".into(),
        }));
    }
    result
}
