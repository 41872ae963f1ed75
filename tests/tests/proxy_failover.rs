//! Proxy mode under a failover: Redis clients write through understudy
//! (16 connections, each `SET` a new key, moving to another replica on any
//! error); the active replica is killed with -9 (its redis-server keeps
//! running, as the machine would); the sync standby takes over; every
//! `SET` any client saw acknowledged is on the new active. The old active
//! is then restarted on the same upstream: it comes back as a standby and
//! its upstream ends with exactly the new active's data.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use understudy_tests::client::resp::{show, Frame, RespClient};
use understudy_tests::harness::{serial, wait_for, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);
const CLIENTS: usize = 16;

/// What the clients saw: acknowledged writes, and how many answers of each
/// kind of error.
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<String, String>,
    errors: BTreeMap<String, u64>,
    /// When each acknowledgement came, for the write gap.
    acks: Vec<Instant>,
}

async fn client_loop(
    id: usize,
    addrs: Vec<String>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) {
    let mut target = 0;
    let mut conn: Option<RespClient> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            match RespClient::connect(&addrs[target]).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    target = (target + 1) % addrs.len();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        n += 1;
        let key = format!("c{id}-{n}");
        let value = format!("v{id}-{n}");
        let c = conn.as_mut().expect("connected");
        match c.call(&["SET", &key, &value]).await {
            Ok(Frame::SimpleString(s)) if &s[..] == b"OK" => {
                let mut l = ledger.lock();
                l.acked.insert(key, value);
                l.acks.push(Instant::now());
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Frame::Error(e)) => {
                let code = e.split(' ').next().unwrap_or("").to_string();
                *ledger.lock().errors.entry(code).or_default() += 1;
                target = (target + 1) % addrs.len();
                conn = None;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(other) => panic!("SET answered {}", show(&other)),
            Err(_) => {
                *ledger.lock().errors.entry("connection".into()).or_default() += 1;
                target = (target + 1) % addrs.len();
                conn = None;
            }
        }
    }
}

async fn wait_count(count: &AtomicU64, at_least: u64) {
    wait_for(DEADLINE, "acknowledged writes", || {
        let n = count.load(Ordering::Relaxed);
        async move { (n >= at_least).then_some(()) }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_loses_no_acknowledged_set_and_the_old_active_rejoins() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-failover").unwrap();
    let mut cluster = ProxyCluster::start(&dir, &["a", "b"], |b| b.sync_standbys(1))
        .await
        .unwrap();
    let (active, standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    let addrs = vec![cluster.resp_addr(&active.id), cluster.resp_addr(&standby)];
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(client_loop(
                i,
                addrs.clone(),
                ledger.clone(),
                stop.clone(),
                count.clone(),
            ))
        })
        .collect();
    wait_count(&count, 500).await;

    let killed_at = Instant::now();
    cluster.cluster.kill(&active.id).unwrap();
    let promoted = cluster
        .cluster
        .wait_for_active_after(active.epoch, DEADLINE)
        .await
        .unwrap();
    assert_eq!(promoted.id, standby, "the sync standby must take over");
    let before = count.load(Ordering::Relaxed);
    wait_count(&count, before + 500).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    // Every acknowledged SET is on the new active, read through it.
    let ledger = std::mem::take(&mut *ledger.lock());
    let mut c = cluster.client(&promoted.id).await.unwrap();
    let mut missing = Vec::new();
    for (k, v) in &ledger.acked {
        let got = c.call(&["GET", k]).await.unwrap();
        if got != Frame::BulkString(v.clone().into()) {
            missing.push(format!("{k}: {}", show(&got)));
        }
    }
    // The longest pause between two acknowledgements around the kill.
    let mut acks = ledger.acks.clone();
    acks.sort();
    let gap = acks
        .windows(2)
        .filter(|w| w[1] > killed_at)
        .map(|w| w[1].duration_since(w[0]))
        .max();
    println!(
        "killed {} in epoch {}; {} active in epoch {}; {} SETs acknowledged, {} missing; write gap {:?}; errors {:?}",
        active.id,
        active.epoch,
        promoted.id,
        promoted.epoch,
        ledger.acked.len(),
        missing.len(),
        gap,
        ledger.errors
    );
    assert!(missing.is_empty(), "acknowledged SETs lost: {missing:?}");

    // The old active comes back on its upstream, as a standby, with the
    // new active's data.
    cluster.cluster.restart(&active.id).await.unwrap();
    cluster
        .cluster
        .wait_sync_confirmed(&active.id, DEADLINE)
        .await
        .unwrap();
    let mut old = cluster.client(&active.id).await.unwrap();
    let role = old.call(&["ROLE"]).await.unwrap();
    assert!(show(&role).starts_with("[\"slave\""), "{}", show(&role));
    let data = cluster
        .wait_same_upstream_data(&promoted.id, &active.id, DEADLINE)
        .await
        .unwrap();
    assert!(data.len() >= 1000, "{} keys", data.len());
}
