//! Running an arbiter over etcd: serve the API at once as a follower, and
//! campaign; every term won is served by `tenure` over the store fenced by
//! that term, then given up (lease revoked) so the next campaign — ours or
//! another arbiter's — starts from a clean slate.
//!
//! ```text
//! campaign ──won──▶ load state ─▶ take_office (fresh Core) ─▶ hold ──term ends──┐
//!    ▲                                                                        │
//!    └──────────────── step down: end term, follow, revoke lease ◀────────────┘
//! ```
//!
//! On shutdown the leader steps down before the process exits, so another
//! arbiter takes over within a round trip instead of a lease TTL.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::http::{advertised_url, serve_http};
use super::metrics::Metrics;
use super::office::{Follower, Office};
use super::routes::App;
use super::tenure::{stopped, Seat};
use crate::clock::Clock;
use crate::config::Settings;
use crate::election::{Candidate, Elector};
use crate::store::StoreSpec;
use crate::store::{EtcdStore, StateStore};

/// Smallest drift the election assumes between this host's clock rate and
/// etcd's, whatever the configured parameters say (see `election::term`).
const MIN_ELECTION_DRIFT: f64 = 0.1;

/// A term that could not take office (etcd failing under it) is not
/// campaigned for again sooner than this, so a flapping etcd is not
/// hammered with lease grants.
const RETAKE_PAUSE: Duration = Duration::from_secs(1);

/// Serves `listener` as one of the arbiters sharing the etcd cluster at
/// `endpoints`, until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    endpoints: &[String],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let url = advertised_url(&listener, &settings)?;
    let id = settings.arbiter_id.clone().unwrap_or_else(|| {
        url.trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string()
    });
    let clock = Clock::start();
    let etcd_tls = match &settings.store {
        StoreSpec::Etcd { tls: true, .. } => settings.tls.as_ref().map(|t| t.files().clone()),
        _ => None,
    };
    let store = EtcdStore::connect(endpoints, &settings.cluster, etcd_tls.as_ref())
        .await
        .map_err(|e| format!("cannot use etcd ({}): {e}", e.code()))?;
    let candidate = Candidate {
        id: id.clone(),
        url: url.clone(),
        ttl_s: settings.leader_ttl_s,
        drift: settings.params.drift.max(MIN_ELECTION_DRIFT),
    };
    let elector = Elector::new(&store, candidate, clock);
    let follower = Follower::new(
        Arc::new(store.clone()),
        elector.leader(),
        url.clone(),
        clock,
    );
    let metrics = Arc::new(Metrics::new());
    let following = Office::Following(Arc::new(follower));
    tracing::info!(
        id = %id,
        url = %url,
        cluster = %settings.cluster,
        store = %store.describe(),
        ttl_s = settings.leader_ttl_s,
        "arbiter serving; campaigning for leadership"
    );
    let token = settings.token.clone();
    let reads = settings.reads.clone();
    let tls = settings.tls.clone();
    let seat = Seat::new(settings, clock, metrics.clone(), url, following);
    let app = App {
        office: seat.office.subscribe(),
        token,
        reads,
        metrics,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let elections = tokio::spawn(hold_elections(seat, elector, store, stop_rx));
    let result = serve_http(listener, tls, app, shutdown, stop_tx).await;
    if let Err(e) = elections.await {
        tracing::error!(error = %e, "the election loop panicked");
    }
    if result.is_ok() {
        tracing::info!("arbiter stopped");
    }
    result
}

/// Campaigns and serves terms until `stop`.
async fn hold_elections(
    seat: Seat,
    mut elector: Elector,
    store: EtcdStore,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let Some(term) = elector.campaign(&mut stop).await else {
            break;
        };
        let Some(fence) = term.fence() else {
            tracing::error!("an elected term without a fence; not taking office");
            break;
        };
        let fenced: Arc<dyn StateStore> = Arc::new(store.fenced(fence));
        let started = Instant::now();
        let mut took_office = false;
        let reason = match seat.load(&term, fenced.as_ref(), &mut stop).await {
            Ok(state) => {
                let shell = seat.take_office(&term, fenced, state);
                took_office = true;
                seat.hold(&term, shell, &mut stop).await
            }
            Err(e) => {
                tracing::warn!(
                    term = term.number(),
                    "won the election but could not take office: {e}"
                );
                format!("could not take office: {e}")
            }
        };
        elector.step_down(&term, &reason).await;
        tracing::info!(
            term = term.number(),
            held_ms = started.elapsed().as_millis() as u64,
            reason = %reason,
            "stepped down"
        );
        if *stop.borrow() || stop.has_changed().is_err() {
            break;
        }
        // A term that served campaigns again at once, however short it
        // was: pausing here too once left a cluster without a leader for
        // 0.85 s, both arbiters waiting, after two terms ended quickly.
        // A deadline, not `RETAKE_PAUSE - started.elapsed()`: time passes
        // between a check and a subtraction, and an underflow here would
        // panic the loop and leave this arbiter never campaigning again.
        if !took_office {
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => break,
                _ = tokio::time::sleep_until((started + RETAKE_PAUSE).into()) => {}
            }
        }
    }
    tracing::debug!("election loop stopped");
}
