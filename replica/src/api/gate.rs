//! The last line of the lease rule: no write acknowledgement leaves the
//! process after the lease has ended.
//!
//! A write's guard (`role::ActiveGuard`) is checked when the write arrives
//! and again once it is committed; yet a process can be paused (SIGSTOP, a
//! VM stall) after that check and before the answer's bytes reach the
//! socket, and resume long after its lease — and after another replica
//! became the active. So every client connection's socket is wrapped: a
//! handler that answers a write *arms* its connection's gate with the
//! write's guard, and while armed, every write to the socket checks the
//! guard immediately before the system call. A lapsed lease turns the
//! answer into a broken connection; the client sees an error (outcome
//! unknown), never a late "200 OK". The gate disarms once the answer is
//! flushed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use parking_lot::Mutex;
use proto_common::tls::{Incoming, Side, Tls};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::role::ActiveGuard;

/// One connection's gate.
#[derive(Debug, Default)]
pub struct AckGate {
    /// The guard of the write acknowledgement on its way out, if one is.
    armed: Mutex<Option<ActiveGuard>>,
}

impl AckGate {
    /// Guards the answer about to be written on this connection.
    pub fn arm(&self, guard: &ActiveGuard) {
        *self.armed.lock() = Some(guard.clone());
    }

    fn check(&self) -> io::Result<()> {
        match &*self.armed.lock() {
            Some(guard) if guard.check_committed().is_err() => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the lease ended before this write's acknowledgement was sent",
            )),
            _ => Ok(()),
        }
    }

    fn disarm(&self) {
        *self.armed.lock() = None;
    }
}

/// The gate as handlers see it (axum connect info), and who is at the
/// other end.
#[derive(Clone, Debug)]
pub struct ConnGate {
    pub gate: Arc<AckGate>,
    pub peer: SocketAddr,
}

/// A client connection whose writes pass through its gate.
pub struct GatedIo {
    inner: TcpStream,
    gate: Arc<AckGate>,
}

impl AsyncRead for GatedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.gate.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.gate.check()?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let done = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(done, Poll::Ready(Ok(()))) {
            self.gate.disarm();
        }
        done
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Wraps an accepted connection in a gate (under TLS, when TLS is on, so
/// every system call that writes is checked).
pub fn gated(tcp: TcpStream) -> GatedIo {
    GatedIo {
        inner: tcp,
        gate: Arc::new(AckGate::default()),
    }
}

/// The client API's listener: gated connections, in TLS when configured.
pub type GatedListener = Incoming<GatedIo>;

/// A listener for the client API on `listener`.
pub fn listener(listener: TcpListener, tls: Option<Arc<Tls>>) -> io::Result<GatedListener> {
    Incoming::new(listener, tls.map(|t| (t, Side::Clients)), gated)
}

impl Connected<IncomingStream<'_, GatedListener>> for ConnGate {
    fn connect_info(stream: IncomingStream<'_, GatedListener>) -> ConnGate {
        ConnGate {
            gate: stream.io().get_ref().gate.clone(),
            peer: *stream.remote_addr(),
        }
    }
}
