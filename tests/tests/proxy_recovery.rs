//! Recovery in proxy mode (DESIGN.md, "The applied marker"): a restarted
//! replica continues from the applied marker its upstream holds; an
//! upstream with data but no marker is refused unless adopted; an upstream
//! whose marker the log does not hold is not served but refilled from the
//! active's.

use std::time::Duration;

use understudy_tests::client::resp::{show, Frame, RespClient};
use understudy_tests::harness::{
    free_port, serial, wait_for, ProxyCluster, RedisServer, ReplicaConfig, TestDir,
};

const DEADLINE: Duration = Duration::from_secs(60);

fn log_of(dir: &TestDir, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.stderr.log"))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_continues_from_its_marker_and_a_foreign_marker_is_refilled() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-recovery").unwrap();
    let mut cluster = ProxyCluster::start(&dir, &["a", "b"], |b| b.sync_standbys(1))
        .await
        .unwrap();
    let (active, standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    let mut c = cluster.client(&active.id).await.unwrap();
    for i in 0..300 {
        c.call(&["SET", &format!("k{i}"), "v"]).await.unwrap();
    }
    cluster
        .wait_same_upstream_data(&active.id, &standby, DEADLINE)
        .await
        .unwrap();

    // The standby's process restarts; its upstream kept everything.
    let resyncs = log_of(&dir, &standby).matches("full resync done").count();
    cluster.cluster.kill(&standby).unwrap();
    cluster.cluster.restart(&standby).await.unwrap();
    cluster
        .cluster
        .wait_sync_confirmed(&standby, DEADLINE)
        .await
        .unwrap();
    assert_eq!(
        log_of(&dir, &standby).matches("full resync done").count(),
        resyncs,
        "a restart with a good marker needed a full resync"
    );
    for i in 300..400 {
        c.call(&["SET", &format!("k{i}"), "v"]).await.unwrap();
    }
    let data = cluster
        .wait_same_upstream_data(&active.id, &standby, DEADLINE)
        .await
        .unwrap();
    assert_eq!(data.len(), 400);

    // Someone wrote the standby's upstream behind understudy's back, marker
    // included, while the replica was down: it is not served, but refilled.
    cluster.cluster.kill(&standby).unwrap();
    let mut raw = cluster.redis[&standby].client().await.unwrap();
    raw.call(&["SET", "intruder", "x"]).await.unwrap();
    raw.call(&["SELECT", "15"]).await.unwrap();
    raw.call(&["SET", "understudy:applied", "9.9999"])
        .await
        .unwrap();
    cluster.cluster.restart(&standby).await.unwrap();
    let data = cluster
        .wait_same_upstream_data(&active.id, &standby, DEADLINE)
        .await
        .unwrap();
    assert!(!data.contains_key("intruder"));
    let log = log_of(&dir, &standby);
    assert!(
        log.contains("says it applied up to 9.9999") && log.contains("full resync done"),
        "{}",
        &log[log.len().saturating_sub(3000)..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_without_a_marker_is_refused_unless_adopted() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-adopt").unwrap();
    let redis = RedisServer::start(&dir, "existing").await.unwrap();
    let mut raw = redis.client().await.unwrap();
    raw.call(&["SET", "x", "1"]).await.unwrap();
    raw.call(&["SET", "y", "2", "EX", "1000"]).await.unwrap();
    let port = free_port();
    let config = |adopt: bool| {
        let mut args = vec![
            "--upstream".to_string(),
            redis.url(),
            "--resp-listen".to_string(),
            format!("127.0.0.1:{port}"),
        ];
        if adopt {
            args.push("--adopt-upstream-data".to_string());
        }
        ReplicaConfig::new(&dir, "solo").args(args)
    };

    // Refused, naming the problem and the fix.
    let mut refused = config(false).spawn().unwrap();
    let status = refused.wait_for_exit(DEADLINE).await.unwrap();
    assert_eq!(status.code(), Some(2));
    let log = refused.stderr();
    assert!(
        log.contains("holds 2 keys but no applied marker") && log.contains("--adopt-upstream-data"),
        "{log}"
    );

    // Adopted: served as the cluster's first state, deadlines kept.
    let mut solo = config(true).start().await.unwrap();
    let mut c = RespClient::connect(&format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    assert_eq!(
        c.call(&["GET", "x"]).await.unwrap(),
        Frame::BulkString("1".into())
    );
    let ttl = c.call(&["TTL", "y"]).await.unwrap();
    assert!(
        matches!(ttl, Frame::Integer(t) if (990..=1000).contains(&t)),
        "{}",
        show(&ttl)
    );
    assert_eq!(show(&c.call(&["SET", "z", "3"]).await.unwrap()), "OK");
    // And it starts again without the flag: the data is now understudy's.
    solo.process().kill().unwrap();
    let _solo = config(false).start().await.unwrap();
    let mut c = RespClient::connect(&format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    wait_for(DEADLINE, "the restarted replica to serve", || {
        let addr = format!("127.0.0.1:{port}");
        async move {
            let mut c = RespClient::connect(&addr).await.ok()?;
            (c.call(&["GET", "z"]).await.ok()? == Frame::BulkString("3".into())).then_some(())
        }
    })
    .await
    .unwrap();
    assert_eq!(
        c.call(&["GET", "x"]).await.unwrap(),
        Frame::BulkString("1".into())
    );
}
