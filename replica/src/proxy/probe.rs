//! The offset probe (DESIGN.md, "Proxy mode"): which replication offset
//! covers a reply a session has received? Redis runs one command at a time,
//! so a `ROLE` sent *after* the reply arrived — on any connection — runs
//! after the command that produced it, and answers with a
//! `master_repl_offset` that covers the command's effects and everything it
//! could have seen. One connection of the probe's own sends such a `ROLE`
//! whenever a session asks, and one answer serves every session that asked
//! before it was sent: under load, one `ROLE` per round trip, not one per
//! command.
//!
//! A ticket is taken after the replies are in; the answer to a `ROLE` sent
//! after the ticket was taken is the offset for that ticket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Notify};

use super::upstream::{read_reply, session_connection, ReplyError, SessionStream, SessionTarget};

/// Why no offset could be read; every session waiting gets the same one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("the offset probe stopped")]
    Stopped,
    /// The upstream could not be reached (the message names it).
    #[error("{0}")]
    Unreachable(String),
    #[error("asking the upstream its offset: {0}")]
    Io(String),
    #[error("the upstream's ROLE: {0}")]
    Malformed(String),
    #[error("the upstream is not a master ({0})")]
    NotMaster(String),
    #[error("the upstream closed the probe's connection")]
    Closed,
    /// A script or function runs past `busy-reply-threshold`: `ROLE` is
    /// refused until it ends.
    #[error("the upstream is running a script (BUSY); its offset cannot be read until it ends")]
    Busy,
}

/// The latest answer: for every ticket up to `ticket`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    ticket: u64,
    offset: Result<u64, ProbeError>,
}

/// Offsets for sessions' replies.
pub struct Probe {
    /// The last ticket handed out.
    requested: AtomicU64,
    answered: watch::Sender<Answer>,
    wake: Notify,
}

impl Probe {
    /// Starts the probe's task on the current runtime, asking the upstream
    /// at `target` (logged in with `password`).
    pub fn start(target: SessionTarget, password: Option<String>) -> Arc<Probe> {
        let probe = Arc::new(Probe {
            requested: AtomicU64::new(0),
            answered: watch::channel(Answer {
                ticket: 0,
                offset: Ok(0),
            })
            .0,
            wake: Notify::new(),
        });
        tokio::spawn(probe.clone().run(target, password));
        probe
    }

    /// An offset covering every reply received before this call.
    pub async fn offset(&self) -> Result<u64, ProbeError> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake.notify_one();
        let mut answered = self.answered.subscribe();
        let answer = answered
            .wait_for(|a| a.ticket >= ticket)
            .await
            .map_err(|_| ProbeError::Stopped)?;
        answer.offset.clone()
    }

    async fn run(self: Arc<Self>, target: SessionTarget, password: Option<String>) {
        let mut conn = None;
        let mut buf = BytesMut::with_capacity(1024);
        let mut served = 0u64;
        loop {
            let wake = self.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            if self.requested.load(Ordering::SeqCst) <= served {
                wake.await;
                continue;
            }
            // Everything asked for so far is covered by a ROLE sent now.
            let ticket = self.requested.load(Ordering::SeqCst);
            let mut offset = match conn.as_mut() {
                Some(c) => role(c, &mut buf).await,
                None => Err(ProbeError::Closed),
            };
            // A connection kept from before (the upstream may have been
            // restarted since) that fails is opened anew once.
            if matches!(offset, Err(ProbeError::Closed | ProbeError::Io(_))) {
                buf.clear();
                offset = match session_connection(&target, password.as_deref()).await {
                    Ok(c) => role(conn.insert(c), &mut buf).await,
                    Err(e) => Err(ProbeError::Unreachable(e.to_string())),
                };
            }
            if offset.is_err() {
                conn = None;
                buf.clear();
            }
            served = ticket;
            self.answered.send_replace(Answer { ticket, offset });
        }
    }
}

/// Sends `ROLE` and reads a master's offset from the answer.
async fn role(conn: &mut SessionStream, buf: &mut BytesMut) -> Result<u64, ProbeError> {
    let io = |e: std::io::Error| ProbeError::Io(e.to_string());
    conn.write_all(b"*1\r\n$4\r\nROLE\r\n").await.map_err(io)?;
    let reply = read_reply(conn, buf).await.map_err(|e| match e {
        ReplyError::Io(e) => io(e),
        ReplyError::Malformed(why) => ProbeError::Malformed(why),
        ReplyError::Closed => ProbeError::Closed,
    })?;
    if reply.starts_with(b"-BUSY") {
        return Err(ProbeError::Busy);
    }
    role_offset(&reply).ok_or_else(|| {
        ProbeError::NotMaster(String::from_utf8_lossy(&reply[..reply.len().min(64)]).into_owned())
    })
}

/// The offset of a master's `ROLE` reply: `*3 $6 master :<offset> …`.
pub fn role_offset(reply: &[u8]) -> Option<u64> {
    let rest = reply.strip_prefix(b"*3\r\n$6\r\nmaster\r\n:")?;
    let end = rest.iter().position(|b| *b == b'\r')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masters_role_reply_gives_its_offset() {
        assert_eq!(
            role_offset(b"*3\r\n$6\r\nmaster\r\n:3129\r\n*0\r\n"),
            Some(3129)
        );
        assert_eq!(
            role_offset(
                b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:10\r\n"
            ),
            None
        );
    }
}
