//! Everything crashes at once (both replicas killed) while the active's
//! redis-server has run an effect the log never got — a command in flight
//! at the crash, here a `SET` sent straight to that redis-server. When the
//! replicas come back, the one named active must fill its redis-server back
//! to the committed history (the effect was never acknowledged) and serve:
//! not wait for a commit that cannot come, be named again, and never lead.

use std::time::Duration;

use understudy_tests::client::resp_raw::RawResp;
use understudy_tests::harness::{serial, wait_for, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_never_logged_is_dropped_and_the_cluster_serves_after_a_crash_of_everything() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-crash-all").unwrap();
    let mut cluster = ProxyCluster::start(&dir, &["a", "b"], |b| b.sync_standbys(1))
        .await
        .unwrap();
    let (active, standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    let mut client = RawResp::connect(&cluster.resp_addr(&active.id))
        .await
        .unwrap();
    for i in 0..200 {
        let r = client.call(&["SET", &format!("k{i}"), "v"]).await.unwrap();
        assert_eq!(r.show(), "OK");
    }
    drop(client);
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
    assert_eq!(
        c.call(&["EXISTS", "never-logged"]).await.unwrap().show(),
        "0",
        "an effect the cluster never logged is served"
    );
}
