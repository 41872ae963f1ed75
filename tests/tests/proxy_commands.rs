//! Proxy mode answers Redis clients as Redis would: every supported
//! command family (strings, hashes, lists, sets, sorted sets, keys and
//! expiry, transactions) gives the same replies through understudy — on
//! the active, and on the standby that forwards — as from a redis-server
//! alone. Replies that carry a time are compared within a tolerance (the
//! servers run them a few milliseconds apart); replies whose order a
//! server chooses (set members, `KEYS`) are compared sorted.
//!
//! Also: refused commands get `-ERR` naming the command; garbage closes
//! only its own connection; an oversize argument is answered and the
//! connection goes on. The RESP thread runs on the CPUs `--resp-cpus`
//! names, and a CPU the process may not use is refused at start.

use std::time::Duration;

use proto_common::cpus;
use understudy_tests::client::resp::{show, Frame, RespClient};
use understudy_tests::harness::{
    free_port, serial, ProxyCluster, RedisServer, ReplicaConfig, TestDir,
};

const DEADLINE: Duration = Duration::from_secs(60);

const STRINGS: &str = "
SET {p}s1 hello
GET {p}s1
APPEND {p}s1 _world
STRLEN {p}s1
GETRANGE {p}s1 0 4
SETRANGE {p}s1 6 Redis
GET {p}s1
SET {p}n 10
INCR {p}n
INCRBY {p}n 5
DECR {p}n
DECRBY {p}n 3
INCRBYFLOAT {p}n 1.5
INCR {p}s1
MSET {p}m1 a {p}m2 b
MGET {p}m1 {p}m2 {p}missing
MSETNX {p}m1 x {p}m3 y
SETNX {p}m3 z
GETSET {p}m1 c
GETDEL {p}m2
SET {p}m1 d NX
SET {p}m1 e XX GET
GET {p}m1
SET {p}m4 v GET
GET {p}missing
GET
";

const HASHES: &str = "
HSET {p}h f1 v1 f2 v2
HGET {p}h f1
HMGET {p}h f1 f2 nope
HGETALL {p}h
HEXISTS {p}h f1
HDEL {p}h f2
HLEN {p}h
HSETNX {p}h f1 x
HSETNX {p}h f3 y
HINCRBY {p}h cnt 5
HINCRBYFLOAT {p}h flt 2.5
HKEYS {p}h
HVALS {p}h
HSTRLEN {p}h f1
HSET {p}h
";

const LISTS: &str = "
RPUSH {p}l a b c
LPUSH {p}l z
LRANGE {p}l 0 -1
LLEN {p}l
LINDEX {p}l 1
LSET {p}l 1 A
LINSERT {p}l BEFORE c x
LREM {p}l 1 x
LTRIM {p}l 0 2
LPOP {p}l
RPOP {p}l
LPOS {p}l A
RPUSH {p}l2 1 2
LMOVE {p}l {p}l2 LEFT RIGHT
RPOPLPUSH {p}l2 {p}l
LRANGE {p}l 0 -1
LRANGE {p}l2 0 -1
SET {p}notalist v
LPUSH {p}notalist x
";

const SETS: &str = "
SADD {p}st a b c
SADD {p}st a
SISMEMBER {p}st a
SMISMEMBER {p}st a z
SCARD {p}st
SREM {p}st b
SMEMBERS {p}st
SADD {p}st2 c d
SUNION {p}st {p}st2
SINTER {p}st {p}st2
SDIFF {p}st {p}st2
SINTERSTORE {p}st3 {p}st {p}st2
SMOVE {p}st {p}st2 a
SMEMBERS {p}st2
";

const SORTED_SETS: &str = "
ZADD {p}z 1 a 2 b 3 c
ZADD {p}z XX CH 5 a
ZRANGE {p}z 0 -1 WITHSCORES
ZRANGEBYSCORE {p}z 2 5
ZREVRANGE {p}z 0 1
ZSCORE {p}z a
ZINCRBY {p}z 2 b
ZRANK {p}z b
ZCARD {p}z
ZCOUNT {p}z 0 10
ZREM {p}z c
ZPOPMIN {p}z
ZADD {p}z2 1 x 2 b
ZUNIONSTORE {p}z3 2 {p}z {p}z2
ZRANGE {p}z3 0 -1 WITHSCORES
ZINTERSTORE {p}z4 2 {p}z {p}z2 WEIGHTS 2 3
ZRANGE {p}z4 0 -1 WITHSCORES
";

const KEYS_AND_EXPIRY: &str = "
SET {p}k v
EXISTS {p}k {p}nope
TYPE {p}k
RENAME {p}k {p}k2
RENAMENX {p}k2 {p}k3
EXPIRE {p}k2 100
TTL {p}k2
PTTL {p}k2
EXPIRETIME {p}k2
PERSIST {p}k2
TTL {p}k2
SET {p}e v EX 50
TTL {p}e
SETEX {p}e2 60 v
PTTL {p}e2
PSETEX {p}e3 60000 v
TTL {p}e3
GETEX {p}e3 EX 30
TTL {p}e3
PEXPIRE {p}e3 20000 GT
PEXPIRE {p}e3 90000 GT
TTL {p}e3
EXPIRE {p}e3 10 NX
SET {p}e4 v EXAT 4102444800
EXPIRETIME {p}e4
EXPIREAT {p}e4 4102444801
PEXPIRETIME {p}e4
EXPIRE {p}nope 10
TTL {p}nope
SET {p}e5 v EX 0
EXPIRE {p}e5 soon
DEL {p}e4 {p}nope
UNLINK {p}e3
COPY {p}k2 {p}k4
GET {p}k4
OBJECT ENCODING {p}k4
EXPIRE {p}k4 -1
EXISTS {p}k4
GET {p}k4
KEYS {p}*
";

const TRANSACTIONS: &str = "
MULTI
SET {p}t1 1
INCR {p}t1
GET {p}t1
EXEC
MULTI
GET {p}t1
TTL {p}t1
EXEC
MULTI
SET {p}t2 x
NOSUCHCMD
EXEC
GET {p}t2
MULTI
SET {p}t3 x
DISCARD
GET {p}t3
EXEC
MULTI
SET {p}t4 a
INCR {p}t4
EXEC
";

/// Commands whose replies are unordered sets, compared sorted.
const UNORDERED: [&str; 6] = ["smembers", "sunion", "sinter", "sdiff", "keys", "hkeys"];
/// Commands whose integer replies are times, and how far two servers
/// running them milliseconds apart may differ.
const TIMES: [(&str, i64); 4] = [
    ("ttl", 1),
    ("pttl", 1500),
    ("expiretime", 2),
    ("pexpiretime", 2000),
];

fn commands(script: &str, prefix: &str) -> Vec<Vec<String>> {
    script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.replace("{p}", prefix)
                .split(' ')
                .map(str::to_string)
                .collect()
        })
        .collect()
}

async fn run(client: &mut RespClient, cmds: &[Vec<String>]) -> Vec<Frame> {
    let mut out = Vec::new();
    for c in cmds {
        out.push(
            client
                .call(c)
                .await
                .unwrap_or_else(|e| panic!("{c:?}: {e}")),
        );
    }
    out
}

fn normalized(name: &str, frame: &Frame) -> Frame {
    match frame {
        Frame::Array(items) if UNORDERED.contains(&name) => {
            let mut items = items.clone();
            items.sort_by_key(show);
            Frame::Array(items)
        }
        other => other.clone(),
    }
}

fn same(name: &str, a: &Frame, b: &Frame) -> bool {
    if let (Frame::Integer(x), Frame::Integer(y)) = (a, b) {
        if let Some((_, tolerance)) = TIMES.iter().find(|(n, _)| *n == name) {
            return x == y || *x >= 0 && *y >= 0 && (x - y).abs() <= *tolerance;
        }
    }
    if UNORDERED.contains(&name) {
        return normalized(name, a) == normalized(name, b);
    }
    if let (Frame::Array(x), Frame::Array(y)) = (a, b) {
        // Inside EXEC: element by element, times within the tolerance.
        return x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p == q || same(name, p, q));
    }
    a == b
}

fn compare(family: &str, via: &str, cmds: &[Vec<String>], ours: &[Frame], theirs: &[Frame]) {
    let mut diffs = Vec::new();
    let mut in_exec_names: Vec<String> = Vec::new();
    for ((c, a), b) in cmds.iter().zip(ours).zip(theirs) {
        let name = c[0].to_lowercase();
        let tolerant = if name == "exec" {
            // Time replies inside a transaction.
            in_exec_names
                .iter()
                .find(|n| TIMES.iter().any(|(t, _)| t == *n))
                .cloned()
                .unwrap_or(name.clone())
        } else {
            name.clone()
        };
        if name == "multi" {
            in_exec_names.clear();
        } else {
            in_exec_names.push(name.clone());
        }
        if !same(&tolerant, a, b) {
            diffs.push(format!(
                "  {}: understudy {} / redis {}",
                c.join(" "),
                show(a),
                show(b)
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{family} via the {via}: replies differ from redis-server's:\n{}",
        diffs.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_family_answers_as_redis_does_on_the_active_and_the_standby() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-commands").unwrap();
    let cluster = ProxyCluster::start(&dir, &["a", "b"], |b| b.sync_standbys(1))
        .await
        .unwrap();
    let reference = RedisServer::start(&dir, "reference").await.unwrap();
    let (active, standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    let mut via_active = cluster.client(&active.id).await.unwrap();
    let mut via_standby = cluster.client(&standby).await.unwrap();
    let mut plain = reference.client().await.unwrap();
    for (family, script) in [
        ("strings", STRINGS),
        ("hashes", HASHES),
        ("lists", LISTS),
        ("sets", SETS),
        ("sorted sets", SORTED_SETS),
        ("keys and expiry", KEYS_AND_EXPIRY),
        ("transactions", TRANSACTIONS),
    ] {
        let cmds = commands(script, "a:");
        let ours = run(&mut via_active, &cmds).await;
        let theirs = run(&mut plain, &cmds).await;
        compare(family, "active", &cmds, &ours, &theirs);
        let cmds = commands(script, "s:");
        let ours = run(&mut via_standby, &cmds).await;
        let theirs = run(&mut plain, &cmds).await;
        compare(family, "standby", &cmds, &ours, &theirs);
    }
    let ours = via_active.call(&["DBSIZE"]).await.unwrap();
    let theirs = plain.call(&["DBSIZE"]).await.unwrap();
    assert_eq!(ours, theirs, "DBSIZE after both runs");
    // Both upstreams hold the same data.
    cluster
        .wait_same_upstream_data(&active.id, &standby, DEADLINE)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_commands_name_themselves_and_bad_input_closes_only_its_request() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-refusals").unwrap();
    let cluster = ProxyCluster::start(&dir, &["a", "b"], |b| b.sync_standbys(1))
        .await
        .unwrap();
    let active = cluster.cluster.wait_for_active(DEADLINE).await.unwrap();
    let mut c = cluster.client(&active.id).await.unwrap();
    for (cmd, name) in [
        (vec!["EVAL", "return 1", "0"], "EVAL"),
        (vec!["SADD", "s", "a"], ""),
        (vec!["SPOP", "s"], "SPOP"),
        (vec!["WATCH", "k"], "WATCH"),
        (vec!["BLPOP", "l", "0"], "BLPOP"),
        (vec!["SUBSCRIBE", "ch"], "SUBSCRIBE"),
        (vec!["CONFIG", "GET", "maxmemory"], "CONFIG"),
        (vec!["MOVE", "k", "1"], "MOVE"),
        (vec!["SELECT", "15"], "database 15"),
        (vec!["XADD", "st", "*", "f", "v"], "XADD"),
    ] {
        let reply = c.call(&cmd).await.unwrap();
        if name.is_empty() {
            continue;
        }
        match &reply {
            Frame::Error(e) => assert!(
                e.starts_with("ERR") && e.contains(name) && e.contains(';'),
                "{cmd:?}: {e}"
            ),
            other => panic!("{cmd:?} was not refused: {}", show(other)),
        }
    }
    // An oversize argument is answered, and the connection goes on.
    let big = "x".repeat(2 << 20);
    let reply = c.call(&["SET", "big", &big]).await.unwrap();
    assert!(
        matches!(&reply, Frame::Error(e) if e.contains("more than the")),
        "{}",
        show(&reply)
    );
    assert_eq!(show(&c.call(&["PING"]).await.unwrap()), "PONG");
    // Garbage: one error, then that connection closes; others go on.
    let mut bad = cluster.client(&active.id).await.unwrap();
    bad.write_raw(b"*1\r\n:5\r\n").await.unwrap();
    let reply = bad.read().await.unwrap();
    assert!(
        matches!(&reply, Frame::Error(e) if e.contains("Protocol error")),
        "{}",
        show(&reply)
    );
    assert!(
        bad.read().await.is_err(),
        "the connection stayed open after garbage"
    );
    assert_eq!(
        show(&c.call(&["SET", "after", "garbage"]).await.unwrap()),
        "OK"
    );
    assert_eq!(
        show(&c.call(&["GET", "after"]).await.unwrap()),
        "\"garbage\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_pipelining_and_local_standby_reads() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-auth").unwrap();
    let cluster = ProxyCluster::start(&dir, &["a", "b"], |b| {
        b.sync_standbys(1)
            .with_token()
            .replica_args(["--standby-reads", "local"])
    })
    .await
    .unwrap();
    let (active, standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    let token = cluster.cluster.arbiter.token().unwrap();
    let mut c = cluster.client(&active.id).await.unwrap();
    let denied = c.call(&["GET", "k"]).await.unwrap();
    assert!(
        matches!(&denied, Frame::Error(e) if e.starts_with("NOAUTH")),
        "{}",
        show(&denied)
    );
    let wrong = c.call(&["AUTH", "not-the-token"]).await.unwrap();
    assert!(
        matches!(&wrong, Frame::Error(e) if e.starts_with("WRONGPASS")),
        "{}",
        show(&wrong)
    );
    assert_eq!(show(&c.call(&["AUTH", &token]).await.unwrap()), "OK");

    // Pipelining: 200 commands in one write, replies in order, each
    // command seeing the ones before it.
    let mut pipeline = Vec::new();
    for _ in 0..100 {
        for part in [vec!["INCR", "counter"], vec!["GET", "counter"]] {
            pipeline.extend(format!("*{}\r\n", part.len()).into_bytes());
            for p in &part {
                pipeline.extend(format!("${}\r\n{p}\r\n", p.len()).into_bytes());
            }
        }
    }
    c.write_raw(&pipeline).await.unwrap();
    for i in 1..=100i64 {
        assert_eq!(c.read().await.unwrap(), Frame::Integer(i));
        assert_eq!(
            c.read().await.unwrap(),
            Frame::BulkString(i.to_string().into())
        );
    }

    // The standby serves reads from its own upstream (possibly stale), and
    // still forwards writes to the active.
    let mut s = cluster.client(&standby).await.unwrap();
    assert_eq!(show(&s.call(&["AUTH", &token]).await.unwrap()), "OK");
    assert_eq!(
        show(&s.call(&["SET", "via", "standby"]).await.unwrap()),
        "OK"
    );
    understudy_tests::harness::wait_for(DEADLINE, "the standby's own copy", || {
        let addr = cluster.resp_addr(&standby);
        let token = token.clone();
        async move {
            let mut s = RespClient::connect(&addr).await.ok()?;
            s.call(&["AUTH", &token]).await.ok()?;
            (s.call(&["GET", "via"]).await.ok()? == Frame::BulkString("standby".into()))
                .then_some(())
        }
    })
    .await
    .unwrap();
    let info = s.call(&["INFO", "replication"]).await.unwrap();
    assert!(show(&info).contains("role:slave"), "{}", show(&info));
    let info = c.call(&["INFO", "replication"]).await.unwrap();
    assert!(
        show(&info).contains("role:master") && show(&info).contains("connected_slaves:1"),
        "{}",
        show(&info)
    );
}

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

    let mut solo = config("solo", &last.to_string()).start().await.unwrap();
    let mut c = RespClient::connect(&format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    assert_eq!(show(&c.call(&["SET", "k", "v"]).await.unwrap()), "OK");
    let pid = solo.process().pid();
    assert_eq!(thread_cpus(pid, "resp"), Some(last.to_string()));
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
