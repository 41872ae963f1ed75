//! Full resync through `REPLICAOF` (DESIGN.md, "The applied marker"), by
//! itself: a standby whose upstream was flushed behind understudy's back,
//! or restarted empty (no persistence), fills it again from the active's;
//! a new standby with an empty upstream catches up the same way while
//! writes go on. Each ends with the active's data exactly.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use understudy_tests::client::resp::{show, RespClient};
use understudy_tests::harness::{serial, wait_for, ProxyCluster, RedisServer, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

async fn write_keys(c: &mut RespClient, prefix: &str, n: usize) {
    for i in 0..n {
        let r = c
            .call(&["SET", &format!("{prefix}{i}"), &format!("v{i}")])
            .await
            .unwrap();
        assert_eq!(show(&r), "OK");
    }
}

fn resyncs_logged(dir: &TestDir, id: &str) -> usize {
    std::fs::read_to_string(dir.join(format!("{id}.stderr.log")))
        .unwrap_or_default()
        .matches("full resync done")
        .count()
}

/// Waits until `id` has logged more full resyncs than `before`. The copy
/// itself can make the two upstreams equal a moment before the replica
/// logs that the resync is done, so equal data alone does not show it.
async fn wait_resync_logged(dir: &TestDir, id: &str, before: usize) {
    wait_for(
        DEADLINE,
        &format!("a full resync in {id}'s log"),
        || async { (resyncs_logged(dir, id) > before).then_some(()) },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_whose_upstream_lost_its_data_resyncs_by_itself() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-resync").unwrap();
    let mut cluster = ProxyCluster::start(&dir, &["a", "b"], |b| b.sync_standbys(1))
        .await
        .unwrap();
    let (active, standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    let mut c = cluster.client(&active.id).await.unwrap();
    write_keys(&mut c, "first:", 200).await;
    cluster
        .wait_same_upstream_data(&active.id, &standby, DEADLINE)
        .await
        .unwrap();
    let before = resyncs_logged(&dir, &standby);

    // Flushed behind understudy's back.
    let mut direct = cluster.redis[&standby].client().await.unwrap();
    assert_eq!(show(&direct.call(&["FLUSHALL"]).await.unwrap()), "OK");
    write_keys(&mut c, "second:", 100).await;
    wait_resync_logged(&dir, &standby, before).await;
    let data = cluster
        .wait_same_upstream_data(&active.id, &standby, DEADLINE)
        .await
        .unwrap();
    assert_eq!(data.len(), 300);

    // Restarted empty (no persistence).
    let before = resyncs_logged(&dir, &standby);
    cluster
        .redis
        .get_mut(&standby)
        .unwrap()
        .restart_empty()
        .await
        .unwrap();
    write_keys(&mut c, "third:", 100).await;
    wait_resync_logged(&dir, &standby, before).await;
    let data = cluster
        .wait_same_upstream_data(&active.id, &standby, DEADLINE)
        .await
        .unwrap();
    assert_eq!(data.len(), 400);
    // Writes were never interrupted: the active did not change.
    let now = cluster.cluster.wait_for_active(DEADLINE).await.unwrap();
    assert_eq!(now.id, active.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_standby_catches_up_through_replicaof_while_writes_go_on() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-new-standby").unwrap();
    let cluster = ProxyCluster::start(&dir, &["a", "b"], |b| b.sync_standbys(1))
        .await
        .unwrap();
    let active = cluster.cluster.wait_for_active(DEADLINE).await.unwrap();
    let mut c = cluster.client(&active.id).await.unwrap();
    write_keys(&mut c, "before:", 2000).await;

    // Writes go on in the background while the new standby joins.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, addr) = (stop.clone(), written.clone(), cluster.resp_addr(&active.id));
        tokio::spawn(async move {
            let mut c = RespClient::connect(&addr).await.unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = c.call(&["SET", &format!("during:{i}"), "v"]).await.unwrap();
                assert_eq!(show(&r), "OK");
                i += 1;
                written.store(i, Ordering::Relaxed);
            }
        })
    };
    let redis = RedisServer::start(&dir, "c-redis").await.unwrap();
    let port = understudy_tests::harness::free_port();
    let mut newcomer = cluster
        .cluster
        .replica_config(&dir, "c")
        .args([
            "--upstream".to_string(),
            redis.url(),
            "--resp-listen".to_string(),
            format!("127.0.0.1:{port}"),
            "--priority".to_string(),
            "0".to_string(),
        ])
        .start()
        .await
        .unwrap();
    wait_for(DEADLINE, "the new standby's full resync", || {
        let n = resyncs_logged(&dir, "c");
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
    let active_addr = cluster.redis[&active.id].addr();
    let theirs = understudy_tests::harness::proxy_cluster::dump(&active_addr)
        .await
        .unwrap();
    assert_eq!(theirs.len(), total);
    wait_for(
        DEADLINE,
        "the new standby to hold the active's data",
        || {
            let (addr, theirs) = (redis.addr(), theirs.clone());
            async move {
                let ours = understudy_tests::harness::proxy_cluster::dump(&addr)
                    .await
                    .ok()?;
                (ours == theirs).then_some(())
            }
        },
    )
    .await
    .unwrap();
    assert!(newcomer.is_running());
}
