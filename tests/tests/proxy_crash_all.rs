//! Everything crashes at once (both replicas killed) while the active's
//! redis-server has run an effect the log never got — a command in flight
//! at the crash, here a `SET` sent straight to that redis-server. When the
//! replicas come back, the one named active must fill its redis-server back
//! to the committed history (the effect was never acknowledged) and serve:
//! not wait for a commit that cannot come, be named again, and never lead.
//! The second test crashes everything after a failover: the replica named
//! refills its redis-server from a snapshot older than the promotion, and
//! the stream it feeds after it crosses the change of replication id.

use std::time::Duration;

use understudy_tests::client::resp_raw::RawResp;
use understudy_tests::harness::{serial, wait_for, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_never_logged_is_dropped_and_the_cluster_serves_after_a_crash_of_everything() {
    crash_everything_with_an_effect_never_logged(false).await;
}

/// Found by the fault suite's proxy form (a second `kill -9` of
/// everything): the feed's full resync gave the redis-server the
/// snapshot's replication id, then streamed past the promotion without
/// making it reconnect to learn the new id; promoted, its replica's tap
/// could not continue the history (the redis-server offered a full resync
/// of an id of its own), stepped down, and was named again, without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_the_cluster_serves_after_a_crash_of_everything() {
    crash_everything_with_an_effect_never_logged(true).await;
}

async fn set_keys(cluster: &ProxyCluster, id: &str, prefix: &str) {
    let mut client = RawResp::connect(&cluster.resp_addr(id)).await.unwrap();
    for i in 0..200 {
        let r = client
            .call(&["SET", &format!("{prefix}{i}"), "v"])
            .await
            .unwrap();
        assert_eq!(r.show(), "OK");
    }
}

async fn crash_everything_with_an_effect_never_logged(failover_first: bool) {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-crash-all").unwrap();
    let mut cluster = ProxyCluster::start(&dir, &["a", "b"], |b| b.sync_standbys(1))
        .await
        .unwrap();
    let (mut active, mut standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    set_keys(&cluster, &active.id, "k").await;
    if failover_first {
        // A promotion: the history's replication id changes.
        cluster.cluster.kill(&active.id).unwrap();
        let promoted = cluster
            .cluster
            .wait_for_active_after(active.epoch, DEADLINE)
            .await
            .unwrap();
        assert_eq!(promoted.id, standby);
        cluster.cluster.restart(&active.id).await.unwrap();
        cluster
            .cluster
            .wait_sync_confirmed(&active.id, DEADLINE)
            .await
            .unwrap();
        standby = active.id.clone();
        active = promoted;
        set_keys(&cluster, &active.id, "after-failover-").await;
        // Both know the promotion as committed when they restart: the
        // snapshot they refill from is older than it.
        for id in [&active.id, &standby] {
            cluster.wait_commit_hint_saved(id, DEADLINE).await.unwrap();
        }
    }
    cluster.cluster.kill(&active.id).unwrap();
    cluster.cluster.kill(&standby).unwrap();
    // An effect the log never got, on the old active's redis-server.
    let mut up = RawResp::connect(&cluster.redis[&active.id].addr())
        .await
        .unwrap();
    assert_eq!(
        up.call(&["SET", "never-logged", "1"]).await.unwrap().show(),
        "OK"
    );
    drop(up);
    cluster.cluster.restart(&active.id).await.unwrap();
    cluster.cluster.restart(&standby).await.unwrap();
    let addrs: Vec<String> = [&active.id, &standby]
        .iter()
        .map(|id| cluster.resp_addr(id))
        .collect();
    let served = wait_for(DEADLINE, "a SET answered OK after the restart", || {
        let addrs = addrs.clone();
        async move {
            for addr in addrs {
                let attempt = async {
                    let mut c = RawResp::connect(&addr).await.ok()?;
                    c.call(&["SET", "after", "1"]).await.ok()
                };
                if let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
                    if r.show() == "OK" {
                        return Some(addr);
                    }
                }
            }
            None
        }
    })
    .await
    .unwrap();
    let mut c = RawResp::connect(&served).await.unwrap();
    assert_eq!(c.call(&["GET", "k199"]).await.unwrap().show(), "\"v\"");
    if failover_first {
        assert_eq!(
            c.call(&["GET", "after-failover-199"]).await.unwrap().show(),
            "\"v\""
        );
    }
    assert_eq!(
        c.call(&["EXISTS", "never-logged"]).await.unwrap().show(),
        "0",
        "an effect the cluster never logged is served"
    );
}
