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
use axum::serve::{IncomingStream, Listener};
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

/// The gate as handlers see it (axum connect info).
#[derive(Clone, Debug)]
pub struct ConnGate(pub Arc<AckGate>);

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

/// The client API's listener: every accepted connection gets a gate.
pub struct GatedListener {
    inner: TcpListener,
    lease: Arc<Lease>,
}

impl GatedListener {
    pub fn new(inner: TcpListener, lease: Arc<Lease>) -> GatedListener {
        GatedListener { inner, lease }
    }
}

impl Listener for GatedListener {
    type Io = GatedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GatedIo, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((tcp, addr)) => {
                    let _ = tcp.set_nodelay(true);
                    let gate = Arc::new(AckGate {
                        armed: AtomicBool::new(false),
                        lease: self.lease.clone(),
                    });
                    return (GatedIo { inner: tcp, gate }, addr);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning.
                    tracing::warn!(error = %e, "accepting a client connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Connected<IncomingStream<'_, GatedListener>> for ConnGate {
    fn connect_info(stream: IncomingStream<'_, GatedListener>) -> ConnGate {
        ConnGate(stream.io().gate.clone())
    }
}
