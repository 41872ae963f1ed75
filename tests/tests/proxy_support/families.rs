//! Command families that need more than one connection, a protocol other
//! than RESP2, or a reply with a random or clock-made part: each a run
//! recorded as a transcript (see `transcript.rs`).

use understudy_tests::client::resp_raw::Value;

use super::transcript::{about, is_stream_id, masking, shape, sorted, without_ids, Run};

/// Scripts and functions: EVAL, EVALSHA, SCRIPT, EVAL_RO, FUNCTION, FCALL.
pub async fn scripts(r: &mut Run) {
    let (p, q) = (r.p.clone(), r.q.clone());
    let mut a = r.conn().await;
    let key = |k: &str| format!("{p}{k}");
    let set = "return redis.call('SET', KEYS[1], ARGV[1])";
    let get = "return redis.call('GET', KEYS[1])";
    r.call(&mut a, "a", &["EVAL", set, "1", &key("e"), "v"])
        .await;
    r.call(&mut a, "a", &["EVAL", get, "1", &key("e")]).await;
    r.call(
        &mut a,
        "a",
        &[
            "EVAL",
            "return {1, 2, 'three', redis.call('INCR', KEYS[1])}",
            "1",
            &key("cnt"),
        ],
    )
    .await;
    r.call(
        &mut a,
        "a",
        &["EVAL", "return redis.error_reply('custom')", "0"],
    )
    .await;
    r.call(&mut a, "a", &["EVAL", "return redis.call('NOSUCH')", "0"])
        .await;
    // A random command inside a script: its effects are replicated.
    r.call(&mut a, "a", &["SADD", &key("one"), "only"]).await;
    r.call(
        &mut a,
        "a",
        &[
            "EVAL",
            "return redis.call('SPOP', KEYS[1])",
            "1",
            &key("one"),
        ],
    )
    .await;
    let sha = r
        .call(
            &mut a,
            "a",
            &["SCRIPT", "LOAD", "return ARGV[1] .. KEYS[1]"],
        )
        .await
        .text()
        .unwrap_or_default();
    r.call(&mut a, "a", &["EVALSHA", &sha, "1", &key("k"), "x"])
        .await;
    let unknown = "f".repeat(40);
    r.call(&mut a, "a", &["SCRIPT", "EXISTS", &sha, &unknown])
        .await;
    r.call(&mut a, "a", &["EVALSHA", &unknown, "0"]).await;
    r.call(&mut a, "a", &["EVAL_RO", get, "1", &key("e")]).await;
    r.call(
        &mut a,
        "a",
        &[
            "EVAL_RO",
            "return redis.call('DEL', KEYS[1])",
            "1",
            &key("e"),
        ],
    )
    .await;
    r.call(&mut a, "a", &["EVALSHA_RO", &sha, "1", &key("k"), "y"])
        .await;
    let library = format!(
        "#!lua name=lib_{q}\n\
         redis.register_function('incr_{q}', function(keys, args) \
           return redis.call('INCRBY', keys[1], args[1]) end)\n\
         redis.register_function{{function_name='get_{q}', \
           callback=function(keys) return redis.call('GET', keys[1]) end, \
           flags={{'no-writes'}}}}"
    );
    r.call(&mut a, "a", &["FUNCTION", "LOAD", &library]).await;
    let (incr, getf) = (format!("incr_{q}"), format!("get_{q}"));
    r.call(&mut a, "a", &["FCALL", &incr, "1", &key("f"), "5"])
        .await;
    r.call(&mut a, "a", &["FCALL", &incr, "1", &key("f"), "5"])
        .await;
    r.call(&mut a, "a", &["FCALL_RO", &getf, "1", &key("f")])
        .await;
    r.call(&mut a, "a", &["FCALL_RO", &incr, "1", &key("f"), "1"])
        .await;
    let lib = format!("lib_{q}");
    let v = r
        .ask(&mut a, &["FUNCTION", "LIST", "LIBRARYNAME", &lib])
        .await;
    r.note("a: FUNCTION LIST LIBRARYNAME", functions_sorted(&v));
    r.call(&mut a, "a", &["FUNCTION", "LOAD", &library]).await;
    r.call(&mut a, "a", &["FUNCTION", "DELETE", &lib]).await;
    r.call(&mut a, "a", &["FCALL", &incr, "1", &key("f"), "1"])
        .await;
    r.call(&mut a, "a", &["GET", &key("f")]).await;
}

/// A `FUNCTION LIST` reply with each library's functions in name order
/// (the server lists them in its hash table's order).
fn functions_sorted(v: &Value) -> String {
    let libs = v.items().unwrap_or_default().iter().map(|lib| {
        let fields = lib.items().unwrap_or_default().to_vec();
        let mut out = Vec::new();
        for pair in fields.chunks(2) {
            out.push(pair[0].clone());
            if let Some(val) = pair.get(1) {
                let mut val = val.clone();
                if pair[0].text().as_deref() == Some("functions") {
                    if let Value::Array(fs) = &mut val {
                        fs.sort_by_key(Value::show);
                    }
                }
                out.push(val);
            }
        }
        Value::Array(out)
    });
    Value::Array(libs.collect()).show()
}

/// MULTI/EXEC with WATCH, a conflict made by another connection included.
pub async fn watch(r: &mut Run) {
    let p = r.p.clone();
    let w = format!("{p}w");
    let (mut a, mut b) = (r.conn().await, r.conn().await);
    // Another connection writes the watched key: EXEC aborts.
    r.call(&mut a, "a", &["WATCH", &w]).await;
    r.call(&mut b, "b", &["SET", &w, "1"]).await;
    r.call(&mut a, "a", &["MULTI"]).await;
    r.call(&mut a, "a", &["INCR", &w]).await;
    r.call(&mut a, "a", &["EXEC"]).await;
    r.call(&mut a, "a", &["GET", &w]).await;
    // Nobody writes it: EXEC runs.
    r.call(&mut a, "a", &["WATCH", &w]).await;
    r.call(&mut b, "b", &["GET", &w]).await;
    r.call(&mut a, "a", &["MULTI"]).await;
    r.call(&mut a, "a", &["INCR", &w]).await;
    r.call(&mut a, "a", &["PING"]).await;
    r.call(&mut a, "a", &["EXEC"]).await;
    // UNWATCH forgets the watch.
    r.call(&mut a, "a", &["WATCH", &w]).await;
    r.call(&mut a, "a", &["UNWATCH"]).await;
    r.call(&mut b, "b", &["SET", &w, "5"]).await;
    r.call(&mut a, "a", &["MULTI"]).await;
    r.call(&mut a, "a", &["GET", &w]).await;
    r.call(&mut a, "a", &["EXEC"]).await;
    // WATCH inside MULTI is an error; DISCARD ends it.
    r.call(&mut a, "a", &["MULTI"]).await;
    r.call(&mut a, "a", &["WATCH", &w]).await;
    r.call(&mut a, "a", &["DISCARD"]).await;
    // A watched key deleted by another connection aborts too.
    r.call(&mut a, "a", &["WATCH", &w, &format!("{p}other")])
        .await;
    r.call(&mut b, "b", &["DEL", &w]).await;
    r.call(&mut a, "a", &["MULTI"]).await;
    r.call(&mut a, "a", &["SET", &w, "x"]).await;
    r.call(&mut a, "a", &["EXEC"]).await;
    r.call(&mut a, "a", &["EXISTS", &w]).await;
}

/// Blocking pops: with a timeout, and woken by another client's push.
pub async fn blocking(r: &mut Run) {
    let p = r.p.clone();
    let key = |k: &str| format!("{p}{k}");
    let (mut a, mut b) = (r.conn().await, r.conn().await);
    r.call(&mut a, "a", &["BLPOP", &key("none"), "0.1"]).await;
    r.call(&mut a, "a", &["BRPOP", &key("none"), &key("none2"), "0.05"])
        .await;
    r.call(
        &mut a,
        "a",
        &["BLMOVE", &key("none"), &key("dst"), "LEFT", "RIGHT", "0.05"],
    )
    .await;
    r.call(&mut a, "a", &["BZPOPMIN", &key("nz"), "0.05"]).await;
    // Woken by a push from another client.
    r.send(&mut a, &["BLPOP", &key("q"), "20"]).await;
    r.wait_blocked(1).await;
    r.call(&mut b, "b", &["RPUSH", &key("q"), "job1", "job2"])
        .await;
    r.read(&mut a, "a: reply to BLPOP q 20").await;
    r.call(&mut a, "a", &["LRANGE", &key("q"), "0", "-1"]).await;
    r.send(
        &mut a,
        &["BLMOVE", &key("q2"), &key("dst"), "RIGHT", "LEFT", "20"],
    )
    .await;
    r.wait_blocked(1).await;
    r.call(&mut b, "b", &["LPUSH", &key("q2"), "x"]).await;
    r.read(&mut a, "a: reply to BLMOVE q2 dst").await;
    r.call(&mut b, "b", &["LRANGE", &key("dst"), "0", "-1"])
        .await;
    r.send(&mut a, &["BZPOPMIN", &key("z"), "20"]).await;
    r.wait_blocked(1).await;
    r.call(&mut b, "b", &["ZADD", &key("z"), "1", "m"]).await;
    r.read(&mut a, "a: reply to BZPOPMIN z").await;
    r.send(
        &mut a,
        &["XREAD", "BLOCK", "20000", "STREAMS", &key("s"), "$"],
    )
    .await;
    r.wait_blocked(1).await;
    r.call(&mut b, "b", &["XADD", &key("s"), "1-1", "f", "v"])
        .await;
    r.read(&mut a, "a: reply to XREAD BLOCK s").await;
    // The connection goes on after its blocking commands.
    r.call(&mut a, "a", &["PING"]).await;
}

/// Pub/sub in RESP2: subscribed mode, patterns, PING and refusals in it,
/// leaving it, RESET.
pub async fn pubsub_resp2(r: &mut Run) {
    let p = r.p.clone();
    let ch = |c: &str| format!("{p}{c}");
    let (mut a, mut b) = (r.conn().await, r.conn().await);
    r.send(&mut a, &["SUBSCRIBE", &ch("c1"), &ch("c2")]).await;
    r.read(&mut a, "a: SUBSCRIBE c1 c2 (1)").await;
    r.read(&mut a, "a: SUBSCRIBE c1 c2 (2)").await;
    r.call(&mut a, "a", &["PSUBSCRIBE", &ch("c*")]).await;
    r.call(&mut b, "b", &["PUBLISH", &ch("c1"), "hello"]).await;
    r.read(&mut a, "a: message").await;
    r.read(&mut a, "a: pmessage").await;
    r.call(&mut a, "a", &["PING"]).await;
    r.call(&mut a, "a", &["PING", "x"]).await;
    r.call(&mut a, "a", &["GET", &ch("k")]).await;
    r.call(&mut b, "b", &["PUBSUB", "NUMSUB", &ch("c1"), &ch("c2")])
        .await;
    let v = r.ask(&mut b, &["PUBSUB", "CHANNELS", &ch("c*")]).await;
    r.note("b: PUBSUB CHANNELS c*", sorted(&v));
    r.call(&mut a, "a", &["UNSUBSCRIBE", &ch("c1")]).await;
    r.call(&mut a, "a", &["PUNSUBSCRIBE"]).await;
    r.call(&mut b, "b", &["PUBLISH", &ch("c2"), "still"]).await;
    r.read(&mut a, "a: message on c2").await;
    r.call(&mut a, "a", &["UNSUBSCRIBE"]).await;
    // Out of subscribed mode: commands as usual.
    r.call(&mut a, "a", &["GET", &ch("k")]).await;
    r.call(&mut b, "b", &["PUBLISH", &ch("c1"), "nobody"]).await;
    r.call(&mut a, "a", &["PING"]).await;
    // RESET leaves subscribed mode too.
    r.call(&mut a, "a", &["SUBSCRIBE", &ch("c3")]).await;
    r.call(&mut a, "a", &["RESET"]).await;
    r.call(&mut a, "a", &["SET", &ch("k"), "v"]).await;
    r.call(&mut b, "b", &["PUBLISH", &ch("c3"), "gone"]).await;
    r.call(&mut a, "a", &["GET", &ch("k")]).await;
}

/// RESP3 after `HELLO 3`: its reply types, pub/sub push frames mixed with
/// replies, client-side caching's invalidations; `HELLO 2` back.
pub async fn resp3(r: &mut Run) {
    let p = r.p.clone();
    let key = |k: &str| format!("{p}{k}");
    let (mut a, mut b) = (r.conn().await, r.conn().await);
    let hello = r.ask(&mut a, &["HELLO", "3"]).await;
    r.note("a: HELLO 3", masking(&hello, &["id"]));
    r.call(&mut a, "a", &["HSET", &key("h"), "f", "v", "g", "w"])
        .await;
    r.call(&mut a, "a", &["HGETALL", &key("h")]).await;
    r.call(&mut a, "a", &["SADD", &key("s"), "x"]).await;
    r.call(&mut a, "a", &["SMEMBERS", &key("s")]).await;
    r.call(&mut a, "a", &["ZADD", &key("z"), "1.5", "m"]).await;
    r.call(&mut a, "a", &["ZSCORE", &key("z"), "m"]).await;
    r.call(&mut a, "a", &["GET", &key("missing")]).await;
    r.call(&mut a, "a", &["EXISTS", &key("h")]).await;
    r.call(&mut a, "a", &["LPOP", &key("missing"), "2"]).await;
    // Pub/sub: push frames, and commands between them.
    r.call(&mut a, "a", &["SUBSCRIBE", &key("c")]).await;
    r.call(&mut b, "b", &["PUBLISH", &key("c"), "hi"]).await;
    r.read(&mut a, "a: message").await;
    r.call(&mut a, "a", &["GET", &key("missing")]).await;
    r.call(&mut a, "a", &["PSUBSCRIBE", &key("p*")]).await;
    r.call(&mut b, "b", &["PUBLISH", &key("pq"), "there"]).await;
    r.read(&mut a, "a: pmessage").await;
    r.call(&mut a, "a", &["UNSUBSCRIBE", &key("c")]).await;
    r.call(&mut a, "a", &["PUNSUBSCRIBE", &key("p*")]).await;
    r.call(&mut a, "a", &["PING"]).await;
    // Client-side caching: another client's write invalidates.
    r.call(&mut a, "a", &["CLIENT", "TRACKING", "ON"]).await;
    r.call(&mut a, "a", &["SET", &key("t"), "1"]).await;
    r.call(&mut a, "a", &["GET", &key("t")]).await;
    r.call(&mut b, "b", &["SET", &key("t"), "2"]).await;
    r.read(&mut a, "a: invalidation").await;
    r.call(&mut a, "a", &["CLIENT", "TRACKING", "OFF"]).await;
    let hello = r.ask(&mut a, &["HELLO", "2"]).await;
    r.note("a: HELLO 2", masking(&hello, &["id"]));
    r.call(&mut a, "a", &["HGETALL", &key("h")]).await;
    r.call(&mut a, "a", &["GET", &key("missing")]).await;
}

/// CLIENT settings belong to each connection.
pub async fn clients(r: &mut Run) {
    let q = r.q.clone();
    let (mut a, mut b) = (r.conn().await, r.conn().await);
    let (alice, bob) = (format!("alice_{q}"), format!("bob_{q}"));
    r.call(&mut a, "a", &["CLIENT", "SETNAME", &alice]).await;
    r.call(&mut b, "b", &["CLIENT", "GETNAME"]).await;
    r.call(&mut a, "a", &["CLIENT", "GETNAME"]).await;
    r.call(&mut b, "b", &["CLIENT", "SETNAME", &bob]).await;
    r.call(&mut b, "b", &["CLIENT", "GETNAME"]).await;
    r.call(&mut a, "a", &["CLIENT", "GETNAME"]).await;
    r.call(&mut a, "a", &["CLIENT", "SETNAME", "no spaces allowed"])
        .await;
    let id_a = r.ask(&mut a, &["CLIENT", "ID"]).await;
    let id_b = r.ask(&mut b, &["CLIENT", "ID"]).await;
    r.note(
        "a, b: CLIENT ID",
        format!(
            "{} {} differ: {}",
            shape(&id_a, "integer", |v| v.int().is_some()),
            shape(&id_b, "integer", |v| v.int().is_some()),
            id_a != id_b
        ),
    );
    let info = r.ask(&mut a, &["CLIENT", "INFO"]).await;
    let info = info.text().unwrap_or_default();
    r.note(
        "a: CLIENT INFO has its id and name",
        format!(
            "{} {}",
            info.contains(&format!("id={} ", id_a.int().unwrap_or(-1))),
            info.contains(&format!(" name={alice} "))
        ),
    );
    r.call(&mut a, "a", &["CLIENT", "NO-EVICT", "ON"]).await;
    // SKIP: no reply to it nor to the next command.
    r.send(&mut a, &["CLIENT", "REPLY", "SKIP"]).await;
    r.send(&mut a, &["CLIENT", "SETNAME", "skipped"]).await;
    r.call(&mut a, "a", &["CLIENT", "GETNAME"]).await;
}

/// SELECT is per connection; database 15 is a database like the others.
pub async fn databases(r: &mut Run) {
    let p = r.p.clone();
    let key = |k: &str| format!("{p}{k}");
    let (mut a, mut b) = (r.conn().await, r.conn().await);
    r.call(&mut a, "a", &["SELECT", "15"]).await;
    r.call(&mut a, "a", &["SET", &key("d"), "v"]).await;
    r.call(&mut a, "a", &["GET", &key("d")]).await;
    r.call(&mut b, "b", &["GET", &key("d")]).await;
    r.call(&mut b, "b", &["SELECT", "15"]).await;
    r.call(&mut b, "b", &["GET", &key("d")]).await;
    r.call(&mut a, "a", &["MOVE", &key("d"), "3"]).await;
    r.call(&mut b, "b", &["EXISTS", &key("d")]).await;
    r.call(&mut a, "a", &["SELECT", "3"]).await;
    r.call(&mut a, "a", &["GET", &key("d")]).await;
    r.call(&mut a, "a", &["COPY", &key("d"), &key("d2"), "DB", "15"])
        .await;
    r.call(&mut b, "b", &["GET", &key("d2")]).await;
    r.call(&mut a, "a", &["SELECT", "16"]).await;
    r.call(&mut a, "a", &["SELECT", "0"]).await;
    r.call(&mut a, "a", &["GET", &key("d")]).await;
    r.call(&mut a, "a", &["MULTI"]).await;
    r.call(&mut a, "a", &["SELECT", "15"]).await;
    r.call(&mut a, "a", &["INCR", &key("n")]).await;
    r.call(&mut a, "a", &["EXEC"]).await;
    r.call(&mut b, "b", &["GET", &key("n")]).await;
}

/// Commands whose replies have random or clock-made parts: compared by
/// shape.
pub async fn random(r: &mut Run) {
    let p = r.p.clone();
    let key = |k: &str| format!("{p}{k}");
    let mut a = r.conn().await;
    let members = ["a", "b", "c", "d", "e"];
    let member = |v: &Value| v.text().is_some_and(|t| members.contains(&t.as_str()));
    let all_members = |v: &Value, n: usize, distinct: bool| {
        v.items().is_some_and(|items| {
            let mut texts: Vec<String> = items.iter().filter_map(Value::text).collect();
            let ok = texts.len() == n && texts.iter().all(|t| members.contains(&t.as_str()));
            texts.sort();
            texts.dedup();
            ok && (!distinct || texts.len() == n)
        })
    };
    let mut args = vec!["SADD".to_string(), key("r")];
    args.extend(members.iter().map(|m| m.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    r.call(&mut a, "a", &args).await;
    let v = r.ask(&mut a, &["SPOP", &key("r")]).await;
    r.note("a: SPOP r", shape(&v, "a member", member));
    r.call(&mut a, "a", &["SCARD", &key("r")]).await;
    let popped = v.text().unwrap_or_default();
    let v = r.ask(&mut a, &["SISMEMBER", &key("r"), &popped]).await;
    r.note("a: SISMEMBER r <the popped member>", v.show());
    let v = r.ask(&mut a, &["SRANDMEMBER", &key("r"), "2"]).await;
    r.note(
        "a: SRANDMEMBER r 2",
        shape(&v, "2 distinct members", |v| all_members(v, 2, true)),
    );
    let v = r.ask(&mut a, &["SRANDMEMBER", &key("r"), "-6"]).await;
    r.note(
        "a: SRANDMEMBER r -6",
        shape(&v, "6 members", |v| all_members(v, 6, false)),
    );
    let v = r.ask(&mut a, &["SPOP", &key("r"), "10"]).await;
    r.note(
        "a: SPOP r 10",
        shape(&v, "the 4 members left", |v| all_members(v, 4, true)),
    );
    r.call(&mut a, "a", &["EXISTS", &key("r")]).await;
    let first = r.ask(&mut a, &["XADD", &key("x"), "*", "f", "v"]).await;
    r.note("a: XADD x * f v", shape(&first, "id", is_stream_id));
    let second = r.ask(&mut a, &["XADD", &key("x"), "*", "f", "w"]).await;
    r.note(
        "a: XADD x * f w",
        shape(&second, "a later id", |v| {
            is_stream_id(v) && stream_id(v) > stream_id(&first)
        }),
    );
    r.call(&mut a, "a", &["XLEN", &key("x")]).await;
    let v = r.ask(&mut a, &["XRANGE", &key("x"), "-", "+"]).await;
    r.note("a: XRANGE x - +", without_ids(&v));
    let v = r
        .ask(&mut a, &["XADD", &key("x"), "MAXLEN", "1", "*", "f", "z"])
        .await;
    r.note("a: XADD x MAXLEN 1 *", shape(&v, "id", is_stream_id));
    r.call(&mut a, "a", &["XLEN", &key("x")]).await;
    let v = r
        .ask(&mut a, &["XREAD", "COUNT", "5", "STREAMS", &key("x"), "0"])
        .await;
    r.note("a: XREAD STREAMS x 0", without_ids(&v));
    r.call(&mut a, "a", &["HSET", &key("h"), "a", "1", "b", "2"])
        .await;
    let v = r.ask(&mut a, &["HRANDFIELD", &key("h")]).await;
    r.note(
        "a: HRANDFIELD h",
        shape(&v, "a field", |v| {
            v.text().is_some_and(|t| t == "a" || t == "b")
        }),
    );
    let v = r
        .ask(&mut a, &["HRANDFIELD", &key("h"), "-3", "WITHVALUES"])
        .await;
    r.note(
        "a: HRANDFIELD h -3 WITHVALUES",
        shape(&v, "3 pairs", |v| v.items().is_some_and(|i| i.len() == 6)),
    );
    let v = r.ask(&mut a, &["RANDOMKEY"]).await;
    r.note("a: RANDOMKEY", shape(&v, "a key", |v| v.text().is_some()));
}

fn stream_id(v: &Value) -> (u64, u64) {
    let t = v.text().unwrap_or_default();
    let (ms, seq) = t.split_once('-').unwrap_or(("0", "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// OBJECT, DUMP/RESTORE and TTLs.
pub async fn objects(r: &mut Run) {
    let p = r.p.clone();
    let key = |k: &str| format!("{p}{k}");
    let mut a = r.conn().await;
    r.call(&mut a, "a", &["SET", &key("i"), "12345"]).await;
    r.call(&mut a, "a", &["SET", &key("s"), "hello"]).await;
    r.call(&mut a, "a", &["RPUSH", &key("l"), "a", "b"]).await;
    r.call(&mut a, "a", &["HSET", &key("h"), "f", "v"]).await;
    r.call(&mut a, "a", &["ZADD", &key("z"), "1", "m"]).await;
    for k in ["i", "s", "l", "h", "z"] {
        r.call(&mut a, "a", &["OBJECT", "ENCODING", &key(k)]).await;
    }
    r.call(&mut a, "a", &["OBJECT", "REFCOUNT", &key("s")])
        .await;
    let v = r.ask(&mut a, &["OBJECT", "IDLETIME", &key("s")]).await;
    r.note("a: OBJECT IDLETIME s", about(&v, 0, 2));
    r.call(&mut a, "a", &["OBJECT", "FREQ", &key("s")]).await;
    r.call(&mut a, "a", &["OBJECT", "ENCODING", &key("missing")])
        .await;
    let mut dumps = Vec::new();
    for k in ["i", "s", "l", "h", "z"] {
        dumps.push(r.call(&mut a, "a", &["DUMP", &key(k)]).await);
    }
    r.call(&mut a, "a", &["DUMP", &key("missing")]).await;
    let Value::Bulk(dumped) = dumps[2].clone() else {
        panic!("DUMP of a list gave {}", dumps[2].show());
    };
    let restore = |k: &str, ttl: &str, extra: &[&str]| {
        let mut args: Vec<Vec<u8>> = vec![b"RESTORE".to_vec(), key(k).into_bytes()];
        args.push(ttl.as_bytes().to_vec());
        args.push(dumped.clone());
        args.extend(extra.iter().map(|e| e.as_bytes().to_vec()));
        args
    };
    for (label, args) in [
        ("a: RESTORE r 0 <dump of l>", restore("r", "0", &[])),
        ("a: RESTORE r 0 <dump of l> (again)", restore("r", "0", &[])),
        (
            "a: RESTORE r 0 <dump> REPLACE",
            restore("r", "0", &["REPLACE"]),
        ),
        ("a: RESTORE r2 5000 <dump>", restore("r2", "5000", &[])),
    ] {
        let v = a
            .call(&args)
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        r.note(label, v.show());
    }
    r.call(&mut a, "a", &["LRANGE", &key("r"), "0", "-1"]).await;
    let v = r.ask(&mut a, &["PTTL", &key("r2")]).await;
    r.note("a: PTTL r2", about(&v, 5000, 1500));
    r.call(&mut a, "a", &["SET", &key("t"), "v", "EX", "100"])
        .await;
    let v = r.ask(&mut a, &["TTL", &key("t")]).await;
    r.note("a: TTL t", about(&v, 100, 1));
    let v = r.ask(&mut a, &["PTTL", &key("t")]).await;
    r.note("a: PTTL t", about(&v, 100_000, 1500));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let v = r.ask(&mut a, &["EXPIRETIME", &key("t")]).await;
    r.note(
        "a: EXPIRETIME t",
        match v.int() {
            Some(at) => about(&Value::Int(at - now), 100, 2),
            None => v.show(),
        },
    );
    r.call(&mut a, "a", &["PERSIST", &key("t")]).await;
    r.call(&mut a, "a", &["TTL", &key("t")]).await;
    r.call(&mut a, "a", &["TTL", &key("missing")]).await;
    r.call(&mut a, "a", &["SET", &key("gone"), "v", "PX", "1"])
        .await;
    let gone = key("gone");
    let addr = r.addr.clone();
    understudy_tests::harness::wait_until(
        std::time::Duration::from_secs(20),
        "a key with PX 1 to expire",
        || {
            let (addr, gone) = (addr.clone(), gone.clone());
            async move {
                let Ok(mut c) = understudy_tests::client::resp_raw::RawResp::connect(&addr).await
                else {
                    return false;
                };
                c.call(&["EXISTS", &gone]).await.ok() == Some(Value::Int(0))
            }
        },
    )
    .await
    .unwrap();
    r.call(&mut a, "a", &["GET", &key("gone")]).await;
    r.call(&mut a, "a", &["TTL", &key("gone")]).await;
    let v = r.ask(&mut a, &["SMEMBERS", &key("none")]).await;
    r.note("a: SMEMBERS none", sorted(&v));
}
