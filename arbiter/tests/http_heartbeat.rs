//! `POST /v1/heartbeat` over real HTTP against an in-process arbiter with a
//! file store: authentication, malformed and oversized bodies, the wrong
//! cluster, and first formation ending in a grant visible in the reply.

mod support;

use std::time::{Duration, Instant};

use hyper::Method;
use proto_common::heartbeat::Role;
use proto_common::{Epoch, ErrorBody, ErrorCode, Position};
use support::{fast_options, FakeNode, TestArbiter, CLUSTER};

fn error_of(raw: &arbiter::cli::client::RawResponse) -> ErrorBody {
    serde_json::from_slice(&raw.body).unwrap_or_else(|e| {
        panic!(
            "not an error body ({e}): {}",
            String::from_utf8_lossy(&raw.body)
        )
    })
}

#[tokio::test]
async fn heartbeats_without_the_right_token_are_refused_and_the_arbiter_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let arb = TestArbiter::start(dir.path(), fast_options()).await;
    let hb = serde_json::to_string(&FakeNode::new("a", Position::ZERO).heartbeat()).unwrap();

    let none = arb
        .raw(Method::POST, "/v1/heartbeat", Some(&hb), false)
        .await
        .unwrap();
    assert_eq!(none.status, 401);
    let body = error_of(&none);
    assert_eq!(body.error, ErrorCode::Unauthorized);
    assert!(body.message.contains("no Authorization header"), "{body:?}");

    let wrong = arb.client_with(Some("wrong-token-0123456789"));
    let raw = wrong
        .send(Method::POST, "/v1/heartbeat", Some(hb.clone().into()), true)
        .await
        .unwrap();
    assert_eq!(raw.status, 401);
    assert!(error_of(&raw).message.contains("does not match"));

    // Still serving, and the right token works.
    let ok = arb
        .raw(Method::POST, "/v1/heartbeat", Some(&hb), true)
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let metrics = arb.raw(Method::GET, "/metrics", None, true).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("understudy_arbiter_heartbeats_total{result=\"unauthorized\"} 2"),
        "{text}"
    );
    arb.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_oversized_and_foreign_heartbeats_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let arb = TestArbiter::start(dir.path(), fast_options()).await;

    let raw = arb
        .raw(Method::POST, "/v1/heartbeat", Some("{\"cluster\":"), true)
        .await
        .unwrap();
    assert_eq!(raw.status, 400);
    let body = error_of(&raw);
    assert_eq!(body.error, ErrorCode::InvalidJson);
    assert!(body.message.contains("not a valid heartbeat"), "{body:?}");

    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    let raw = arb
        .raw(Method::POST, "/v1/heartbeat", Some(&huge), true)
        .await
        .unwrap();
    assert_eq!(raw.status, 413);
    assert_eq!(error_of(&raw).error, ErrorCode::BodyTooLarge);

    let mut hb = FakeNode::new("a", Position::ZERO).heartbeat();
    hb.cluster = "other".into();
    let raw = arb
        .raw(
            Method::POST,
            "/v1/heartbeat",
            Some(&serde_json::to_string(&hb).unwrap()),
            true,
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 400);
    let body = error_of(&raw);
    assert_eq!(body.error, ErrorCode::BadRequest);
    assert!(
        body.message.contains("\"other\"") && body.message.contains(&format!("\"{CLUSTER}\"")),
        "{body:?}"
    );

    let raw = arb.raw(Method::GET, "/v1/nope", None, false).await.unwrap();
    assert_eq!(raw.status, 404);
    assert_eq!(error_of(&raw).error, ErrorCode::UnknownRoute);
    let raw = arb
        .raw(Method::GET, "/v1/heartbeat", None, false)
        .await
        .unwrap();
    assert_eq!(raw.status, 405);
    assert_eq!(error_of(&raw).error, ErrorCode::MethodNotAllowed);
}

#[tokio::test]
async fn first_formation_grants_the_only_replica_and_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let arb = TestArbiter::start(dir.path(), fast_options()).await;
    let mut a = FakeNode::new("a", Position::new(0, 7));
    let deadline = Instant::now() + Duration::from_secs(5);
    let reply = loop {
        let reply = a.beat(&arb.client).await;
        if reply.role == Role::Active {
            break reply;
        }
        assert!(Instant::now() < deadline, "never granted: {reply:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(reply.epoch, Epoch(1));
    assert_eq!(reply.active.as_ref().unwrap().node_id.as_str(), "a");
    assert_eq!(reply.leader.as_deref(), Some(arb.url.as_str()));
    assert_eq!(reply.params.heartbeat_ms, 20);

    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&arb.state_path).unwrap()).unwrap();
    assert_eq!(stored["epoch"], 1);
    assert_eq!(stored["active"]["node_id"], "a");

    let status = arb.status().await;
    assert_eq!(status["active"], "a");
    let formation = status["recent_decisions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["kind"] == "formation" && d["taken"] == true);
    assert!(formation, "{status:#}");

    let metrics = arb
        .raw(hyper::Method::GET, "/metrics", None, true)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    for want in [
        "understudy_arbiter_epoch 1",
        "understudy_arbiter_has_active 1",
        "understudy_arbiter_replicas{role=\"active\"} 1",
        "understudy_arbiter_heartbeats_total{result=\"active\"}",
        "understudy_arbiter_decisions_total{kind=\"formation\",taken=\"true\"} 1",
        "understudy_arbiter_store_write_seconds_count",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    arb.stop().await.unwrap();
}
