//! `failover-bench --protocol resp`: the same kill rounds in proxy mode,
//! through Redis clients. Two redis-servers (no persistence) each fronted
//! by a replica; `--clients` Redis connections each `SET` a new key in a
//! loop, moving to the other replica on any error; each round kills the
//! active replica with SIGKILL (its redis-server keeps running, as the
//! machine would), waits for the new active, restarts the killed replica
//! and waits until it is a confirmed sync-set member. At the end every
//! acknowledged `SET` is read back on the new active.
//!
//! A Redis reply does not say in which epoch a write was acknowledged, so
//! a round's write gap is the longest time without any acknowledgement
//! among those around the kill (from 100 ms before it until the new
//! active has acknowledged `ACKS_AFTER` writes), on the clients' clock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::config::Config;
use super::report::{BenchReport, RoundReport, Summary};
use crate::client::resp::{Frame, RespClient};
use crate::harness::{wait_for, ProxyCluster, TestDir};

/// Acknowledgements after the kill that close a round's measurement.
const ACKS_AFTER: u64 = 200;

#[derive(Default)]
struct Ledger {
    acked: BTreeMap<String, String>,
    ack_times: Vec<Instant>,
    errors: BTreeMap<String, u64>,
}

/// Runs the RESP rounds (see the module docs).
pub async fn run(config: &Config) -> Result<BenchReport, String> {
    config.validate()?;
    let dir = TestDir::new("failover-bench-resp").map_err(|e| e.to_string())?;
    let cluster = ProxyCluster::start(&dir, &["a", "b"], |b| {
        let mut b = b
            .builtin_timing()
            .sync_standbys(1)
            .bin_dir(&config.bin_dir)
            .segment_bytes(config.segment_bytes);
        if let Some(ms) = config.heartbeat_ms {
            b = b.heartbeat_ms(ms);
        }
        if let Some(ms) = config.lease_ms {
            b = b.lease_ms(ms);
        }
        if let Some(d) = config.drift {
            b = b.drift(d);
        }
        b
    })
    .await;
    let mut cluster = match cluster {
        Ok(c) => c,
        Err(e) => return Err(format!("{e}; files kept in {}", dir.keep().display())),
    };
    let result = measure(config, &mut cluster).await;
    drop(cluster);
    match result {
        Err(e) => Err(format!("{e}; files kept in {}", dir.keep().display())),
        Ok(mut report) => {
            if config.keep_dir {
                report.dir = Some(dir.keep().display().to_string());
            }
            Ok(report)
        }
    }
}

async fn measure(config: &Config, cluster: &mut ProxyCluster) -> Result<BenchReport, String> {
    let deadline = config.deadline;
    let params = cluster.cluster.status().await?.params;
    let addrs: Vec<String> = ["a", "b"].iter().map(|id| cluster.resp_addr(id)).collect();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let value = "v".repeat(config.value_size);
    let writers: Vec<_> = (0..config.clients)
        .map(|i| {
            tokio::spawn(writer(
                i,
                addrs.clone(),
                value.clone(),
                config.retry_ms,
                ledger.clone(),
                stop.clone(),
                count.clone(),
            ))
        })
        .collect();
    wait_count(&count, 1000, deadline).await?;
    let mut rounds = Vec::new();
    for round in 1..=config.rounds {
        tokio::time::sleep(config.settle).await;
        let old = cluster.cluster.wait_for_active(deadline).await?;
        let standby = if old.id == "a" { "b" } else { "a" };
        cluster
            .cluster
            .wait_sync_confirmed(standby, deadline)
            .await?;
        let killed_at = Instant::now();
        cluster.cluster.kill(&old.id)?;
        let new = cluster
            .cluster
            .wait_for_active_after(old.epoch, deadline)
            .await?;
        let at_kill = count.load(Ordering::Relaxed);
        wait_count(&count, at_kill + ACKS_AFTER, deadline).await?;
        let (gap, recovery) = gap_around(&ledger.lock().ack_times, killed_at);
        eprintln!(
            "round {round}/{}: kill {} (epoch {}) -> {} active in epoch {}; write gap {}",
            config.rounds,
            old.id,
            old.epoch,
            new.id,
            new.epoch,
            gap.map_or("-".into(), |g| format!("{g:.1} ms"))
        );
        rounds.push(RoundReport {
            round,
            from: old.id.clone(),
            to: new.id.clone(),
            old_epoch: old.epoch,
            new_epoch: new.epoch,
            gap_ms: gap,
            recovery_ms: recovery,
            decision_ms: None,
            decision: None,
        });
        cluster.cluster.restart(&old.id).await?;
        cluster
            .cluster
            .wait_sync_confirmed(&old.id, deadline)
            .await?;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let ledger = std::mem::take(&mut *ledger.lock());
    let active = cluster.cluster.wait_for_active(deadline).await?;
    let mut c = cluster.client(&active.id).await?;
    let mut missing = Vec::new();
    let acked: Vec<(&String, &String)> = ledger.acked.iter().collect();
    for chunk in acked.chunks(500) {
        let mut args = vec!["MGET".to_string()];
        args.extend(chunk.iter().map(|(k, _)| (*k).clone()));
        let Frame::Array(values) = c.call(&args).await? else {
            return Err("MGET gave no array".into());
        };
        for ((k, v), got) in chunk.iter().zip(values) {
            if got != Frame::BulkString(v.as_bytes().to_vec().into()) {
                missing.push((*k).clone());
            }
        }
    }
    let collect =
        |f: fn(&RoundReport) -> Option<f64>| -> Vec<f64> { rounds.iter().filter_map(f).collect() };
    Ok(BenchReport {
        mode: "kill (RESP)".into(),
        clients: config.clients,
        heartbeat_ms: params.heartbeat_ms,
        lease_ms: params.lease_ms,
        drift: params.drift,
        gap: Summary::of(&collect(|r| r.gap_ms)),
        recovery: Summary::of(&collect(|r| r.recovery_ms)),
        decision: Summary::default(),
        rounds,
        acked_writes: ledger.acked.len() as u64,
        errors_by_kind: ledger.errors,
        verified: missing.is_empty(),
        verification: format!(
            "{} acknowledged SETs read back on {} with MGET, {} missing{}",
            ledger.acked.len(),
            active.id,
            missing.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!(" (first: {:?})", &missing[..missing.len().min(5)])
            }
        ),
        dir: None,
    })
}

/// The longest pause between acknowledgements from 100 ms before the kill
/// on, and the time from the kill to the end of that pause, in ms.
fn gap_around(acks: &[Instant], killed_at: Instant) -> (Option<f64>, Option<f64>) {
    let mut sorted: Vec<Instant> = acks
        .iter()
        .copied()
        .filter(|t| *t + Duration::from_millis(100) >= killed_at)
        .collect();
    sorted.sort();
    let widest = sorted
        .windows(2)
        .max_by_key(|w| w[1].duration_since(w[0]))
        .map(|w| (w[0], w[1]));
    match widest {
        Some((from, to)) if to > killed_at => (
            Some(to.duration_since(from).as_secs_f64() * 1e3),
            Some(to.duration_since(killed_at).as_secs_f64() * 1e3),
        ),
        _ => (None, None),
    }
}

async fn wait_count(count: &AtomicU64, at_least: u64, within: Duration) -> Result<(), String> {
    wait_for(within, "acknowledged SETs", || {
        let n = count.load(Ordering::Relaxed);
        async move { (n >= at_least).then_some(()) }
    })
    .await
    .map_err(|e| e.to_string())
}

async fn writer(
    id: usize,
    addrs: Vec<String>,
    value: String,
    retry_ms: u64,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) {
    let mut target = id % addrs.len();
    let mut conn: Option<RespClient> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match RespClient::connect(&addrs[target]).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    target = (target + 1) % addrs.len();
                    tokio::time::sleep(Duration::from_millis(retry_ms)).await;
                    continue;
                }
            }
        }
        n += 1;
        let key = format!("w{id}-{n}");
        let c = conn.as_mut().expect("connected");
        match c.call(&["SET", &key, &value]).await {
            Ok(Frame::SimpleString(s)) if &s[..] == b"OK" => {
                let mut l = ledger.lock();
                l.acked.insert(key, value.clone());
                l.ack_times.push(Instant::now());
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Frame::Error(e)) => {
                let code = e.split(' ').next().unwrap_or("").to_string();
                *ledger.lock().errors.entry(code).or_default() += 1;
                target = (target + 1) % addrs.len();
                conn = None;
                tokio::time::sleep(Duration::from_millis(retry_ms)).await;
            }
            Ok(_) | Err(_) => {
                *ledger.lock().errors.entry("connection".into()).or_default() += 1;
                target = (target + 1) % addrs.len();
                conn = None;
            }
        }
    }
}
