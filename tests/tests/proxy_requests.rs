//! Requests Redis takes that the first form of proxy mode answered wrongly,
//! each a test of its own: through the active and through the standby,
//! the bytes that come back are the bytes a redis-server alone writes.
//!
//! - `PING` inside `MULTI` is queued; it does not abort the transaction.
//! - `LPOP missing 2` answers RESP2's null array `*-1`, not a null string.
//! - Inline commands (`PING\r\n`, `SET k v\r\n`) work, first on a
//!   connection or later.
//! - A 17 MiB value is accepted (Redis takes up to `proto-max-bulk-len`)
//!   and reaches the standby (one log entry over the default frame limit).
//! - `XREAD` without `BLOCK` works.

use std::time::Duration;

use bytes::Bytes;
use understudy_tests::client::resp_raw::{encode, RawResp};
use understudy_tests::harness::{serial, ProxyCluster, RedisServer, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

/// A two-replica proxy cluster and a redis-server alone.
struct Targets {
    cluster: ProxyCluster,
    reference: RedisServer,
    active: String,
    standby: String,
    _dir: TestDir,
}

async fn targets(name: &str) -> Targets {
    let dir = TestDir::new(name).unwrap();
    let cluster = ProxyCluster::start(&dir, &["a", "b"], |b| b.sync_standbys(1))
        .await
        .unwrap();
    let reference = RedisServer::start(&dir, "reference").await.unwrap();
    let (active, standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    Targets {
        cluster,
        reference,
        active: active.id,
        standby,
        _dir: dir,
    }
}

impl Targets {
    /// Sends the requests `make(prefix)` gives, one at a time on a new
    /// connection, to the active (prefix `a:`), the standby (`s:`) and the
    /// redis-server alone (both prefixes); asserts every reply is
    /// byte-identical to the redis-server's; returns the active's.
    async fn same_everywhere(&self, make: impl Fn(&str) -> Vec<Vec<u8>>) -> Vec<Bytes> {
        let mut first = None;
        for (via, id, prefix) in [
            ("active", &self.active, "a:"),
            ("standby", &self.standby, "s:"),
        ] {
            let requests = make(prefix);
            let requests: Vec<&[u8]> = requests.iter().map(Vec::as_slice).collect();
            let ours = exchange(&self.cluster.resp_addr(id), &requests).await;
            let theirs = exchange(&self.reference.addr(), &requests).await;
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                assert_eq!(
                    text(a),
                    text(b),
                    "via the {via}: the reply to {:?} differs from redis-server's",
                    text(requests[i])
                );
            }
            first.get_or_insert(ours);
        }
        first.expect("two runs")
    }
}

async fn exchange(addr: &str, requests: &[&[u8]]) -> Vec<Bytes> {
    let mut c = RawResp::connect(addr).await.unwrap();
    c.exchange(requests)
        .await
        .unwrap_or_else(|e| panic!("{addr}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()
}

fn cmd(args: &[&str]) -> Vec<u8> {
    encode(args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_inside_multi_does_not_abort_the_transaction() {
    let _serial = serial().await;
    let t = targets("proxy-ping-in-multi").await;
    let replies = t
        .same_everywhere(|p| {
            let k = format!("{p}k");
            vec![
                cmd(&["MULTI"]),
                cmd(&["SET", &k, "1"]),
                cmd(&["PING"]),
                cmd(&["INCR", &k]),
                cmd(&["PING", "hello"]),
                cmd(&["EXEC"]),
                cmd(&["GET", &k]),
            ]
        })
        .await;
    assert_eq!(&replies[2][..], b"+QUEUED\r\n");
    assert_eq!(
        &replies[5][..],
        b"*4\r\n+OK\r\n+PONG\r\n:2\r\n$5\r\nhello\r\n"
    );
    assert_eq!(&replies[6][..], b"$1\r\n2\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lpop_with_a_count_on_a_missing_key_answers_a_null_array() {
    let _serial = serial().await;
    let t = targets("proxy-lpop-count").await;
    let replies = t
        .same_everywhere(|p| {
            let (missing, l) = (format!("{p}missing"), format!("{p}l"));
            vec![
                cmd(&["LPOP", &missing, "2"]),
                cmd(&["RPOP", &missing, "2"]),
                cmd(&["LPOP", &missing]),
                cmd(&["RPUSH", &l, "a", "b", "c"]),
                cmd(&["LPOP", &l, "2"]),
                cmd(&["LPOP", &l, "5"]),
                cmd(&["LPOP", &l, "2"]),
            ]
        })
        .await;
    assert_eq!(&replies[0][..], b"*-1\r\n", "LPOP missing 2");
    assert_eq!(&replies[1][..], b"*-1\r\n", "RPOP missing 2");
    assert_eq!(&replies[2][..], b"$-1\r\n", "LPOP missing");
    assert_eq!(&replies[4][..], b"*2\r\n$1\r\na\r\n$1\r\nb\r\n");
    assert_eq!(&replies[6][..], b"*-1\r\n", "LPOP of an emptied list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands_work() {
    let _serial = serial().await;
    let t = targets("proxy-inline").await;
    let replies = t
        .same_everywhere(|p| {
            vec![
                // First on the connection: the standby reads it before it
                // knows where the session goes.
                b"PING\r\n".to_vec(),
                format!("SET {p}k v\r\n").into_bytes(),
                format!("GET {p}k\r\n").into_bytes(),
                format!("set {p}k2 \"a b\\x41\"\n").into_bytes(),
                format!("GET {p}k2\n").into_bytes(),
                cmd(&["STRLEN", &format!("{p}k2")]),
                b"ECHO 'it\\'s'\r\n".to_vec(),
                b"NOSUCH x\r\n".to_vec(),
            ]
        })
        .await;
    assert_eq!(&replies[0][..], b"+PONG\r\n");
    assert_eq!(&replies[1][..], b"+OK\r\n");
    assert_eq!(&replies[2][..], b"$1\r\nv\r\n");
    assert_eq!(&replies[4][..], b"$4\r\na bA\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_larger_than_a_replication_frame_is_accepted_and_replicated() {
    let _serial = serial().await;
    let t = targets("proxy-big-value").await;
    // Over the default max_frame_bytes (16 MiB): its SET is one log entry
    // that the active must still ship to the standby (Redis's test suite,
    // unit/hyperloglog, stalled the standby for good with one).
    let value = "v".repeat(17 << 20);
    let replies = t
        .same_everywhere(|p| {
            let k = format!("{p}big");
            vec![
                cmd(&["SET", &k, &value]),
                cmd(&["STRLEN", &k]),
                cmd(&["APPEND", &k, &value]),
                cmd(&["GETRANGE", &k, "0", "3"]),
                cmd(&["GET", &k]),
            ]
        })
        .await;
    assert_eq!(&replies[0][..], b"+OK\r\n");
    assert_eq!(&replies[1][..], format!(":{}\r\n", 17 << 20).as_bytes());
    assert_eq!(&replies[2][..], format!(":{}\r\n", 34 << 20).as_bytes());
    assert_eq!(
        replies[4].len(),
        format!("${}\r\n", 34 << 20).len() + (34 << 20) + 2
    );
    // And it reached the standby's own redis-server.
    t.cluster
        .wait_upstream_caught_up(&t.standby, &t.active, DEADLINE)
        .await
        .unwrap();
    let mut direct = RawResp::connect(&t.cluster.redis[&t.standby].addr())
        .await
        .unwrap();
    for key in ["a:big", "s:big"] {
        let n = direct.call(&["STRLEN", key]).await.unwrap();
        assert_eq!(
            n.int(),
            Some(34 << 20),
            "{key} on the standby's redis-server"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xread_without_block_works() {
    let _serial = serial().await;
    let t = targets("proxy-xread").await;
    let replies = t
        .same_everywhere(|p| {
            let (s, none) = (format!("{p}s"), format!("{p}none"));
            vec![
                cmd(&["XADD", &s, "1-1", "f", "v"]),
                cmd(&["XADD", &s, "2-1", "g", "w"]),
                cmd(&["XREAD", "COUNT", "1", "STREAMS", &s, "0"]),
                cmd(&["XREAD", "STREAMS", &s, "1-1"]),
                cmd(&["XREAD", "STREAMS", &s, "$"]),
                cmd(&["XREAD", "STREAMS", &s, &none, "0", "0"]),
                cmd(&["XREAD", "STREAMS", &s]),
            ]
        })
        .await;
    assert_eq!(
        text(&replies[2]),
        "*1\r\n*2\r\n$3\r\na:s\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
    assert_eq!(&replies[4][..], b"*-1\r\n", "XREAD … $ without BLOCK");
}
