//! The phases of `repl-bench` and its report.

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;

use super::config::{Config, Phase};
use super::scrape::{metrics, Buckets};
use crate::client::KvClient;
use crate::harness::{Cluster, EtcdCluster, ReplicaConfig, TestDir};
use crate::loadgen::{self, TargetReport};

const ACK_LATENCY: &str = "understudy_replication_ack_latency_seconds";

/// Everything measured, for the text table and `--json`.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// fdatasync latency of this disk right now (µs): context for the rest.
    /// fdatasync latency of this disk right now (µs): p50, p99, p999.
    pub fdatasync_us: Option<(f64, f64, f64)>,
    pub throughput: Vec<TargetReport>,
    /// `--wrk`: the same runs by wrk.
    pub wrk: Vec<WrkRow>,
    pub lag: Option<LagReport>,
    pub catchup: Option<CatchupReport>,
    /// `--phase redis`.
    pub redis: Vec<super::redis::RedisRow>,
    /// `--phase memory`.
    pub memory: Vec<super::memory::MemoryRow>,
}

/// One wrk run.
#[derive(Debug, Serialize)]
pub struct WrkRow {
    pub target: String,
    pub clients: usize,
    pub requests_per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Answers other than 2xx/3xx, and socket errors.
    pub errors: u64,
    /// The exact command that printed it.
    pub command: String,
}

#[derive(Debug, Serialize)]
pub struct LagReport {
    pub rate_asked: f64,
    pub ops_per_sec: f64,
    pub acks: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct CatchupReport {
    pub keys: u64,
    pub dataset_bytes: u64,
    pub seconds: f64,
    pub mb_per_sec: f64,
    pub via_snapshot: bool,
}

/// Runs the phases `config` asks for.
pub async fn run(config: &Config) -> Result<Report, String> {
    let dir = TestDir::new("repl-bench").map_err(|e| e.to_string())?;
    let mut report = Report {
        fdatasync_us: probe_fdatasync(&dir.join("probe")).ok(),
        ..Default::default()
    };
    if config.phase == Phase::Standalone {
        (report.throughput, report.wrk) = standalone(config, &dir).await?;
        return Ok(report);
    }
    if config.phase == Phase::Redis {
        report.redis = super::redis::run(config, &dir).await?;
        return Ok(report);
    }
    if config.phase == Phase::Memory {
        report.memory = super::memory::run(config, &dir).await?;
        return Ok(report);
    }
    if config.phase == Phase::Tls {
        (report.throughput, report.wrk) = tls(config).await?;
        return Ok(report);
    }
    let wants = |p: Phase| config.phase == Phase::All || config.phase == p;
    let etcd = if wants(Phase::Throughput) {
        let etcd = EtcdCluster::start(3, &dir.join("etcd"))
            .await
            .map_err(|e| format!("starting etcd: {e}"))?;
        etcd.wait_healthy(Duration::from_secs(30))
            .await
            .map_err(|e| e.to_string())?;
        Some(etcd)
    } else {
        None
    };
    let cluster = Cluster::builder()
        .bin_dir(&config.bin_dir)
        .builtin_timing()
        .sync_standbys(1)
        .segment_bytes(64 << 20)
        .start(&dir)
        .await?;
    let active = cluster.wait_formed(Duration::from_secs(30)).await?;
    eprintln!(
        "cluster formed: {} active in epoch {}",
        active.id, active.epoch
    );

    let mut max_rate = None;
    if let Some(etcd) = &etcd {
        for clients in [config.clients, 1] {
            let rows = load(
                config,
                &[&active.url, &etcd.etcd_url()],
                clients,
                None,
                config.value_size,
            )
            .await?;
            if clients == config.clients {
                max_rate = Some(rows[0].ops_per_sec);
            }
            report.throughput.extend(rows);
            if config.wrk {
                report.wrk.push(wrk(config, &active.url, clients).await?);
            }
        }
    }
    if wants(Phase::Lag) {
        let rate = match (config.lag_rate, max_rate) {
            (Some(r), _) => r,
            (None, Some(max)) => max / 2.0,
            (None, None) => {
                let rows = load(
                    config,
                    &[&active.url],
                    config.clients,
                    None,
                    config.value_size,
                )
                .await?;
                rows[0].ops_per_sec / 2.0
            }
        };
        let before = Buckets::parse(&metrics(&active.url).await?, ACK_LATENCY);
        let rows = load(
            config,
            &[&active.url],
            config.clients,
            Some(rate),
            config.value_size,
        )
        .await?;
        let delta = Buckets::parse(&metrics(&active.url).await?, ACK_LATENCY).since(&before);
        let ms = |q| delta.percentile(q).map(|s| s * 1000.0);
        report.lag = Some(LagReport {
            rate_asked: rate,
            ops_per_sec: rows[0].ops_per_sec,
            acks: delta.total(),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
        });
    }
    if wants(Phase::Catchup) {
        report.catchup = Some(catchup(config, &cluster, &active.url, &dir).await?);
    }
    Ok(report)
}

/// Two clusters alike but for TLS (the same binaries, timing, sync
/// standby; the TLS one with certificates from `deploy/make-certs.sh` on
/// every listener and connection, mutual TLS on replication and
/// heartbeats), measured in turn with loadgen (and wrk with `--wrk`), 64
/// and 1 clients, `--rounds` times with the order swapped each round.
async fn tls(config: &Config) -> Result<(Vec<TargetReport>, Vec<WrkRow>), String> {
    let start = |name: &'static str, tls: bool| async move {
        let dir = TestDir::new(name).map_err(|e| e.to_string())?;
        let mut builder = Cluster::builder()
            .bin_dir(&config.bin_dir)
            .builtin_timing()
            .sync_standbys(1)
            .segment_bytes(64 << 20);
        if tls {
            builder = builder
                .with_tls()
                .arbiter_args(["--tls-client-auth"])
                .replica_args(["--tls-client-auth"]);
        }
        let cluster = builder.start(&dir).await?;
        let active = cluster.wait_formed(Duration::from_secs(30)).await?;
        Ok::<_, String>((dir, cluster, active.url))
    };
    let (_plain_dir, _plain, plain_url) = start("repl-bench-plain", false).await?;
    let (_tls_dir, _tls, tls_url) = start("repl-bench-tls", true).await?;
    let mut rows = Vec::new();
    let mut wrk_rows = Vec::new();
    for round in 0..config.rounds {
        let mut order = [&plain_url, &tls_url];
        if round % 2 == 1 {
            order.reverse();
        }
        for url in order {
            for clients in [config.clients, 1] {
                rows.extend(load(config, &[url], clients, None, config.value_size).await?);
                if config.wrk {
                    wrk_rows.push(wrk(config, url, clients).await?);
                }
            }
        }
    }
    Ok((rows, wrk_rows))
}

/// A standalone replica (fsync on, production segment size) against a
/// one-member etcd, 64 and 1 clients.
async fn standalone(
    config: &Config,
    dir: &TestDir,
) -> Result<(Vec<TargetReport>, Vec<WrkRow>), String> {
    let etcd = EtcdCluster::start(1, &dir.join("etcd"))
        .await
        .map_err(|e| format!("starting etcd: {e}"))?;
    etcd.wait_healthy(Duration::from_secs(30))
        .await
        .map_err(|e| e.to_string())?;
    let replica = ReplicaConfig::new(dir, "solo")
        .program(config.bin_dir.join("replica"))
        .segment_bytes(64 << 20)
        .start()
        .await?;
    let url = replica.url();
    let mut rows = Vec::new();
    let mut wrk_rows = Vec::new();
    for clients in [config.clients, 1] {
        rows.extend(
            load(
                config,
                &[&url, &etcd.etcd_url()],
                clients,
                None,
                config.value_size,
            )
            .await?,
        );
        if config.wrk {
            wrk_rows.push(wrk(config, &url, clients).await?);
        }
    }
    Ok((rows, wrk_rows))
}

/// One wrk run of PUTs (`tests/wrk/put.lua`) against `url`.
async fn wrk(config: &Config, url: &str, clients: usize) -> Result<WrkRow, String> {
    // Printed as run from the workspace (the usual place), else in full.
    let script = if std::path::Path::new("tests/wrk/put.lua").is_file() {
        "tests/wrk/put.lua"
    } else {
        concat!(env!("CARGO_MANIFEST_DIR"), "/wrk/put.lua")
    };
    let threads = clients.min(2).to_string();
    let args = [
        format!("-t{threads}"),
        format!("-c{clients}"),
        format!("-d{}s", config.duration.as_secs().max(1)),
        "--latency".to_string(),
        "-s".to_string(),
        script.to_string(),
        url.to_string(),
        "--".to_string(),
        "100000".to_string(),
        config.value_size.to_string(),
    ];
    let command = format!("wrk {}", args.join(" "));
    eprintln!("{command}");
    let out = tokio::process::Command::new("wrk")
        .args(&args)
        .output()
        .await
        .map_err(|e| format!("cannot run wrk (apt-get install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{command} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix).map(|v| v.trim().to_string()))
    };
    let ms = |v: Option<String>| -> Option<f64> {
        let v = v?;
        let (n, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = n.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            _ => return None,
        })
    };
    let errors = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0u64)
        + field("Socket errors:").map_or(0, |_| 1);
    Ok(WrkRow {
        target: url.to_string(),
        clients,
        requests_per_sec: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{command} printed no Requests/sec: {text}"))?,
        p50_ms: ms(field("50%")),
        p99_ms: ms(field("99%")),
        errors,
        command,
    })
}

/// One loadgen run over `targets` (each measured on its own).
async fn load(
    config: &Config,
    targets: &[&str],
    clients: usize,
    rate: Option<f64>,
    value_size: usize,
) -> Result<Vec<TargetReport>, String> {
    let mut args = vec!["loadgen".to_string()];
    for t in targets {
        args.extend(["--target".into(), t.to_string()]);
    }
    args.extend([
        "--clients".into(),
        clients.to_string(),
        "--duration".into(),
        format!("{}ms", config.duration.as_millis()),
        "--value-size".into(),
        value_size.to_string(),
    ]);
    if let Some(r) = rate {
        args.extend(["--rate".into(), format!("{r:.0}")]);
    }
    let lg = loadgen::Config::try_parse_from(&args).map_err(|e| e.to_string())?;
    let rows = loadgen::run(&lg).await?;
    eprint!("{}", loadgen::format_table(&rows, false));
    Ok(rows)
}

/// Fills the cluster with `catchup_bytes` of distinct keys, then times a new
/// empty replica until it has applied everything.
async fn catchup(
    config: &Config,
    cluster: &Cluster,
    active_url: &str,
    dir: &TestDir,
) -> Result<CatchupReport, String> {
    let value = bytes::Bytes::from("v".repeat(config.catchup_value_size));
    let key_len = 13;
    let keys = config.catchup_bytes / (config.catchup_value_size + key_len) as u64;
    eprintln!(
        "writing {keys} keys of {} bytes...",
        config.catchup_value_size
    );
    let writers = 64u64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let url = active_url.to_string();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = KvClient::new(&url).map_err(|e| e.to_string())?;
            let mut i = w;
            while i < keys {
                let r = client
                    .put(format!("c{i:012}"), value.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                if !r.is_success() {
                    return Err(format!("write failed: {}", r.body_text()));
                }
                i += writers;
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let target = applied(active_url).await?;
    // Measure a standby joining a quiet cluster: let the active finish any
    // periodic snapshot of its own (that competes for the same disk and
    // cores) until none is running or due.
    eprintln!("dataset written (active at {target}); waiting for the active's own snapshots");
    let threshold = 256u64 << 20;
    let quiet_deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = status(active_url).await?;
        let busy = status["snapshot_in_progress"].as_bool().unwrap_or(true);
        let since = status["log_bytes_since_snapshot"]
            .as_u64()
            .unwrap_or(u64::MAX);
        if !busy && since < threshold {
            break;
        }
        if Instant::now() > quiet_deadline {
            return Err("the active kept snapshotting for two minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("starting an empty replica");
    let started = Instant::now();
    let config_c = cluster.replica_config(dir, "c").args(["--priority", "0"]);
    let url_c = config_c.url();
    let _c = config_c.start().await?;
    loop {
        if applied(&url_c).await.is_ok_and(|p| p >= target) {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err("the new replica did not catch up within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let text = metrics(&url_c).await?;
    let via_snapshot = text.lines().any(|l| {
        l.contains("snapshot_transfers_total{direction=\"received\"}") && !l.ends_with(" 0")
    });
    let dataset_bytes = keys * (config.catchup_value_size + key_len) as u64;
    Ok(CatchupReport {
        keys,
        dataset_bytes,
        seconds,
        mb_per_sec: dataset_bytes as f64 / seconds / 1e6,
        via_snapshot,
    })
}

async fn status(url: &str) -> Result<serde_json::Value, String> {
    let mut client = KvClient::new(url).map_err(|e| e.to_string())?;
    let resp = client
        .request(hyper::Method::GET, "/v1/status", &[], "")
        .await
        .map_err(|e| e.to_string())?;
    resp.json().map_err(|e| e.to_string())
}

async fn applied(url: &str) -> Result<proto_common::Position, String> {
    let v = status(url).await?;
    v["applied"]
        .as_str()
        .ok_or("no applied position in status")?
        .parse()
}

/// p50, p99 and p999 of `fdatasync` after a small overwrite, in µs (5000
/// samples, so the p999 is the fifth slowest).
fn probe_fdatasync(path: &std::path::Path) -> std::io::Result<(f64, f64, f64)> {
    let file = std::fs::File::create(path)?;
    file.write_all_at(&vec![1u8; 1 << 20], 0)?;
    file.sync_all()?;
    let mut samples = Vec::with_capacity(5000);
    for i in 0..5000u64 {
        file.write_all_at(&[2u8; 300], (i * 300) % (1 << 20))?;
        let t = Instant::now();
        file.sync_data()?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    Ok((samples[2500], samples[4950], samples[4995]))
}

/// The report as text.
pub fn format(report: &Report) -> String {
    let mut out = String::new();
    if let Some((p50, p99, p999)) = report.fdatasync_us {
        out.push_str(&format!(
            "disk: fdatasync p50 {p50:.0} µs, p99 {p99:.0} µs, p999 {p999:.0} µs\n"
        ));
    }
    if !report.throughput.is_empty() {
        out.push_str(&loadgen::format_table(&report.throughput, false));
    }
    for w in &report.wrk {
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
        out.push_str(&format!(
            "wrk {:<48} {:>7} {:>11.1} ops/s  p50 {} ms  p99 {} ms  errors {}\n  {}\n",
            w.target,
            w.clients,
            w.requests_per_sec,
            ms(w.p50_ms),
            ms(w.p99_ms),
            w.errors,
            w.command
        ));
    }
    if let Some(l) = &report.lag {
        let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("≤ {v} ms"));
        out.push_str(&format!(
            "lag at {:.0} puts/s (asked {:.0}): {} acks, p50 {}, p99 {}, p999 {}\n",
            l.ops_per_sec,
            l.rate_asked,
            l.acks,
            f(l.p50_ms),
            f(l.p99_ms),
            f(l.p999_ms)
        ));
    }
    if !report.memory.is_empty() {
        out.push_str(&super::memory::format(&report.memory));
    }
    if !report.redis.is_empty() {
        out.push_str(&super::redis::format(&report.redis));
        let mut commands: Vec<&str> = Vec::new();
        for r in &report.redis {
            if !commands.contains(&r.command.as_str()) {
                commands.push(&r.command);
            }
        }
        for c in commands {
            out.push_str(&format!("  {c}\n"));
        }
    }
    if let Some(c) = &report.catchup {
        out.push_str(&format!(
            "catch-up: {} keys, {:.0} MB in {:.2} s = {:.0} MB/s ({})\n",
            c.keys,
            c.dataset_bytes as f64 / 1e6,
            c.seconds,
            c.mb_per_sec,
            if c.via_snapshot {
                "snapshot + log"
            } else {
                "log only"
            }
        ));
    }
    out
}
