//! `standby_reads = "local"`: a standby serves each session from its own
//! upstream, a Redis replica fed committed effects only, as a Redis replica
//! would: reads are answered there (possibly behind the active), writes get
//! Redis's `READONLY`. A restarted former active serves nothing until its
//! upstream follows the committed history again, then serves the new
//! active's data.

use std::time::Duration;

use understudy_tests::client::resp_raw::RawResp;
use understudy_tests::harness::{serial, wait_for, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

/// `GET key` through `addr`, shown; `None` while the replica says to retry.
async fn get(addr: &str, key: &str) -> Option<String> {
    let mut c = RawResp::connect(addr).await.ok()?;
    let got = c.call(&["GET", key]).await.ok()?.show();
    (!got.starts_with("-TRYAGAIN")).then_some(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_serves_reads_from_its_own_upstream_and_refuses_writes() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-standby-reads").unwrap();
    let mut cluster = ProxyCluster::start(&dir, &["a", "b"], |b| {
        b.sync_standbys(1)
            .node_args("a", ["--standby-reads", "local"])
            .node_args("b", ["--standby-reads", "local"])
    })
    .await
    .unwrap();
    let (active, standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    let on_active = cluster.resp_addr(&active.id);
    let on_standby = cluster.resp_addr(&standby);
    let mut writer = RawResp::connect(&on_active).await.unwrap();
    assert_eq!(writer.call(&["SET", "k", "v1"]).await.unwrap().show(), "OK");

    // The standby's sessions are its own upstream's: a replica (once it
    // has loaded the committed data; until then: retry).
    let role = wait_for(DEADLINE, "a session on the standby", || {
        let on_standby = on_standby.clone();
        async move {
            let mut c = RawResp::connect(&on_standby).await.ok()?;
            let role = c.call(&["ROLE"]).await.ok()?.show();
            (!role.starts_with("-TRYAGAIN")).then_some(role)
        }
    })
    .await
    .unwrap();
    assert!(role.contains("slave"), "ROLE through the standby: {role}");
    let mut reader = RawResp::connect(&on_standby).await.unwrap();
    wait_for(DEADLINE, "the write read on the standby", || {
        let on_standby = on_standby.clone();
        async move { (get(&on_standby, "k").await? == "\"v1\"").then_some(()) }
    })
    .await
    .unwrap();
    let refused = reader.call(&["SET", "k", "v2"]).await.unwrap().show();
    assert!(refused.starts_with("-READONLY"), "{refused}");

    // The active fails; the standby takes over and now writes.
    cluster.cluster.kill(&active.id).unwrap();
    let promoted = cluster
        .cluster
        .wait_for_active_after(active.epoch, DEADLINE)
        .await
        .unwrap();
    assert_eq!(promoted.id, standby);
    wait_for(DEADLINE, "a write through the new active", || {
        let on_standby = on_standby.clone();
        async move {
            let mut c = RawResp::connect(&on_standby).await.ok()?;
            (c.call(&["SET", "k", "v3"]).await.ok()?.show() == "OK").then_some(())
        }
    })
    .await
    .unwrap();

    // The old active comes back as a standby: it serves reads once its
    // upstream follows the committed history, and then the new value.
    cluster.cluster.restart(&active.id).await.unwrap();
    wait_for(
        DEADLINE,
        "the new value read on the restarted standby",
        || {
            let on_active = on_active.clone();
            async move { (get(&on_active, "k").await? == "\"v3\"").then_some(()) }
        },
    )
    .await
    .unwrap();
    let mut reader = RawResp::connect(&on_active).await.unwrap();
    let role = reader.call(&["ROLE"]).await.unwrap().show();
    assert!(
        role.contains("slave"),
        "ROLE through the new standby: {role}"
    );
}
