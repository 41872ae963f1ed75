//! Bad client input against one real replica with small limits: every bad
//! request gets the right status and a JSON error (a stable code, a
//! non-empty message, not retryable) with `X-Data-Version`, and none of
//! them hurts the process or the data: afterwards it is still running and
//! healthy, holds exactly the good keys written before, and takes writes.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use hyper::Method;
use serde_json::json;
use understudy_tests::client::{chunked_request, key_path, raw_request, KvClient, KvResponse};
use understudy_tests::harness::{ReplicaConfig, ReplicaProcess, TestDir};

const MAX_KEY: usize = 64;
const MAX_VALUE: usize = 1024;
const MAX_BODY: usize = 4096;
const MAX_TXN_OPS: usize = 8;
const MAX_LIST: usize = 50;

async fn start(dir: &TestDir) -> ReplicaProcess {
    ReplicaConfig::new(dir, "a")
        .args([
            "--max-key-bytes",
            &MAX_KEY.to_string(),
            "--max-value-bytes",
            &MAX_VALUE.to_string(),
            "--max-body-bytes",
            &MAX_BODY.to_string(),
            "--max-txn-ops",
            &MAX_TXN_OPS.to_string(),
            "--max-list-limit",
            &MAX_LIST.to_string(),
        ])
        .start()
        .await
        .unwrap()
}

/// One bad request sent with [`KvClient`], and the answer it must get.
struct Case {
    name: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
    body: Bytes,
    status: u16,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    path: impl Into<String>,
    body: impl Into<Bytes>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.into(),
        headers: Vec::new(),
        body: body.into(),
        status,
        code,
    }
}

fn txn(name: &'static str, body: impl Into<Bytes>, status: u16, code: &'static str) -> Case {
    Case {
        headers: vec![("content-type", "application/json")],
        ..case(name, Method::POST, "/v1/txn", body, status, code)
    }
}

fn with_header(mut c: Case, name: &'static str, value: &'static str) -> Case {
    c.headers.push((name, value));
    c
}

/// The answer is the API's JSON error with this status and code.
fn assert_error(case: &str, r: &KvResponse, status: u16, code: &str) {
    let text = r.body_text();
    assert_eq!(r.status, status, "{case}: status; body {text}");
    assert!(
        r.data_position().is_some(),
        "{case}: no valid X-Data-Version ({:?})",
        r.data_version
    );
    let content_type = r.headers.get("content-type").map(|v| v.as_bytes());
    assert_eq!(
        content_type,
        Some(b"application/json".as_ref()),
        "{case}: content type"
    );
    let body: serde_json::Value = r
        .json()
        .unwrap_or_else(|e| panic!("{case}: the body is not JSON ({e}): {text}"));
    assert_eq!(body["error"], code, "{case}: error code; body {text}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{case}: empty message; body {text}");
    assert_eq!(body["retryable"], false, "{case}: retryable; body {text}");
}

/// Every key and value, read with the paginated list endpoint.
async fn read_all(client: &mut KvClient) -> BTreeMap<String, Bytes> {
    let mut all = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let r = client
            .list("", after.as_deref(), Some(MAX_LIST))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "list: {}", r.body_text());
        let page = r.list_page().unwrap();
        assert!(page.items.len() <= MAX_LIST);
        for item in &page.items {
            all.insert(item.key.clone(), item.value.clone());
        }
        match (page.more, page.items.last()) {
            (true, Some(last)) => after = Some(last.key.clone()),
            _ => return all,
        }
    }
}

/// Writes the good keys, limits included; returns what the store must hold.
async fn write_good_keys(client: &mut KvClient) -> BTreeMap<String, Bytes> {
    let mut good = BTreeMap::new();
    let mut keys: Vec<String> = (0..20).map(|i| format!("good-{i:02}")).collect();
    keys.push("with/slash and space?&=#".into());
    keys.push("unicode-é-ü-日本".into());
    keys.push("k".repeat(MAX_KEY));
    keys.push("é".repeat(MAX_KEY / 2));
    for (i, key) in keys.into_iter().enumerate() {
        let value = Bytes::from(format!("value {i} of {key}"));
        let r = client.put(&key, value.clone()).await.unwrap();
        assert_eq!(r.status, 200, "PUT {key:?}: {}", r.body_text());
        good.insert(key, value);
    }
    let largest = Bytes::from("v".repeat(MAX_VALUE));
    let r = client.put("largest-value", largest.clone()).await.unwrap();
    assert_eq!(
        r.status,
        200,
        "a value of max_value_bytes: {}",
        r.body_text()
    );
    good.insert("largest-value".into(), largest);
    let ops: Vec<_> = (0..MAX_TXN_OPS)
        .map(|i| json!({"op": "put", "key": format!("txn-{i}"), "value": format!("t{i}")}))
        .collect();
    let r = client.txn(&json!({ "ops": ops })).await.unwrap();
    assert_eq!(r.status, 200, "a txn of max_txn_ops: {}", r.body_text());
    for i in 0..MAX_TXN_OPS {
        good.insert(format!("txn-{i}"), Bytes::from(format!("t{i}")));
    }
    good
}

/// Every bad request, one per line: (what, method, path, body, status, code).
#[rustfmt::skip]
fn bad_requests() -> Vec<Case> {
    use Method as M;
    let long_key = "k".repeat(MAX_KEY + 1);
    let long_utf8_key = "é".repeat(MAX_KEY / 2 + 1);
    let huge_key = "k".repeat(10_000);
    let big_value = "v".repeat(MAX_VALUE + 1);
    let fat_ops: Vec<_> = (0..5)
        .map(|i| json!({"op": "put", "key": format!("fat-{i}"), "value": "f".repeat(MAX_VALUE)}))
        .collect();
    let fat_txn = json!({ "ops": fat_ops }).to_string();
    assert!(fat_txn.len() > MAX_BODY);
    let many_ops: Vec<_> = (0..=MAX_TXN_OPS)
        .map(|i| json!({"op": "delete", "key": format!("good-{i:02}")}))
        .collect();
    let put = |key: &str, value: &str| json!({"ops": [{"op": "put", "key": key, "value": value}]});
    let mut non_utf8 = br#"{"ops":[{"op":"put","key":"bad"#.to_vec();
    non_utf8.extend_from_slice(&[0xff, 0xfe]);
    non_utf8.extend_from_slice(br#"","value":"x"}]}"#);
    let mut non_utf8_value = br#"{"ops":[{"op":"put","key":"good-00","value":""#.to_vec();
    non_utf8_value.extend_from_slice(&[0xc3, 0x28]);
    non_utf8_value.extend_from_slice(br#""}]}"#);
    let min_version = |name, token| {
        with_header(case(name, M::GET, "/v1/kv/good-00", "", 400, "bad_request"), "x-min-version", token)
    };

    vec![
        // Sizes.
        case("PUT key over the limit", M::PUT, key_path(long_key.as_bytes()), "v", 413, "key_too_large"),
        case("GET key over the limit", M::GET, key_path(long_key.as_bytes()), "", 413, "key_too_large"),
        case("DELETE key over the limit", M::DELETE, key_path(long_key.as_bytes()), "", 413, "key_too_large"),
        case("key over the limit in bytes, not characters", M::PUT, key_path(long_utf8_key.as_bytes()), "v", 413, "key_too_large"),
        case("10 kB key", M::PUT, key_path(huge_key.as_bytes()), "v", 413, "key_too_large"),
        case("PUT value over the limit", M::PUT, "/v1/kv/good-00", big_value.clone(), 413, "value_too_large"),
        txn("txn body over the limit", fat_txn, 413, "body_too_large"),
        txn("txn value over the limit", put("good-00", &big_value).to_string(), 413, "value_too_large"),
        txn("txn key over the limit", put(&long_key, "v").to_string(), 413, "key_too_large"),
        txn("txn with more than max_txn_ops", json!({ "ops": many_ops }).to_string(), 413, "body_too_large"),
        // Transactions that are not the expected JSON.
        txn("txn not JSON", "{not json", 400, "invalid_json"),
        txn("txn empty body", "", 400, "invalid_json"),
        txn("txn JSON null", "null", 400, "invalid_json"),
        txn("txn top-level array", "[]", 400, "invalid_json"),
        txn("txn with nothing to do", "{}", 400, "invalid_json"),
        txn("txn truncated JSON", r#"{"ops":[{"op":"put","key":"good-00","#, 400, "invalid_json"),
        txn("txn unknown top-level field", r#"{"ops":[{"op":"delete","key":"good-00"}],"extra":1}"#, 400, "invalid_json"),
        txn("txn unknown op field", r#"{"ops":[{"op":"put","key":"good-00","value":"x","ttl":5}]}"#, 400, "invalid_json"),
        txn("txn unknown compare field", r#"{"compare":[{"key":"good-00","exists":true,"lease":1}],"ops":[]}"#, 400, "invalid_json"),
        txn("txn ops is an object", r#"{"ops":{"op":"delete","key":"good-00"}}"#, 400, "invalid_json"),
        txn("txn key is a number", r#"{"ops":[{"op":"delete","key":7}]}"#, 400, "invalid_json"),
        txn("txn value is a number", r#"{"ops":[{"op":"put","key":"good-00","value":7}]}"#, 400, "invalid_json"),
        txn("txn unknown op", r#"{"ops":[{"op":"frob","key":"good-00"}]}"#, 400, "invalid_json"),
        txn("txn op without a kind", r#"{"ops":[{"key":"good-00"}]}"#, 400, "invalid_json"),
        txn("txn put without a value", r#"{"ops":[{"op":"put","key":"good-00"}]}"#, 400, "invalid_json"),
        txn("txn put with value and value_base64", r#"{"ops":[{"op":"put","key":"good-00","value":"x","value_base64":"eA=="}]}"#, 400, "invalid_json"),
        txn("txn bad base64", r#"{"ops":[{"op":"put","key":"good-00","value_base64":"!!!"}]}"#, 400, "invalid_json"),
        txn("txn compare with two conditions", r#"{"compare":[{"key":"good-00","exists":true,"value":"x"}],"ops":[{"op":"delete","key":"good-00"}]}"#, 400, "invalid_json"),
        txn("txn compare with no condition", r#"{"compare":[{"key":"good-00"}],"ops":[{"op":"delete","key":"good-00"}]}"#, 400, "invalid_json"),
        txn("txn compare version not E.I", r#"{"compare":[{"key":"good-00","version":"x"}],"ops":[{"op":"delete","key":"good-00"}]}"#, 400, "invalid_json"),
        txn("txn non-UTF-8 bytes in a key", non_utf8, 400, "invalid_json"),
        txn("txn non-UTF-8 bytes in a value", non_utf8_value, 400, "invalid_json"),
        txn("txn empty key", r#"{"ops":[{"op":"delete","key":""}]}"#, 400, "invalid_key"),
        // A well-formed txn whose compare fails writes nothing.
        txn("txn compare fails", r#"{"compare":[{"key":"good-00","exists":false}],"ops":[{"op":"delete","key":"good-00"}]}"#, 409, "compare_failed"),
        // Routes and methods.
        case("unknown route", M::GET, "/v2/kv/good-00", "", 404, "unknown_route"),
        case("root", M::GET, "/", "", 404, "unknown_route"),
        case("near miss", M::PUT, "/v1/kvx/good-00", "v", 404, "unknown_route"),
        case("POST a key", M::POST, "/v1/kv/good-00", "v", 405, "method_not_allowed"),
        case("PATCH a key", M::PATCH, "/v1/kv/good-00", "v", 405, "method_not_allowed"),
        case("PUT the list", M::PUT, "/v1/kv", "v", 405, "method_not_allowed"),
        case("GET a txn", M::GET, "/v1/txn", "", 405, "method_not_allowed"),
        case("DELETE health", M::DELETE, "/healthz", "", 405, "method_not_allowed"),
        // Keys.
        case("GET empty key", M::GET, "/v1/kv/", "", 400, "invalid_key"),
        case("PUT empty key", M::PUT, "/v1/kv/", "v", 400, "invalid_key"),
        case("DELETE empty key", M::DELETE, "/v1/kv/", "", 400, "invalid_key"),
        case("GET non-UTF-8 key", M::GET, "/v1/kv/%FF%FE", "", 400, "invalid_key"),
        case("PUT non-UTF-8 key", M::PUT, "/v1/kv/%FF%FE", "v", 400, "invalid_key"),
        case("PUT half a UTF-8 character", M::PUT, "/v1/kv/good%C3", "v", 400, "invalid_key"),
        case("GET missing key", M::GET, "/v1/kv/never-written", "", 404, "not_found"),
        case("DELETE missing key", M::DELETE, "/v1/kv/never-written", "", 404, "not_found"),
        case("GET unknown query", M::GET, "/v1/kv/good-00?nonsense=1", "", 400, "bad_request"),
        case("GET bad consistency", M::GET, "/v1/kv/good-00?consistency=eventual-ish", "", 400, "bad_request"),
        // List parameters.
        case("list limit=0", M::GET, "/v1/kv?limit=0", "", 400, "bad_request"),
        case("list limit=abc", M::GET, "/v1/kv?limit=abc", "", 400, "bad_request"),
        case("list limit=-1", M::GET, "/v1/kv?limit=-1", "", 400, "bad_request"),
        case("list limit empty", M::GET, "/v1/kv?limit=", "", 400, "bad_request"),
        case("list limit over max_list_limit", M::GET, format!("/v1/kv?limit={}", MAX_LIST + 1), "", 400, "bad_request"),
        case("list limit huge", M::GET, "/v1/kv?limit=99999999999999999999999", "", 400, "bad_request"),
        case("list limit twice", M::GET, "/v1/kv?limit=1&limit=2", "", 400, "bad_request"),
        case("list unknown parameter", M::GET, "/v1/kv?prefx=good", "", 400, "bad_request"),
        // X-Min-Version tokens.
        min_version("min version garbage", "garbage"),
        min_version("min version without index", "3"),
        min_version("min version with three parts", "1.2.3"),
        min_version("min version negative", "-1.2"),
        min_version("min version overflow", "1.99999999999999999999"),
    ]
}

/// Requests [`KvClient`] cannot send (chunked bodies, lying lengths,
/// broken framing), and the JSON error each must get.
#[rustfmt::skip]
fn raw_requests() -> Vec<(&'static str, Vec<u8>, u16, &'static str)> {
    let fat_body = json!({"ops": [{"op": "put", "key": "fat", "value": "f".repeat(MAX_BODY)}]});
    let fat_body = fat_body.to_string();
    vec![
        ("chunked txn body over the limit",
         chunked_request("POST", "/v1/txn", "application/json", fat_body.as_bytes(), 1000),
         413, "body_too_large"),
        ("chunked PUT value over the limit",
         chunked_request("PUT", "/v1/kv/good-00", "application/octet-stream", &[b'v'; MAX_VALUE + 1], 300),
         413, "value_too_large"),
        ("Content-Length far over the limit, short body",
         b"PUT /v1/kv/good-00 HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000000\r\n\r\nabc".to_vec(),
         413, "value_too_large"),
        ("txn Content-Length over the limit, short body",
         b"POST /v1/txn HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 99999999\r\n\r\n{}".to_vec(),
         413, "body_too_large"),
        ("chunked body with a bad chunk size",
         b"PUT /v1/kv/good-00 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec(),
         400, "bad_request"),
        ("X-Min-Version that is not text",
         b"GET /v1/kv/good-00 HTTP/1.1\r\nHost: t\r\nX-Min-Version: \xff\xfe\r\nConnection: close\r\n\r\n".to_vec(),
         400, "bad_request"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_never_hurts_the_replica() {
    let dir = TestDir::new("bad-input").unwrap();
    let mut replica = start(&dir).await;
    let addr = format!("127.0.0.1:{}", replica.port());
    let mut client = replica.client();
    let mut good = write_good_keys(&mut client).await;

    for c in bad_requests() {
        // A fresh connection each: the server may close one after an error.
        let mut client = replica.client();
        let r = client
            .request(c.method.clone(), &c.path, &c.headers, c.body.clone())
            .await
            .unwrap_or_else(|e| panic!("{}: no answer: {e}", c.name));
        assert_error(c.name, &r, c.status, c.code);
    }
    for (name, request, status, code) in raw_requests() {
        let r = raw_request(&addr, &request, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: the connection closed without an answer"));
        assert_error(name, &r, status, code);
    }

    // A chunked body within the limits is fine: the errors above are about
    // size, not about chunking.
    let request = chunked_request(
        "PUT",
        "/v1/kv/chunked",
        "text/plain",
        &[b'c'; MAX_VALUE],
        100,
    );
    let r = raw_request(&addr, &request, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("an answer");
    assert_eq!(r.status, 200, "chunked PUT: {}", r.body_text());
    good.insert("chunked".into(), Bytes::from(vec![b'c'; MAX_VALUE]));

    // A Content-Length shorter than the data: the value is what was
    // declared; the rest is not a request and is refused by HTTP itself.
    let request =
        b"PUT /v1/kv/declared HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcGARBAGE\r\n\r\n";
    let r = raw_request(&addr, request, Duration::from_secs(10))
        .await
        .unwrap()
        .expect("an answer");
    assert_eq!(r.status, 200, "declared-length PUT: {}", r.body_text());
    good.insert("declared".into(), Bytes::from_static(b"abc"));

    // Not HTTP at all, and a header too large for any server: answered by
    // the HTTP layer (or the connection is closed); the process must not care.
    let junk_header = format!(
        "GET /v1/kv/good-00 HTTP/1.1\r\nHost: t\r\nX-Junk: {}\r\n\r\n",
        "j".repeat(1 << 20)
    );
    for junk in [
        b"NOT HTTP AT ALL\r\n\r\n".to_vec(),
        junk_header.into_bytes(),
        vec![0u8; 4096],
    ] {
        if let Ok(Some(r)) = raw_request(&addr, &junk, Duration::from_secs(10)).await {
            assert!((400..500).contains(&r.status), "junk answered {}", r.status);
        }
    }

    // Arbitrary bytes round-trip, and the list shows them as base64.
    let binary: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
    let r = client.put("binary", binary.clone()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    let r = client.get("binary").await.unwrap();
    assert_eq!((r.status, r.body.as_ref()), (200, binary.as_slice()));
    good.insert("binary".into(), Bytes::from(binary.clone()));
    let b64 = base64::engine::general_purpose::STANDARD;
    let from_txn = vec![0u8, 0xff, 0xc3, 0x28, b'\n', 0];
    let r = client
        .txn(&json!({"ops": [{"op": "put", "key": "binary-txn", "value_base64": b64.encode(&from_txn)}]}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    let r = client.get("binary-txn").await.unwrap();
    assert_eq!((r.status, r.body.as_ref()), (200, from_txn.as_slice()));
    good.insert("binary-txn".into(), Bytes::from(from_txn));
    let r = client.list("binary", None, None).await.unwrap();
    let page: serde_json::Value = r.json().unwrap();
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{page}");
    assert_eq!(items[0]["key"], "binary");
    assert_eq!(items[0]["value_base64"], b64.encode(&binary), "{page}");
    assert!(items[0].get("value").is_none(), "{page}");
    let r = client.list("good-01", None, None).await.unwrap();
    let page: serde_json::Value = r.json().unwrap();
    assert_eq!(page["items"][0]["value"], "value 1 of good-01", "{page}");
    assert!(page["items"][0].get("value_base64").is_none(), "{page}");

    // Nothing above hurt the process or the data.
    assert!(replica.is_running(), "the replica died");
    let mut fresh = replica.client();
    let r = fresh
        .request(Method::GET, "/healthz", &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    let stored = read_all(&mut fresh).await;
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        good.keys().collect::<Vec<_>>(),
        "exactly the good keys are stored"
    );
    assert_eq!(stored, good);
    for (key, value) in &good {
        let r = fresh.get(key).await.unwrap();
        assert_eq!((r.status, &r.body), (200, value), "GET {key:?}");
    }
    let r = fresh.put("final", "still writable").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    let r = fresh.get("final").await.unwrap();
    assert_eq!(r.body_text(), "still writable");
}

/// Keys must be UTF-8, and `/v1/kv/%FF` is refused as `invalid_key`; a list
/// `prefix` that is not UTF-8 must be refused too, not read as U+FFFD.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_prefix_that_is_not_utf8_is_refused() {
    let dir = TestDir::new("bad-input-prefix").unwrap();
    let replica = start(&dir).await;
    let mut client = replica.client();
    let r = client.put("\u{FFFD}-key", "v").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    let r = client
        .request(Method::GET, "/v1/kv?prefix=%FF", &[], "")
        .await
        .unwrap();
    assert_error("list prefix=%FF", &r, 400, "invalid_key");
    let r = client
        .request(Method::GET, "/v1/kv?start_after=%FF", &[], "")
        .await
        .unwrap();
    assert_error("list start_after=%FF", &r, 400, "invalid_key");
}
