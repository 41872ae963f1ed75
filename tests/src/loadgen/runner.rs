//! The closed loop: connect every client, start them together, let each
//! send its next operation as soon as the previous one completed, and add
//! up what they counted.
//!
//! Timing of one operation: the clock is read just before the backend is
//! asked to send and just after it returned the complete answer (body
//! read), so latency includes retries and redirects but not choosing the key
//! or building the value. Connections are opened before the clock starts.
//!
//! Window: `[start + warmup, start + warmup + duration)`. An operation
//! counts if it *started* in the window; the last ones may complete a little
//! after it, and ops/s divides by the time to the last completion. With
//! `--ops N`, each client sends its share of `N` counted operations after
//! the warm-up instead. An operation being retried is never cut short by
//! the end of the window: it ends by success, a final error, or
//! `--give-up`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::sync::mpsc::UnboundedSender;

use super::backend::{Backend, Outcome};
use super::config::{Config, Run};
use super::control::LoadControl;
use super::etcd_target::EtcdBackend;
use super::history::{checksum_hex, Clock, HistoryRecord, HistoryWriter};
use super::http_target::HttpBackend;
use super::report::TargetReport;
use super::stats::ClientStats;
use super::workload::{checksum, parse_value_id, value_id, Op, OpKind, Workload};

/// Measures every run the config asks for, one after another, and returns
/// one report per run. Errors are about the invocation itself (bad flags,
/// history file); a target that cannot be reached gets a report with
/// `setup_error` instead.
pub async fn run(config: &Config) -> Result<Vec<TargetReport>, String> {
    config.validate()?;
    config.remember_tls()?;
    let filled;
    let config = if config.fill {
        // Every key once: as many operations as keys, none before.
        filled = Config {
            ops: Some(config.keys),
            warmup: Duration::ZERO,
            ..config.clone()
        };
        &filled
    } else {
        config
    };
    let clock = Clock::start();
    let history = match &config.history {
        Some(path) => Some(HistoryWriter::create(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut reports = Vec::new();
    for run in config.runs() {
        let history = history.as_ref().map(HistoryWriter::sender);
        reports.push(measure(config, &run, &clock, history, None).await);
    }
    if let Some(history) = history {
        history
            .finish()
            .await
            .map_err(|e| format!("history file: {e}"))?;
    }
    Ok(reports)
}

/// Runs the config's only run until `control` says stop, instead of for
/// `--duration` or `--ops` (both are ignored): a load in the background of
/// a test or benchmark that injects faults and decides when it has seen
/// enough (and may pause it meanwhile). History lines go to `history` as
/// operations complete, stamped by `clock`. The operations in flight when
/// the stop comes complete (or give up) before this returns.
pub async fn run_until_stopped(
    config: &Config,
    clock: Clock,
    control: Arc<LoadControl>,
    history: Option<UnboundedSender<HistoryRecord>>,
) -> Result<TargetReport, String> {
    config.validate()?;
    let runs = config.runs();
    let [run] = runs.as_slice() else {
        return Err(format!(
            "a load until stopped needs exactly one run, not {}; use --targets-all \
             to make several replicas one target",
            runs.len()
        ));
    };
    Ok(measure(config, run, &clock, history, Some(control)).await)
}

/// Connects the clients of one run and drives them.
async fn measure(
    config: &Config,
    run: &Run,
    clock: &Clock,
    history: Option<UnboundedSender<HistoryRecord>>,
    control: Option<Arc<LoadControl>>,
) -> TargetReport {
    let label = run.label();
    match run {
        Run::Http(urls) => {
            let retry = config.targets_all.then(|| config.retry_delay());
            let connecting = (0..config.clients)
                .map(|_| HttpBackend::connect(urls.clone(), 0, retry, config.timeout));
            match join_all(connecting).await.into_iter().collect() {
                Ok(backends) => drive(config, label, backends, clock, history, control).await,
                Err(e) => TargetReport::setup_failed(label, config.clients, e),
            }
        }
        Run::Etcd(endpoints) => {
            let connecting =
                (0..config.clients).map(|_| EtcdBackend::connect(endpoints, config.timeout));
            match join_all(connecting).await.into_iter().collect() {
                Ok(backends) => drive(config, label, backends, clock, history, control).await,
                Err(e) => TargetReport::setup_failed(label, config.clients, e),
            }
        }
    }
}

/// What one client needs to know besides its backend.
#[derive(Clone, Debug)]
struct ClientPlan {
    /// Client number, written into values and histories.
    id: u32,
    /// Names the run in history lines.
    target: String,
    /// When counting starts.
    window_start: Instant,
    /// When no new operation starts (duration mode).
    window_end: Option<Instant>,
    /// Counted operations to send (`--ops` mode).
    quota: Option<u64>,
    /// How long one operation may be retried.
    give_up: Duration,
    /// Pause after a failed request when the backend does not retry, so a
    /// dead target is not hammered in a tight loop.
    pause_after_error: Option<Duration>,
    /// Where history lines go, if anywhere.
    history: Option<UnboundedSender<HistoryRecord>>,
    /// Turns instants into history timestamps.
    clock: Clock,
    /// Stops or pauses a run that has no window end or quota.
    control: Option<Arc<LoadControl>>,
    /// With `--rate`: the time between this client's operations.
    interval: Option<Duration>,
}

async fn drive<B: Backend>(
    config: &Config,
    label: String,
    backends: Vec<B>,
    clock: &Clock,
    history: Option<UnboundedSender<HistoryRecord>>,
    control: Option<Arc<LoadControl>>,
) -> TargetReport {
    let until_stopped = control.is_some();
    let clients = backends.len();
    let start = Instant::now();
    let window_start = start + config.warmup;
    let mut tasks = Vec::with_capacity(clients);
    for (i, backend) in backends.into_iter().enumerate() {
        let id = i as u32;
        let plan = ClientPlan {
            id,
            target: label.clone(),
            window_start,
            window_end: (!until_stopped && config.ops.is_none())
                .then(|| window_start + config.duration),
            quota: config
                .ops
                .filter(|_| !until_stopped)
                .map(|n| n / clients as u64 + u64::from((i as u64) < n % clients as u64)),
            give_up: config.give_up,
            pause_after_error: (!config.targets_all).then(|| config.retry_delay()),
            history: history.clone(),
            clock: *clock,
            control: control.clone(),
            interval: config
                .rate
                .filter(|r| *r > 0.0)
                .map(|r| Duration::from_secs_f64(clients as f64 / r)),
        };
        let mut workload = Workload::new(
            config.seed,
            id,
            config.keys,
            config.key_size,
            config.value_size,
            config.get_ratio,
        );
        if config.fill {
            workload = workload.filling(clients as u64);
        }
        tasks.push(tokio::spawn(client_loop(backend, workload, plan)));
    }
    let mut total = ClientStats::new(window_start);
    for task in tasks {
        match task.await {
            Ok(stats) => total.merge(&stats),
            Err(e) => {
                *total
                    .errors
                    .entry(format!("client_task_failed: {e}"))
                    .or_default() += 1
            }
        }
    }
    TargetReport::from_stats(label, clients, &total, window_start, clock)
}

async fn client_loop<B: Backend>(
    mut backend: B,
    mut workload: Workload,
    plan: ClientPlan,
) -> ClientStats {
    let mut stats = ClientStats::new(plan.window_start);
    let mut counted_ops = 0u64;
    // Spread paced clients over one interval so they do not fire together.
    let mut next_at = plan
        .interval
        .map(|i| Instant::now() + i.mul_f64(plan.id as f64 / 64.0 % 1.0));
    loop {
        if let (Some(at), Some(interval)) = (next_at, plan.interval) {
            tokio::time::sleep_until(at.into()).await;
            // Late (a slow answer): start the next period now, no burst.
            next_at = Some((at + interval).max(Instant::now()));
        }
        if let Some(control) = &plan.control {
            if !control.wait_while_paused().await {
                break;
            }
        }
        let start = Instant::now();
        let counted = start >= plan.window_start;
        let done = match (plan.quota, plan.window_end) {
            (Some(quota), _) => counted && counted_ops >= quota,
            (None, Some(end)) => start >= end,
            (None, None) => plan.control.is_none(),
        };
        if done {
            break;
        }
        let op = workload.next_op();
        let outcome = backend.execute(&op, start + plan.give_up).await;
        let end = Instant::now();
        if counted {
            counted_ops += 1;
            stats.record(op.kind, &outcome, start, end);
        }
        if let Some(history) = &plan.history {
            let _ = history.send(history_record(&plan, &op, &outcome, start, end, counted));
        }
        if let Some(control) = &plan.control {
            control.completed();
        }
        if let (false, 0, Some(pause)) = (outcome.ok, outcome.status, plan.pause_after_error) {
            tokio::time::sleep(pause).await;
        }
    }
    stats
}

fn history_record(
    plan: &ClientPlan,
    op: &Op,
    outcome: &Outcome,
    start: Instant,
    end: Instant,
    counted: bool,
) -> HistoryRecord {
    let (value_id, checksum) = match (op.kind, &outcome.read_value) {
        (OpKind::Put, _) => (Some(value_id(plan.id, op.seq)), Some(checksum(&op.value))),
        (OpKind::Get, Some(read)) => (
            parse_value_id(read).map(|(c, s)| value_id(c, s)),
            Some(checksum(read)),
        ),
        (OpKind::Get, None) => (None, None),
    };
    HistoryRecord {
        target: plan.target.clone(),
        client: plan.id,
        seq: op.seq,
        op: op.kind.as_str(),
        key: op.key.clone(),
        value_id,
        checksum: checksum.map(checksum_hex),
        start_ns: plan.clock.unix_ns(start),
        end_ns: plan.clock.unix_ns(end),
        status: outcome.status,
        error: outcome.error.clone(),
        version: outcome.data_version.clone(),
        key_version: outcome.key_version.clone(),
        url: outcome.answered_by.clone(),
        attempts: outcome.attempts,
        counted,
    }
}
