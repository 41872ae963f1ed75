//! Proxy mode while no replica is active: the active's redis-server dies
//! (it steps down; the standby is promoted a moment later), then the
//! arbiter is stopped (the new active's lease lapses). Sixteen Redis-client writers
//! keep trying through both replicas' RESP ports, reconnecting after every
//! error, as applications do. Nothing multiplies them: a session a standby
//! forwards is never forwarded again, and a replica that cannot serve
//! answers at once and closes. Each replica's open files stay within a
//! bound of the clients (2 per client, plus what the process holds anyway),
//! its log does not storm, no write is acknowledged while nobody is
//! active, and writes resume once there is an active again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use understudy_tests::client::resp_raw::RawResp;
use understudy_tests::harness::{serial, wait_for, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);
const WRITERS: usize = 16;
/// A writer's pause after an error, before it tries again.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// How long the cluster is watched with no active.
const WINDOW: Duration = Duration::from_secs(3);
/// Open files a replica holds besides its clients' (log segments, the
/// listeners, its upstream connections, the runtime's own).
const BASE_FILES: usize = 64;

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn writer(addr: String, n: usize, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut c) = RawResp::connect(&addr).await else {
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let key = format!("w{n}:{i}");
            match c.call(&["SET", &key, "v"]).await {
                Ok(v) if v.show() == "OK" => {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                _ => break,
            }
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Watches the replicas for [`WINDOW`]: each holds at most `bound` open
/// files and logs a few lines, not one per retry; with `acked`, no write
/// is acknowledged meanwhile (nobody is active throughout).
async fn watch(
    cluster: &ProxyCluster,
    ids: &[String],
    pids: &[u32],
    acked: Option<&AtomicU64>,
    when: &str,
    bound: usize,
) {
    let acked_then = acked.map(|a| a.load(Ordering::Relaxed));
    let lines_before: Vec<usize> = ids
        .iter()
        .map(|id| cluster.cluster.replica(id).stderr().lines().count())
        .collect();
    let mut most = vec![0usize; pids.len()];
    let until = Instant::now() + WINDOW;
    while Instant::now() < until {
        for (m, pid) in most.iter_mut().zip(pids) {
            *m = (*m).max(open_files(*pid));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        acked.map(|a| a.load(Ordering::Relaxed)),
        acked_then,
        "{when}: a write was acknowledged with no active"
    );
    let lines: Vec<usize> = ids
        .iter()
        .zip(&lines_before)
        .map(|(id, b)| cluster.cluster.replica(id).stderr().lines().count() - b)
        .collect();
    eprintln!(
        "{when}: most open files {most:?} (bound {bound}), log lines {lines:?} in {WINDOW:?}"
    );
    for (i, id) in ids.iter().enumerate() {
        assert!(
            most[i] <= bound,
            "{when}: {id} held {} open files with no active",
            most[i]
        );
        // What it waits for, now and then; not a line per retry.
        assert!(lines[i] < 200, "{when}: {id} logged {} lines", lines[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_active_retrying_clients_cause_no_forwarding_loop_and_no_file_storm() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-no-active").unwrap();
    let (mut cluster, active, standby) = ProxyCluster::start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    let ids = [active.id.clone(), standby.clone()];
    let pids: Vec<u32> = ids
        .iter()
        .map(|id| cluster.cluster.replica_mut(id).process().pid())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|n| {
            let addr = cluster.resp_addr(&ids[n % 2]);
            tokio::spawn(writer(addr, n, stop.clone(), acked.clone()))
        })
        .collect();
    wait_for(DEADLINE, "writes through both replicas", || {
        let n = acked.load(Ordering::Relaxed);
        async move { (n > 500).then_some(()) }
    })
    .await
    .unwrap();
    eprintln!(
        "open files with an active: {:?}",
        pids.iter().map(|p| open_files(*p)).collect::<Vec<_>>()
    );

    let bound = 2 * WRITERS + BASE_FILES;

    // The active's redis-server dies: the active steps down, and until the
    // standby is promoted both replicas are standbys, the old active
    // naming itself as the active it last knew.
    let redis = cluster.redis.get_mut(&active.id).unwrap();
    redis.process().kill().unwrap();
    watch(
        &cluster,
        &ids,
        &pids,
        None,
        "the active's redis-server died",
        bound,
    )
    .await;
    let now = cluster
        .cluster
        .wait_for_active_after(active.epoch, DEADLINE)
        .await
        .unwrap();
    assert_eq!(now.id, standby);
    let redis = cluster.redis.get_mut(&active.id).unwrap();
    redis.restart_empty().await.unwrap();

    // The arbiter stops: the new active's lease lapses, nobody answers.
    cluster.cluster.arbiter.kill().unwrap();
    wait_for(DEADLINE, "writes to stop (the lease lapsed)", || {
        let acked = acked.clone();
        async move {
            let n = acked.load(Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(300)).await;
            (acked.load(Ordering::Relaxed) == n).then_some(())
        }
    })
    .await
    .unwrap();
    watch(
        &cluster,
        &ids,
        &pids,
        Some(&acked),
        "the lease lapsed",
        bound,
    )
    .await;
    let log =
        cluster.cluster.replica(&active.id).stderr() + &cluster.cluster.replica(&standby).stderr();
    assert!(!log.contains("Too many open files"), "{log}");

    cluster.cluster.arbiter.restart().await.unwrap();
    let resumed = acked.load(Ordering::Relaxed);
    wait_for(DEADLINE, "writes to resume", || {
        let n = acked.load(Ordering::Relaxed);
        async move { (n > resumed + 200).then_some(()) }
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
}
