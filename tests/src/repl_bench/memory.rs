//! `repl-bench --phase memory`: resident memory against the data it holds,
//! side by side with etcd in one run.
//!
//! An arbiter and two replicas (`sync_standbys = 1`) and a one-member etcd
//! are loaded the same way by `loadgen --fill` (every key once, 64
//! clients, `PUT`s of 256-byte values under 16-byte keys): first 1 M keys,
//! then 5 M; then 60 s of 64-client overwrites of random keys among the
//! 5 M. After each step the resident set (`VmRSS`) of the active, the
//! standby and etcd is read, and for the replicas also the bytes allocated
//! (jemalloc), next to the bound: twice the raw key and value bytes plus
//! 64 MB.

use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;

use super::config::Config;
use crate::client::KvClient;
use crate::harness::{Cluster, EtcdCluster, TestDir};
use crate::loadgen;

const KEY_SIZE: usize = 16;

/// One measurement.
#[derive(Debug, Serialize)]
pub struct MemoryRow {
    pub step: String,
    pub keys: u64,
    /// Keys × (key + value) bytes.
    pub raw_bytes: u64,
    /// 2 × raw + 64 MB.
    pub bound_bytes: u64,
    pub active_rss: u64,
    pub active_allocated: u64,
    pub standby_rss: u64,
    pub standby_allocated: u64,
    pub etcd_rss: u64,
    /// The load's throughput, understudy then etcd (ops/s).
    pub understudy_ops_per_sec: f64,
    pub etcd_ops_per_sec: f64,
}

/// Runs the phase (see the module docs).
pub async fn run(config: &Config, dir: &TestDir) -> Result<Vec<MemoryRow>, String> {
    let etcd = EtcdCluster::start(1, &dir.join("etcd"))
        .await
        .map_err(|e| format!("starting etcd: {e}"))?;
    etcd.wait_healthy(Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    let mut cluster = Cluster::builder()
        .bin_dir(&config.bin_dir)
        .builtin_timing()
        .sync_standbys(1)
        .segment_bytes(64 << 20)
        .start(dir)
        .await?;
    let (active, standby) = cluster
        .wait_active_with_sync_standby(Duration::from_secs(30))
        .await?;
    let etcd_pid = etcd.members[0].process.pid();
    let value = config.value_size;
    let mut rows = Vec::new();
    let steps: [(&str, u64, bool); 3] = [
        ("fill 1 M keys", 1_000_000, true),
        ("fill 5 M keys", 5_000_000, true),
        ("60 s of 64-client overwrites", 5_000_000, false),
    ];
    for (step, keys, fill) in steps {
        let mut rates = Vec::new();
        for target in [active.url.clone(), etcd.etcd_url()] {
            let mut args = vec![
                "loadgen".to_string(),
                "--target".into(),
                target,
                "--clients".into(),
                "64".into(),
                "--keys".into(),
                keys.to_string(),
                "--key-size".into(),
                KEY_SIZE.to_string(),
                "--value-size".into(),
                value.to_string(),
            ];
            if fill {
                args.push("--fill".into());
            } else {
                args.extend(["--duration".into(), "60s".into()]);
            }
            eprintln!("{step}: {}", args.join(" "));
            let lg = loadgen::Config::try_parse_from(&args).map_err(|e| e.to_string())?;
            let report = loadgen::run(&lg).await?;
            eprint!("{}", loadgen::format_table(&report, false));
            rates.push(report[0].ops_per_sec);
        }
        wait_quiet(&active.url).await?;
        let standby_url = cluster.replica(&standby).url();
        wait_caught_up(&standby_url, &active.url).await?;
        let raw = keys * (KEY_SIZE + value) as u64;
        let active_pid = cluster.replica_mut(&active.id).process().pid();
        let standby_pid = cluster.replica_mut(&standby).process().pid();
        rows.push(MemoryRow {
            step: step.to_string(),
            keys,
            raw_bytes: raw,
            bound_bytes: 2 * raw + (64 << 20),
            active_rss: rss(active_pid)?,
            active_allocated: allocated(&active.url).await?,
            standby_rss: rss(standby_pid)?,
            standby_allocated: allocated(&standby_url).await?,
            etcd_rss: rss(etcd_pid)?,
            understudy_ops_per_sec: rates[0],
            etcd_ops_per_sec: rates[1],
        });
        eprintln!("{}", format(&rows[rows.len() - 1..]));
    }
    Ok(rows)
}

/// `VmRSS` of a process, bytes.
fn rss(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmRSS for process {pid}"))
}

async fn metrics_text(url: &str) -> Result<String, String> {
    let mut c = KvClient::new(url).map_err(|e| e.to_string())?;
    let r = c
        .request(hyper::Method::GET, "/metrics", &[], bytes::Bytes::new())
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.body_text())
}

async fn allocated(url: &str) -> Result<u64, String> {
    let text = metrics_text(url).await?;
    text.lines()
        .find_map(|l| l.strip_prefix("understudy_heap_allocated_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no heap metric at {url}"))
}

async fn status(url: &str) -> Result<serde_json::Value, String> {
    let mut c = KvClient::new(url).map_err(|e| e.to_string())?;
    let r = c
        .request(hyper::Method::GET, "/v1/status", &[], bytes::Bytes::new())
        .await
        .map_err(|e| e.to_string())?;
    r.json().map_err(|e| e.to_string())
}

/// Until the active writes no snapshot (one holds a second copy of the
/// map's changed nodes while it runs).
async fn wait_quiet(url: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while status(url).await?["snapshot_in_progress"].as_bool() != Some(false) {
        if Instant::now() > deadline {
            return Err("the active kept snapshotting for five minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Until the standby has applied what the active has.
async fn wait_caught_up(standby: &str, active: &str) -> Result<(), String> {
    let target = status(active).await?["applied"].clone();
    let deadline = Instant::now() + Duration::from_secs(300);
    while status(standby).await?["applied"] != target {
        if Instant::now() > deadline {
            return Err("the standby did not catch up within five minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// The rows as a table (MB).
pub fn format(rows: &[MemoryRow]) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let mut out = format!(
        "{:<30} {:>8} {:>8} {:>9} {:>11} {:>10} {:>12} {:>11} {:>9}\n",
        "step",
        "keys",
        "raw MB",
        "bound MB",
        "active RSS",
        "(alloc)",
        "standby RSS",
        "(alloc)",
        "etcd RSS"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<30} {:>8} {:>8.0} {:>9.0} {:>11.0} {:>10.0} {:>12.0} {:>11.0} {:>9.0}\n",
            r.step,
            r.keys,
            mb(r.raw_bytes),
            mb(r.bound_bytes),
            mb(r.active_rss),
            mb(r.active_allocated),
            mb(r.standby_rss),
            mb(r.standby_allocated),
            mb(r.etcd_rss)
        ));
    }
    out
}
