//! What the redis-servers do at a failover:
//!
//! - An old active whose redis-server held nothing uncommitted comes back
//!   as a standby, and that redis-server continues the stream under the new
//!   active's replication id (psync2: a partial resynchronization from its
//!   replica's feed), with no full resync.
//! - The loss of the active's whole machine (its replica and its
//!   redis-server) before the standby's redis-server was first filled loses
//!   no acknowledged write: the standby's log holds them.

use std::time::Duration;

use understudy_tests::client::resp_raw::RawResp;
use understudy_tests::harness::replica_status::metrics_text;
use understudy_tests::harness::{serial, wait_for, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);
/// What the feed logs when it refills its redis-server from an RDB.
const FULL_RESYNC_SENT: &str = "feed: full resync of the upstream sent";

async fn write_keys(addr: &str, prefix: &str, n: usize) {
    let mut c = RawResp::connect(addr).await.unwrap();
    for i in 0..n {
        let r = c
            .call(&["SET", &format!("{prefix}{i}"), &format!("v{i}")])
            .await
            .unwrap();
        assert_eq!(r.show(), "OK");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_active_with_nothing_uncommitted_rejoins_by_partial_resynchronization() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-psync2").unwrap();
    let (mut cluster, active, standby) = ProxyCluster::start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    write_keys(&cluster.resp_addr(&active.id), "before:", 200).await;
    for id in [&active.id, &standby] {
        cluster.wait_commit_hint_saved(id, DEADLINE).await.unwrap();
    }
    // Quiet: everything the active's redis-server streamed is committed
    // and applied on the standby's.
    cluster
        .wait_upstream_caught_up(&standby, &active.id, DEADLINE)
        .await
        .unwrap();
    let logged_before = cluster.redis[&active.id].log().len();
    cluster.cluster.kill(&active.id).unwrap();
    let promoted = cluster
        .cluster
        .wait_for_active_after(active.epoch, DEADLINE)
        .await
        .unwrap();
    assert_eq!(promoted.id, standby);
    let on_promoted = cluster.resp_addr(&standby);
    wait_for(DEADLINE, "the new active to take writes", || {
        let addr = on_promoted.clone();
        async move {
            let mut c = RawResp::connect(&addr).await.ok()?;
            (c.call(&["SET", "first", "after"]).await.ok()?.show() == "OK").then_some(())
        }
    })
    .await
    .unwrap();
    write_keys(&on_promoted, "after:", 50).await;

    cluster.cluster.restart(&active.id).await.unwrap();
    cluster
        .cluster
        .wait_sync_confirmed(&active.id, DEADLINE)
        .await
        .unwrap();
    let data = cluster
        .wait_same_upstream_data(&standby, &active.id, DEADLINE)
        .await
        .unwrap();
    assert_eq!(data.len(), 251);
    let redis_log = cluster.redis[&active.id].log()[logged_before..].to_string();
    assert!(
        redis_log.contains("Master accepted a Partial Resynchronization")
            && !redis_log.contains("Full resync from master"),
        "the old active's redis-server after its replica came back:\n{redis_log}"
    );
    let replica_log = cluster.cluster.replica(&active.id).stderr_of_this_life();
    assert!(!replica_log.contains(FULL_RESYNC_SENT), "{replica_log}");
}

/// BUG (replica/src/proxy/feed.rs, `full_resync`, with
/// replica/src/proxy/tap.rs and control.rs): a standby's redis-server is
/// filled only by an RDB fetched from the active's redis-server or taken
/// from a local snapshot, and the only snapshot is the one the cluster's
/// first active keeps of its own redis-server; the log holds the stream
/// after it, not the data it starts from. A standby whose redis-server was
/// not yet filled (it retries once a second; here it is paused) is
/// nevertheless a confirmed sync-set member. When the active's machine is
/// lost, that standby is promoted but cannot lead: its redis-server can
/// reach the committed offset from nowhere ("the upstream did not catch
/// up", after 10 s), so acknowledged writes held in its log are never
/// served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_active_machine_before_the_standbys_redis_server_was_filled_loses_nothing() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-machine-lost").unwrap();
    // a first: b's redis-server is the one paused. (Both report before
    // the arbiter forms the cluster; a's priority is the higher.) The
    // pause is only the means of keeping b's redis-server empty: with the
    // longest upstream timeout it does not count as b's failure, so b
    // stays a sync standby (its log is whole).
    let mut cluster = ProxyCluster::start(&dir, &["a", "b"], |b| {
        b.sync_standbys(1)
            .priority("b", 50)
            .initial_wait_ms(1000)
            .no_wait()
            .replica_args(["--upstream-timeout-ms", "600000"])
    })
    .await
    .unwrap();
    // Before any active exists, b's redis-server (already made a replica of
    // b's feed, which has nothing to send yet) pauses.
    cluster
        .redis
        .get_mut("b")
        .unwrap()
        .process()
        .sigstop()
        .unwrap();
    let (active, standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    assert_eq!((active.id.as_str(), standby.as_str()), ("a", "b"));
    let mut c = cluster.raw("a").await.unwrap();
    assert_eq!(
        c.call(&["SET", "acknowledged", "1"]).await.unwrap().show(),
        "OK"
    );
    cluster.wait_commit_hint_saved("b", DEADLINE).await.unwrap();

    // a's machine is lost: its replica and its redis-server.
    cluster.cluster.kill("a").unwrap();
    cluster
        .redis
        .get_mut("a")
        .unwrap()
        .process()
        .kill()
        .unwrap();
    cluster
        .redis
        .get_mut("b")
        .unwrap()
        .process()
        .sigcont()
        .unwrap();
    let promoted = cluster
        .cluster
        .wait_for_active_after(active.epoch, DEADLINE)
        .await
        .unwrap();
    assert_eq!(promoted.id, "b");
    let addr = cluster.resp_addr("b");
    let last = std::sync::Mutex::new(String::new());
    let served = wait_for(
        Duration::from_secs(30),
        "the acknowledged SET read on b",
        || {
            let (addr, last) = (addr.clone(), &last);
            async move {
                let mut c = RawResp::connect(&addr).await.ok()?;
                let v = c.call(&["GET", "acknowledged"]).await.ok()?.show();
                *last.lock().unwrap() = v.clone();
                (v == "\"1\"").then_some(())
            }
        },
    )
    .await;
    assert!(
        served.is_ok(),
        "{served:?}; b's last answer: {}",
        last.lock().unwrap()
    );
}

/// An active whose redis-server dies (`kill -9`) is failed over as if the
/// active itself had crashed: its tap cannot reach the upstream again, it
/// steps down and reports why, the standby (healthy upstream) takes over
/// with every acknowledged write, and the old active is not a candidate
/// while its upstream is down. Once its redis-server is back, empty, it is
/// refilled and rejoins the sync set by itself. (Before: the active kept
/// its role until the redis-server was back and found empty, and every
/// write and read stopped for that long.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_whose_redis_server_dies_is_failed_over_and_rejoins_once_it_is_back() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-upstream-kill").unwrap();
    let (mut cluster, active, standby) = ProxyCluster::start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    write_keys(&cluster.resp_addr(&active.id), "before:", 200).await;
    let killed_at = std::time::Instant::now();
    let redis = cluster.redis.get_mut(&active.id).unwrap();
    redis.process().kill().unwrap();
    // The arbiter shows why: the old active reports its upstream.
    let reported = reported_unhealthy(&cluster, &active.id, "upstream")
        .await
        .unwrap();
    eprintln!(
        "{} reports, {} ms after the kill: {reported}",
        active.id,
        killed_at.elapsed().as_millis()
    );
    let promoted = cluster
        .cluster
        .wait_for_active_after(active.epoch, DEADLINE)
        .await
        .unwrap();
    assert_eq!(promoted.id, standby);
    eprintln!(
        "{standby} active {} ms after {}'s redis-server was killed",
        killed_at.elapsed().as_millis(),
        active.id
    );
    // With the numbers it last read, marked down.
    wait_for(DEADLINE, "the status to show the upstream down", || {
        let c = &cluster.cluster;
        let id = active.id.clone();
        async move {
            let status = c.status().await.ok()?;
            let old = status.replicas.iter().find(|r| r.node_id.as_str() == id)?;
            old.upstream.as_ref().filter(|u| !u.up).map(|_| ())
        }
    })
    .await
    .unwrap();
    // And its metrics: the upstream is down.
    let url = cluster.cluster.replica(&active.id).url();
    wait_for(DEADLINE, "understudy_upstream_up 0", || {
        let url = url.clone();
        async move {
            let text = metrics_text(&url).await.ok()?;
            upstream_up(&text).filter(|up| !up).map(|_| ())
        }
    })
    .await
    .unwrap();
    let on_promoted = cluster.resp_addr(&standby);
    write_keys(&on_promoted, "after:", 50).await;

    let redis = cluster.redis.get_mut(&active.id).unwrap();
    redis.restart_empty().await.unwrap();
    cluster
        .cluster
        .wait_sync_confirmed(&active.id, DEADLINE)
        .await
        .unwrap();
    let data = cluster
        .wait_same_upstream_data(&standby, &active.id, DEADLINE)
        .await
        .unwrap();
    assert_eq!(data.len(), 250);
    wait_for(DEADLINE, "understudy_upstream_up 1", || {
        let url = url.clone();
        async move {
            let text = metrics_text(&url).await.ok()?;
            upstream_up(&text).filter(|up| *up).map(|_| ())
        }
    })
    .await
    .unwrap();
}

/// `understudy_upstream_up{upstream="…"}` in metrics `text`.
/// A redis-server that stops answering (here `SIGSTOP`: the process is
/// there, its port still accepts connections, nothing is answered) is
/// the active's failure once it leaves a PING unanswered for
/// `--upstream-timeout-ms`: the active steps down and says why, the
/// standby takes over with everything acknowledged; once the redis-server
/// runs again (`SIGCONT`) it is made to follow and its replica rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_whose_redis_server_stops_answering_is_failed_over_and_rejoins() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-upstream-stop").unwrap();
    let cluster = ProxyCluster::start(&dir, &["a", "b"], |b| {
        b.sync_standbys(1)
            .replica_args(["--upstream-timeout-ms", "500"])
    })
    .await
    .unwrap();
    let (active, standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    write_keys(&cluster.resp_addr(&active.id), "before:", 200).await;
    // The standby's redis-server holds them: it can lead at once.
    cluster
        .wait_upstream_caught_up(&standby, &active.id, DEADLINE)
        .await
        .unwrap();
    let mut cluster = cluster;
    let stopped_at = std::time::Instant::now();
    let redis = cluster.redis.get_mut(&active.id).unwrap();
    redis.process().sigstop().unwrap();
    let reported = reported_unhealthy(&cluster, &active.id, "has not answered a PING").await;
    let promoted = cluster
        .cluster
        .wait_for_active_after(active.epoch, DEADLINE)
        .await;
    let took = stopped_at.elapsed();
    // Running again before anything below can fail.
    let redis = cluster.redis.get_mut(&active.id).unwrap();
    redis.process().sigcont().unwrap();
    let reported = reported.unwrap();
    eprintln!("{} reports: {reported}", active.id);
    let promoted = promoted.unwrap();
    assert_eq!(promoted.id, standby);
    eprintln!(
        "{standby} active {} ms after {}'s redis-server was stopped",
        took.as_millis(),
        active.id
    );
    let on_promoted = cluster.resp_addr(&standby);
    write_keys(&on_promoted, "after:", 50).await;
    cluster
        .cluster
        .wait_sync_confirmed(&active.id, DEADLINE)
        .await
        .unwrap();
    let data = cluster
        .wait_same_upstream_data(&standby, &active.id, DEADLINE)
        .await
        .unwrap();
    assert_eq!(data.len(), 250);
}

/// Waits until the arbiter shows replica `id` unhealthy with a reason
/// that says `why`; returns the reason.
async fn reported_unhealthy(
    cluster: &ProxyCluster,
    id: &str,
    why: &str,
) -> Result<String, understudy_tests::harness::WaitTimeout> {
    wait_for(DEADLINE, &format!("{id} to report \"{why}\""), || async {
        let status = cluster.cluster.status().await.ok()?;
        let r = status.replicas.iter().find(|r| r.node_id.as_str() == id)?;
        let detail = r.detail.clone().unwrap_or_default();
        (!r.healthy && detail.contains(why)).then_some(detail)
    })
    .await
}

fn upstream_up(text: &str) -> Option<bool> {
    let line = text
        .lines()
        .find(|l| l.starts_with("understudy_upstream_up{"))?;
    Some(line.ends_with(" 1"))
}
