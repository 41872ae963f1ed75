//! `POST /v1/params` over real HTTP (file store, one arbiter): the token is
//! required, unknown names and broken rules are refused naming the values,
//! a valid change is stored and reaches replicas in heartbeat replies, and
//! `arbiter params` (the CLI) shows and changes them.

mod support;

use arbiter::cli::OperatorCommand;
use arbiter::ops::ParamsChanged;
use clap::Parser;
use hyper::Method;
use proto_common::{ErrorBody, ErrorCode, Position};
use support::{fast_options, FakeNode, TestArbiter, TOKEN};

fn error_of(raw: &arbiter::cli::client::RawResponse) -> ErrorBody {
    serde_json::from_slice(&raw.body).unwrap()
}

#[tokio::test]
async fn params_are_validated_stored_and_sent_to_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let arb = TestArbiter::start(dir.path(), fast_options()).await;

    let raw = arb
        .raw(
            Method::POST,
            "/v1/params",
            Some(r#"{"lease_ms": 150}"#),
            false,
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 401, "the token is required");

    let raw = arb
        .raw(Method::POST, "/v1/params", Some(r#"{"lease": 150}"#), true)
        .await
        .unwrap();
    assert_eq!(raw.status, 400);
    let err = error_of(&raw);
    assert_eq!(err.error, ErrorCode::InvalidJson);
    assert!(
        err.message.contains("`lease`") && err.message.contains("lease_ms"),
        "{}",
        err.message
    );

    let raw = arb
        .raw(
            Method::POST,
            "/v1/params",
            Some(r#"{"lease_ms": 20}"#),
            true,
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 400);
    let err = error_of(&raw);
    assert_eq!(err.error, ErrorCode::BadRequest);
    assert!(
        err.message.contains("lease_ms=20") && err.message.contains("heartbeat_ms=20"),
        "{}",
        err.message
    );

    let raw = arb
        .raw(Method::POST, "/v1/params", Some("{}"), true)
        .await
        .unwrap();
    assert_eq!(raw.status, 400, "an empty update names nothing to change");

    let raw = arb
        .raw(
            Method::POST,
            "/v1/params",
            Some(r#"{"lease_ms": 150, "strict": true}"#),
            true,
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 200, "{:?}", raw.body);
    let changed: ParamsChanged = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(changed.params.lease_ms, 150);
    assert!(changed.params.strict);
    assert_eq!(
        changed.changed,
        ["lease_ms: 100 -> 150", "strict: false -> true"]
    );

    let mut node = FakeNode::new("a", Position::new(0, 1));
    let reply = node.beat(&arb.client).await;
    assert_eq!(
        reply.params.lease_ms, 150,
        "replicas take them from replies"
    );
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&arb.state_path).unwrap()).unwrap();
    assert_eq!(stored["params"]["lease_ms"], 150, "stored");
    arb.stop().await.unwrap();
}

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: OperatorCommand,
}

#[tokio::test]
async fn the_cli_shows_and_changes_params() {
    let dir = tempfile::tempdir().unwrap();
    let arb = TestArbiter::start(dir.path(), fast_options()).await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let token_file = token_file.display().to_string();
    let run = |args: &[&str]| {
        let mut argv = vec![
            "arbiter",
            "params",
            "--arbiter",
            &arb.url,
            "--token-file",
            &token_file,
        ];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().command
    };

    let shown = run(&[]).execute().await.unwrap();
    assert!(shown.contains("lease_ms=100"), "{shown}");
    let out = run(&["lease_ms=120", "drift=0.2"]).execute().await.unwrap();
    assert!(
        out.contains("lease_ms: 100 -> 120") && out.contains("drift: 0.1 -> 0.2"),
        "{out}"
    );
    let out = run(&["lease_ms=120"]).execute().await.unwrap();
    assert!(out.contains("nothing changed"), "{out}");
    let err = run(&["lease=1"]).execute().await.unwrap_err();
    assert_eq!(err.code(), "bad_args", "{err}");
    assert!(err.to_string().contains("lease_ms"), "{err}");
    let err = run(&["lease_ms=10"]).execute().await.unwrap_err();
    assert_eq!(err.code(), "refused", "{err}");
    assert!(err.to_string().contains("lease_ms=10"), "{err}");
    arb.stop().await.unwrap();
}
