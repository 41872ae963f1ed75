//! Credentials in proxy mode, on the active and through the standby:
//!
//! - Before authenticating, nothing but `AUTH` and `HELLO … AUTH` runs:
//!   every other command gets the `NOAUTH` a redis-server with
//!   `requirepass` gives, wrong passwords `WRONGPASS`, and an oversized
//!   unauthenticated request Redis's protocol error. The cluster token
//!   authenticates, with `AUTH` or `HELLO 3 AUTH` (which switches to RESP3).
//! - The read-only token (`--read-token-file`) runs only what Redis does
//!   not flag `write`, `may_replicate` or `admin`: reads, `EVAL_RO`,
//!   `FCALL_RO`, `SUBSCRIBE` work; `SET`, `EVAL`, `FCALL`, `PUBLISH`,
//!   `CONFIG` get `NOPERM`, and nothing changes.

use std::time::Duration;

use understudy_tests::client::resp_raw::{RawResp, Value};
use understudy_tests::harness::{serial, ProxyCluster, RedisServer, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);
const READ_TOKEN: &str = "read-only-token-0123456789abcdef";

async fn cluster(dir: &TestDir) -> (ProxyCluster, String, String, String) {
    let read_token = dir.join("read.token");
    std::fs::write(&read_token, format!("{READ_TOKEN}\n")).unwrap();
    let cluster = ProxyCluster::start(dir, &["a", "b"], |b| {
        b.sync_standbys(1).with_token().replica_args([
            "--read-token-file".to_string(),
            read_token.display().to_string(),
        ])
    })
    .await
    .unwrap();
    let (active, standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    let token = cluster.cluster.token().unwrap();
    (cluster, active.id, standby, token)
}

async fn call(c: &mut RawResp, args: &[&str]) -> Value {
    c.call(args)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// What a fresh connection to `addr` gets for each of `requests`, as text;
/// then whether the server closed it.
async fn before_auth(addr: &str, requests: &[&[&str]], raw_last: &[u8]) -> (Vec<String>, bool) {
    let mut c = RawResp::connect(addr).await.unwrap();
    let mut out = Vec::new();
    for r in requests {
        out.push(call(&mut c, r).await.show());
    }
    c.send_raw(raw_last).await.unwrap();
    out.push(c.reply().await.map(|v| v.show()).unwrap_or_else(|e| e));
    (out, c.is_closed().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_but_auth_or_hello_runs_before_authenticating() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-noauth").unwrap();
    let (cluster, active, standby, token) = cluster(&dir).await;
    let reference = RedisServer::start_with(
        &dir,
        "reference",
        &["--appendonly", "no", "--requirepass", &token],
    )
    .await
    .unwrap();
    let requests: [&[&str]; 9] = [
        &["GET", "k"],
        &["PING"],
        &["SET", "k", "v"],
        &["SELECT", "1"],
        &["HELLO", "3"],
        &["CLIENT", "SETNAME", "x"],
        &["AUTH", "not-the-token"],
        &["AUTH", "default", "not-the-token"],
        &["HELLO", "3", "AUTH", "default", "not-the-token"],
    ];
    // Redis refuses more than 10 arguments before AUTH, and closes.
    let oversized: &[u8] = b"*11\r\n";
    let (theirs, closed) = before_auth(&reference.addr(), &requests, oversized).await;
    assert!(closed, "redis-server kept the connection open");
    for (via, id) in [("active", &active), ("standby", &standby)] {
        let (mut ours, closed) = before_auth(&cluster.resp_addr(id), &requests, oversized).await;
        // HELLO's refusal names its AUTH option in the words of Redis 7.2
        // ("HELLO <proto> AUTH"), whatever version runs: the same but for
        // that word.
        let hello = "-NOAUTH HELLO must be called with the client already authenticated";
        assert!(ours[4].starts_with(hello), "via the {via}: {}", ours[4]);
        ours[4].clone_from(&theirs[4]);
        assert_eq!(ours, theirs, "via the {via}");
        assert!(closed, "via the {via}: the connection stayed open");
    }

    for (via, id) in [("active", &active), ("standby", &standby)] {
        let k = format!("{via}:k");
        let mut c = cluster.raw(id).await.unwrap();
        assert_eq!(call(&mut c, &["AUTH", &token]).await.show(), "OK");
        assert_eq!(call(&mut c, &["SET", &k, "v"]).await.show(), "OK");
        let mut c = cluster.raw(id).await.unwrap();
        assert_eq!(
            call(&mut c, &["AUTH", "default", &token]).await.show(),
            "OK"
        );
        assert_eq!(call(&mut c, &["GET", &k]).await.show(), "\"v\"");
        // HELLO 3 AUTH: authenticated and in RESP3 in one step.
        let mut c = cluster.raw(id).await.unwrap();
        let hello = call(&mut c, &["HELLO", "3", "AUTH", "default", &token]).await;
        let Value::Map(fields) = &hello else {
            panic!("via the {via}: HELLO 3 AUTH answered {}", hello.show());
        };
        assert!(
            fields
                .iter()
                .any(|(k, v)| k.text().as_deref() == Some("proto") && *v == Value::Int(3)),
            "{}",
            hello.show()
        );
        assert_eq!(call(&mut c, &["GET", "missing"]).await, Value::Null);
        assert_eq!(call(&mut c, &["GET", &k]).await.show(), "\"v\"");
    }
}

/// BUG (replica/src/proxy/relay.rs, `Client::may_write` and `refusal`):
/// the read-only token is checked against the command table's `write`,
/// `may_replicate` and `admin` flags only, but Redis 7.0 flags `EVAL`,
/// `EVALSHA`, `FCALL` and `PUBLISH` with none of them (a script's writes
/// are known only when it runs; `may_replicate` on them came later): with
/// the read-only token, `EVAL "return redis.call('SET', …)"` and an `FCALL`
/// of a writing function write, and `PUBLISH` publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_only_token_runs_only_what_redis_does_not_flag_as_writing() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-read-token").unwrap();
    let (cluster, active, standby, token) = cluster(&dir).await;
    // Data and a library, written with the cluster token.
    let mut admin = cluster.raw(&active).await.unwrap();
    assert_eq!(call(&mut admin, &["AUTH", &token]).await.show(), "OK");
    assert_eq!(call(&mut admin, &["SET", "k", "v"]).await.show(), "OK");
    let library = "#!lua name=ro\n\
        redis.register_function{function_name='ro_get', \
          callback=function(keys) return redis.call('GET', keys[1]) end, flags={'no-writes'}}\n\
        redis.register_function('ro_set', function(keys, args) \
          return redis.call('SET', keys[1], args[1]) end)";
    assert_eq!(
        call(&mut admin, &["FUNCTION", "LOAD", library])
            .await
            .show(),
        "\"ro\""
    );
    let mut ran = Vec::new();
    for (via, id) in [("active", &active), ("standby", &standby)] {
        let mut c = cluster.raw(id).await.unwrap();
        assert_eq!(call(&mut c, &["AUTH", READ_TOKEN]).await.show(), "OK");
        // Reads run.
        let get = "return redis.call('GET', KEYS[1])";
        for (args, want) in [
            (&["GET", "k"][..], "\"v\""),
            (&["EXISTS", "k"], "1"),
            (&["TTL", "k"], "-1"),
            (&["EVAL_RO", get, "1", "k"], "\"v\""),
            (&["FCALL_RO", "ro_get", "1", "k"], "\"v\""),
            (&["PING"], "PONG"),
        ] {
            assert_eq!(
                call(&mut c, args).await.show(),
                want,
                "via the {via}: {args:?}"
            );
        }
        // Anything that may write, replicate or administer does not.
        for args in [
            &["SET", "k", "w"][..],
            &["DEL", "k"],
            &["EVAL", get, "1", "k"],
            &["EVAL", "return redis.call('SET', KEYS[1], 'w')", "1", "k"],
            &["FCALL", "ro_set", "1", "k", "w"],
            &["FCALL", "ro_get", "1", "k"],
            &["PUBLISH", "ch", "m"],
            &["CONFIG", "GET", "hz"],
            &["CONFIG", "SET", "hz", "20"],
            &["FLUSHALL"],
            &["FUNCTION", "DELETE", "ro"],
        ] {
            match call(&mut c, args).await {
                Value::Error(e) if e.starts_with("NOPERM") && e.contains("read-only") => {}
                other => ran.push(format!("via the {via}: {args:?} answered {}", other.show())),
            }
        }
        // Written back with the cluster token, in case one ran.
        call(&mut admin, &["SET", "k", "v"]).await;

        // A transaction of reads runs.
        assert_eq!(call(&mut c, &["MULTI"]).await.show(), "OK");
        assert_eq!(call(&mut c, &["GET", "k"]).await.show(), "QUEUED");
        assert_eq!(call(&mut c, &["EXEC"]).await.show(), "[\"v\"]");
        // Subscribing is reading.
        let news = format!("news-{via}");
        assert_eq!(
            call(&mut c, &["SUBSCRIBE", &news]).await.show(),
            format!("[\"subscribe\", \"{news}\", 1]")
        );
        assert_eq!(
            call(&mut admin, &["PUBLISH", &news, "x"]).await,
            Value::Int(1)
        );
        assert_eq!(
            c.reply().await.unwrap().show(),
            format!("[\"message\", \"{news}\", \"x\"]")
        );
    }
    // Nothing changed.
    assert_eq!(call(&mut admin, &["GET", "k"]).await.show(), "\"v\"");
    assert_eq!(
        call(&mut admin, &["CONFIG", "GET", "hz"]).await.show(),
        "[\"hz\", \"10\"]"
    );
    assert_eq!(
        call(&mut admin, &["FUNCTION", "LIST"])
            .await
            .items()
            .map(<[Value]>::len),
        Some(1)
    );
    assert!(
        ran.is_empty(),
        "with the read-only token:\n  {}",
        ran.join("\n  ")
    );
}
