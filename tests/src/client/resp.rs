//! A minimal Redis (RESP2) client for proxy-mode tests: one connection,
//! sequential calls with a timeout, and raw bytes for malformed input.
//! Frames are decoded by the `redis-protocol` crate.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use redis_protocol::codec::Resp2;
pub use redis_protocol::resp2::types::BytesFrame as Frame;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Bound on one call.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One connection to a Redis-speaking server.
pub struct RespClient {
    framed: Framed<TcpStream, Resp2>,
}

impl RespClient {
    pub async fn connect(addr: &str) -> Result<RespClient, String> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(RespClient {
            framed: Framed::new(stream, Resp2::default()),
        })
    }

    /// Sends one command (arguments as text) and reads its reply.
    pub async fn call<S: AsRef<[u8]>>(&mut self, args: &[S]) -> Result<Frame, String> {
        let frame = Frame::Array(
            args.iter()
                .map(|a| Frame::BulkString(Bytes::copy_from_slice(a.as_ref())))
                .collect(),
        );
        tokio::time::timeout(TIMEOUT, async {
            self.framed.send(frame).await.map_err(|e| e.to_string())?;
            self.read().await
        })
        .await
        .map_err(|_| "no reply within 10 s".to_string())?
    }

    /// Reads one reply.
    pub async fn read(&mut self) -> Result<Frame, String> {
        match self.framed.next().await {
            Some(Ok(f)) => Ok(f),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("the server closed the connection".into()),
        }
    }

    /// Writes bytes as they are (malformed requests).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.framed
            .get_mut()
            .write_all(bytes)
            .await
            .map_err(|e| e.to_string())
    }
}

/// A reply as text for assertions: `OK`, `"value"`, `(nil)`, `42`,
/// `ERR …`, `[a, b]`.
pub fn show(frame: &Frame) -> String {
    match frame {
        Frame::SimpleString(s) => String::from_utf8_lossy(s).into_owned(),
        Frame::BulkString(b) => format!("{:?}", String::from_utf8_lossy(b)),
        Frame::Error(e) => format!("-{e}"),
        Frame::Integer(i) => i.to_string(),
        Frame::Null => "(nil)".into(),
        Frame::Array(items) => format!(
            "[{}]",
            items.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
    }
}
