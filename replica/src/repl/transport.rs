//! The two halves of a replication connection, in clear or in TLS.
//!
//! A clear connection splits into the socket's own halves, so the log's
//! writer can put a batch on the wire itself with a non-blocking write
//! (see [`super::outbox`]). A TLS connection's halves share one TLS
//! session; its write half is driven by a task.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use proto_common::tls::MaybeTls;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// The reading half.
pub enum ReplRead {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<MaybeTls<TcpStream>>),
}

/// The writing half.
pub enum ReplWrite {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<MaybeTls<TcpStream>>),
}

/// Splits a connection into its halves.
pub fn split(stream: MaybeTls<TcpStream>) -> (ReplRead, ReplWrite) {
    match stream {
        MaybeTls::Plain(tcp) => {
            let (r, w) = tcp.into_split();
            (ReplRead::Plain(r), ReplWrite::Plain(w))
        }
        tls => {
            let (r, w) = tokio::io::split(tls);
            (ReplRead::Tls(r), ReplWrite::Tls(w))
        }
    }
}

impl AsyncRead for ReplRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReplRead::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ReplRead::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ReplWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ReplWrite::Plain(w) => Pin::new(w).poll_write(cx, buf),
            ReplWrite::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReplWrite::Plain(w) => Pin::new(w).poll_flush(cx),
            ReplWrite::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReplWrite::Plain(w) => Pin::new(w).poll_shutdown(cx),
            ReplWrite::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}
