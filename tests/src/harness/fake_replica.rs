//! An in-process stand-in for a replica's client API, for testing clients
//! of that API (the retry policy of `loadgen --targets-all`, redirects,
//! error handling) without starting a real cluster.
//!
//! It serves only `PUT`/`GET /v1/kv/{key}` and answers by the role the test
//! gives it, which can change at any time:
//! - `Active { epoch }`: stores writes in memory, answers
//!   `{"version":"E.I"}` and `X-Data-Version` like the real API;
//! - `Standby`: 503 `not_writable`, `"retryable": true` to writes, serves
//!   reads from its (empty) store;
//! - `RedirectTo(url)`: 307 with `Location` and `X-Active-Url` to everything.
//!
//! [`FakeReplica::crash`] closes the listener and every open connection,
//! so clients see refused connections, as after a SIGKILL. It is not a
//! model of replication: each fake has its own store.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use percent_encoding::percent_decode_str;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How a fake replica answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeRole {
    /// Takes writes, stamped with this epoch.
    Active { epoch: u64 },
    /// Refuses writes with a retryable 503.
    Standby,
    /// Sends every request to this base URL with a 307.
    RedirectTo(String),
}

/// State shared by the fake's connections and the test.
#[derive(Debug)]
struct Shared {
    /// The current role; read on every request.
    role: FakeRole,
    /// The store: key → (value, position of its write).
    data: BTreeMap<String, (Bytes, String)>,
    /// The last log index written (positions are `epoch.index`).
    index: u64,
    /// Requests answered, for assertions about who was asked.
    requests: u64,
}

/// A fake replica listening on a loopback port; stops on drop.
#[derive(Debug)]
pub struct FakeReplica {
    /// `http://127.0.0.1:{port}`.
    url: String,
    /// Role, store and counters.
    shared: Arc<Mutex<Shared>>,
    /// The accept loop, owner of all connection tasks.
    server: JoinHandle<()>,
}

impl FakeReplica {
    /// Starts a fake replica in `role` on a free port.
    pub async fn start(role: FakeRole) -> std::io::Result<FakeReplica> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Mutex::new(Shared {
            role,
            data: BTreeMap::new(),
            index: 0,
            requests: 0,
        }));
        let server = tokio::spawn({
            let shared = shared.clone();
            super::fake_http::serve(listener, move |request| answer(request, shared.clone()))
        });
        Ok(FakeReplica {
            url,
            shared,
            server,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn set_role(&self, role: FakeRole) {
        self.shared.lock().expect("fake state").role = role;
    }

    /// The stored value of `key`.
    pub fn value(&self, key: &str) -> Option<Bytes> {
        let shared = self.shared.lock().expect("fake state");
        shared.data.get(key).map(|(v, _)| v.clone())
    }

    /// Writes taken so far.
    pub fn writes(&self) -> u64 {
        self.shared.lock().expect("fake state").index
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.lock().expect("fake state").requests
    }

    /// Stops listening and drops every connection (a crash).
    pub fn crash(&self) {
        self.server.abort();
    }
}

impl Drop for FakeReplica {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn json(status: u16, version: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-data-version", version)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

async fn answer(
    request: Request<Incoming>,
    shared: Arc<Mutex<Shared>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut s = shared.lock().expect("fake state");
    s.requests += 1;
    let epoch = match &s.role {
        FakeRole::Active { epoch } => *epoch,
        _ => 0,
    };
    let position = format!("{epoch}.{}", s.index);
    if let FakeRole::RedirectTo(target) = &s.role {
        let location = format!("{target}{path}");
        let response = Response::builder()
            .status(307)
            .header("location", location)
            .header("x-active-url", target.as_str())
            .header("x-data-version", position)
            .body(Full::new(Bytes::new()))
            .expect("valid response");
        return Ok(response);
    }
    let Some(key) = path.strip_prefix("/v1/kv/") else {
        let error = r#"{"error":"unknown_route","message":"fake","retryable":false}"#;
        return Ok(json(404, &position, error.into()));
    };
    let key = percent_decode_str(key).decode_utf8_lossy().into_owned();
    let response = match (method, &s.role) {
        (Method::PUT, FakeRole::Active { .. }) => {
            s.index += 1;
            let version = format!("{epoch}.{}", s.index);
            s.data.insert(key, (body, version.clone()));
            json(200, &version, format!(r#"{{"version":"{version}"}}"#))
        }
        (Method::PUT, _) => json(
            503,
            &position,
            r#"{"error":"not_writable","message":"fake standby","retryable":true}"#.into(),
        ),
        (Method::GET, _) => match s.data.get(&key) {
            Some((value, version)) => Response::builder()
                .status(200)
                .header("x-data-version", &position)
                .header("x-key-version", version.as_str())
                .body(Full::new(value.clone()))
                .expect("valid response"),
            None => json(
                404,
                &position,
                r#"{"error":"not_found","message":"fake","retryable":false}"#.into(),
            ),
        },
        _ => json(
            405,
            &position,
            r#"{"error":"method_not_allowed","message":"fake","retryable":false}"#.into(),
        ),
    };
    Ok(response)
}
