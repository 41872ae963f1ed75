//! A loadgen run in the background of a failover test or benchmark.
//!
//! [`BackgroundLoad::start`] runs the config's one target (use
//! `--targets-all` with every replica, so clients retry across the
//! cluster) until stopped, and folds every operation into a [`Ledger`] as
//! it completes. Meanwhile the caller kills, pauses and restarts nodes,
//! waits for acknowledgements to flow (`wait_acks`, in a given epoch),
//! quiesces the load to compare replicas that stand still (`quiesce`,
//! `resume`), and finally stops it to verify every acknowledged write.
//! Times are stamped by the load's [`Clock`], which the caller uses too
//! ([`BackgroundLoad::now_ns`]), so an event and the history line up.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use clap::Parser;

use super::config::Config;
use super::control::LoadControl;
use super::history::Clock;
use super::ledger::Ledger;
use super::report::TargetReport;
use super::runner::run_until_stopped;
use crate::harness::wait_until;

/// The load failover tests run: `clients` clients writing to every replica
/// in `urls` as one cluster (`--targets-all`: retry at the next replica
/// every 5 ms on a connection error or a retryable 503), no warm-up, 64-byte
/// values, keys drawn from a billion so nearly every write makes a new key,
/// 5 s per request, 30 s per operation. `extra` adds flags not named here
/// (e.g. `--get-ratio`); clap refuses a flag given twice.
pub fn failover_load_config(urls: &[String], clients: usize, extra: &[&str]) -> Config {
    let clients = clients.to_string();
    let mut args: Vec<&str> = vec![
        "loadgen",
        "--targets-all",
        "--clients",
        &clients,
        "--warmup",
        "0s",
        "--keys",
        "1000000000",
        "--value-size",
        "64",
        "--retry-ms",
        "5",
        "--timeout",
        "5s",
        "--give-up",
        "30s",
    ];
    for url in urls {
        args.extend(["--target", url]);
    }
    args.extend_from_slice(extra);
    Config::try_parse_from(args).expect("the failover load's flags parse")
}

/// A load running until stopped.
#[derive(Debug)]
pub struct BackgroundLoad {
    /// Pauses and stops the clients.
    control: Arc<LoadControl>,
    /// Stamps history lines; shared with the caller's event times.
    clock: Clock,
    /// Number of clients, to know when all are paused.
    clients: usize,
    /// Every write so far.
    ledger: Arc<Mutex<Ledger>>,
    /// The run itself; taken by `stop`.
    run: Option<JoinHandle<Result<TargetReport, String>>>,
    /// Folds history lines into the ledger; ends when the run does.
    collector: Option<JoinHandle<()>>,
}

impl BackgroundLoad {
    /// Starts `config`'s load (its `--duration` and `--ops` are ignored).
    pub fn start(config: Config) -> Result<BackgroundLoad, String> {
        config.validate()?;
        let clock = Clock::start();
        let control = Arc::new(LoadControl::new());
        let ledger = Arc::new(Mutex::new(Ledger::for_config(&config)));
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let collector = tokio::spawn({
            let ledger = ledger.clone();
            async move {
                while let Some(record) = receiver.recv().await {
                    lock(&ledger).record(&record);
                }
            }
        });
        let clients = config.clients;
        let run = tokio::spawn({
            let control = control.clone();
            async move { run_until_stopped(&config, clock, control, Some(sender)).await }
        });
        Ok(BackgroundLoad {
            control,
            clock,
            clients,
            ledger,
            run: Some(run),
            collector: Some(collector),
        })
    }

    /// The clock history times come from.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Now, on the history's clock (ns since the UNIX epoch).
    pub fn now_ns(&self) -> u64 {
        self.clock.unix_ns(Instant::now())
    }

    /// The ledger so far; do not hold it across an `.await`.
    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    /// Acknowledged writes so far.
    pub fn acked(&self) -> u64 {
        self.ledger().acked_count()
    }

    /// Waits until `more` writes beyond those acknowledged now are.
    pub async fn wait_acks(&self, more: u64, within: Duration) -> Result<(), String> {
        let target = self.acked() + more;
        self.wait_until_ledger(within, &format!("{more} more acknowledged writes"), |l| {
            l.acked_count() >= target
        })
        .await
    }

    /// Waits until `n` writes were acknowledged in epochs after `epoch`:
    /// the new active takes writes.
    pub async fn wait_acks_after_epoch(
        &self,
        epoch: u64,
        n: u64,
        within: Duration,
    ) -> Result<(), String> {
        let what = format!("{n} writes acknowledged in an epoch after {epoch}");
        self.wait_until_ledger(within, &what, |l| l.acks_after_epoch(epoch) >= n)
            .await
    }

    async fn wait_until_ledger(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&Ledger) -> bool,
    ) -> Result<(), String> {
        let outcome = wait_until(within, what, || {
            let ok = done(&self.ledger());
            async move { ok }
        })
        .await;
        outcome.map_err(|timeout| {
            let l = self.ledger();
            format!(
                "{timeout}; {} writes recorded, {} acknowledged, acks by epoch {:?}",
                l.writes().len(),
                l.acked_count(),
                l.acks_by_epoch()
            )
        })
    }

    /// Pauses the clients and waits until none has an operation in flight
    /// and the ledger holds every completed one. Operations being retried
    /// finish first (by success or give-up), so allow for `--give-up`.
    pub async fn quiesce(&self, within: Duration) -> Result<(), String> {
        self.control.pause();
        let outcome = wait_until(within, "the load quiesced", || {
            let idle = self.control.idle_clients() == self.clients;
            let recorded = self.ledger().records() == self.control.completed_ops();
            async move { idle && recorded }
        })
        .await;
        outcome.map_err(|timeout| {
            format!(
                "{timeout}: {} of {} clients paused",
                self.control.idle_clients(),
                self.clients
            )
        })
    }

    /// Lets paused clients go on.
    pub fn resume(&self) {
        self.control.resume();
    }

    /// Stops the load, waits for the clients (at most `within`) and returns
    /// its report and every write.
    pub async fn stop(mut self, within: Duration) -> Result<(TargetReport, Ledger), String> {
        self.control.stop();
        let (Some(run), Some(collector)) = (self.run.take(), self.collector.take()) else {
            return Err("the load was already stopped".into());
        };
        let report = tokio::time::timeout(within, run)
            .await
            .map_err(|_| format!("the load did not stop within {within:?}"))?
            .map_err(|e| format!("the load task failed: {e}"))??;
        tokio::time::timeout(within, collector)
            .await
            .map_err(|_| format!("the history collector did not end within {within:?}"))?
            .map_err(|e| format!("the history collector failed: {e}"))?;
        let ledger = lock(&self.ledger).clone();
        Ok((report, ledger))
    }
}

fn lock(ledger: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for BackgroundLoad {
    fn drop(&mut self) {
        // A test that fails half-way must not leave clients running.
        self.control.stop();
    }
}
