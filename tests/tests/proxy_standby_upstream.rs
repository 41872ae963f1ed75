//! What a standby's redis-server is and holds, read directly on it: a Redis
//! replica of its own replica process (`master_host:127.0.0.1`, the port of
//! that replica's feed), read-only, fed the active's replication stream, so
//! it holds the clients' data as Redis itself replicated it — real TTLs,
//! every database the clients used, and values byte for byte (a
//! HyperLogLog whose cached count `PFCOUNT` wrote included: the first form
//! replayed commands and left it different).

use std::time::Duration;

use understudy_tests::client::resp_raw::{RawResp, Value};
use understudy_tests::harness::proxy_cluster::info_field;
use understudy_tests::harness::{serial, wait_for, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

async fn cluster(name: &str) -> (TestDir, ProxyCluster, String, String) {
    let dir = TestDir::new(name).unwrap();
    let (cluster, active, standby) = ProxyCluster::start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    (dir, cluster, active.id, standby)
}

async fn call(c: &mut RawResp, args: &[&str]) -> Value {
    c.call(args)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The feed port replica `id` last made its redis-server follow (its log:
/// "the upstream follows this replica's feed … feed_port=N").
fn feed_port(cluster: &ProxyCluster, id: &str) -> Option<String> {
    let log = cluster.cluster.replica(id).stderr_of_this_life();
    log.lines()
        .filter(|l| l.contains("the upstream follows this replica's feed"))
        .filter_map(|l| l.split("feed_port=").nth(1))
        .map(|p| p.split_whitespace().next().unwrap_or_default().to_string())
        .next_back()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standbys_redis_server_follows_its_replica_and_holds_the_clients_data() {
    let _serial = serial().await;
    let (_dir, cluster, active, standby) = cluster("proxy-standby-upstream").await;
    // The standby's redis-server replicates from its own replica's feed
    // (its link comes up once the feed has sent it the stream's RDB).
    let info = wait_for(DEADLINE, "the standby's redis-server linked", || {
        let (cluster, standby) = (&cluster, &standby);
        async move {
            let info = cluster.upstream_info(standby, "replication").await.ok()?;
            (info_field(&info, "master_link_status").as_deref() == Some("up")).then_some(info)
        }
    })
    .await
    .unwrap();
    let field = |f: &str| info_field(&info, f);
    assert_eq!(field("role").as_deref(), Some("slave"), "{info}");
    assert_eq!(field("master_host").as_deref(), Some("127.0.0.1"), "{info}");
    let port = feed_port(&cluster, &standby).expect("the standby logged its feed port");
    assert_eq!(field("master_port"), Some(port), "{info}");
    assert_ne!(
        field("master_port"),
        Some(cluster.redis[&active].port.to_string()),
        "the standby's redis-server follows the active's directly"
    );
    // The active's is a master, and its one replica is the tap.
    let info = cluster.upstream_info(&active, "replication").await.unwrap();
    assert_eq!(
        info_field(&info, "role").as_deref(),
        Some("master"),
        "{info}"
    );
    assert_eq!(
        info_field(&info, "connected_slaves").as_deref(),
        Some("1"),
        "{info}"
    );

    // Clients write through the standby, in two databases, with a TTL.
    let mut c = cluster.raw(&standby).await.unwrap();
    assert_eq!(
        call(&mut c, &["SET", "session", "v", "EX", "1000"])
            .await
            .show(),
        "OK"
    );
    assert_eq!(call(&mut c, &["SELECT", "15"]).await.show(), "OK");
    assert_eq!(call(&mut c, &["SET", "in15", "fifteen"]).await.show(), "OK");
    assert_eq!(call(&mut c, &["HSET", "h15", "f", "v"]).await.show(), "1");
    cluster
        .wait_upstream_caught_up(&standby, &active, DEADLINE)
        .await
        .unwrap();

    let mut direct = RawResp::connect(&cluster.redis[&standby].addr())
        .await
        .unwrap();
    let ttl = call(&mut direct, &["TTL", "session"]).await;
    assert!(
        matches!(ttl, Value::Int(t) if (995..=1000).contains(&t)),
        "TTL on the standby's redis-server: {}",
        ttl.show()
    );
    let mut on_active = RawResp::connect(&cluster.redis[&active].addr())
        .await
        .unwrap();
    assert_eq!(
        call(&mut direct, &["PEXPIRETIME", "session"]).await,
        call(&mut on_active, &["PEXPIRETIME", "session"]).await,
        "the same deadline on both redis-servers"
    );
    assert_eq!(call(&mut direct, &["GET", "in15"]).await, Value::NullBulk);
    assert_eq!(call(&mut direct, &["SELECT", "15"]).await.show(), "OK");
    assert_eq!(
        call(&mut direct, &["GET", "in15"]).await.show(),
        "\"fifteen\""
    );
    assert_eq!(
        call(&mut direct, &["HGETALL", "h15"]).await.show(),
        "[\"f\", \"v\"]"
    );
    // It takes no writes but its feed's.
    let refused = call(&mut direct, &["SET", "behind", "understudy's back"]).await;
    assert!(
        matches!(&refused, Value::Error(e) if e.starts_with("READONLY")),
        "{}",
        refused.show()
    );
    let data = cluster
        .wait_same_upstream_data(&active, &standby, DEADLINE)
        .await
        .unwrap();
    assert_eq!(data["db15/in15"], "string:\"fifteen\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hyperloglog_is_byte_identical_on_every_redis_server() {
    let _serial = serial().await;
    let (_dir, cluster, active, standby) = cluster("proxy-hyperloglog").await;
    let mut c = cluster.raw(&active).await.unwrap();
    let mut add = vec!["PFADD".to_string(), "visitors".to_string()];
    add.extend((0..300).map(|i| format!("user{i}")));
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    assert_eq!(call(&mut c, &add).await, Value::Int(1));
    // PFCOUNT caches the count in the value: a write Redis replicates.
    let count = call(&mut c, &["PFCOUNT", "visitors"]).await;
    assert!(
        matches!(count, Value::Int(n) if (290..=310).contains(&n)),
        "{}",
        count.show()
    );
    assert_eq!(
        call(&mut c, &["PFADD", "others", "a", "b", "user1"]).await,
        Value::Int(1)
    );
    assert_eq!(
        call(&mut c, &["PFMERGE", "all", "visitors", "others"])
            .await
            .show(),
        "OK"
    );
    call(&mut c, &["PFCOUNT", "all"]).await;
    call(&mut c, &["PFCOUNT", "visitors", "others"]).await;
    cluster
        .wait_upstream_caught_up(&standby, &active, DEADLINE)
        .await
        .unwrap();
    let mut on_active = RawResp::connect(&cluster.redis[&active].addr())
        .await
        .unwrap();
    let mut on_standby = RawResp::connect(&cluster.redis[&standby].addr())
        .await
        .unwrap();
    for key in ["visitors", "others", "all"] {
        for cmd in ["DUMP", "GET"] {
            let theirs = call(&mut on_active, &[cmd, key]).await;
            let ours = call(&mut on_standby, &[cmd, key]).await;
            assert!(
                matches!(theirs, Value::Bulk(_)),
                "{cmd} {key}: {}",
                theirs.show()
            );
            assert_eq!(
                ours, theirs,
                "{cmd} {key} differs between the active's and the standby's redis-server"
            );
        }
    }
}
