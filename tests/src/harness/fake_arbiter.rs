//! An in-process stand-in for the arbiter's heartbeat endpoint, to point a
//! real replica at any active.
//!
//! The real arbiter refuses a replica without the cluster token before it
//! learns anything, so a test of what the *active* does with such a replica
//! (refuse its replication handshake) needs another way to tell it where
//! the active is. This fake answers every `POST /v1/heartbeat`, token or
//! not, with "you are a standby in epoch E; the active is X at ADDR", and
//! keeps the heartbeats it got so the test can see what the replica
//! reports (its position, whether it is connected to the active). Every
//! other route is a 404.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use proto_common::heartbeat::{ActiveInfo, Heartbeat, HeartbeatReply, Role};
use proto_common::params::ClusterParams;
use proto_common::Epoch;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the fake tells every replica.
#[derive(Clone, Debug)]
struct Script {
    /// The epoch in every reply.
    epoch: Epoch,
    /// The active every replica is told to follow.
    active: ActiveInfo,
    /// Timing in every reply.
    params: ClusterParams,
}

/// State shared by the connections and the test.
#[derive(Debug)]
struct Shared {
    /// What to answer.
    script: Script,
    /// Every heartbeat received, oldest first.
    heartbeats: Vec<Heartbeat>,
}

/// A fake arbiter on a loopback port; stops on drop.
#[derive(Debug)]
pub struct FakeArbiter {
    /// `http://127.0.0.1:{port}`.
    url: String,
    /// Script and received heartbeats.
    shared: Arc<Mutex<Shared>>,
    /// The accept loop, owner of all connection tasks.
    server: JoinHandle<()>,
}

impl FakeArbiter {
    /// Starts a fake that names `active` the active of `epoch`.
    pub async fn start(
        epoch: u64,
        active: ActiveInfo,
        params: ClusterParams,
    ) -> std::io::Result<FakeArbiter> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Mutex::new(Shared {
            script: Script {
                epoch: Epoch(epoch),
                active,
                params,
            },
            heartbeats: Vec::new(),
        }));
        let server = tokio::spawn({
            let shared = shared.clone();
            super::fake_http::serve(listener, move |request| answer(request, shared.clone()))
        });
        Ok(FakeArbiter {
            url,
            shared,
            server,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every heartbeat received so far.
    pub fn heartbeats(&self) -> Vec<Heartbeat> {
        self.shared.lock().expect("fake state").heartbeats.clone()
    }

    /// The last heartbeat received.
    pub fn last_heartbeat(&self) -> Option<Heartbeat> {
        self.shared
            .lock()
            .expect("fake state")
            .heartbeats
            .last()
            .cloned()
    }
}

impl Drop for FakeArbiter {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn json(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

async fn answer(
    request: Request<Incoming>,
    shared: Arc<Mutex<Shared>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let is_heartbeat = request.method() == Method::POST && request.uri().path() == "/v1/heartbeat";
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if !is_heartbeat {
        let error = r#"{"error":"unknown_route","message":"fake arbiter","retryable":false}"#;
        return Ok(json(404, error.into()));
    }
    let heartbeat: Heartbeat = match serde_json::from_slice(&body) {
        Ok(hb) => hb,
        Err(e) => {
            let error = serde_json::json!({
                "error": "invalid_json", "message": e.to_string(), "retryable": false
            });
            return Ok(json(400, error.to_string()));
        }
    };
    let mut s = shared.lock().expect("fake state");
    let reply = HeartbeatReply {
        seq: heartbeat.seq,
        role: Role::Standby,
        epoch: s.script.epoch,
        active: Some(s.script.active.clone()),
        sync_set: Vec::new(),
        sync_version: 0,
        params: s.script.params.clone(),
        switchover_to: None,
        next_heartbeat_ms: None,
        leader: None,
        reinit: None,
    };
    s.heartbeats.push(heartbeat);
    Ok(json(
        200,
        serde_json::to_string(&reply).expect("a reply serializes"),
    ))
}
