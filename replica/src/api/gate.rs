//! The last line of the lease rule: no write acknowledgement leaves the
//! process after the lease has ended.
//!
//! The lease is checked when a write arrives, when it commits, and when its
//! handler answers (lease.rs); yet a process can be paused (SIGSTOP, a VM
//! stall) after the handler's check and before the answer's bytes reach the
//! socket, and resume long after its lease — and after another replica
//! became the active. So every client connection's socket is wrapped: a
//! handler that answers a write *arms* its connection's gate, and while
//! armed, every write to the socket checks the lease immediately before the
//! system call. A lapsed lease turns the answer into a broken connection;
//! the client sees an error (outcome unknown), never a late "200 OK". The
//! gate disarms once the answer is flushed.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use proto_common::tls::{Incoming, Side, Tls};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::lease::Lease;

/// One connection's gate.
#[derive(Debug)]
pub struct AckGate {
    /// Set while a write acknowledgement is on its way out.
    armed: AtomicBool,
    lease: Arc<Lease>,
}

impl AckGate {
    /// Guards the answer about to be written on this connection.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    fn check(&self) -> io::Result<()> {
        if self.armed.load(Ordering::SeqCst) && !self.lease.is_valid() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the lease ended before this write's acknowledgement was sent",
            ));
        }
        Ok(())
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
            self.gate.armed.store(false, Ordering::SeqCst);
        }
        done
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Wraps an accepted connection in a gate (under TLS, when TLS is on, so
/// every system call that writes is checked).
pub fn gated(tcp: TcpStream, lease: Arc<Lease>) -> GatedIo {
    let gate = Arc::new(AckGate {
        armed: AtomicBool::new(false),
        lease,
    });
    GatedIo { inner: tcp, gate }
}

/// The client API's listener: gated connections, in TLS when configured.
pub type GatedListener = Incoming<GatedIo>;

/// A listener for the client API on `listener`.
pub fn listener(
    listener: TcpListener,
    lease: Arc<Lease>,
    tls: Option<Arc<Tls>>,
) -> io::Result<GatedListener> {
    Incoming::new(listener, tls.map(|t| (t, Side::Clients)), move |tcp| {
        gated(tcp, lease.clone())
    })
}

impl Connected<IncomingStream<'_, GatedListener>> for ConnGate {
    fn connect_info(stream: IncomingStream<'_, GatedListener>) -> ConnGate {
        ConnGate {
            gate: stream.io().get_ref().gate.clone(),
            peer: *stream.remote_addr(),
        }
    }
}
