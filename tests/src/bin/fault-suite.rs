//! `fault-suite`: the fault suite's long form. Starts a cluster, runs the
//! clients, injects faults drawn from the seed for the given minutes, then
//! checks the history and prints the table (RELIABILITY.md has runs).
//!
//! Exit status: 0 when no checker found an anomaly, 1 when one did, 2 when
//! the run could not be done (flags, binaries, iptables, a cluster that
//! never formed). Needs root (each process runs as its own user, and the
//! partitions are iptables rules).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use understudy_tests::fault::cluster::{ClusterOptions, Topology};
use understudy_tests::fault::nemesis::{FaultKind, Schedule};
use understudy_tests::fault::run::Run;

#[derive(Parser, Debug)]
#[command(about = "Run the fault suite: clients, faults, and the checkers of their history")]
struct Args {
    /// How long to inject faults.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Seed of the fault schedule and the clients (random when not given).
    #[arg(long)]
    seed: Option<u64>,
    /// `file` (one arbiter, a state file) or `etcd` (two arbiters, three
    /// etcd members).
    #[arg(long, default_value = "file", value_parser = Topology::parse)]
    topology: Topology,
    /// Proxy mode: every replica fronts a redis-server of its own, and the
    /// clients are Redis clients (SET, GET, compare-and-set as EVAL and as
    /// a WATCH transaction, RPUSH and BLPOP).
    #[arg(long)]
    proxy: bool,
    /// Only these faults (comma-separated: kill_active, pause_active,
    /// partition_active, kill_sync_standby, kill_arbiter, kill_etcd_leader,
    /// kill_etcd_follower, restart_all, and in proxy mode
    /// kill_active_upstream, kill_standby_upstream); every one that applies
    /// to the topology and the mode when not given.
    #[arg(long, value_delimiter = ',', value_parser = FaultKind::parse)]
    faults: Vec<FaultKind>,
    /// Clock-rate skew: r1's clocks run at this rate (libfaketime), e.g.
    /// 0.93 (7 % slow) or 1.07; within the cluster's drift (0.1) the
    /// lease rule must hold.
    #[arg(long)]
    clock_rate: Option<f64>,
    /// Each replica's --segment-bytes and --snapshot-every-bytes: small
    /// values compact the log (and send standbys snapshots) many times
    /// during the run.
    #[arg(long, num_args = 2, value_names = ["SEGMENT", "SNAPSHOT_EVERY"])]
    compact_bytes: Option<Vec<u64>>,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 12)]
    clients: usize,
    /// `--sync-standbys` of the cluster (0: asynchronous; losses expected).
    #[arg(long, default_value_t = 1)]
    sync_standbys: u32,
    /// Shortest and longest hold of a fault, ms.
    #[arg(long, num_args = 2, default_values_t = [1000, 5000])]
    hold_ms: Vec<u64>,
    /// Shortest and longest calm between faults, ms.
    #[arg(long, num_args = 2, default_values_t = [500, 3000])]
    calm_ms: Vec<u64>,
    /// Where the logs, the history (history.jsonl) and the report
    /// (report.json) go; kept. A fresh directory under /tmp when not given.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let dir = match &args.out {
        Some(dir) => dir.clone(),
        None => {
            let mode = if args.proxy { "-proxy" } else { "" };
            std::env::temp_dir().join(format!(
                "understudy-fault-{}{mode}-{seed}",
                args.topology.name()
            ))
        }
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("fault-suite: cannot make {}: {e}", dir.display());
        std::process::exit(2);
    }
    eprintln!(
        "fault-suite: topology {}{}, seed {seed}, {} min, files in {}",
        args.topology.name(),
        if args.proxy { ", proxy mode" } else { "" },
        args.minutes,
        dir.display()
    );
    let options = ClusterOptions {
        topology: args.topology,
        sync_standbys: args.sync_standbys,
        proxy: args.proxy,
        clock_rate: args.clock_rate,
        segment_bytes: args.compact_bytes.as_ref().map(|b| b[0]),
        snapshot_every_bytes: args.compact_bytes.as_ref().map(|b| b[1]),
        ..ClusterOptions::default()
    };
    let mut run = match Run::start(&dir, options, seed, args.clients).await {
        Ok(run) => run,
        Err(e) => {
            eprintln!("fault-suite: {e}");
            std::process::exit(2);
        }
    };
    let schedule = Schedule {
        seed,
        kinds: if args.faults.is_empty() {
            FaultKind::for_cluster(args.topology, args.proxy)
        } else {
            args.faults.clone()
        },
        hold_ms: (args.hold_ms[0], args.hold_ms[1].max(args.hold_ms[0])),
        calm_ms: (args.calm_ms[0], args.calm_ms[1].max(args.calm_ms[0])),
    };
    run.faults(
        &schedule,
        Duration::from_secs_f64(args.minutes * 60.0),
        usize::MAX,
    )
    .await;
    let report = run.finish(&dir).await;
    print!("{}", report.table());
    if let Ok(json) = serde_json::to_vec_pretty(&report) {
        let _ = std::fs::write(dir.join("report.json"), json);
    }
    if !report.findings.anomalies.is_empty() {
        std::process::exit(1);
    }
}
