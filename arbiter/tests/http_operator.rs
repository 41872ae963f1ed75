//! The read and operator endpoints over real HTTP: the status JSON, the
//! dashboard, switchover and maintenance (auth and validation, and a
//! switchover that starts), and stored parameters winning on restart.

mod support;

use std::time::{Duration, Instant};

use arbiter::cli::render_status;
use arbiter::config::Options;
use arbiter::ClusterStatus;
use hyper::Method;
use proto_common::heartbeat::Role;
use proto_common::{ErrorBody, ErrorCode, NodeId, Position};
use support::{fast_options, FakeNode, TestArbiter};

fn error_of(raw: &arbiter::cli::client::RawResponse) -> ErrorBody {
    serde_json::from_slice(&raw.body).unwrap()
}

/// Heartbeats `a` and `b` until `a` is active with `b` a confirmed
/// sync-set member.
async fn form_pair(arb: &TestArbiter) -> (FakeNode, FakeNode) {
    let mut a = FakeNode::new("a", Position::new(0, 9));
    let mut b = FakeNode::new("b", Position::new(0, 9));
    a.standbys = vec![NodeId::new("b").unwrap()];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        a.beat(&arb.client).await;
        b.beat(&arb.client).await;
        let status = arb.status().await;
        if a.role == Role::Active && status["confirmed_sync"] == serde_json::json!(["b"]) {
            return (a, b);
        }
        assert!(Instant::now() < deadline, "pair never formed: {status:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn status_json_has_the_documented_shape_and_renders_as_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let arb = TestArbiter::start(dir.path(), fast_options()).await;
    let (_a, _b) = form_pair(&arb).await;

    // With a cluster token, reading the status needs it (or the read-only
    // token).
    let refused = arb
        .raw(Method::GET, "/v1/status", None, false)
        .await
        .unwrap();
    assert_eq!(refused.status, 401);
    assert!(error_of(&refused).message.contains("--read-token-file"));
    let raw = arb
        .raw(Method::GET, "/v1/status", None, true)
        .await
        .unwrap();
    assert_eq!(raw.status, 200);
    let json: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(json["cluster"], "t");
    assert_eq!(json["leader"], arb.url.as_str());
    assert_eq!(json["is_leader"], true);
    assert_eq!(json["epoch"], 1);
    assert_eq!(json["active"], "a");
    assert_eq!(json["sync_set"], serde_json::json!(["b"]));
    assert_eq!(json["params"]["lease_ms"], 100);
    for key in [
        "maintenance",
        "degraded",
        "failover",
        "recent_decisions",
        "history",
    ] {
        assert!(json.get(key).is_some(), "{key} missing: {json:#}");
    }
    let replicas = json["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 2);
    assert_eq!(replicas[0]["node_id"], "a");
    assert_eq!(replicas[0]["role"], "active");
    assert_eq!(replicas[1]["role"], "standby");
    assert_eq!(replicas[1]["in_sync_set"], true);
    assert!(replicas[1]["last_heartbeat_age_ms"].is_u64());

    let status: ClusterStatus = serde_json::from_value(json).unwrap();
    let table = render_status(&status);
    assert!(table.contains("active a"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("b ") && l.contains("confirmed")),
        "{table}"
    );

    let refused = arb.raw(Method::GET, "/", None, false).await.unwrap();
    assert_eq!(refused.status, 401, "the dashboard needs a credential too");
    let page = arb.raw(Method::GET, "/", None, true).await.unwrap();
    assert_eq!(page.status, 200);
    assert!(page.content_type.unwrap().starts_with("text/html"));
    assert!(String::from_utf8_lossy(&page.body).contains("/v1/status"));
}

#[tokio::test]
async fn switchover_needs_the_token_and_a_valid_target() {
    let dir = tempfile::tempdir().unwrap();
    let arb = TestArbiter::start(dir.path(), fast_options()).await;
    let post = |body: &'static str, auth: bool| {
        let arb = &arb;
        async move {
            arb.raw(Method::POST, "/v1/switchover", Some(body), auth)
                .await
                .unwrap()
        }
    };

    let raw = post("{}", false).await;
    assert_eq!(raw.status, 401);
    let raw = post("{}", true).await;
    assert_eq!(raw.status, 409, "no active yet");
    assert!(error_of(&raw).message.contains("no active"));
    assert!(error_of(&raw).retryable);

    let (_a, _b) = form_pair(&arb).await;
    let raw = post("{\"to\": \"not an id\"}", true).await;
    assert_eq!(raw.status, 400);
    assert!(error_of(&raw).message.contains("not an id"));
    let raw = post("{\"target\": \"b\"}", true).await;
    assert_eq!(raw.status, 400);
    assert_eq!(error_of(&raw).error, ErrorCode::InvalidJson);
    let raw = post("{\"to\": \"zz\"}", true).await;
    assert_eq!(raw.status, 404);
    let body = error_of(&raw);
    assert!(
        body.message.contains("zz") && body.message.contains("a, b"),
        "{body:?}"
    );
    let raw = post("{\"to\": \"a\"}", true).await;
    assert_eq!(raw.status, 400, "{:?}", error_of(&raw));
    assert!(error_of(&raw).message.contains("already the active"));

    let raw = post("{\"to\": \"b\"}", true).await;
    assert_eq!(raw.status, 200, "{}", String::from_utf8_lossy(&raw.body));
    let started: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(started["target"], "b");
    assert_eq!(started["from"], "a");
    let raw = post("", true).await;
    assert_eq!(raw.status, 409, "a second switchover while one runs");
    assert!(error_of(&raw).message.contains("already running"));
    let status = arb.status().await;
    assert_eq!(status["switchover"]["target"], "b");
}

#[tokio::test]
async fn maintenance_is_authenticated_validated_and_stored() {
    let dir = tempfile::tempdir().unwrap();
    let arb = TestArbiter::start(dir.path(), fast_options()).await;
    let post = |body: &'static str, auth: bool| {
        let arb = &arb;
        async move {
            arb.raw(Method::POST, "/v1/maintenance", Some(body), auth)
                .await
                .unwrap()
        }
    };
    assert_eq!(post("{\"enabled\": true}", false).await.status, 401);
    let raw = post("{}", true).await;
    assert_eq!(raw.status, 400);
    assert!(error_of(&raw).message.contains("enabled"));
    let raw = post("{\"enabled\": \"yes\"}", true).await;
    assert_eq!(error_of(&raw).error, ErrorCode::InvalidJson);

    let on: serde_json::Value =
        serde_json::from_slice(&post("{\"enabled\": true}", true).await.body).unwrap();
    assert_eq!(on["maintenance"], true);
    assert_eq!(on["changed"], true);
    let again: serde_json::Value =
        serde_json::from_slice(&post("{\"enabled\": true}", true).await.body).unwrap();
    assert_eq!(again["changed"], false);
    assert_eq!(arb.status().await["maintenance"], true);
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&arb.state_path).unwrap()).unwrap();
    assert_eq!(stored["maintenance"], true);
    let off: serde_json::Value =
        serde_json::from_slice(&post("{\"enabled\": false}", true).await.body).unwrap();
    assert_eq!(off["maintenance"], false);
}

#[tokio::test]
async fn stored_parameters_win_over_flags_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestArbiter::start(dir.path(), fast_options()).await;
    assert_eq!(first.status().await["params"]["lease_ms"], 100);
    first.stop().await.unwrap();

    let second = TestArbiter::start(
        dir.path(),
        Options {
            lease_ms: Some(5000),
            ..fast_options()
        },
    )
    .await;
    let status = second.status().await;
    assert_eq!(status["params"]["lease_ms"], 100, "the stored lease wins");
    let history = status["history"].as_array().unwrap();
    assert!(
        history[0]["reason"]
            .as_str()
            .unwrap()
            .contains("created the state of cluster"),
        "{status:#}"
    );
    second.stop().await.unwrap();
}
