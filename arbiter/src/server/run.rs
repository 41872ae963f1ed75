//! Running an arbiter: serve the HTTP API and, for as long as this process
//! leads, decide for the cluster.
//!
//! - `file:` store: one arbiter, leading for its whole life (one unbounded
//!   term, [`run_with_store`]); the state is loaded before serving, so a
//!   corrupt or locked store fails the start.
//! - `etcd://` store: the HTTP API serves at once (as a follower) while the
//!   arbiter campaigns; each won term is served by `tenure` (`elected`).
//!
//! [`run`] takes its listener and shutdown signal from outside (like
//! mini-redis's `server::run`), so tests bind port 0 and stop it when they
//! like; [`run_with_store`] also takes the store, so tests can hand in a
//! `MemoryStore`.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::elected;
use super::http::{advertised_url, serve_http};
use super::metrics::Metrics;
use super::office::Office;
use super::routes::App;
use super::tenure::Seat;
use crate::clock::Clock;
use crate::config::Settings;
use crate::election::Term;
use crate::store::{StateStore, StoreSpec};

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
    match &settings.store {
        StoreSpec::Etcd { endpoints, .. } => {
            let endpoints = endpoints.clone();
            elected::run(listener, settings, &endpoints, shutdown).await
        }
        StoreSpec::File(_) => {
            let store = settings.store.open(&settings.cluster, None).await?;
            run_with_store(listener, settings, store, shutdown).await
        }
    }
}

/// Serves on `listener` over `store` as its only arbiter until `shutdown`
/// resolves.
pub async fn run_with_store(
    listener: TcpListener,
    settings: Settings,
    store: Arc<dyn StateStore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let url = advertised_url(&listener, &settings)?;
    let clock = Clock::start();
    let term = Term::unbounded(clock);
    let metrics = Arc::new(Metrics::new());
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let seat = Seat::new(settings, clock, metrics.clone(), url, Office::Closed);
    let state = seat.load(&term, store.as_ref(), &mut stop_rx).await?;
    let shell = seat.take_office(&term, store.clone(), state);
    tracing::info!(
        url = %seat.url,
        cluster = %seat.settings.cluster,
        store = %store.describe(),
        "arbiter serving"
    );
    let app = App {
        office: seat.office.subscribe(),
        token: seat.settings.token.clone(),
        reads: seat.settings.reads.clone(),
        metrics,
    };
    let serving = serve_http(listener, seat.settings.tls.clone(), app, shutdown, stop_tx);
    let holding = seat.hold(&term, shell, &mut stop_rx);
    let (result, _) = tokio::join!(serving, holding);
    if result.is_ok() {
        tracing::info!("arbiter stopped");
    }
    result
}
