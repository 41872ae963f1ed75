//! Proxy mode under a failover, with Redis clients of three kinds working
//! through understudy and moving to the other replica on any error:
//!
//! - writers, each `SET` of a new key;
//! - producers pushing jobs onto a queue with a Lua script (`EVAL` of
//!   `RPUSH` + `LLEN`);
//! - consumers taking jobs with a blocking pop (`BLMOVE queue
//!   processing:<consumer>`, the reliable-queue pattern: a job popped is in
//!   its consumer's processing list, whether or not the reply arrived).
//!
//! The active replica is killed with -9 (its redis-server keeps running, as
//! the machine would); the sync standby takes over. On the new active:
//! every `SET` a client saw acknowledged is there; every job whose push
//! was acknowledged is in the queue or in exactly one processing list, no
//! job is in two places, and every job a consumer received is in its own
//! processing list. The old active is restarted on its redis-server: it
//! comes back as a standby, its redis-server a replica of its feed holding
//! exactly the new active's data.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use understudy_tests::client::resp_raw::{RawResp, Value};
use understudy_tests::harness::proxy_cluster::info_field;
use understudy_tests::harness::{serial, wait_for, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);
const WRITERS: usize = 10;
const PRODUCERS: usize = 2;
const CONSUMERS: usize = 2;
const QUEUE: &str = "jobs";
/// A client's pause after an error, before it tries again.
const RETRY_PAUSE: Duration = Duration::from_millis(5);
const PUSH: &str = "redis.call('RPUSH', KEYS[1], ARGV[1]); return redis.call('LLEN', KEYS[1])";

/// What the clients saw.
#[derive(Default)]
struct Ledger {
    /// Acknowledged SETs.
    sets: BTreeMap<String, String>,
    /// Jobs whose push was acknowledged.
    pushed: BTreeSet<String>,
    /// Jobs each consumer received.
    received: BTreeMap<usize, Vec<String>>,
    /// Errors by their first word.
    errors: BTreeMap<String, u64>,
    /// When each acknowledgement came, for the write gap.
    acks: Vec<Instant>,
}

/// Progress, to wait on.
#[derive(Default)]
struct Counts {
    sets: AtomicU64,
    pushed: AtomicU64,
    received: AtomicU64,
}

#[derive(Clone, Copy)]
enum Kind {
    Writer,
    Producer,
    Consumer,
}

struct Shared {
    addrs: Vec<String>,
    ledger: Mutex<Ledger>,
    counts: Counts,
    stop: AtomicBool,
}

async fn client(kind: Kind, id: usize, shared: Arc<Shared>) {
    let mut target = id % shared.addrs.len();
    let mut conn: Option<RawResp> = None;
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(c) = conn.as_mut() else {
            match RawResp::connect(&shared.addrs[target]).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    target = (target + 1) % shared.addrs.len();
                    // A client's pause before it retries (not a wait for
                    // anything): the dead replica refuses at once.
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
            continue;
        };
        n += 1;
        let attempt = Attempt {
            key: format!("w{id}-{n}"),
            value: format!("v{id}-{n}"),
            job: format!("job{id}-{n}"),
        };
        let processing = format!("processing:{id}");
        let reply = match kind {
            Kind::Writer => c.call(&["SET", &attempt.key, &attempt.value]).await,
            Kind::Producer => c.call(&["EVAL", PUSH, "1", QUEUE, &attempt.job]).await,
            Kind::Consumer => {
                c.call(&["BLMOVE", QUEUE, &processing, "LEFT", "RIGHT", "1"])
                    .await
            }
        };
        if !shared.record(kind, id, attempt, reply) {
            // On to the other replica, after a client's pause.
            target = (target + 1) % shared.addrs.len();
            conn = None;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// What one request of a client was about.
struct Attempt {
    key: String,
    value: String,
    job: String,
}

impl Shared {
    /// Notes a reply in the ledger; `false` for an error (the client
    /// moves on to the other replica).
    fn record(&self, kind: Kind, id: usize, a: Attempt, reply: Result<Value, String>) -> bool {
        let mut ledger = self.ledger.lock();
        match (kind, reply) {
            (Kind::Writer, Ok(Value::Simple(ok))) if ok == "OK" => {
                ledger.sets.insert(a.key, a.value);
                ledger.acks.push(Instant::now());
                self.counts.sets.fetch_add(1, Ordering::Relaxed);
            }
            (Kind::Producer, Ok(Value::Int(_))) => {
                ledger.pushed.insert(a.job);
                self.counts.pushed.fetch_add(1, Ordering::Relaxed);
            }
            (Kind::Consumer, Ok(Value::Bulk(got))) => {
                let got = String::from_utf8_lossy(&got).into_owned();
                ledger.received.entry(id).or_default().push(got);
                self.counts.received.fetch_add(1, Ordering::Relaxed);
            }
            (Kind::Consumer, Ok(Value::NullBulk | Value::NullArray)) => {}
            (_, Ok(Value::Error(e))) => {
                let code = e.split(' ').next().unwrap_or("").to_string();
                *ledger.errors.entry(code).or_default() += 1;
                return false;
            }
            (_, Ok(other)) => panic!("an unexpected reply: {}", other.show()),
            (_, Err(_)) => {
                *ledger.errors.entry("connection".into()).or_default() += 1;
                return false;
            }
        }
        true
    }
}

async fn wait_progress(shared: &Shared, sets: u64, pushed: u64, received: u64) {
    wait_for(DEADLINE, "the clients' progress", || {
        let c = &shared.counts;
        let ok = c.sets.load(Ordering::Relaxed) >= sets
            && c.pushed.load(Ordering::Relaxed) >= pushed
            && c.received.load(Ordering::Relaxed) >= received;
        async move { ok.then_some(()) }
    })
    .await
    .unwrap();
}

fn texts(v: &Value) -> Vec<String> {
    v.items()
        .unwrap_or_default()
        .iter()
        .filter_map(Value::text)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_loses_no_acknowledged_write_job_or_push_and_the_old_active_rejoins() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-failover").unwrap();
    let (mut cluster, active, standby) = ProxyCluster::start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    // The standby's redis-server holds the stream (see
    // `proxy_failover_redis.rs` for a standby promoted before that).
    cluster
        .wait_upstream_caught_up(&standby, &active.id, DEADLINE)
        .await
        .unwrap();
    let shared = Arc::new(Shared {
        addrs: vec![cluster.resp_addr(&active.id), cluster.resp_addr(&standby)],
        ledger: Mutex::new(Ledger::default()),
        counts: Counts::default(),
        stop: AtomicBool::new(false),
    });
    let mut tasks = Vec::new();
    for (kind, n, first) in [
        (Kind::Writer, WRITERS, 0),
        (Kind::Producer, PRODUCERS, 100),
        (Kind::Consumer, CONSUMERS, 200),
    ] {
        for i in 0..n {
            tasks.push(tokio::spawn(client(kind, first + i, shared.clone())));
        }
    }
    wait_progress(&shared, 300, 60, 20).await;
    // The active has persisted a commit hint past the stream's beginning,
    // which its restart below needs (see `proxy_recovery.rs`).
    cluster
        .wait_commit_hint_saved(&active.id, DEADLINE)
        .await
        .unwrap();

    let killed_at = Instant::now();
    cluster.cluster.kill(&active.id).unwrap();
    let promoted = cluster
        .cluster
        .wait_for_active_after(active.epoch, DEADLINE)
        .await
        .unwrap();
    assert_eq!(promoted.id, standby, "the sync standby must take over");
    let c = &shared.counts;
    let (sets, pushed, received) = (
        c.sets.load(Ordering::Relaxed),
        c.pushed.load(Ordering::Relaxed),
        c.received.load(Ordering::Relaxed),
    );
    wait_progress(&shared, sets + 300, pushed + 60, received + 20).await;
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let ledger = std::mem::take(&mut *shared.ledger.lock());

    // Every acknowledged SET is on the new active, read through it.
    let mut c = cluster.raw(&promoted.id).await.unwrap();
    let mut lost = Vec::new();
    for (k, v) in &ledger.sets {
        let got = c.call(&["GET", k]).await.unwrap();
        if got != Value::Bulk(v.clone().into_bytes()) {
            lost.push(format!("{k}: {}", got.show()));
        }
    }
    // Every acknowledged job is in the queue or one processing list, once.
    let mut places: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut lists = vec![QUEUE.to_string()];
    lists.extend((0..CONSUMERS).map(|i| format!("processing:{}", 200 + i)));
    for list in &lists {
        let items = c.call(&["LRANGE", list, "0", "-1"]).await.unwrap();
        for job in texts(&items) {
            places.entry(job).or_default().push(list.clone());
        }
    }
    let twice: Vec<_> = places.iter().filter(|(_, p)| p.len() > 1).collect();
    let lost_jobs: Vec<_> = ledger
        .pushed
        .iter()
        .filter(|j| !places.contains_key(*j))
        .collect();
    let mut misplaced = Vec::new();
    for (consumer, jobs) in &ledger.received {
        let mine = format!("processing:{consumer}");
        for job in jobs {
            if places.get(job).is_none_or(|p| !p.contains(&mine)) {
                misplaced.push(format!(
                    "{job} (received by {consumer}): {:?}",
                    places.get(job)
                ));
            }
        }
    }
    let mut acks = ledger.acks.clone();
    acks.sort();
    let gap = acks
        .windows(2)
        .filter(|w| w[1] > killed_at)
        .map(|w| w[1].duration_since(w[0]))
        .max();
    println!(
        "killed {} in epoch {}; {} active in epoch {}; {} SETs acknowledged ({} lost), {} jobs \
         pushed ({} lost), {} received; write gap {gap:?}; errors {:?}",
        active.id,
        active.epoch,
        promoted.id,
        promoted.epoch,
        ledger.sets.len(),
        lost.len(),
        ledger.pushed.len(),
        lost_jobs.len(),
        ledger.received.values().map(Vec::len).sum::<usize>(),
        ledger.errors
    );
    assert!(lost.is_empty(), "acknowledged SETs lost: {lost:?}");
    assert!(
        lost_jobs.is_empty(),
        "acknowledged jobs lost: {lost_jobs:?}"
    );
    assert!(twice.is_empty(), "jobs in two places: {twice:?}");
    assert!(
        misplaced.is_empty(),
        "received jobs not where their consumer put them: {misplaced:?}"
    );

    // The old active comes back on its redis-server, as a standby; its
    // redis-server follows its feed and ends with the new active's data.
    cluster.cluster.restart(&active.id).await.unwrap();
    cluster
        .cluster
        .wait_sync_confirmed(&active.id, DEADLINE)
        .await
        .unwrap();
    let data = cluster
        .wait_same_upstream_data(&promoted.id, &active.id, DEADLINE)
        .await
        .unwrap();
    assert!(data.len() >= ledger.sets.len(), "{} keys", data.len());
    let info = cluster
        .upstream_info(&active.id, "replication")
        .await
        .unwrap();
    assert_eq!(
        info_field(&info, "role").as_deref(),
        Some("slave"),
        "{info}"
    );
    assert_eq!(
        info_field(&info, "master_host").as_deref(),
        Some("127.0.0.1"),
        "{info}"
    );
}
