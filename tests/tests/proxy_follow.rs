//! `SYNC` and `PSYNC` from clients in proxy mode, with Redis's own tool:
//! `redis-cli --rdb` takes a backup through a standby (its session is
//! forwarded to the active) and `redis-cli --replica` prints writes as
//! they are committed; `CLIENT KILL TYPE replica` cuts such a follower off
//! as Redis would; a redis-server made `REPLICAOF` the active's RESP port
//! follows the committed data. A follower is fed committed effects only: with the only
//! sync standby frozen, a `SET` runs on the active's redis-server but is
//! never committed, and a follower that was there all along never sees it
//! before the active is killed.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use understudy_tests::client::resp_raw::{RawResp, Value};
use understudy_tests::harness::proxy_cluster::wait_value;
use understudy_tests::harness::redis::RedisServer;
use understudy_tests::harness::{serial, wait_until, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

/// `redis-cli --replica` against `port`, its output kept as it comes.
struct Follower {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

impl Follower {
    /// Starts it, and waits until it has the RDB and follows.
    async fn start(port: u16) -> Follower {
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--replica"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-cli runs (deploy/prereqs.sh installs redis-tools)");
        let keep = |mut from: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
            let kept = Arc::new(Mutex::new(Vec::new()));
            let to = kept.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = from.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    to.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
            kept
        };
        let out = keep(Box::new(child.stdout.take().unwrap()));
        let err = keep(Box::new(child.stderr.take().unwrap()));
        let follower = Follower { child, out, err };
        wait_until(DEADLINE, "redis-cli --replica to load the RDB", || {
            let done = follower.complained().contains("SYNC done");
            async move { done }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}; it said {:?}", follower.complained()));
        follower
    }

    fn printed(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn complained(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    async fn wait_printed(&self, what: &str) {
        wait_until(
            DEADLINE,
            &format!("redis-cli --replica to print {what}"),
            || {
                let seen = self.printed().contains(what);
                async move { seen }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}; it printed {:?}", self.printed()));
    }

    /// Waits for the process to end; its exit status.
    async fn ended(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("redis-cli --replica ends")
            .unwrap()
    }
}

fn port(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

async fn call(c: &mut RawResp, args: &[&str]) -> String {
    c.call(args)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
        .show()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_follow_the_committed_stream_with_redis_cli() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-follow").unwrap();
    // A long lease: the frozen standby stays in the sync set while the test
    // keeps it frozen (see `proxy_dirty_reads.rs`).
    let (mut cluster, active, standby) =
        ProxyCluster::start_pair(&dir, DEADLINE, |b| b.heartbeat_ms(100).lease_ms(4000))
            .await
            .unwrap();
    let active_port = port(&cluster.resp_addr(&active.id));
    let mut c = cluster.raw(&active.id).await.unwrap();
    assert_eq!(call(&mut c, &["SET", "before", "backed-up"]).await, "OK");

    // A backup through the standby: the RDB of committed data.
    let rdb = dir.join("backup.rdb");
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p"])
        .arg(port(&cluster.resp_addr(&standby)).to_string())
        .arg("--rdb")
        .arg(&rdb)
        .output()
        .await
        .expect("redis-cli runs");
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "redis-cli --rdb failed: {said}");
    assert!(said.contains("Transfer finished with success"), "{said}");
    let bytes = std::fs::read(&rdb).unwrap();
    assert!(bytes.starts_with(b"REDIS"), "not an RDB: {:?}", &bytes[..9]);
    let holds = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(
        holds(b"before") && holds(b"backed-up"),
        "the key is not in it"
    );

    // A follower prints every write as it is committed...
    let mut first = Follower::start(active_port).await;
    assert_eq!(call(&mut c, &["SET", "after", "streamed"]).await, "OK");
    first.wait_printed("\"SET\",\"after\",\"streamed\"").await;
    // ...until CLIENT KILL TYPE replica cuts it off.
    let killed = c
        .call(&["CLIENT", "KILL", "TYPE", "replica"])
        .await
        .unwrap();
    assert!(
        matches!(killed, Value::Int(_)),
        "CLIENT KILL answered {killed:?}"
    );
    let status = first.ended().await;
    assert!(!status.success(), "redis-cli --replica exited {status}");
    assert!(
        first.complained().contains("Server closed the connection"),
        "{}",
        first.complained()
    );

    // A redis-server made a replica of the cluster (of a RESP port, with
    // `PSYNC`) gets the committed data and what follows.
    let outside = RedisServer::start(dir.path(), "outside").await.unwrap();
    let mut o = RawResp::connect(&outside.addr()).await.unwrap();
    let active_port_text = active_port.to_string();
    assert_eq!(
        call(&mut o, &["REPLICAOF", "127.0.0.1", &active_port_text]).await,
        "OK"
    );
    assert_eq!(
        call(&mut c, &["SET", "for-outside", "replicated"]).await,
        "OK"
    );
    for (key, value) in [("for-outside", "replicated"), ("before", "backed-up")] {
        wait_value(&outside.addr(), key, value, DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{e}; its log: {}", outside.log()));
    }
    drop(outside);

    // No uncommitted effect reaches a follower.
    let second = Follower::start(active_port).await;
    assert_eq!(call(&mut c, &["SET", "marker", "seen"]).await, "OK");
    second.wait_printed("\"marker\",\"seen\"").await;
    cluster
        .cluster
        .replica_mut(&standby)
        .process()
        .sigstop()
        .unwrap();
    let writer = {
        let addr = cluster.resp_addr(&active.id);
        tokio::spawn(async move {
            let mut c = RawResp::connect(&addr).await?;
            c.call(&["SET", "dirty", "never-committed"]).await
        })
    };
    let direct = cluster.redis[&active.id].addr();
    wait_value(&direct, "dirty", "never-committed", DEADLINE)
        .await
        .unwrap();
    // Committed is what the follower has; the active dies with the rest.
    cluster.cluster.kill(&active.id).unwrap();
    let mut second = second;
    second.ended().await;
    let wrote = writer.await.unwrap();
    assert!(
        !matches!(&wrote, Ok(Value::Simple(ok)) if ok == "OK"),
        "the uncommitted SET was acknowledged: {wrote:?}"
    );
    assert!(
        !second.printed().contains("never-committed"),
        "a follower was sent an uncommitted effect: {}",
        second.printed()
    );
    cluster
        .cluster
        .replica_mut(&standby)
        .process()
        .sigcont()
        .unwrap();
}
