//! Malformed input through understudy is handled as a redis-server alone
//! handles it: a declared length over the limit (a bulk of 1 TiB, an array
//! of three billion elements), a length Redis does not read as one (`$04`,
//! `*+1`, `$-0`) or bytes that are not RESP are answered with
//! Redis's own protocol error, then that connection — and only that one —
//! is closed. Through the standby too, as the first request of a session
//! (read before the standby knows where the session goes) or later.

use std::time::Duration;

use understudy_tests::client::resp_raw::RawResp;
use understudy_tests::harness::{serial, ProxyCluster, RedisServer, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

/// What a fresh connection gets for `requests`: the frames (as text), then
/// whether the server closed the connection.
async fn outcome(addr: &str, requests: &[&[u8]]) -> (Vec<String>, bool) {
    let mut c = RawResp::connect(addr).await.unwrap();
    let mut frames = Vec::new();
    for r in requests {
        c.send_raw(r).await.unwrap();
        match c.frame().await {
            Ok(f) => frames.push(String::from_utf8_lossy(&f).into_owned()),
            Err(e) => {
                frames.push(e);
                break;
            }
        }
    }
    (frames, c.is_closed().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_over_the_limit_is_a_protocol_error_and_closes_the_connection() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-protocol-errors").unwrap();
    let cluster = ProxyCluster::start(&dir, &["a", "b"], |b| b.sync_standbys(1))
        .await
        .unwrap();
    let reference = RedisServer::start(&dir, "reference").await.unwrap();
    let (active, standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    let ping: &[u8] = b"*1\r\n$4\r\nPING\r\n";
    let cases: &[(&str, Vec<&[u8]>)] = &[
        ("a 1 TiB bulk", vec![b"*1\r\n$1099511627776\r\n"]),
        ("3e9 arguments", vec![b"*3000000000\r\n"]),
        (
            "a 1 TiB bulk after PING",
            vec![ping, b"*1\r\n$1099511627776\r\n"],
        ),
        ("3e9 arguments after PING", vec![ping, b"*3000000000\r\n"]),
        ("not RESP", vec![b"*1\r\n:5\r\n"]),
        ("not RESP after PING", vec![ping, b"*1\r\n:5\r\n"]),
        // Lengths Rust's own integer parsing takes but Redis refuses: passed
        // on, they made the upstream close the connection the active's
        // sessions share, and every bystander on it lost its connection.
        (
            "a length with a leading zero",
            vec![b"*1\r\n$04\r\nPING\r\n"],
        ),
        (
            "a length with a leading zero after PING",
            vec![ping, b"*1\r\n$04\r\nPING\r\n"],
        ),
        (
            "a count with a plus sign after PING",
            vec![ping, b"*+1\r\n$4\r\nPING\r\n"],
        ),
        (
            "a length of minus zero after PING",
            vec![ping, b"*1\r\n$-0\r\n\r\n"],
        ),
    ];
    // A connection that stays open meanwhile, on each replica.
    let mut bystanders = Vec::new();
    for id in [&active.id, &standby] {
        let mut c = cluster.raw(id).await.unwrap();
        assert_eq!(
            c.call(&["SET", "bystander", "1"]).await.unwrap().show(),
            "OK"
        );
        bystanders.push(c);
    }
    for (what, requests) in cases {
        let (theirs, closed) = outcome(&reference.addr(), requests).await;
        assert!(closed, "{what}: redis-server kept the connection open");
        assert!(
            theirs.last().unwrap().starts_with("-ERR Protocol error: "),
            "{what}: {theirs:?}"
        );
        for (via, id) in [("active", &active.id), ("standby", &standby)] {
            let (ours, closed) = outcome(&cluster.resp_addr(id), requests).await;
            assert_eq!(ours, theirs, "{what} via the {via}");
            assert!(closed, "{what} via the {via}: the connection stayed open");
        }
    }
    for c in &mut bystanders {
        assert_eq!(
            c.call(&["INCR", "bystander"]).await.unwrap().show().len(),
            1
        );
    }
    let mut c = cluster.raw(&active.id).await.unwrap();
    assert_eq!(c.call(&["GET", "bystander"]).await.unwrap().show(), "\"3\"");
}
