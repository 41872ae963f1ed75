//! The RESP listener.

use std::sync::Arc;

use proto_common::cpus;
use proto_common::tls::{log_handshake_failure, MaybeTls, Side};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::core::ProxyCore;
pub use super::error::RespThreadError;
use super::relay::Client;
use crate::node::Node;

/// Serves Redis clients on a thread of its own with a single-threaded
/// runtime: every session and its upstream connection wake each other on
/// one thread, with no cross-thread wake-ups on the path of each command.
///
/// The thread is pinned to `resp_cpus` first, if set; a pin that fails is
/// an error, not a silent fallback. A read through the proxy passes three
/// busy threads: the client's, this one and the upstream's main thread.
/// Where the kernel puts them matters more than anything in this code: on
/// two cores, with this thread and the upstream on one CPU and the client
/// on the other, the upstream's half of a read wakes a thread on the same
/// CPU; left to the scheduler, the three move around as their loads shift
/// and that half often wakes the other CPU (BENCHMARKS.md, "Proxy mode",
/// has the measurements). Redis pins its main thread with
/// `server_cpulist`; `resp_cpus` does the same for this thread, so the two
/// can share a CPU.
pub fn spawn_on_own_thread(
    core: Arc<ProxyCore>,
    node: Arc<Node>,
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(), RespThreadError> {
    let listener = listener.into_std().map_err(RespThreadError::Listener)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RespThreadError::Runtime)?;
    let cpus = core.settings.resp_cpus.clone();
    let (pinned_tx, pinned) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("resp".into())
        .spawn(move || {
            let pinned = cpus.as_deref().map_or(Ok(()), cpus::pin_current_thread);
            let ok = pinned.is_ok();
            let _ = pinned_tx.send(pinned);
            if !ok {
                return;
            }
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => serve(core, node, l, stop).await,
                    Err(e) => tracing::error!(error = %e, "cannot serve Redis clients"),
                }
            })
        })
        .map_err(RespThreadError::Thread)?;
    pinned
        .recv()
        .map_err(|_| RespThreadError::Ended)?
        .map_err(RespThreadError::Pin)
}

/// Accepts Redis clients until `stop`. Each session ends with the role it
/// started in (`ProxyCore::session_scope`).
pub async fn serve(
    core: Arc<ProxyCore>,
    node: Arc<Node>,
    listener: TcpListener,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let client = Client::new(core.clone(), node.clone(), peer);
                let scope = core.session_scope();
                let stop = stop.clone();
                let tls = node.settings.tls.clone();
                tokio::spawn(async move {
                    let stream = match tls {
                        None => MaybeTls::Plain(stream),
                        Some(tls) => match tls.accept(stream, Side::Clients).await {
                            Ok(s) => s,
                            Err(e) => return log_handshake_failure(peer, &e),
                        },
                    };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = client.serve(stream, scope) => {}
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "accepting a Redis client failed"),
        }
    }
}
