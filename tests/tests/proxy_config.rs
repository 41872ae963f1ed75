//! Proxy mode's settings at start: a replica without an arbiter (its own
//! active) serves Redis clients; the RESP thread runs on the CPUs
//! `--resp-cpus` names, and a CPU the process may not use is refused; an
//! upstream socket that reaches another redis-server than the upstream's
//! address is refused.

use std::time::Duration;

use proto_common::cpus;
use understudy_tests::client::resp::{show, RespClient};
use understudy_tests::harness::{free_port, serial, wait_for, RedisServer, ReplicaConfig, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

/// The CPUs thread `name` of process `pid` may run on, as the kernel
/// writes them (`Cpus_allowed_list`).
fn thread_cpus(pid: u32, name: &str) -> Option<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        if comm.trim() != name {
            return None;
        }
        let status = std::fs::read_to_string(t.path().join("status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_string())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resp_thread_runs_on_the_cpus_named_and_an_unusable_cpu_is_refused() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-cpus").unwrap();
    let redis = RedisServer::start(&dir, "upstream").await.unwrap();
    let port = free_port();
    let config = |name: &str, cpus: &str| {
        ReplicaConfig::new(&dir, name).args([
            "--upstream".to_string(),
            redis.url(),
            "--resp-listen".to_string(),
            format!("127.0.0.1:{port}"),
            "--resp-cpus".to_string(),
            cpus.to_string(),
        ])
    };
    // The last CPU this test may use, so that the pin is visible as a
    // change whenever more than one is allowed.
    let allowed = cpus::allowed().unwrap();
    let last = *allowed.last().unwrap();
    let allowed = cpus::format(&allowed);

    // (Without an arbiter the replica is its own active; whether it then
    // serves is `a_replica_without_an_arbiter_serves_redis_clients`.)
    let mut solo = config("solo", &last.to_string()).start().await.unwrap();
    RespClient::connect(&format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let pid = solo.process().pid();
    let pinned = wait_for(DEADLINE, "the RESP thread", || async move {
        thread_cpus(pid, "resp")
    })
    .await
    .unwrap();
    assert_eq!(pinned, last.to_string());
    // Only that thread: the rest of the replica runs where it may.
    assert_eq!(thread_cpus(pid, "replica"), Some(allowed.clone()));
    solo.process().kill().unwrap();

    // A CPU beyond the allowed set: refused at start, naming both.
    let mut refused = config("beyond", "1023").spawn().unwrap();
    let status = refused.wait_for_exit(DEADLINE).await.unwrap();
    assert_eq!(status.code(), Some(2));
    let log = refused.stderr();
    assert!(
        log.contains("resp_cpus=1023 names CPU 1023")
            && log.contains(&format!("may run only on CPUs {allowed}")),
        "{log}"
    );
}

/// `--upstream-socket` must reach the same redis-server as `--upstream`:
/// client sessions on one server and the tap on another would answer with
/// effects never logged. Another server's socket is refused at start, naming
/// both; nothing is done to either server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_socket_of_another_server_is_refused_at_start() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-socket").unwrap();
    let redis = RedisServer::start(&dir, "upstream").await.unwrap();
    let socket = dir.path().join("other.sock");
    let socket_arg = socket.display().to_string();
    let _other = RedisServer::start_with(
        &dir,
        "other",
        &[
            "--appendonly",
            "no",
            "--unixsocket",
            &socket_arg,
            "--unixsocketperm",
            "700",
        ],
    )
    .await
    .unwrap();
    let mut refused = ReplicaConfig::new(&dir, "local")
        .args([
            "--upstream".to_string(),
            redis.url(),
            "--upstream-socket".to_string(),
            socket_arg.clone(),
            "--resp-listen".to_string(),
            format!("127.0.0.1:{}", free_port()),
        ])
        .spawn()
        .unwrap();
    let status = refused.wait_for_exit(DEADLINE).await.unwrap();
    assert!(!status.success());
    let log = refused.stderr();
    assert!(
        log.contains(&format!("socket {socket_arg} reaches another redis-server"))
            && log.contains("point both at the same one"),
        "{log}"
    );
    // Nothing was done to the redis-server: it is still a master.
    let mut c = redis.client().await.unwrap();
    let info = show(&c.call(&["INFO", "replication"]).await.unwrap());
    assert!(info.contains("role:master"), "{info}");
}

/// BUG (replica/src/node/role.rs, `Node::start_standalone`): a proxy-mode
/// replica started without an arbiter becomes its own active but never
/// leads its redis-server (`ProxyCore::begin_lead` is only called on a
/// promotion by the arbiter, `repl/replication.rs`): the redis-server stays
/// a replica of the replica's feed, the tap never starts, and every
/// session is answered `-TRYAGAIN this replica became the active and its
/// upstream is not ready yet`, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_an_arbiter_serves_redis_clients() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-standalone").unwrap();
    let redis = RedisServer::start(&dir, "upstream").await.unwrap();
    let port = free_port();
    let _solo = ReplicaConfig::new(&dir, "solo")
        .args([
            "--upstream".to_string(),
            redis.url(),
            "--resp-listen".to_string(),
            format!("127.0.0.1:{port}"),
        ])
        .start()
        .await
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let last = std::sync::Mutex::new(String::new());
    let served = wait_for(Duration::from_secs(20), "a SET answered OK", || {
        let (addr, last) = (addr.clone(), &last);
        async move {
            let mut c = RespClient::connect(&addr).await.ok()?;
            let reply = show(&c.call(&["SET", "k", "v"]).await.ok()?);
            *last.lock().unwrap() = reply.clone();
            (reply == "OK").then_some(())
        }
    })
    .await;
    assert!(
        served.is_ok(),
        "{served:?}; the last answer: {}",
        last.lock().unwrap()
    );
    let mut c = RespClient::connect(&addr).await.unwrap();
    assert_eq!(show(&c.call(&["GET", "k"]).await.unwrap()), "\"v\"");
    let mut direct = redis.client().await.unwrap();
    let info = show(&direct.call(&["INFO", "replication"]).await.unwrap());
    assert!(info.contains("role:master"), "{info}");
}
