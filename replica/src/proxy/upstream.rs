//! Connections to a Redis-compatible server (the local upstream): an
//! administrative one (its checks at start, `REPLICAOF`, `INFO`; RESP2
//! frames from the `redis-protocol` codec, every call with a deadline),
//! and the plain ones of client sessions and the offset probe, over TCP
//! or the upstream's Unix socket.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use proto_common::tls::{self, MaybeTls, Tls};
use redis_protocol::codec::Resp2;
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

pub use super::error::UpstreamError;
use super::request::Request;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one call (or pipeline) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection.
pub struct Conn {
    framed: Framed<MaybeTls<TcpStream>, Resp2>,
    /// `host:port`, for messages.
    addr: String,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Conn({})", self.addr)
    }
}

impl Conn {
    /// Connects to `addr` (in TLS with `tls`: the active's RESP port) and
    /// authenticates with `password`, if given.
    pub async fn connect(
        addr: &str,
        password: Option<&str>,
        tls: Option<&Tls>,
    ) -> Result<Conn, UpstreamError> {
        let stream = tls::connect(addr, tls, CONNECT_TIMEOUT)
            .await
            .map_err(|why| UpstreamError::Connect {
                addr: addr.to_string(),
                why,
            })?;
        let mut conn = Conn {
            framed: Framed::new(stream, Resp2::default()),
            addr: addr.to_string(),
        };
        if let Some(pw) = password {
            let reply = conn
                .call([b"AUTH".to_vec(), pw.as_bytes().to_vec()])
                .await?;
            if let BytesFrame::Error(e) = reply {
                return Err(UpstreamError::Password {
                    addr: addr.to_string(),
                    reply: e.to_string(),
                });
            }
        }
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The framed stream, for a task that pipelines on its own.
    pub fn into_framed(self) -> Framed<MaybeTls<TcpStream>, Resp2> {
        self.framed
    }

    /// Sends one command and reads its reply.
    pub async fn call<I, B>(&mut self, args: I) -> Result<BytesFrame, UpstreamError>
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        let mut replies = self.pipeline(vec![command(args)]).await?;
        Ok(replies.pop().expect("one reply per command"))
    }

    /// Sends the commands at once and reads one reply each, in order.
    pub async fn pipeline(
        &mut self,
        commands: Vec<BytesFrame>,
    ) -> Result<Vec<BytesFrame>, UpstreamError> {
        let n = commands.len();
        let addr = self.addr.clone();
        let send = |e: redis_protocol::error::RedisProtocolError| UpstreamError::Send {
            addr: addr.clone(),
            why: e.to_string(),
        };
        tokio::time::timeout(CALL_TIMEOUT, async {
            for c in commands {
                self.framed.feed(c).await.map_err(send)?;
            }
            SinkExt::<BytesFrame>::flush(&mut self.framed)
                .await
                .map_err(send)?;
            let mut replies = Vec::with_capacity(n);
            for _ in 0..n {
                match self.framed.next().await {
                    Some(Ok(f)) => replies.push(f),
                    Some(Err(e)) => {
                        return Err(UpstreamError::Read {
                            addr: addr.clone(),
                            why: e.to_string(),
                        })
                    }
                    None => return Err(UpstreamError::Closed { addr: addr.clone() }),
                }
            }
            Ok(replies)
        })
        .await
        .map_err(|_| UpstreamError::Timeout {
            addr: addr.clone(),
            within: CALL_TIMEOUT,
        })?
    }
}

/// Where client sessions and the offset probe reach the upstream: its
/// TCP address, or its Unix socket on this host.
#[derive(Clone, Debug)]
pub enum SessionTarget {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for SessionTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionTarget::Tcp(addr) => f.write_str(addr),
            SessionTarget::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A plain connection to the upstream (a client session's own, or the
/// offset probe's), logged in with `password`.
pub async fn session_connection(
    target: &SessionTarget,
    password: Option<&str>,
) -> Result<SessionStream, UpstreamError> {
    let addr = target.to_string();
    let connect_error = |why: String| UpstreamError::Connect {
        addr: addr.clone(),
        why,
    };
    let connecting = async {
        match target {
            SessionTarget::Tcp(a) => TcpStream::connect(a).await.map(|s| {
                let _ = s.set_nodelay(true);
                SessionStream::Tcp(s)
            }),
            SessionTarget::Unix(p) => tokio::net::UnixStream::connect(p)
                .await
                .map(SessionStream::Unix),
        }
    };
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| connect_error(format!("connecting to {addr} timed out")))?
        .map_err(|e| connect_error(format!("cannot connect to {addr}: {e}")))?;
    if let Some(pw) = password {
        stream
            .write_all(&Request::new(["AUTH", pw]).raw)
            .await
            .map_err(|e| UpstreamError::Send {
                addr: addr.clone(),
                why: e.to_string(),
            })?;
        let mut answer = [0u8; 5];
        stream
            .read_exact(&mut answer)
            .await
            .map_err(|e| UpstreamError::Read {
                addr: addr.clone(),
                why: e.to_string(),
            })?;
        if &answer != b"+OK\r\n" {
            return Err(UpstreamError::Password {
                addr,
                reply: "AUTH was not answered OK".into(),
            });
        }
    }
    Ok(stream)
}

/// Why [`read_reply`] got no reply.
#[derive(Debug)]
pub enum ReplyError {
    Io(std::io::Error),
    Malformed(String),
    Closed,
}

/// Reads the next whole reply frame from `stream` (bytes already read are
/// in `buf`; what follows the frame stays there).
pub async fn read_reply(
    stream: &mut SessionStream,
    buf: &mut bytes::BytesMut,
) -> Result<bytes::BytesMut, ReplyError> {
    use super::frame::{scan, Scan};
    loop {
        match scan(buf, 1 << 20).map_err(|e| ReplyError::Malformed(e.to_string()))? {
            Scan::Complete(n) => return Ok(buf.split_to(n)),
            Scan::Incomplete => {
                if stream.read_buf(buf).await.map_err(ReplyError::Io)? == 0 {
                    return Err(ReplyError::Closed);
                }
            }
        }
    }
}

/// A session's connection to the upstream, over TCP or a Unix socket.
pub enum SessionStream {
    Tcp(TcpStream),
    Unix(tokio::net::UnixStream),
}

/// The halves of a [`SessionStream`], each owned by one task.
#[derive(Debug)]
pub enum SessionRead {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    Unix(tokio::net::unix::OwnedReadHalf),
}

pub enum SessionWrite {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Unix(tokio::net::unix::OwnedWriteHalf),
}

impl SessionStream {
    pub fn into_split(self) -> (SessionRead, SessionWrite) {
        match self {
            SessionStream::Tcp(s) => {
                let (r, w) = s.into_split();
                (SessionRead::Tcp(r), SessionWrite::Tcp(w))
            }
            SessionStream::Unix(s) => {
                let (r, w) = s.into_split();
                (SessionRead::Unix(r), SessionWrite::Unix(w))
            }
        }
    }
}

/// Delegates `AsyncRead` to the variant's stream.
macro_rules! delegate_read {
    ($t:ty) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

/// Delegates `AsyncWrite` to the variant's stream.
macro_rules! delegate_write {
    ($t:ty) => {
        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<std::io::Result<usize>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_flush(cx),
                    Self::Unix(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

delegate_read!(SessionStream);
delegate_read!(SessionRead);
delegate_write!(SessionStream);
delegate_write!(SessionWrite);

/// A command frame: an array of bulk strings.
pub fn command<I, B>(args: I) -> BytesFrame
where
    I: IntoIterator<Item = B>,
    B: Into<Bytes>,
{
    BytesFrame::Array(
        args.into_iter()
            .map(|a| BytesFrame::BulkString(a.into()))
            .collect(),
    )
}

/// A bulk or simple string reply as text; `None` for anything else.
pub fn text(frame: &BytesFrame) -> Option<String> {
    match frame {
        BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => {
            Some(String::from_utf8_lossy(b).into_owned())
        }
        _ => None,
    }
}

/// An error reply's text, if the frame is one.
pub fn error_text(frame: &BytesFrame) -> Option<&str> {
    match frame {
        BytesFrame::Error(e) => Some(e),
        _ => None,
    }
}

/// The value of `field` in an `INFO` reply (`field:value` lines).
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_are_found_by_name() {
        let info =
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_link_status:up\r\n";
        assert_eq!(info_field(info, "role").as_deref(), Some("master"));
        assert_eq!(info_field(info, "connected_slaves").as_deref(), Some("0"));
        assert_eq!(info_field(info, "master"), None);
    }
}
