//! The client API on standbys: reads with `X-Min-Version` (wait, then 503;
//! a cut write is 409), writes proxied to the active or redirected with 307,
//! and restart from snapshot plus log replay.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{eventually, TestNode};

const WAIT: Duration = Duration::from_secs(10);

struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn call(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(
            req.body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

async fn pair(tweak_b: impl FnOnce(&mut replica::config::Options)) -> (TestNode, TestNode) {
    let a = TestNode::start("a", |_| {}).await;
    let b = TestNode::start("b", |o| {
        o.min_version_wait_ms = Some(300);
        tweak_b(o)
    })
    .await;
    // Async mode (no sync set), as the arbiter's replies would say.
    a.node.roles.set_async_mode(true);
    b.node.roles.set_async_mode(true);
    a.make_active(1, &[]).await;
    b.follow(&a, 1).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_reads_wait_for_the_version_or_answer_503() {
    let (a, b) = pair(|_| {}).await;
    let put = call("PUT", &format!("{}/v1/kv/x", a.client_url), &[], "1").await;
    assert_eq!(put.status, 200);
    let version = put.header("x-data-version").unwrap().to_string();
    // A standby serves it once it has applied that version.
    let got = call(
        "GET",
        &format!("{}/v1/kv/x", b.client_url),
        &[("x-min-version", &version)],
        "",
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(&got.body[..], b"1");
    let seen: proto_common::Position = got.header("x-data-version").unwrap().parse().unwrap();
    assert!(seen >= version.parse().unwrap());
    // A version it will not reach in time: 503, retryable, naming both.
    let ahead = "1.999999";
    let got = call(
        "GET",
        &format!("{}/v1/kv/x", b.client_url),
        &[("x-min-version", ahead)],
        "",
    )
    .await;
    assert_eq!(got.status, 503);
    let e = got.json();
    assert_eq!(e["error"], "version_not_reached");
    assert_eq!(e["retryable"], true);
    assert!(e["message"].as_str().unwrap().contains(ahead));
    // Garbage tokens are a client error.
    let got = call(
        "GET",
        &format!("{}/v1/kv/x", b.client_url),
        &[("x-min-version", "soon")],
        "",
    )
    .await;
    assert_eq!(got.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_naming_a_cut_write_is_409() {
    let (a, b) = pair(|_| {}).await;
    a.put("base", "v").await.unwrap();
    let shared = a.applied();
    eventually(WAIT, "b to catch up", || b.applied() == shared).await;
    // b takes over in epoch 2; a writes on alone in epoch 1 (async mode).
    b.make_active(2, &[]).await;
    let cut = a.put("lost", "v").await.unwrap().position;
    b.put("new", "v").await.unwrap();
    a.follow(&b, 2).await;
    let target = b.applied();
    eventually(WAIT, "a to converge", || a.applied() == target).await;
    for node in [&a, &b] {
        let got = call(
            "GET",
            &format!("{}/v1/kv/base", node.client_url),
            &[("x-min-version", &cut.to_string())],
            "",
        )
        .await;
        assert_eq!(got.status, 409, "{}", String::from_utf8_lossy(&got.body));
        assert_eq!(got.json()["error"], "version_cut");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_a_standby_are_proxied_to_the_active() {
    let (a, b) = pair(|_| {}).await;
    let put = call(
        "PUT",
        &format!("{}/v1/kv/via-b", b.client_url),
        &[],
        "hello",
    )
    .await;
    assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
    assert!(put.header("x-data-version").is_some());
    assert_eq!(&a.node.kv.read().get(b"via-b").unwrap().value[..], b"hello");
    let txn = r#"{"ops":[{"op":"put","key":"t","value":"1"}]}"#;
    let got = call("POST", &format!("{}/v1/txn", b.client_url), &[], txn).await;
    assert_eq!(got.status, 200);
    let del = call("DELETE", &format!("{}/v1/kv/nope", b.client_url), &[], "").await;
    assert_eq!(del.status, 404, "the active's own answer is relayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_a_standby_are_redirected_when_configured() {
    let (a, b) = pair(|o| o.forward = Some("redirect".into())).await;
    let put = call("PUT", &format!("{}/v1/kv/k", b.client_url), &[], "v").await;
    assert_eq!(put.status, 307);
    assert_eq!(
        put.header("location").unwrap(),
        format!("{}/v1/kv/k", a.client_url)
    );
    assert_eq!(put.header("x-active-url").unwrap(), a.client_url);
    let e = put.json();
    assert_eq!(e["error"], "not_writable");
    assert_eq!(e["active"], a.client_url);
    assert!(
        a.node.kv.read().get(b"k").is_none(),
        "a redirect must not write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_knows_no_active_answers_503_retryable() {
    let b = TestNode::start("b", |_| {}).await;
    let put = call("PUT", &format!("{}/v1/kv/k", b.client_url), &[], "v").await;
    assert_eq!(put.status, 503);
    let e = put.json();
    assert_eq!(e["error"], "not_writable");
    assert_eq!(e["retryable"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_replays_the_snapshot_and_the_log() {
    let a = TestNode::start("a", |o| o.segment_bytes = Some(64 << 10)).await;
    a.make_active(1, &[]).await;
    let filler = "f".repeat(1500);
    for i in 0..200 {
        a.put(&format!("k{i:03}"), &format!("{i}{filler}"))
            .await
            .unwrap();
    }
    replica::server::take_snapshot(&a.node, None).await.unwrap();
    for i in 150..260 {
        a.put(&format!("k{i:03}"), &format!("second {i}"))
            .await
            .unwrap();
    }
    let guard = a.node.roles.writer().unwrap();
    a.node
        .write(
            &guard,
            replica::command::Command::Delete { key: "k000".into() },
        )
        .await
        .unwrap();
    let before = a.dump();
    let applied = a.applied();
    let dir = a.stop().await;
    let a = TestNode::start_in("a", dir, |o| o.segment_bytes = Some(64 << 10)).await;
    a.make_active(2, &[]).await;
    assert_eq!(a.dump(), before);
    assert!(
        a.applied() > applied,
        "the new epoch opens after the old log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_active_serves_no_linearizable_reads() {
    let (a, b) = pair(|_| {}).await;
    a.put("k", "v").await.unwrap();
    let url = format!("{}/v1/kv/k?consistency=linearizable", a.client_url);
    assert_eq!(call("GET", &url, &[], "").await.status, 200);
    // A switchover to b fences a: the arbiter may name b any moment now,
    // while a's own lease still runs.
    a.repl.fence(b.id.clone()).await;
    let got = call("GET", &url, &[], "").await;
    assert_eq!(got.status, 503, "{}", String::from_utf8_lossy(&got.body));
    let e = got.json();
    assert_eq!(e["error"], "not_writable");
    assert!(e["message"].as_str().unwrap().contains("switchover"), "{e}");
    // Local reads are still served.
    let local = format!("{}/v1/kv/k", a.client_url);
    assert_eq!(call("GET", &local, &[], "").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_active_serves_linearizable_reads_only_once_its_epoch_is_committed() {
    let a = TestNode::start("a", |_| {}).await;
    let b = TestNode::start("b", |_| {}).await;
    // Its sync standby is not connected: the epoch's opening entry waits.
    a.make_active(1, &[&b]).await;
    let url = format!("{}/v1/kv/k?consistency=linearizable", a.client_url);
    let got = call("GET", &url, &[], "").await;
    assert_eq!(got.status, 503, "{}", String::from_utf8_lossy(&got.body));
    assert!(
        got.json()["message"]
            .as_str()
            .unwrap()
            .contains("has not yet committed its first entry"),
        "{}",
        got.json()
    );
    b.follow(&a, 1).await;
    eventually(WAIT, "the epoch's first entry to commit", || {
        a.applied().epoch.0 == 1
    })
    .await;
    assert_eq!(call("GET", &url, &[], "").await.status, 404);
}

/// A standby whose idea of the active's URL is `url`.
async fn standby_forwarding_to(url: &str) -> TestNode {
    let b = TestNode::start("b", |_| {}).await;
    // Its replication address refuses connections: b keeps trying to
    // follow, and forwards clients to `url` meanwhile.
    let nobody = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let repl_addr = nobody.local_addr().unwrap().to_string();
    drop(nobody);
    let active = proto_common::heartbeat::ActiveInfo {
        node_id: proto_common::NodeId::new("a").unwrap(),
        client_url: url.to_string(),
        repl_addr,
    };
    b.repl.follow(active, proto_common::Epoch(1)).await.unwrap();
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_could_not_reach_the_active_is_safe_to_retry() {
    // A port nobody listens on: the connection is refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let b = standby_forwarding_to(&url).await;
    let got = call("PUT", &format!("{}/v1/kv/k", b.client_url), &[], "v").await;
    assert_eq!(got.status, 502, "{}", String::from_utf8_lossy(&got.body));
    let e = got.json();
    assert_eq!(e["error"], "forward_failed");
    assert_eq!(e["retryable"], true);
    assert!(e["message"].as_str().unwrap().contains("not sent"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_that_got_no_answer_has_an_unknown_outcome() {
    // An "active" that reads the request and hangs up without answering:
    // the write may have been carried out.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mute = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
                .await
                .unwrap();
            assert!(n > 0, "the standby hung up first");
            got.extend_from_slice(&buf[..n]);
        }
    });
    let b = standby_forwarding_to(&url).await;
    let got = call("PUT", &format!("{}/v1/kv/k", b.client_url), &[], "v").await;
    mute.await.unwrap();
    assert_eq!(got.status, 503, "{}", String::from_utf8_lossy(&got.body));
    let e = got.json();
    assert_eq!(e["error"], "outcome_unknown", "{e}");
    assert_eq!(e["retryable"], false);
    assert!(
        e["message"].as_str().unwrap().contains("read it back"),
        "{e}"
    );
}

/// An active whose sync standby `b` is not connected, so every write
/// waits; and one write, sent, waiting.
async fn active_with_a_waiting_write(
    tweak: impl FnOnce(&mut replica::config::Options),
) -> (TestNode, TestNode, tokio::task::JoinHandle<Answer>) {
    let a = TestNode::start("a", tweak).await;
    let b = TestNode::start("b", |_| {}).await;
    a.make_active(1, &[&b]).await;
    let url = format!("{}/v1/kv/first", a.client_url);
    let first = tokio::spawn(async move { call("PUT", &url, &[], "v").await });
    eventually(WAIT, "the first write to be waiting", || {
        a.node.commit.durable().index.0 >= 2
    })
    .await;
    (a, b, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_max_pending_writes_are_refused_at_once() {
    let (a, b, first) = active_with_a_waiting_write(|o| o.max_pending_writes = Some(1)).await;
    let second = call("PUT", &format!("{}/v1/kv/second", a.client_url), &[], "v").await;
    assert_eq!(
        second.status,
        503,
        "{}",
        String::from_utf8_lossy(&second.body)
    );
    assert_eq!(second.json()["error"], "overloaded");
    assert_eq!(second.json()["retryable"], true);
    assert!(second.json()["message"]
        .as_str()
        .unwrap()
        .contains("max_pending_writes"));
    // The standby arrives: the waiting write commits and is answered.
    b.follow(&a, 1).await;
    assert_eq!(first.await.unwrap().status, 200);
    let third = call("PUT", &format!("{}/v1/kv/third", a.client_url), &[], "v").await;
    assert_eq!(third.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_max_requests_are_refused_at_once_but_health_checks_are_not() {
    let (a, b, first) = active_with_a_waiting_write(|o| o.max_requests = Some(1)).await;
    let read = call("GET", &format!("{}/v1/kv/other", a.client_url), &[], "").await;
    assert_eq!(read.status, 503, "{}", String::from_utf8_lossy(&read.body));
    assert_eq!(read.json()["error"], "overloaded");
    assert!(read.json()["message"]
        .as_str()
        .unwrap()
        .contains("max_requests"));
    for path in ["/healthz", "/v1/role", "/metrics"] {
        let got = call("GET", &format!("{}{path}", a.client_url), &[], "").await;
        assert_eq!(got.status, 200, "{path}");
    }
    b.follow(&a, 1).await;
    assert_eq!(first.await.unwrap().status, 200);
    let read = call("GET", &format!("{}/v1/kv/first", a.client_url), &[], "").await;
    assert_eq!(read.status, 200);
}
