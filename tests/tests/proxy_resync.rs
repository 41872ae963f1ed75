//! Full resyncs by themselves (DESIGN.md, "Proxy mode"): a standby's
//! redis-server restarted empty (no persistence) is refilled without anyone's
//! help, and a new standby with an empty redis-server joins a cluster with
//! data and catches up while writes go on. The feed sends each an RDB of
//! the active's redis-server, then the stream after it; each ends with the
//! active's data exactly. Nothing else writes a standby's redis-server: it
//! is a read-only replica of its own replica.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use understudy_tests::client::resp_raw::{RawResp, Value};
use understudy_tests::harness::proxy_cluster::{dump, info_field};
use understudy_tests::harness::{free_port, serial, wait_for, ProxyCluster, RedisServer, TestDir};

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

/// BUG (replica/src/proxy/control.rs, `ProxyCore::follow`, called only at
/// start and at a demotion): a standby's redis-server that restarts empty
/// (no persistence, no `replicaof` in its configuration) comes back as an
/// empty master, and nothing in the replica notices or makes it follow the
/// feed again: it stays empty (and writable) until its replica restarts or
/// changes role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_whose_redis_server_restarted_empty_is_refilled_by_itself() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-resync").unwrap();
    let (mut cluster, active, standby) = ProxyCluster::start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    let on_active = cluster.resp_addr(&active.id);
    write_keys(&on_active, "first:", 200).await;
    cluster
        .wait_upstream_caught_up(&standby, &active.id, DEADLINE)
        .await
        .unwrap();
    // Nobody else writes it: it is a read-only replica.
    let mut direct = RawResp::connect(&cluster.redis[&standby].addr())
        .await
        .unwrap();
    let refused = direct.call(&["FLUSHALL"]).await.unwrap();
    assert!(
        matches!(&refused, Value::Error(e) if e.starts_with("READONLY")),
        "{}",
        refused.show()
    );

    // Restarted empty (no persistence), while writes go on.
    let sent_before = cluster
        .cluster
        .replica(&standby)
        .stderr()
        .matches(FULL_RESYNC_SENT)
        .count();
    cluster
        .redis
        .get_mut(&standby)
        .unwrap()
        .restart_empty()
        .await
        .unwrap();
    write_keys(&on_active, "second:", 100).await;
    let data = cluster
        .wait_same_upstream_data(&active.id, &standby, DEADLINE)
        .await
        .unwrap();
    assert_eq!(data.len(), 300);
    let info = cluster
        .upstream_info(&standby, "replication")
        .await
        .unwrap();
    assert_eq!(
        info_field(&info, "role").as_deref(),
        Some("slave"),
        "{info}"
    );
    let sent = cluster
        .cluster
        .replica(&standby)
        .stderr()
        .matches(FULL_RESYNC_SENT)
        .count();
    assert!(sent > sent_before, "no full resync was sent");
    // Writes were never interrupted: the active did not change.
    let now = cluster.cluster.wait_for_active(DEADLINE).await.unwrap();
    assert_eq!(now.id, active.id);
    // While refilled it could not lead; refilled, it is a candidate again.
    wait_for(
        DEADLINE,
        "the refilled standby a candidate again",
        || async {
            let status = cluster.cluster.status().await.ok()?;
            let r = status
                .replicas
                .iter()
                .find(|r| r.node_id.as_str() == standby)?;
            (r.sync_confirmed && r.not_eligible.is_none()).then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_standby_catches_up_while_writes_go_on() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-new-standby").unwrap();
    let cluster = ProxyCluster::start(&dir, &["a", "b"], |b| b.sync_standbys(1))
        .await
        .unwrap();
    let active = cluster.cluster.wait_for_active(DEADLINE).await.unwrap();
    let on_active = cluster.resp_addr(&active.id);
    write_keys(&on_active, "before:", 2000).await;

    // Writes go on in the background while the new standby joins.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, addr) = (stop.clone(), written.clone(), on_active.clone());
        tokio::spawn(async move {
            let mut c = RawResp::connect(&addr).await.unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = c.call(&["SET", &format!("during:{i}"), "v"]).await.unwrap();
                assert_eq!(r.show(), "OK");
                i += 1;
                written.store(i, Ordering::Relaxed);
            }
        })
    };
    let redis = RedisServer::start(&dir, "c-redis").await.unwrap();
    let mut newcomer = cluster
        .cluster
        .replica_config(&dir, "c")
        .args([
            "--upstream".to_string(),
            redis.url(),
            "--resp-listen".to_string(),
            format!("127.0.0.1:{}", free_port()),
            "--priority".to_string(),
            "0".to_string(),
        ])
        .start()
        .await
        .unwrap();
    wait_for(DEADLINE, "the new standby's full resync", || {
        let n = newcomer.stderr().matches(FULL_RESYNC_SENT).count();
        async move { (n > 0).then_some(()) }
    })
    .await
    .unwrap();
    let at_resync = written.load(Ordering::Relaxed);
    wait_for(DEADLINE, "more writes after the resync", || {
        let n = written.load(Ordering::Relaxed);
        async move { (n > at_resync + 200).then_some(()) }
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let total = 2000 + written.load(Ordering::Relaxed) as usize;
    let theirs = dump(&cluster.redis[&active.id].addr()).await.unwrap();
    assert_eq!(theirs.len(), total);
    wait_for(
        DEADLINE,
        "the new standby's redis-server to hold the active's data",
        || {
            let (addr, theirs) = (redis.addr(), theirs.clone());
            async move { (dump(&addr).await.ok()? == theirs).then_some(()) }
        },
    )
    .await
    .unwrap();
    let info = RawResp::connect(&redis.addr())
        .await
        .unwrap()
        .call(&["INFO", "replication"])
        .await
        .unwrap()
        .text()
        .unwrap_or_default();
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
    assert!(newcomer.is_running());
}

/// The tap follows a full resync sent from disk (`repl-diskless-sync no`:
/// the RDB comes as `$<length>`, not as Redis 7's default diskless
/// `$EOF:<mark>`), and clients may set how the upstream sends it and how
/// often it pings its replicas (Redis's own tests do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tap_follows_an_rdb_sent_from_disk() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-disk-rdb").unwrap();
    let cluster = ProxyCluster::start_with_redis_args(
        &dir,
        &["a", "b"],
        &["--repl-diskless-sync", "no"],
        |b| b.sync_standbys(1),
    )
    .await
    .unwrap();
    let active = cluster.cluster.wait_for_active(DEADLINE).await.unwrap();
    let on_active = cluster.resp_addr(&active.id);
    write_keys(&on_active, "k", 200).await;
    let mut c = RawResp::connect(&on_active).await.unwrap();
    for (key, value) in [
        ("repl-ping-replica-period", "1"),
        ("repl-diskless-sync", "yes"),
    ] {
        let set = c.call(&["CONFIG", "SET", key, value]).await.unwrap();
        assert_eq!(set.show(), "OK", "{key}");
    }
    write_keys(&on_active, "after:", 100).await;
    let standby = cluster
        .cluster
        .ids()
        .into_iter()
        .find(|id| *id != active.id)
        .unwrap();
    let data = cluster
        .wait_same_upstream_data(&active.id, &standby, DEADLINE)
        .await
        .unwrap();
    assert_eq!(data.len(), 300);
    let log = cluster.redis[&active.id].log();
    assert!(log.contains("target: disk"), "not sent from disk:\n{log}");
}
