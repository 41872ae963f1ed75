//! The shared lane (`replica/src/proxy/lane.rs`): on the active, sessions
//! that hold no connection state share one pipelined connection to the
//! redis-server; a session takes a connection of its own before its first
//! command that needs one (`SELECT`, `MULTI`, `CLIENT`, a script, a
//! blocking command), after Redis has run what it sent on the lane.

use std::time::Duration;

use understudy_tests::client::resp_raw::{encode, parse_all, RawResp, Value};
use understudy_tests::harness::proxy_cluster::info_field;
use understudy_tests::harness::{serial, wait_for, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

async fn cluster(name: &str) -> (TestDir, ProxyCluster, String) {
    let dir = TestDir::new(name).unwrap();
    let (cluster, active, _standby) = ProxyCluster::start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    (dir, cluster, active.id)
}

async fn call(c: &mut RawResp, args: &[&str]) -> Value {
    c.call(args)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The active's redis-server's `connected_clients`.
async fn upstream_clients(cluster: &ProxyCluster, active: &str) -> i64 {
    let info = cluster.upstream_info(active, "clients").await.unwrap();
    info_field(&info, "connected_clients")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no connected_clients in {info}"))
}

/// Reads `n` replies, however the server split them.
async fn replies(c: &mut RawResp, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let frame = c.frame().await.unwrap();
        out.extend(parse_all(&frame).unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_running_plain_commands_share_one_upstream_connection() {
    let _serial = serial().await;
    let (_dir, cluster, active) = cluster("proxy-lane-shared").await;
    let addr = cluster.resp_addr(&active);
    // One session opens the lane.
    let mut first = RawResp::connect(&addr).await.unwrap();
    assert_eq!(call(&mut first, &["SET", "opened", "1"]).await.show(), "OK");
    let before = upstream_clients(&cluster, &active).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut c = RawResp::connect(&addr).await.unwrap();
        let k = format!("k{i}");
        assert_eq!(
            call(&mut c, &["SET", &k, &i.to_string()]).await.show(),
            "OK"
        );
        assert_eq!(call(&mut c, &["GET", &k]).await.text(), Some(i.to_string()));
        assert_eq!(call(&mut c, &["PUBLISH", "ch", "x"]).await, Value::Int(0));
        clients.push(c);
    }
    let shared = upstream_clients(&cluster, &active).await;
    assert_eq!(
        shared,
        before,
        "20 clients of plain commands opened {} connections to the redis-server",
        shared - before
    );
    // A command about the connection gives each its own: distinct ids.
    let mut ids = Vec::new();
    for c in &mut clients {
        ids.push(call(c, &["CLIENT", "ID"]).await.int().unwrap());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20, "{ids:?}");
    let own = upstream_clients(&cluster, &active).await;
    assert_eq!(own, before + 20);
    // And they go on, on their own connections.
    for (i, c) in clients.iter_mut().enumerate() {
        let k = format!("k{i}");
        assert_eq!(call(c, &["INCR", &k]).await, Value::Int(i as i64 + 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_leaves_the_lane_in_order() {
    let _serial = serial().await;
    let (_dir, cluster, active) = cluster("proxy-lane-order").await;
    let addr = cluster.resp_addr(&active);
    let mut c = RawResp::connect(&addr).await.unwrap();
    // One write: commands on the lane, then a transaction in another
    // database and more, which run on the session's own connection only
    // after the lane's have run.
    let mut pipeline = Vec::new();
    pipeline.extend(encode(&["SET", "k", "on-the-lane"]));
    for _ in 0..1000 {
        pipeline.extend(encode(&["INCR", "n"]));
    }
    pipeline.extend(encode(&["MULTI"]));
    pipeline.extend(encode(&["GET", "k"]));
    pipeline.extend(encode(&["GET", "n"]));
    pipeline.extend(encode(&["EXEC"]));
    pipeline.extend(encode(&["SELECT", "3"]));
    pipeline.extend(encode(&["SET", "k", "in-3"]));
    pipeline.extend(encode(&["SELECT", "0"]));
    pipeline.extend(encode(&["GET", "k"]));
    c.send_raw(&pipeline).await.unwrap();
    let got = replies(&mut c, 1 + 1000 + 4 + 4).await;
    assert_eq!(got[0].show(), "OK");
    for (i, r) in got[1..1001].iter().enumerate() {
        assert_eq!(*r, Value::Int(i as i64 + 1));
    }
    let shown: Vec<String> = got[1001..].iter().map(Value::show).collect();
    assert_eq!(
        shown,
        [
            "OK",
            "QUEUED",
            "QUEUED",
            "[\"on-the-lane\", \"1000\"]",
            "OK",
            "OK",
            "OK",
            "\"on-the-lane\""
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_pipeline_on_the_lane_is_answered_in_order() {
    let _serial = serial().await;
    let (_dir, cluster, active) = cluster("proxy-lane-pipeline").await;
    let addr = cluster.resp_addr(&active);
    // More requests in flight than a session keeps slots for, from two
    // clients at once.
    let n = 20_000;
    let mut tasks = Vec::new();
    for key in ["a", "b"] {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = RawResp::connect(&addr).await.unwrap();
            let mut pipeline = Vec::new();
            for _ in 0..n {
                pipeline.extend(encode(&["INCR", key]));
            }
            c.send_raw(&pipeline).await.unwrap();
            let got = replies(&mut c, n).await;
            for (i, r) in got.iter().enumerate() {
                assert_eq!(*r, Value::Int(i as i64 + 1), "{key}");
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(DEADLINE, t)
            .await
            .expect("the pipelines are answered")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lane_ends_its_sessions_and_the_next_opens_another() {
    let _serial = serial().await;
    let (_dir, cluster, active) = cluster("proxy-lane-lost").await;
    let addr = cluster.resp_addr(&active);
    let mut on_lane = RawResp::connect(&addr).await.unwrap();
    assert_eq!(call(&mut on_lane, &["SET", "k", "1"]).await.show(), "OK");
    // The lane's connection is the redis-server's one normal client that is
    // neither this test's nor understudy's probe or liveness check: kill
    // every normal client but the one asking.
    let upstream = cluster.redis[&active].addr();
    let mut direct = RawResp::connect(&upstream).await.unwrap();
    let killed = call(
        &mut direct,
        &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
    )
    .await;
    assert!(killed.int().unwrap_or(0) >= 1, "{}", killed.show());
    // The session on it ends as if its own connection had failed.
    on_lane.send(&["GET", "k"]).await.unwrap();
    match on_lane.frame_within(Duration::from_secs(10)).await {
        Err(_) => {}
        Ok(None) => panic!("a session on a lost lane was left waiting"),
        Ok(Some(f)) => {
            let r = parse_all(&f).unwrap();
            assert!(
                r.iter().all(Value::is_error),
                "a session on a lost lane was answered {r:?}"
            );
        }
    }
    // A new client gets a new lane.
    wait_for(DEADLINE, "a new session answered", || {
        let addr = addr.clone();
        async move {
            let mut c = RawResp::connect(&addr).await.ok()?;
            let r = c.call(&["GET", "k"]).await.ok()?;
            (r.text().as_deref() == Some("1")).then_some(())
        }
    })
    .await
    .unwrap();
    // A lane killed while no session uses it is noticed at once: the next
    // client's first command is answered.
    let killed = call(
        &mut direct,
        &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
    )
    .await;
    assert!(killed.int().unwrap_or(0) >= 1, "{}", killed.show());
    // (The lane's last command was a GET; no other connection sends one.)
    wait_for(DEADLINE, "the lane's connection gone", || {
        let upstream = upstream.clone();
        async move {
            let mut d = RawResp::connect(&upstream).await.ok()?;
            let list = d
                .call(&["CLIENT", "LIST", "TYPE", "normal"])
                .await
                .ok()?
                .text()?;
            (!list.contains("cmd=get")).then_some(())
        }
    })
    .await
    .unwrap();
    let mut next = RawResp::connect(&addr).await.unwrap();
    assert_eq!(
        call(&mut next, &["GET", "k"]).await.text().as_deref(),
        Some("1"),
        "the first command after the lane was killed"
    );
}
