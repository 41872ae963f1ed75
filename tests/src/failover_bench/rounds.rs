//! The benchmark run: start the cluster and the load, do the rounds, stop,
//! verify, measure.
//!
//! A round, once the cluster is whole (an active, the other replica a
//! confirmed sync-set member, the load running for `--settle`):
//! 1. note the time and kill -9 the active (or ask for a switchover);
//! 2. wait until the arbiter and the standby agree it is the active of a
//!    new epoch, and until writes are acknowledged in that epoch;
//! 3. restart the killed replica (a switched-over one keeps running) and
//!    wait until it is a confirmed sync-set member again.
//!
//! Gaps are measured afterwards from the load's ledger (the clients' own
//! clock), so waiting and polling in the harness never shows up in them.

use clap::Parser;

use super::config::{Config, Mode};
use super::report::{BenchReport, RoundReport, Summary};
use crate::harness::{ActiveNode, Cluster, TestDir};
use crate::loadgen::{self, BackgroundLoad};

/// Acks in the new epoch that close a round's measurement.
const ACKS_AFTER: u64 = 100;

/// What the harness knew about one event when it happened.
struct Event {
    /// The active before.
    old: ActiveNode,
    /// The active after.
    new: ActiveNode,
    /// When the kill or the request happened (load clock, ns).
    at_ns: u64,
}

/// Runs the benchmark; progress goes to stderr.
pub async fn run(config: &Config) -> Result<BenchReport, String> {
    config.validate()?;
    if config.protocol == super::config::Protocol::Resp {
        return super::resp::run(config).await;
    }
    let dir = TestDir::new("failover-bench").map_err(|e| e.to_string())?;
    let mut builder = Cluster::builder()
        .builtin_timing()
        .sync_standbys(1)
        .bin_dir(&config.bin_dir)
        .segment_bytes(config.segment_bytes);
    if let Some(ms) = config.heartbeat_ms {
        builder = builder.heartbeat_ms(ms);
    }
    if let Some(ms) = config.lease_ms {
        builder = builder.lease_ms(ms);
    }
    if let Some(drift) = config.drift {
        builder = builder.drift(drift);
    }
    let mut cluster = match builder.start(&dir).await {
        Ok(cluster) => cluster,
        Err(e) => return Err(format!("{e}; files kept in {}", dir.keep().display())),
    };
    match measure(config, &mut cluster, &dir).await {
        Ok(report) => {
            drop(cluster);
            if config.keep_dir {
                dir.keep();
            }
            Ok(report)
        }
        Err(e) => {
            let processes = cluster.describe_processes();
            drop(cluster);
            Err(format!(
                "{e}\nprocesses: {processes}\nfiles kept in {}",
                dir.keep().display()
            ))
        }
    }
}

/// Starts the load, does the rounds, verifies and measures.
async fn measure(
    config: &Config,
    cluster: &mut Cluster,
    dir: &TestDir,
) -> Result<BenchReport, String> {
    let params = cluster.status().await?.params;
    eprintln!(
        "cluster up in {} (heartbeat {} ms, lease {} ms, drift {})",
        dir.path().display(),
        params.heartbeat_ms,
        params.lease_ms,
        params.drift
    );

    let load = BackgroundLoad::start(load_config(config, &cluster.urls())?)?;
    load.wait_acks(1000, config.deadline).await?;
    let mut events = Vec::with_capacity(config.rounds);
    for round in 1..=config.rounds {
        tokio::time::sleep(config.settle).await;
        let event = one_round(config, cluster, &load).await?;
        let gap = load
            .ledger()
            .timeline()
            .gap_around(event.at_ns, event.old.epoch);
        eprintln!(
            "round {round}/{}: {} {} (epoch {}) -> {} active in epoch {}; write gap {}",
            config.rounds,
            config.mode.as_str(),
            event.old.id,
            event.old.epoch,
            event.new.id,
            event.new.epoch,
            gap.map_or("-".into(), |g| format!("{:.1} ms", g.gap_ms()))
        );
        events.push(event);
    }

    let (load_report, ledger) = load.stop(config.deadline).await?;
    let active = cluster.wait_for_active(config.deadline).await?;
    let standby = cluster
        .ids()
        .into_iter()
        .find(|id| *id != active.id)
        .ok_or("the cluster lost a replica")?;
    let data = cluster
        .wait_same_data(&active.id, &standby, config.deadline)
        .await?;
    let verification = ledger.verify(&data);

    let status = cluster.status().await?;
    let timeline = ledger.timeline();
    let rounds: Vec<RoundReport> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let gap = timeline.gap_around(e.at_ns, e.old.epoch);
            let decision = status.history.iter().find(|d| {
                d.taken
                    && d.epoch.0 == e.new.epoch
                    && d.node.as_ref().is_some_and(|n| n.as_str() == e.new.id)
            });
            RoundReport {
                round: i + 1,
                from: e.old.id.clone(),
                to: e.new.id.clone(),
                old_epoch: e.old.epoch,
                new_epoch: e.new.epoch,
                gap_ms: gap.map(|g| g.gap_ms()),
                recovery_ms: gap.map(|g| g.recovery_ms()),
                decision_ms: decision.map(|d| d.unix_ms as f64 - e.at_ns as f64 / 1e6),
                decision: decision.map(|d| d.reason.clone()),
            }
        })
        .collect();
    let collect =
        |f: fn(&RoundReport) -> Option<f64>| -> Vec<f64> { rounds.iter().filter_map(f).collect() };
    let report = BenchReport {
        mode: config.mode.as_str().to_string(),
        clients: config.clients,
        heartbeat_ms: params.heartbeat_ms,
        lease_ms: params.lease_ms,
        drift: params.drift,
        gap: Summary::of(&collect(|r| r.gap_ms)),
        recovery: Summary::of(&collect(|r| r.recovery_ms)),
        decision: Summary::of(&collect(|r| r.decision_ms)),
        rounds,
        acked_writes: ledger.acked_count(),
        errors_by_kind: load_report.errors_by_kind.clone(),
        verified: verification.is_ok(),
        verification: verification.summary(),
        dir: config.keep_dir.then(|| dir.path().display().to_string()),
    };
    Ok(report)
}

/// One kill or switchover; returns once the cluster is whole again.
async fn one_round(
    config: &Config,
    cluster: &mut Cluster,
    load: &BackgroundLoad,
) -> Result<Event, String> {
    let deadline = config.deadline;
    let old = cluster.wait_for_active(deadline).await?;
    let standby = cluster
        .ids()
        .into_iter()
        .find(|id| *id != old.id)
        .ok_or("the cluster has one replica")?;
    cluster.wait_sync_confirmed(&standby, deadline).await?;

    let at_ns = load.now_ns();
    match config.mode {
        Mode::Kill => cluster.kill(&old.id)?,
        Mode::Switchover => {
            cluster.arbiter.switchover(Some(&standby)).await?;
        }
    }
    let new = cluster.wait_for_active_after(old.epoch, deadline).await?;
    load.wait_acks_after_epoch(old.epoch, ACKS_AFTER, deadline)
        .await?;
    if config.mode == Mode::Kill {
        cluster.restart(&old.id).await?;
    }
    cluster.wait_sync_confirmed(&old.id, deadline).await?;
    Ok(Event { old, new, at_ns })
}

/// The load: every replica as one target, retrying quickly.
fn load_config(config: &Config, urls: &[String]) -> Result<loadgen::Config, String> {
    let clients = config.clients.to_string();
    let keys = config.keys.to_string();
    let key_size = (config.keys.saturating_sub(1).to_string().len() + 1)
        .max(16)
        .to_string();
    let value_size = config.value_size.to_string();
    let retry_ms = config.retry_ms.to_string();
    let give_up = format!("{}ms", config.deadline.as_millis());
    let mut args: Vec<&str> = vec![
        "loadgen",
        "--targets-all",
        "--clients",
        &clients,
        "--warmup",
        "0s",
        "--keys",
        &keys,
        "--key-size",
        &key_size,
        "--value-size",
        &value_size,
        "--retry-ms",
        &retry_ms,
        "--timeout",
        "5s",
        "--give-up",
        &give_up,
    ];
    for url in urls {
        args.extend(["--target", url]);
    }
    let load = loadgen::Config::try_parse_from(args).map_err(|e| e.to_string())?;
    load.validate()?;
    Ok(load)
}
