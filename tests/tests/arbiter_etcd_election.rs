//! Arbiter leader election in etcd, end to end (DESIGN.md, "Arbiter high
//! availability"): real `arbiter` processes (and in-process electors where
//! a test must hold a term itself) over a real single-member etcd.
//!
//! - two arbiters on one etcd: exactly one leads; the other answers
//!   heartbeats and mutating calls with 307 to it and shows the stored
//!   state in its status;
//! - `kill -9` of the leader: the other leads within the lease TTL + 1 s
//!   (measured and printed); SIGTERM hands over at once;
//! - a deposed arbiter's state write is refused with `not_leader`, naming
//!   the new leader, and its term ends as soon as its key goes;
//! - a leader cut off from etcd stops answering heartbeats within its
//!   lease, on its own deadline (0.9 · TTL after its last acknowledged
//!   keep-alive was sent), without waiting for etcd's verdict;
//! - `POST /v1/params` on the leader changes the stored parameters, which
//!   the next leader and the replicas' replies use;
//! - two clusters on one etcd see neither each other's state nor leader.

mod arbiter_etcd_support;

use std::time::{Duration, Instant};

use arbiter::store::{CasOutcome, ClusterState, EtcdStore, StateStore};
use arbiter_etcd_support::{endpoints, single_leader, EtcdArbiter, InProcess, TTL_S};
use etcd_client::GetOptions;
use proto_common::heartbeat::{Heartbeat, HeartbeatReply, Role};
use proto_common::params::ClusterParams;
use proto_common::{Epoch, LogIndex, NodeId, Position};
use understudy_tests::harness::{free_port, wait_until, EtcdCluster, TestDir};

/// How long a first election may take (processes starting, etcd warm-up).
const ELECT_WITHIN: Duration = Duration::from_secs(20);

/// A heartbeat of a fresh standby `node` of `cluster`.
fn heartbeat(cluster: &str, node: &str) -> String {
    serde_json::to_string(&Heartbeat {
        cluster: cluster.into(),
        node_id: NodeId::new(node).unwrap(),
        seq: 1,
        client_url: format!("http://{node}.test:7000"),
        repl_addr: format!("{node}.test:7100"),
        role: Role::Standby,
        epoch: Epoch::ZERO,
        active_epoch: Epoch::ZERO,
        position: Position::new(0, 0),
        commit_index: LogIndex(0),
        priority: 1,
        quarantined_entries: 0,
        healthy: true,
        detail: None,
        following: None,
        sync_version: 0,
        standbys: Vec::new(),
        handoff: None,
        reinitialized: 0,
        can_reinit: true,
        upstream: None,
        disk: None,
        cannot_lead: None,
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_arbiters_elect_exactly_one_leader_and_the_other_redirects() {
    let dir = TestDir::new("arbiter-etcd-two").expect("test dir");
    let etcd = EtcdCluster::start(1, dir.path())
        .await
        .expect("etcd starts");
    let a = EtcdArbiter::spawn(&dir, "arb-a", "c1", &etcd.etcd_url(), &[]);
    let b = EtcdArbiter::spawn(&dir, "arb-b", "c1", &etcd.etcd_url(), &[]);
    let arbiters = [&a, &b];
    let leader = arbiters[single_leader(&arbiters, ELECT_WITHIN).await];
    let follower = if std::ptr::eq(leader, &a) { &b } else { &a };

    // Still exactly one a while later: nobody flaps.
    tokio::time::sleep(Duration::from_millis(2 * TTL_S * 1000)).await;
    assert!(leader.is_leader().await, "the leader kept its term");
    assert!(
        !follower.is_leader().await,
        "the follower did not take over"
    );

    // Heartbeats and every mutating call: 307 to the same path on the leader.
    for (path, body) in [
        ("/v1/heartbeat", heartbeat("c1", "r1")),
        ("/v1/maintenance", r#"{"enabled": true}"#.to_string()),
        ("/v1/switchover", "{}".to_string()),
        ("/v1/params", r#"{"lease_ms": 1500}"#.to_string()),
    ] {
        let raw = follower.post(path, &body).await;
        assert_eq!(raw.status, 307, "{path}: {:?}", raw.body);
        assert_eq!(
            raw.location.as_deref(),
            Some(format!("{}{path}", leader.url).as_str()),
            "{path}"
        );
        let err: proto_common::ErrorBody = serde_json::from_slice(&raw.body).unwrap();
        assert_eq!(err.error, proto_common::ErrorCode::NotLeader, "{path}");
        assert_eq!(err.leader.as_deref(), Some(leader.url.as_str()), "{path}");
        assert!(err.retryable);
    }

    // The leader answers the heartbeat itself.
    let raw = leader.post("/v1/heartbeat", &heartbeat("c1", "r1")).await;
    assert_eq!(raw.status, 200, "{:?}", raw.body);
    let reply: HeartbeatReply = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(reply.leader.as_deref(), Some(leader.url.as_str()));

    // The follower's status is the stored state, naming the leader.
    let lead = leader.status().await.expect("leader status");
    let follow = follower.status().await.expect("follower status");
    assert!(lead.is_leader && !follow.is_leader);
    assert_eq!(follow.leader.as_deref(), Some(leader.url.as_str()));
    assert_eq!(follow.cluster, "c1");
    assert_eq!(follow.epoch, lead.epoch);
    assert_eq!(follow.params, lead.params);
    assert!(
        follow.state_version >= 1 && follow.state_version <= lead.state_version,
        "follower {} leader {}",
        follow.state_version,
        lead.state_version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_hands_over_within_the_lease_ttl_plus_one_second() {
    let dir = TestDir::new("arbiter-etcd-kill").expect("test dir");
    let etcd = EtcdCluster::start(1, dir.path())
        .await
        .expect("etcd starts");
    let mut a = EtcdArbiter::spawn(&dir, "arb-a", "c1", &etcd.etcd_url(), &[]);
    let mut b = EtcdArbiter::spawn(&dir, "arb-b", "c1", &etcd.etcd_url(), &[]);
    let first = single_leader(&[&a, &b], ELECT_WITHIN).await;
    let (old, new) = if first == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let before = old.status().await.expect("leader status");
    // Let keep-alives run a while: the new leader must wait out a lease that
    // was renewed, not a fresh one.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let killed_at = Instant::now();
    old.process.kill().expect("kill -9 the leader");
    let new_ref = &*new;
    wait_until(
        Duration::from_secs(TTL_S + 10),
        "the other arbiter leads",
        || async { new_ref.is_leader().await },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let took = killed_at.elapsed();
    println!(
        "arbiter failover after kill -9: {} ms (lease TTL {TTL_S} s; bound {} ms)",
        took.as_millis(),
        TTL_S * 1000 + 1000
    );
    assert!(
        took <= Duration::from_millis(TTL_S * 1000 + 1000),
        "failover took {took:?}, more than the lease TTL ({TTL_S} s) + 1 s"
    );

    let after = new.status().await.expect("new leader status");
    assert_eq!(after.leader.as_deref(), Some(new.url.as_str()));
    assert!(after.state_version >= before.state_version);
    assert_eq!(after.epoch, before.epoch);
    assert!(
        after
            .recent_decisions
            .iter()
            .any(|d| d.reason.contains("took office")),
        "a fresh core took office: {:?}",
        after.recent_decisions
    );
    assert!(
        after.failover.lease_wait_left_ms > 0 || after.active.is_none(),
        "a new leader waits a full lease before promoting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_hands_over_at_once() {
    let dir = TestDir::new("arbiter-etcd-term").expect("test dir");
    let etcd = EtcdCluster::start(1, dir.path())
        .await
        .expect("etcd starts");
    let mut a = EtcdArbiter::spawn(&dir, "arb-a", "c1", &etcd.etcd_url(), &[]);
    let mut b = EtcdArbiter::spawn(&dir, "arb-b", "c1", &etcd.etcd_url(), &[]);
    let first = single_leader(&[&a, &b], ELECT_WITHIN).await;
    let (old, new) = if first == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let stopped_at = Instant::now();
    old.process.sigterm().expect("SIGTERM the leader");
    let new_ref = &*new;
    wait_until(
        Duration::from_secs(TTL_S + 10),
        "the other arbiter leads",
        || async { new_ref.is_leader().await },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let took = stopped_at.elapsed();
    println!("arbiter handover after SIGTERM: {} ms", took.as_millis());
    assert!(
        took < Duration::from_millis(TTL_S * 1000),
        "a leader shutting down revokes its lease: {took:?} is a lease expiry"
    );
    let exit = old
        .process
        .wait_for_exit(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deposed_arbiters_writes_are_refused() {
    let dir = TestDir::new("arbiter-etcd-deposed").expect("test dir");
    let etcd = EtcdCluster::start(1, dir.path())
        .await
        .expect("etcd starts");
    let endpoints = endpoints(&etcd);
    let mut a = InProcess::new(&endpoints, "c1", "http://arb-a.test:7700", TTL_S).await;
    let mut b = InProcess::new(&endpoints, "c1", "http://arb-b.test:7700", TTL_S).await;

    let (term_a, store_a) = a.lead(Duration::from_secs(10)).await;
    let v1 = create_v1(&store_a).await;
    let unfenced = b
        .store
        .compare_and_swap(Some(1), &v2_of(&v1))
        .await
        .unwrap_err();
    assert_eq!(
        unfenced.code(),
        "not_leader",
        "a store without a term never writes"
    );

    // B campaigns (and waits); A's lease is revoked behind its back, as if
    // etcd had expired it.
    let campaign = tokio::spawn(async move {
        let won = b.lead(Duration::from_secs(10)).await;
        (b, won)
    });
    let mut raw = etcd_client::Client::connect(etcd.client_urls(), None)
        .await
        .unwrap();
    raw.lease_revoke(term_a.fence().unwrap().lease_id)
        .await
        .unwrap();
    let (_b, (term_b, store_b)) = campaign.await.unwrap();
    assert!(term_b.holds());

    // A's term ends on its own (the watch on its key), at once.
    tokio::time::timeout(Duration::from_secs(2), term_a.ended())
        .await
        .expect("A's term ended when its key went away");
    assert!(!term_a.holds());

    // Whatever A believes, its writes are refused, naming B.
    let err = store_a
        .compare_and_swap(Some(1), &v2_of(&v1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "not_leader", "{err}");
    assert!(err.to_string().contains("http://arb-b.test:7700"), "{err}");
    assert_eq!(
        store_a.load().await.unwrap(),
        Some(v1.clone()),
        "nothing written"
    );

    // B writes on from the version A left.
    assert_eq!(
        store_b
            .compare_and_swap(Some(1), &v2_of(&v1))
            .await
            .unwrap(),
        CasOutcome::Written
    );
    assert_eq!(store_a.load().await.unwrap().map(|s| s.version), Some(2));
}

/// A dead member in the endpoint list (killed, or restarting) fails no
/// call: etcd-client's balanced channel keeps handing it requests, which
/// fail with a refused connection before they are sent, and each such
/// call is made again on another member. Campaigns, state writes and
/// reads all go through that path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_in_the_endpoint_list_fails_no_call() {
    let dir = TestDir::new("arbiter-etcd-dead-member").expect("test dir");
    let etcd = EtcdCluster::start(1, dir.path())
        .await
        .expect("etcd starts");
    // A free loopback port: nothing listens on it.
    let mut with_dead = vec![format!("127.0.0.1:{}", free_port())];
    with_dead.extend(endpoints(&etcd));
    let mut a = InProcess::new(&with_dead, "c1", "http://arb-a.test:7700", TTL_S).await;
    let (term, store) = a.lead(Duration::from_secs(10)).await;
    let mut state = create_v1(&store).await;
    const CALLS: u64 = 100;
    let mut failed = Vec::new();
    for _ in 0..CALLS {
        let mut next = state.clone();
        next.version += 1;
        match store.compare_and_swap(Some(state.version), &next).await {
            Ok(CasOutcome::Written) => state = next,
            other => failed.push(format!("write {}: {other:?}", next.version)),
        }
        match store.load().await {
            Ok(Some(loaded)) if loaded == state => {}
            other => failed.push(format!("load at {}: {other:?}", state.version)),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} calls failed with one dead endpoint of two: {:#?}",
        failed.len(),
        2 * CALLS,
        &failed[..failed.len().min(5)]
    );
    assert!(term.holds(), "the term survived");
}

/// Creates version 1 of cluster c1's state through `store` (which must
/// hold a term) and returns it.
async fn create_v1(store: &EtcdStore) -> ClusterState {
    let mut v1 = ClusterState::new("c1", ClusterParams::default());
    v1.version = 1;
    assert_eq!(
        store.compare_and_swap(None, &v1).await.unwrap(),
        CasOutcome::Written
    );
    v1
}

fn v2_of(v1: &ClusterState) -> ClusterState {
    let mut v2 = v1.clone();
    v2.version = 2;
    v2.maintenance = !v1.maintenance;
    v2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_set_on_the_leader_are_stored_and_survive_a_change_of_leader() {
    let dir = TestDir::new("arbiter-etcd-params").expect("test dir");
    let etcd = EtcdCluster::start(1, dir.path())
        .await
        .expect("etcd starts");
    let mut a = EtcdArbiter::spawn(
        &dir,
        "arb-a",
        "c1",
        &etcd.etcd_url(),
        &["--lease-ms", "900"],
    );
    let mut b = EtcdArbiter::spawn(
        &dir,
        "arb-b",
        "c1",
        &etcd.etcd_url(),
        &["--lease-ms", "600"],
    );
    let first = single_leader(&[&a, &b], ELECT_WITHIN).await;
    let (old, new) = if first == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };

    let raw = old.post("/v1/params", r#"{"lease_ms": 100}"#).await;
    assert_eq!(raw.status, 400, "{:?}", raw.body);
    let text = String::from_utf8_lossy(&raw.body);
    assert!(
        text.contains("lease_ms=100") && text.contains("heartbeat_ms=100"),
        "{text}"
    );

    let raw = old
        .post("/v1/params", r#"{"lease_ms": 1200, "drift": 0.2}"#)
        .await;
    assert_eq!(raw.status, 200, "{:?}", raw.body);
    let changed: arbiter::ops::ParamsChanged = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!((changed.params.lease_ms, changed.params.drift), (1200, 0.2));
    let raw = old.post("/v1/heartbeat", &heartbeat("c1", "r1")).await;
    let reply: HeartbeatReply = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(reply.params.lease_ms, 1200, "replicas get them in replies");

    // The next leader uses the stored parameters, not its own flags (the
    // first leader created the state with its --lease-ms, 900 or 600).
    old.process.kill().expect("kill the leader");
    let new_ref = &*new;
    wait_until(
        Duration::from_secs(TTL_S + 10),
        "the other arbiter leads",
        || async { new_ref.is_leader().await },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let status = new.status().await.unwrap();
    assert_eq!((status.params.lease_ms, status.params.drift), (1200, 0.2));
    assert!(
        status
            .history
            .iter()
            .any(|d| d.reason.contains("lease_ms: ") && d.reason.contains(" -> 1200")),
        "{:?}",
        status.history
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_sharing_one_etcd_do_not_see_each_other() {
    let dir = TestDir::new("arbiter-etcd-two-clusters").expect("test dir");
    let etcd = EtcdCluster::start(1, dir.path())
        .await
        .expect("etcd starts");
    let one = EtcdArbiter::spawn(
        &dir,
        "arb-one",
        "one",
        &etcd.etcd_url(),
        &["--lease-ms", "800"],
    );
    let two = EtcdArbiter::spawn(
        &dir,
        "arb-two",
        "two",
        &etcd.etcd_url(),
        &["--lease-ms", "700"],
    );
    // Each is the only arbiter of its cluster: both lead at once.
    single_leader(&[&one], ELECT_WITHIN).await;
    single_leader(&[&two], ELECT_WITHIN).await;

    let raw = one.post("/v1/maintenance", r#"{"enabled": true}"#).await;
    assert_eq!(raw.status, 200, "{:?}", raw.body);
    let (s1, s2) = (one.status().await.unwrap(), two.status().await.unwrap());
    assert_eq!((s1.cluster.as_str(), s2.cluster.as_str()), ("one", "two"));
    assert!(s1.maintenance && !s2.maintenance);
    assert_eq!((s1.params.lease_ms, s2.params.lease_ms), (800, 700));

    let mut raw = etcd_client::Client::connect(etcd.client_urls(), None)
        .await
        .unwrap();
    for (cluster, url) in [("one", &one.url), ("two", &two.url)] {
        let resp = raw
            .get(
                format!("/{cluster}/"),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        let keys: Vec<&str> = resp.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
        assert_eq!(
            keys,
            [
                format!("/{cluster}/arbiter/leader"),
                format!("/{cluster}/state")
            ],
            "every key of {cluster} is under /{cluster}/"
        );
        let leader = resp.kvs()[0].value_str().unwrap();
        assert!(leader.contains(url.as_str()), "{cluster}: {leader}");
        let state: ClusterState = serde_json::from_slice(resp.kvs()[1].value()).unwrap();
        assert_eq!(state.cluster, cluster);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_stops_answering_within_its_lease() {
    let dir = TestDir::new("arbiter-etcd-cutoff").expect("test dir");
    let mut etcd = EtcdCluster::start(1, dir.path())
        .await
        .expect("etcd starts");
    // No formation: a heartbeat must never wait on a (frozen) store write.
    let quiet = ["--initial-wait-ms", "600000"];
    let a = EtcdArbiter::spawn(&dir, "arb-a", "c1", &etcd.etcd_url(), &quiet);
    single_leader(&[&a], ELECT_WITHIN).await;
    let hb = heartbeat("c1", "r1");
    assert_eq!(a.post("/v1/heartbeat", &hb).await.status, 200);
    // Let a few keep-alives land first.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let frozen_at = Instant::now();
    etcd.members[0].process.sigstop().expect("freeze etcd");
    let a_ref = &a;
    let hb_ref = &hb;
    wait_until(
        Duration::from_secs(TTL_S + 5),
        "the leader refuses heartbeats",
        || async { a_ref.post("/v1/heartbeat", hb_ref).await.status != 200 },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let took = frozen_at.elapsed();
    println!(
        "leader cut off from etcd stopped answering after {} ms (lease TTL {TTL_S} s)",
        took.as_millis()
    );
    // The arbiter gives up 0.9 · TTL after sending the last keep-alive
    // etcd acknowledged — sent before the freeze — so well within one TTL.
    assert!(
        took <= Duration::from_millis(TTL_S * 1000),
        "stopped answering only after {took:?}"
    );
    let raw = a.post("/v1/heartbeat", &hb).await;
    let err: proto_common::ErrorBody = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(err.error, proto_common::ErrorCode::NotLeader, "{err:?}");

    etcd.members[0].process.sigcont().expect("thaw etcd");
    single_leader(&[&a], ELECT_WITHIN).await;
    assert_eq!(
        a.post("/v1/heartbeat", &hb).await.status,
        200,
        "leads again"
    );
}
