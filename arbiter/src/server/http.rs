//! The arbiter's HTTP server: the URL it advertises, and serving the API on
//! a listener until shutdown. Used by both ways of running (`run.rs`: one
//! arbiter on a file store; `elected.rs`: arbiters electing a leader).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use proto_common::tls::{Incoming, Peer, Side, Tls};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::routes::{self, App};
use crate::config::{check_loopback_without_token, Settings};

/// The URL this arbiter tells replicas and operators, checking first that
/// an arbiter without a token listens on loopback only.
pub(super) fn advertised_url(
    listener: &TcpListener,
    settings: &Settings,
) -> Result<String, String> {
    let local: SocketAddr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listener's address: {e}"))?;
    if settings.token.is_none() {
        check_loopback_without_token(local)?;
        tracing::warn!(
            listen = %local,
            "no cluster token: heartbeats and operator calls are not authenticated (loopback only)"
        );
    }
    Ok(settings
        .advertise_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_string())
        .unwrap_or_else(|| {
            let scheme = if settings.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{local}")
        }))
}

/// Serves the API on `listener` until `shutdown` resolves, then signals
/// `stop` (also if the server fails, so the leadership loop never waits on
/// a server that is gone).
pub(super) async fn serve_http(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stop: watch::Sender<bool>,
) -> Result<(), String> {
    let stop = Arc::new(stop);
    let on_shutdown = stop.clone();
    if let Some(tls) = &tls {
        let mut stopped = stop.subscribe();
        tls.clone().watch(async move {
            let _ = stopped.wait_for(|s| *s).await;
        });
    }
    let listener = Incoming::new(listener, tls.map(|t| (t, Side::Peers)), |tcp| tcp)
        .map_err(|e| format!("the arbiter's listener: {e}"))?;
    let service = routes::router(app).into_make_service_with_connect_info::<Peer>();
    let result = axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new decisions, closing connections");
            on_shutdown.send_replace(true);
        })
        .await
        .map_err(|e| format!("the arbiter's HTTP server failed: {e}"));
    stop.send_replace(true);
    result
}
