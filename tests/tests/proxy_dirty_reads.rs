//! No dirty reads in proxy mode. A write's effect is in the active's
//! redis-server at once, but no reply that reveals it leaves before the
//! write is committed: with the only sync standby frozen (SIGSTOP), a
//! `SET k new` waits, and another client's `GET k` — which the redis-server
//! already answers `new` — waits too. The active is then killed (-9):
//! nobody ever saw `new`, and after the failover `k` is still `old`, on
//! the new active and, once it is back and refilled, on the old active's
//! redis-server; the old active, serving reads from its redis-server
//! (`standby_reads = "local"`), never answers `new` while it is refilled.

use std::time::Duration;

use understudy_tests::client::resp_raw::{encode, RawResp, Value};
use understudy_tests::harness::proxy_cluster::{
    command_calls, info, info_field, repl_offset, wait_value,
};
use understudy_tests::harness::{serial, wait_until, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waiting_for_its_commit_is_seen_by_nobody_and_lost_with_the_active() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-dirty-reads").unwrap();
    // A long lease: the frozen standby stays in the sync set (and may be
    // promoted) for the few hundred milliseconds the test keeps it frozen.
    let (mut cluster, active, standby) = ProxyCluster::start_pair(&dir, DEADLINE, |b| {
        b.heartbeat_ms(100)
            .lease_ms(4000)
            .node_args("a", ["--standby-reads", "local"])
            .node_args("b", ["--standby-reads", "local"])
    })
    .await
    .unwrap();
    let mut c = cluster.raw(&active.id).await.unwrap();
    assert_eq!(c.call(&["SET", "k", "old"]).await.unwrap().show(), "OK");
    let upstream = cluster.redis[&active.id].addr();
    // The standby's redis-server has been filled (see `proxy_failover.rs`
    // for a standby promoted before that), and the standby has persisted
    // its commit hint, which its restart below needs (see
    // `proxy_recovery.rs` for one that had not).
    cluster
        .wait_upstream_caught_up(&standby, &active.id, DEADLINE)
        .await
        .unwrap();
    cluster
        .wait_commit_hint_saved(&standby, DEADLINE)
        .await
        .unwrap();

    // The only sync standby freezes: nothing can commit.
    cluster
        .cluster
        .replica_mut(&standby)
        .process()
        .sigstop()
        .unwrap();
    let roles_before = command_calls(&info(&upstream, "commandstats").await.unwrap(), "role");
    let writer = {
        let addr = cluster.resp_addr(&active.id);
        tokio::spawn(async move {
            let mut c = RawResp::connect(&addr).await?;
            c.call(&["SET", "k", "new"]).await
        })
    };
    // The redis-server has run it...
    wait_value(&upstream, "k", "new", DEADLINE).await.unwrap();
    // ...and runs another client's GET, which would answer "new".
    let gets_before = command_calls(&info(&upstream, "commandstats").await.unwrap(), "get");
    let reader = {
        let addr = cluster.resp_addr(&active.id);
        tokio::spawn(async move {
            let mut c = RawResp::connect(&addr).await?;
            c.call(&["GET", "k"]).await
        })
    };
    wait_until(DEADLINE, "the GET and the ROLE behind it to run", || {
        let upstream = upstream.clone();
        async move {
            let Ok(stats) = info(&upstream, "commandstats").await else {
                return false;
            };
            command_calls(&stats, "get") > gets_before
                && command_calls(&stats, "role") >= roles_before + 2
        }
    })
    .await
    .unwrap();
    // Both replies are held: the write is not committed.
    assert!(!writer.is_finished(), "the SET was answered uncommitted");
    assert!(!reader.is_finished(), "the GET was answered uncommitted");

    // The active dies. Nobody saw "new", nor an acknowledgement of it.
    cluster.cluster.kill(&active.id).unwrap();
    let wrote = writer.await.unwrap();
    assert!(
        !matches!(&wrote, Ok(Value::Simple(ok)) if ok == "OK"),
        "the uncommitted SET was acknowledged: {wrote:?}"
    );
    let read = reader.await.unwrap();
    assert!(
        !matches!(&read, Ok(Value::Bulk(v)) if v == b"new"),
        "a client read the uncommitted value"
    );
    assert!(
        matches!(&read, Err(_) | Ok(Value::Bulk(_))),
        "the GET answered {read:?}"
    );

    // The frozen standby's machine dies too and comes back: it never read
    // the entry the active had sent it (it sat in its socket; resumed, it
    // could have logged it and committed it in its own epoch, which would
    // be no dirty read but a write whose outcome was unknown surviving).
    cluster.cluster.kill(&standby).unwrap();
    cluster.cluster.restart(&standby).await.unwrap();
    let promoted = cluster
        .cluster
        .wait_for_active_after(active.epoch, DEADLINE)
        .await
        .unwrap();
    assert_eq!(promoted.id, standby);
    let mut c = cluster.raw(&standby).await.unwrap();
    assert_eq!(c.call(&["GET", "k"]).await.unwrap().show(), "\"old\"");

    // The old active comes back as a standby; its redis-server, which ran
    // the uncommitted SET, is refilled with the cluster's data. Reads it
    // serves from that redis-server meanwhile are retried until then, and
    // then answer "old".
    cluster.cluster.restart(&active.id).await.unwrap();
    let on_old = cluster.resp_addr(&active.id);
    let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    wait_until(DEADLINE, "a read served by the old active", || {
        let on_old = on_old.clone();
        let answers = answers.clone();
        async move {
            let Ok(mut c) = RawResp::connect(&on_old).await else {
                return false;
            };
            let got = c
                .call(&["GET", "k"])
                .await
                .map(|v| v.show())
                .unwrap_or_else(|e| e.to_string());
            let served = !got.starts_with("-TRYAGAIN");
            answers.lock().unwrap().push(got);
            served
        }
    })
    .await
    .unwrap();
    let answers = answers.lock().unwrap().clone();
    assert_eq!(
        answers.last().map(String::as_str),
        Some("\"old\""),
        "read on the old active: {answers:?}"
    );
    assert!(
        !answers.iter().any(|a| a.contains("new")),
        "the old active served the uncommitted value: {answers:?}"
    );
    cluster
        .cluster
        .wait_sync_confirmed(&active.id, DEADLINE)
        .await
        .unwrap();
    let data = cluster
        .wait_same_upstream_data(&standby, &active.id, DEADLINE)
        .await
        .unwrap();
    assert_eq!(data["k"], "string:\"old\"");
}

/// An `EXEC` whose transaction the active's redis-server ran, but whose
/// effects cannot be committed (the sync standby is frozen) before the
/// lease runs out (the arbiter is frozen too): the client is answered as
/// soon as the lease ends, and told the outcome is unknown (the
/// transaction ran), never "retry".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_held_past_the_lease_is_answered_unknown_when_the_lease_ends() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-exec-lease").unwrap();
    let (mut cluster, standby, mut c) = pair_and_client(&dir).await;
    assert_eq!(c.call(&["MULTI"]).await.unwrap().show(), "OK");
    assert_eq!(c.call(&["SET", "k", "v"]).await.unwrap().show(), "QUEUED");
    freeze_commits(&mut cluster, &standby, true);
    let sent = std::time::Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(10), c.call(&["EXEC"])).await;
    let waited = sent.elapsed();
    freeze_commits(&mut cluster, &standby, false);
    let reply = reply
        .expect("the EXEC is answered when the lease ends, not when the cluster heals")
        .expect("an answer, not a broken connection")
        .show();
    assert!(reply.starts_with("-UNKNOWN"), "{reply} after {waited:?}");
}

/// Pipelined commands whose effects cannot be committed before the lease
/// runs out are each answered, in order: every write that Redis ran is told
/// its outcome is unknown, every read to retry (the replies' side takes a
/// pipeline's replies together; one error must stand for each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pipelined_command_held_past_the_lease_gets_its_own_answer() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-pipeline-lease").unwrap();
    let (mut cluster, standby, mut c) = pair_and_client(&dir).await;
    assert_eq!(c.call(&["SET", "k", "old"]).await.unwrap().show(), "OK");
    freeze_commits(&mut cluster, &standby, true);
    let mut pipeline = encode(&["SET", "a", "1"]);
    pipeline.extend(encode(&["SET", "b", "2"]));
    pipeline.extend(encode(&["INCR", "n"]));
    pipeline.extend(encode(&["GET", "k"]));
    pipeline.extend(encode(&["GET", "a"]));
    c.send_raw(&pipeline).await.unwrap();
    let mut replies = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        for _ in 0..5 {
            replies.push(c.reply().await.map(|v| v.show()));
        }
    })
    .await;
    freeze_commits(&mut cluster, &standby, false);
    read.expect("the pipeline is answered when the lease ends");
    let starts: Vec<String> = replies
        .into_iter()
        .map(|r| {
            let r = r.expect("an answer, not a broken connection");
            r.split(' ').next().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(
        starts,
        ["-UNKNOWN", "-UNKNOWN", "-UNKNOWN", "-TRYAGAIN", "-TRYAGAIN"],
        "one answer per command, in order"
    );
}

/// The usual active and sync standby, and a client of the active.
async fn pair_and_client(dir: &TestDir) -> (ProxyCluster, String, RawResp) {
    let (cluster, active, standby) = ProxyCluster::start_with_sync_standby(dir, DEADLINE)
        .await
        .unwrap();
    let c = RawResp::connect(&cluster.resp_addr(&active.id))
        .await
        .unwrap();
    (cluster, standby, c)
}

/// Freezes (`SIGSTOP`) or thaws the sync standby and the arbiter: while
/// frozen nothing commits and the active's lease runs out unrenewed.
fn freeze_commits(cluster: &mut ProxyCluster, standby: &str, freeze: bool) {
    let replica = cluster.cluster.replica_mut(standby).process();
    if freeze {
        replica.sigstop().unwrap();
        cluster.cluster.arbiter.process().sigstop().unwrap();
    } else {
        replica.sigcont().unwrap();
        cluster.cluster.arbiter.process().sigcont().unwrap();
    }
}

/// Found by the fault suite's proxy form (a `SIGSTOP` of the active for
/// about its lease): the tap took a lapsed lease for the end of its term
/// and stopped; the lease was renewed in the same term, but with nothing
/// logged nothing committed again, and every reply was held for good. A
/// lone replica keeps its role while the frozen arbiter lets its lease
/// lapse; once the arbiter is back it must serve again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_whose_lease_lapsed_serves_again_once_it_is_renewed() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-lease-lapse").unwrap();
    let mut cluster = ProxyCluster::start(&dir, &["a"], |b| {
        b.sync_standbys(0).heartbeat_ms(100).lease_ms(500)
    })
    .await
    .unwrap();
    let active = cluster.cluster.wait_for_active(DEADLINE).await.unwrap();
    let addr = cluster.resp_addr(&active.id);
    let set = |addr: String| async move {
        let attempt = async {
            let mut c = RawResp::connect(&addr).await.ok()?;
            c.call(&["SET", "k", "v"]).await.ok()
        };
        tokio::time::timeout(Duration::from_secs(2), attempt)
            .await
            .ok()
            .flatten()
    };
    assert_eq!(
        set(addr.clone()).await.map(|v| v.show()).as_deref(),
        Some("OK")
    );

    cluster.cluster.arbiter.process().sigstop().unwrap();
    // The lease lapses: the active refuses to answer.
    wait_until(
        DEADLINE,
        "the active to refuse once its lease lapsed",
        || {
            let addr = addr.clone();
            async move { matches!(set(addr).await, Some(Value::Error(_))) }
        },
    )
    .await
    .unwrap();
    // Something for the tap to read while the lease is lapsed (a write
    // straight to the redis-server), and the tap's answer to it: its
    // acknowledgement of the write's offset, or its link closed.
    let upstream = cluster.redis[&active.id].addr();
    let mut direct = RawResp::connect(&upstream).await.unwrap();
    assert_eq!(
        direct.call(&["SET", "wake", "1"]).await.unwrap().show(),
        "OK"
    );
    let target = repl_offset(&upstream).await.unwrap();
    wait_until(
        DEADLINE,
        "the tap to acknowledge the write, or to leave",
        || {
            let upstream = upstream.clone();
            async move {
                let Ok(info) = info(&upstream, "replication").await else {
                    return false;
                };
                let acked = info_field(&info, "slave0")
                    .and_then(|l| {
                        l.split(',')
                            .find_map(|kv| Some(kv.strip_prefix("offset=")?.to_string()))
                    })
                    .and_then(|o| o.parse::<u64>().ok());
                info_field(&info, "connected_slaves").as_deref() == Some("0")
                    || acked.is_some_and(|o| o >= target)
            }
        },
    )
    .await
    .unwrap();
    cluster.cluster.arbiter.process().sigcont().unwrap();

    wait_until(
        DEADLINE,
        "a SET answered OK once the lease is renewed",
        || {
            let addr = addr.clone();
            async move { set(addr).await.is_some_and(|v| v.show() == "OK") }
        },
    )
    .await
    .unwrap();
    let now = cluster.cluster.wait_for_active(DEADLINE).await.unwrap();
    assert_eq!(
        (now.id.as_str(), now.epoch),
        (active.id.as_str(), active.epoch),
        "the same term serves again"
    );
}
