//! One term of leadership, served: load the stored state, take office with
//! a **fresh** `Core`, publish the shell, tick it, and tear it all down the
//! moment the term ends.
//!
//! Every term starts from `Core::take_office` over the state loaded *after*
//! the term was won, with the stored parameters: the new core knows no
//! grants, so it promotes nobody for one `lease·(1+drift)` (DESIGN.md,
//! "Arbiter failover"; the whole argument is in [`crate::election`]). No
//! `Core` ever outlives its term, so a re-elected arbiter never trusts
//! grant times from an earlier term.
//!
//! Teardown order matters: the term is ended first (in-flight heartbeats
//! then withhold their replies), then the office turns to following (new
//! requests are redirected), then the ticker stops (a round in progress
//! finishes, so a write in flight is still reported to the dying core).

use std::sync::Arc;

use tokio::sync::watch;

use super::bootstrap;
use super::metrics::Metrics;
use super::office::Office;
use super::shell::Shell;
use super::ticker;
use crate::clock::Clock;
use crate::config::Settings;
use crate::core::Core;
use crate::election::Term;
use crate::store::{ClusterState, StateStore};

/// What every term of this process shares.
pub struct Seat {
    /// The validated configuration (cluster, proposed parameters).
    pub settings: Settings,
    /// Monotonic time for cores and terms, wall time for people.
    pub clock: Clock,
    /// One set of metrics for the whole process.
    pub metrics: Arc<Metrics>,
    /// This arbiter's advertised URL (`leader` in replies and status).
    pub url: String,
    /// Where the routes learn what this process is.
    pub office: watch::Sender<Office>,
    /// What to publish while not leading.
    pub following: Office,
}

impl Seat {
    /// A seat publishing `following` until a term takes office.
    pub fn new(
        settings: Settings,
        clock: Clock,
        metrics: Arc<Metrics>,
        url: String,
        following: Office,
    ) -> Seat {
        let (office, _) = watch::channel(following.clone());
        Seat {
            settings,
            clock,
            metrics,
            url,
            office,
            following,
        }
    }

    /// Loads (or, on a cluster's very first start, creates) the state under
    /// `term`, giving up as soon as the term ends or `stop` is signalled.
    pub async fn load(
        &self,
        term: &Term,
        store: &dyn StateStore,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<ClusterState, String> {
        tokio::select! {
            biased;
            _ = stopped(stop) => Err("shutting down".into()),
            reason = term.ended() => Err(reason),
            loaded = bootstrap::load_or_create(store, &self.settings, &self.clock) => loaded,
        }
    }

    /// Takes office over `state` in `term`: a fresh core, a shell over
    /// `store`, published to the routes.
    pub fn take_office(
        &self,
        term: &Term,
        store: Arc<dyn StateStore>,
        state: ClusterState,
    ) -> Arc<Shell> {
        let core = Core::take_office(state, self.clock.now(), self.clock.unix_ms());
        let (epoch, version) = (core.epoch(), core.state().version);
        let shell = Shell::new(
            core,
            store,
            self.clock,
            self.metrics.clone(),
            self.url.clone(),
            term.clone(),
        );
        self.office.send_replace(Office::Leading(shell.clone()));
        self.metrics.leader.set(1);
        self.metrics.terms.inc();
        tracing::info!(
            term = term.number(),
            epoch = %epoch,
            version,
            url = %self.url,
            "took office: deciding for the cluster (no promotion for one lease)"
        );
        shell
    }

    /// Ticks `shell` until its term ends or `stop` is signalled, then steps
    /// down (see the module docs for the order). Returns why it ended.
    pub async fn hold(
        &self,
        term: &Term,
        shell: Arc<Shell>,
        stop: &mut watch::Receiver<bool>,
    ) -> String {
        let (tick_tx, tick_rx) = watch::channel(false);
        let ticker = tokio::spawn(ticker::run(shell, tick_rx));
        let reason = tokio::select! {
            biased;
            _ = stopped(stop) => "shutting down".to_string(),
            reason = term.ended() => reason,
        };
        term.end(reason.clone());
        self.office.send_replace(self.following.clone());
        self.metrics.leader.set(0);
        let _ = tick_tx.send(true);
        if let Err(e) = ticker.await {
            tracing::error!(error = %e, "the tick loop panicked");
        }
        tracing::info!(term = term.number(), reason = %reason, "left office");
        reason
    }
}

/// Resolves once `stop` is true or its sender is gone.
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
