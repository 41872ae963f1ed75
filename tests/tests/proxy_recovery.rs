//! Recovery in proxy mode (DESIGN.md, "Proxy mode"): a replica restarted
//! (its process only) continues on the redis-server it left — that
//! redis-server continues the stream with a partial resynchronization, no
//! full one — even when its persisted commit hint is behind; a
//! redis-server written behind understudy's back while its replica was
//! down is refilled; a redis-server holding keys the log has no history of
//! is refused at start unless `--adopt-upstream-data` makes it a new
//! cluster's first state.

use std::time::Duration;

use understudy_tests::client::resp_raw::{RawResp, Value};
use understudy_tests::harness::proxy_cluster::wait_commit_hint_saved;
use understudy_tests::harness::{
    free_port, serial, wait_for, Cluster, ProxyCluster, RedisServer, ReplicaConfig, TestDir,
};

const DEADLINE: Duration = Duration::from_secs(60);
/// What the feed logs when it refills its redis-server from an RDB.
const FULL_RESYNC_SENT: &str = "feed: full resync of the upstream sent";

async fn write_keys(cluster: &ProxyCluster, id: &str, prefix: &str, n: usize) {
    let mut c = cluster.raw(id).await.unwrap();
    for i in 0..n {
        let r = c
            .call(&["SET", &format!("{prefix}{i}"), &format!("v{i}")])
            .await
            .unwrap();
        assert_eq!(r.show(), "OK");
    }
}

async fn two_replicas(dir: &TestDir) -> (ProxyCluster, String, String) {
    let cluster = ProxyCluster::start(dir, &["a", "b"], |b| b.sync_standbys(1))
        .await
        .unwrap();
    let (active, standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    (cluster, active.id, standby)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_continues_on_the_redis_server_it_left() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-restart").unwrap();
    let (mut cluster, active, standby) = two_replicas(&dir).await;
    write_keys(&cluster, &active, "first:", 300).await;
    cluster
        .wait_upstream_caught_up(&standby, &active, DEADLINE)
        .await
        .unwrap();
    cluster
        .wait_commit_hint_saved(&standby, DEADLINE)
        .await
        .unwrap();

    // The standby's process restarts; its redis-server keeps everything.
    let logged_before = cluster.redis[&standby].log().len();
    cluster.cluster.kill(&standby).unwrap();
    write_keys(&cluster, &active, "meanwhile:", 50).await;
    cluster.cluster.restart(&standby).await.unwrap();
    cluster
        .cluster
        .wait_sync_confirmed(&standby, DEADLINE)
        .await
        .unwrap();
    write_keys(&cluster, &active, "after:", 50).await;
    let data = cluster
        .wait_same_upstream_data(&active, &standby, DEADLINE)
        .await
        .unwrap();
    assert_eq!(data.len(), 400);
    // It continued: a partial resynchronization from the restarted
    // replica's feed, no full one.
    let redis_log = cluster.redis[&standby].log()[logged_before..].to_string();
    assert!(
        redis_log.contains("Master accepted a Partial Resynchronization")
            && !redis_log.contains("Full resync from master"),
        "the standby's redis-server after the restart:\n{redis_log}"
    );
    let replica_log = cluster.cluster.replica(&standby).stderr_of_this_life();
    assert!(!replica_log.contains(FULL_RESYNC_SENT), "{replica_log}");
}

/// BUG (replica/src/proxy/start.rs, `open`, with replica/src/node.rs): at
/// start the stream's history is rebuilt only up to the persisted commit
/// hint, which is saved once a second and may be anything up to the real
/// commit index (node_state.rs). A standby killed before its hint covered
/// the stream's first entry (within about a second of a cluster's
/// formation, as a crash can) finds its redis-server holding keys and no
/// history, and refuses to start: "the upstream … holds N keys, but this
/// replica's log has no history of them …" — though its log holds that
/// history, only not yet known committed. Reproduced here by setting the
/// hint to 0, a value the contract allows. (The same cause lets a replica
/// restarted with `--adopt-upstream-data` still given adopt its
/// redis-server a second time instead of refusing the flag, if its hint
/// does not cover the stream yet.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_restarted_with_an_old_commit_hint_continues() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-restart-hint").unwrap();
    let (mut cluster, active, standby) = two_replicas(&dir).await;
    write_keys(&cluster, &active, "k", 100).await;
    cluster
        .wait_upstream_caught_up(&standby, &active, DEADLINE)
        .await
        .unwrap();
    cluster.cluster.kill(&standby).unwrap();
    let path = cluster
        .cluster
        .replica(&standby)
        .data_dir()
        .join("node-state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    state["commit_hint"] = 0.into();
    std::fs::write(&path, serde_json::to_string_pretty(&state).unwrap()).unwrap();
    cluster.cluster.restart(&standby).await.unwrap();
    cluster
        .cluster
        .wait_sync_confirmed(&standby, DEADLINE)
        .await
        .unwrap();
    write_keys(&cluster, &active, "after", 10).await;
    let data = cluster
        .wait_same_upstream_data(&active, &standby, DEADLINE)
        .await
        .unwrap();
    assert_eq!(data.len(), 110);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_server_written_behind_understudys_back_is_refilled() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-intruder").unwrap();
    let (mut cluster, active, standby) = two_replicas(&dir).await;
    write_keys(&cluster, &active, "k", 200).await;
    cluster
        .wait_upstream_caught_up(&standby, &active, DEADLINE)
        .await
        .unwrap();
    cluster
        .wait_commit_hint_saved(&standby, DEADLINE)
        .await
        .unwrap();
    // While the standby is down, someone detaches its redis-server and
    // writes it.
    cluster.cluster.kill(&standby).unwrap();
    let mut raw = RawResp::connect(&cluster.redis[&standby].addr())
        .await
        .unwrap();
    assert_eq!(
        raw.call(&["REPLICAOF", "NO", "ONE"]).await.unwrap().show(),
        "OK"
    );
    assert_eq!(
        raw.call(&["SET", "intruder", "x"]).await.unwrap().show(),
        "OK"
    );
    assert_eq!(raw.call(&["DEL", "k1"]).await.unwrap(), Value::Int(1));
    cluster.cluster.restart(&standby).await.unwrap();
    let data = cluster
        .wait_same_upstream_data(&active, &standby, DEADLINE)
        .await
        .unwrap();
    assert!(!data.contains_key("intruder"));
    assert_eq!(data.len(), 200);
    let log = cluster.cluster.replica(&standby).stderr_of_this_life();
    assert!(log.contains(FULL_RESYNC_SENT), "{log}");
    cluster
        .cluster
        .wait_sync_confirmed(&standby, DEADLINE)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_the_log_has_no_history_of_is_refused_unless_adopted() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-adopt").unwrap();
    let redis = RedisServer::start(&dir, "existing").await.unwrap();
    let mut raw = redis.client().await.unwrap();
    raw.call(&["SET", "x", "1"]).await.unwrap();
    raw.call(&["SET", "y", "2", "EX", "1000"]).await.unwrap();
    let resp = format!("127.0.0.1:{}", free_port());
    let upstream = |adopt: bool| {
        let mut args = vec![
            "--upstream".to_string(),
            redis.url(),
            "--resp-listen".to_string(),
            resp.clone(),
        ];
        if adopt {
            args.push("--adopt-upstream-data".to_string());
        }
        args
    };

    // Refused, naming the problem and the fix.
    let mut refused = ReplicaConfig::new(&dir, "refused")
        .data_dir(dir.join("solo.data"))
        .args(upstream(false))
        .spawn()
        .unwrap();
    let status = refused.wait_for_exit(DEADLINE).await.unwrap();
    assert_eq!(status.code(), Some(2));
    let log = refused.stderr();
    assert!(
        log.contains("holds 2 keys, but this replica's log has no history of them")
            && log.contains("--adopt-upstream-data"),
        "{log}"
    );

    // Adopted: the first state of a new cluster (of one replica), deadlines
    // kept.
    let mut cluster = Cluster::builder()
        .replicas(["solo"])
        .sync_standbys(0)
        .node_args("solo", upstream(true))
        .start(&dir)
        .await
        .unwrap();
    // Each answer on a new connection, until it is the one wanted: a
    // session that began in the instant of a promotion ends with the role
    // it began in (the client reconnects).
    let answers = |args: &'static [&'static str], ok: fn(&Value) -> bool| {
        let resp = resp.clone();
        async move {
            wait_for(DEADLINE, &format!("{args:?} answered as expected"), || {
                let resp = resp.clone();
                async move {
                    let mut c = RawResp::connect(&resp).await.ok()?;
                    let v = c.call(args).await.ok()?;
                    ok(&v).then_some(v)
                }
            })
            .await
            .unwrap()
        }
    };
    let ttl_kept = |v: &Value| matches!(v, Value::Int(t) if (900..=1000).contains(t));
    answers(&["GET", "x"], |v| v.show() == "\"1\"").await;
    answers(&["TTL", "y"], ttl_kept).await;
    answers(&["SET", "z", "3"], |v| v.show() == "OK").await;

    // The flag is for a new cluster only: with it, a restart is refused.
    // (Once the commit hint covers the stream: see the test above.)
    wait_commit_hint_saved(cluster.replica("solo"), DEADLINE)
        .await
        .unwrap();
    cluster.kill("solo").unwrap();
    let port = cluster.replica("solo").port();
    let again = |adopt: bool, name: &str| {
        let mut config = cluster
            .replica_config(&dir, "solo")
            .log_name(name)
            .args(upstream(adopt));
        config.port = port;
        config
    };
    let mut refused = again(true, "solo-again-adopting").spawn().unwrap();
    let status = refused.wait_for_exit(DEADLINE).await.unwrap();
    assert_eq!(status.code(), Some(2));
    assert!(
        refused
            .stderr()
            .contains("--adopt-upstream-data is for a new cluster only"),
        "{}",
        refused.stderr()
    );
    // Without it the data is now the cluster's: served again, as it was.
    let _solo = again(false, "solo-again").start().await.unwrap();
    answers(&["GET", "x"], |v| v.show() == "\"1\"").await;
    answers(&["GET", "z"], |v| v.show() == "\"3\"").await;
    answers(&["TTL", "y"], ttl_kept).await;
}
