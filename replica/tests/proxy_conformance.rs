//! The state-machine conformance suite against the upstream machine and a
//! real redis-server (Debian's `redis-server`, which `deploy/test.sh`
//! installs), one server per case on a free loopback port.

use std::process::{Child, Command as Process, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto_common::Position;
use redis_protocol::resp2::types::BytesFrame;
use replica::command::{Command, RespCmd, RespEntry};
use replica::metrics::Metrics;
use replica::proxy::machine::{UpstreamAddr, UpstreamMachine};
use replica::proxy::upstream::Conn;
use replica::state_machine::conformance::{self, Subject};
use replica::state_machine::Answerer;

/// A redis-server of our own, killed on drop.
struct Redis {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn redis() -> Redis {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Process::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (deploy/test.sh installs it)");
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Conn::connect(&addr, None, None).await.is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Redis {
        child,
        addr,
        _dir: dir,
    }
}

fn set(k: &str, v: &str) -> Command {
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    Command::Resp(RespEntry {
        multi: false,
        expire: vec![],
        cmds: vec![RespCmd {
            db: 0,
            argv: vec![b("SET"), b(k), b(v)],
            keys: vec![b(k)],
        }],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_machine_passes_the_conformance_suite() {
    let servers = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let keep = servers.clone();
    conformance::run(move || {
        let servers = keep.clone();
        async move {
            let server = redis().await;
            let addr = server.addr.clone();
            servers.lock().push(server);
            let metrics = Arc::new(Metrics::new());
            let upstream = UpstreamAddr {
                addr: addr.clone(),
                password: None,
                marker_db: 15,
            };
            let machine = Arc::new(UpstreamMachine::start(
                upstream,
                Position::ZERO,
                Answerer::new(metrics),
            ));
            Subject {
                machine,
                set: Box::new(set),
                get: Box::new(move |k| {
                    let addr = addr.clone();
                    let k = k.to_string();
                    Box::pin(async move {
                        let mut c = Conn::connect(&addr, None, None).await.unwrap();
                        match c.call([b"GET".to_vec(), k.into_bytes()]).await.unwrap() {
                            BytesFrame::BulkString(b) => Some(b),
                            _ => None,
                        }
                    })
                }),
            }
        }
    })
    .await;
    drop(servers);
}
