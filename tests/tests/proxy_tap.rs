//! What the active's tap (a Redis replica of the active's redis-server)
//! tells that redis-server: `REPLCONF ACK` of committed offsets only, when
//! Redis asks (`REPLCONF GETACK`, sent while a client waits in `WAIT`) and
//! once a second, as Redis's own replicas do — not one per commit, which
//! cost Redis a command for every commit.

use std::time::{Duration, Instant};

use understudy_tests::client::resp_raw::Value;
use understudy_tests::harness::proxy_cluster::command_calls;
use understudy_tests::harness::{serial, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

/// How many `REPLCONF` commands the active's redis-server has run.
async fn replconf_calls(cluster: &ProxyCluster, id: &str) -> u64 {
    let stats = cluster.upstream_info(id, "commandstats").await.unwrap();
    command_calls(&stats, "replconf")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tap_acknowledges_when_asked_and_each_second_not_each_commit() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-tap-acks").unwrap();
    let (cluster, active, _standby) = ProxyCluster::start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    let mut c = cluster.raw(&active.id).await.unwrap();
    let before = replconf_calls(&cluster, &active.id).await;
    let began = Instant::now();
    const WRITES: u64 = 300;
    for i in 0..WRITES {
        // One at a time: each is committed before the next is sent.
        let reply = c.call(&["SET", "k", &i.to_string()]).await.unwrap();
        assert_eq!(reply, Value::Simple("OK".into()));
    }
    let acks = replconf_calls(&cluster, &active.id).await - before;
    let secs = began.elapsed().as_secs();
    assert!(
        acks <= secs + 2,
        "{acks} REPLCONF commands for {WRITES} commits in {secs} s: the tap acknowledges each commit"
    );
    // Asked (a client in WAIT), it acknowledges what is committed.
    assert_eq!(c.call(&["WAIT", "1", "5000"]).await.unwrap(), Value::Int(1));
}
