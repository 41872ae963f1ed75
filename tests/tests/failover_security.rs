//! The cluster token guards every way into a cluster.
//!
//! With a token configured:
//! - heartbeats without the token, or with a wrong one, are 401, and the
//!   sender never becomes a member;
//! - switchover and maintenance calls without the token (or with a wrong
//!   one) are 401 and change nothing;
//! - a heartbeat that is not valid JSON is 400, even with the token;
//! - a replica started with a wrong token is refused by the arbiter;
//! - a replica without the token, or with a wrong one, that learns the
//!   active's replication address anyway (here from a fake arbiter) is
//!   refused by the active's handshake: it never gets any data, and the
//!   active logs that it "did not prove it holds the cluster token";
//! - after all that the arbiter is still running and the cluster takes
//!   writes, on the active and through the standby.

use std::time::Duration;

use proto_common::heartbeat::{ActiveInfo, Heartbeat, Role};
use proto_common::{Epoch, LogIndex, NodeId, Position};
use understudy_tests::client::KvClient;
use understudy_tests::harness::{
    dump, metric_value, metrics_text, replica_status, serial, wait_until, Cluster, FakeArbiter,
    TestDir,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// The log line of an active refusing a standby's handshake.
const REFUSAL: &str = "did not prove it holds the cluster token";

fn heartbeat(cluster: &str, node: &str) -> String {
    let hb = Heartbeat {
        cluster: cluster.to_string(),
        node_id: NodeId::new(node).unwrap(),
        seq: 1,
        client_url: "http://127.0.0.1:9".into(),
        repl_addr: "127.0.0.1:9".into(),
        role: Role::Standby,
        epoch: Epoch(0),
        active_epoch: Epoch(0),
        position: Position::ZERO,
        commit_index: LogIndex(0),
        priority: 100,
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
    };
    serde_json::to_string(&hb).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_token_is_required_everywhere() {
    let _serial = serial().await;
    let dir = TestDir::new("failover-security").unwrap();
    let mut cluster = Cluster::builder()
        .sync_standbys(1)
        .with_token()
        .start(&dir)
        .await
        .unwrap();
    let active = cluster.wait_for_active(DEADLINE).await.unwrap();
    let standby = cluster
        .ids()
        .into_iter()
        .find(|id| *id != active.id)
        .unwrap();
    let mut client = KvClient::new(&active.url).unwrap();
    for i in 0..20 {
        let response = client.put(format!("secret-{i}"), "data").await.unwrap();
        assert_eq!(response.status, 200, "{}", response.body_text());
    }
    let token = cluster.arbiter.token().unwrap();
    let arbiter = &cluster.arbiter;

    // The HTTP API.
    let intruder = heartbeat(cluster.name(), "intruder");
    let wrong = "Bearer this-is-not-the-cluster-token";
    let refusals = [
        ("/v1/heartbeat", intruder.as_str(), None),
        ("/v1/heartbeat", intruder.as_str(), Some(wrong)),
        // The right token, but not as `Bearer <token>`.
        ("/v1/heartbeat", intruder.as_str(), Some(token.as_str())),
        ("/v1/switchover", "{}", None),
        ("/v1/switchover", "{}", Some(wrong)),
        ("/v1/maintenance", r#"{"enabled":true}"#, None),
        ("/v1/maintenance", r#"{"enabled":true}"#, Some(wrong)),
    ];
    for (path, body, authorization) in refusals.iter().copied() {
        let response = arbiter.post(path, body, authorization).await.unwrap();
        assert_eq!(
            (response.status, response.error_code().as_deref()),
            (401, Some("unauthorized")),
            "POST {path} with {authorization:?}: {}",
            response.body_text()
        );
    }
    // Each refusal is logged once, with the peer and the reason, and
    // counted.
    let log = arbiter.stderr();
    let switchover_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("rejected a credential") && l.contains("path=/v1/switchover"))
        .collect();
    assert_eq!(switchover_lines.len(), 2, "{log}");
    for line in &switchover_lines {
        assert!(line.contains("peer=127.0.0.1:"), "{line}");
    }
    assert!(
        switchover_lines
            .iter()
            .any(|l| l.contains("no Authorization header was sent")),
        "{switchover_lines:?}"
    );
    let metrics = metrics_text(&arbiter.url()).await.unwrap();
    let rejected = metric_value(&metrics, "understudy_arbiter_rejected_credentials_total")
        .unwrap_or_else(|| panic!("no rejected_credentials counter in {metrics}"));
    assert!(rejected >= refusals.len() as f64, "{rejected}");

    let response = arbiter
        .post_authorized("/v1/heartbeat", r#"{"cluster": "#)
        .await
        .unwrap();
    assert_eq!(response.status, 400, "{}", response.body_text());
    assert_eq!(response.error_code().as_deref(), Some("invalid_json"));

    // A replica with a wrong token, at the real arbiter: never a member.
    let wrong_file = dir.join("wrong.token");
    std::fs::write(&wrong_file, "0123456789abcdef-not-the-token\n").unwrap();
    let wrong_at_arbiter = cluster
        .replica_config_with_token(&dir, "wrong-at-arbiter", Some(&wrong_file))
        .start()
        .await
        .unwrap();

    // Replicas without the token and with a wrong one, told by a fake
    // arbiter where the active is: the active must refuse them.
    let state = cluster.status().await.unwrap();
    let info = state
        .replicas
        .iter()
        .find(|r| r.node_id.as_str() == active.id)
        .unwrap();
    let fake = FakeArbiter::start(
        active.epoch,
        ActiveInfo {
            node_id: NodeId::new(active.id.clone()).unwrap(),
            client_url: info.client_url.clone(),
            repl_addr: info.repl_addr.clone(),
        },
        state.params.clone(),
    )
    .await
    .unwrap();
    let mut lured = Vec::new();
    for (id, token_file) in [("no-token", None), ("wrong-token", Some(&wrong_file))] {
        let config =
            cluster.replica_config_for(&dir, id, token_file.map(|p| p.as_path()), fake.url());
        lured.push((id, config.start().await.unwrap()));
    }
    let active_log_path = cluster.replica(&active.id).stderr_path();
    let active_log = || std::fs::read_to_string(&active_log_path).unwrap_or_default();
    wait_until(
        DEADLINE,
        "the active refusing both lured replicas twice",
        || {
            let log = active_log();
            let refused = ["no-token", "wrong-token"].iter().all(|id| {
                log.lines()
                    .filter(|l| l.contains(REFUSAL) && l.contains(&format!("standby {id} ")))
                    .count()
                    >= 2
            });
            async move { refused }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; the active's log:\n{}", active_log()));
    for (id, replica) in &lured {
        let own = replica_status(&replica.url()).await.unwrap();
        assert_eq!(
            (own.role, own.position, own.applied),
            (Role::Standby, Position::ZERO, Position::ZERO),
            "{id} got data: {own:?}"
        );
        assert!(dump(&replica.url()).await.unwrap().is_empty(), "{id}");
        let heard = fake
            .heartbeats()
            .into_iter()
            .filter(|hb| hb.node_id.as_str() == *id)
            .count();
        assert!(heard > 0, "{id} never asked the fake arbiter");
    }
    let own = replica_status(&wrong_at_arbiter.url()).await.unwrap();
    assert_eq!(own.position, Position::ZERO, "{own:?}");

    // Nothing changed, and the cluster still works.
    assert!(cluster.arbiter.is_running());
    let state = cluster.status().await.unwrap();
    let members: Vec<&str> = state.replicas.iter().map(|r| r.node_id.as_str()).collect();
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(!state.maintenance);
    assert!(state.switchover.is_none());
    let now = cluster.wait_for_active(DEADLINE).await.unwrap();
    assert_eq!(now, active);
    for url in [active.url.clone(), cluster.replica(&standby).url()] {
        let mut client = KvClient::new(&url).unwrap();
        let response = client.put("still-works", url.clone()).await.unwrap();
        assert_eq!(
            response.status,
            200,
            "PUT via {url}: {}",
            response.body_text()
        );
    }
    let log = wrong_at_arbiter.stderr();
    println!(
        "the active refused the lured replicas ({} refusals logged); the replica with a \
         wrong token says: {}",
        active_log().matches(REFUSAL).count(),
        log.lines()
            .find(|l| l.contains("heartbeat failed"))
            .unwrap_or("(nothing)")
    );
}
