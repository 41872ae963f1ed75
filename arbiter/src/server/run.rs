//! Running an arbiter: open the store, take office over its state, serve
//! the HTTP API and tick the core until shutdown.
//!
//! [`run`] takes its listener and shutdown signal from outside (like
//! mini-redis's `server::run`), so tests bind port 0 and stop it when they
//! like; [`run_with_store`] also takes the store, so tests can hand in a
//! `MemoryStore` and a future leader-election loop can hand in its own.

use std::future::Future;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::bootstrap;
use super::metrics::Metrics;
use super::routes::{self, App};
use super::shell::Shell;
use super::ticker;
use crate::clock::Clock;
use crate::config::{check_loopback_without_token, Settings};
use crate::core::Core;
use crate::store::StateStore;

/// Binds `settings.listen` and runs until `shutdown` resolves.
pub async fn serve(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let listener = TcpListener::bind(settings.listen).await.map_err(|e| {
        format!(
            "cannot listen on {}: {e}; is another arbiter running? pick another --listen",
            settings.listen
        )
    })?;
    run(listener, settings, shutdown).await
}

/// Opens the store named by `settings.store` and serves on `listener`
/// until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let store = settings.store.open().await?;
    run_with_store(listener, settings, store, shutdown).await
}

/// Serves on `listener` over `store` until `shutdown` resolves.
pub async fn run_with_store(
    listener: TcpListener,
    settings: Settings,
    store: Arc<dyn StateStore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listener's address: {e}"))?;
    if settings.token.is_none() {
        check_loopback_without_token(local)?;
        tracing::warn!(
            listen = %local,
            "no cluster token: heartbeats and operator calls are not authenticated (loopback only)"
        );
    }
    let leader_url = settings
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));
    let clock = Clock::start();
    let state = bootstrap::load_or_create(store.as_ref(), &settings, &clock).await?;
    let core = Core::take_office(state, clock.now(), clock.unix_ms());
    let shell = Shell::new(
        core,
        store.clone(),
        clock,
        Arc::new(Metrics::new()),
        leader_url.clone(),
    );
    tracing::info!(
        listen = %local,
        url = %leader_url,
        cluster = %settings.cluster,
        store = %store.describe(),
        "arbiter serving"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let ticker = tokio::spawn(ticker::run(shell.clone(), stop_rx));
    let app = App {
        shell,
        token: settings.token.clone(),
    };
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let result = axum::serve(listener, routes::router(app))
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new decisions, closing connections");
            let _ = stop_tx.send(true);
        })
        .await
        .map_err(|e| format!("the arbiter's HTTP server failed: {e}"));
    // Dropping the sender (if the server failed) also stops the ticker.
    if let Err(e) = ticker.await {
        tracing::error!(error = %e, "the tick loop panicked");
    }
    if result.is_ok() {
        tracing::info!("arbiter stopped");
    }
    result
}
