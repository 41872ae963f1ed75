//! What understudy refuses in proxy mode, and only that: commands that
//! would take the redis-servers' replication or persistence out of
//! understudy's hands or stop them (`REPLICAOF`, `SLAVEOF`, `FAILOVER`,
//! `SHUTDOWN`, `DEBUG` that loads, writes, replicates or
//! stops (`RELOAD`, `POPULATE`, `REPLICATE`, `CHANGE-REPL-ID`,
//! `SEGFAULT`), `MONITOR`, `CONFIG SET` of a replication, persistence or
//! password setting, unless to the value it has) get `-ERR` naming the
//! command and why; everything else runs as in Redis (`CONFIG GET`,
//! `CONFIG SET` of other settings, `WAIT`, `FLUSHALL`, `DEBUG OBJECT`,
//! `DEBUG SLEEP`, `DEBUG SET-ACTIVE-EXPIRE`; `min-replicas-to-write`,
//! which counts the tap as the one replica it is). A refused command
//! inside `MULTI` is queued and aborts the transaction at `EXEC`, with its
//! error.

use std::time::Duration;

use understudy_tests::client::resp_raw::{RawResp, Value};
use understudy_tests::harness::proxy_cluster::info_field;
use understudy_tests::harness::{serial, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

async fn cluster(name: &str) -> (TestDir, ProxyCluster, String, String) {
    let dir = TestDir::new(name).unwrap();
    let (cluster, active, standby) = ProxyCluster::start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    (dir, cluster, active.id, standby)
}

async fn call(c: &mut RawResp, args: &[&str]) -> Value {
    c.call(args)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_would_break_the_arrangement_is_refused_by_name_and_the_rest_runs() {
    let _serial = serial().await;
    let (_dir, cluster, active, standby) = cluster("proxy-refusals").await;
    let refused: [(&[&str], &str); 17] = [
        (&["REPLICAOF", "NO", "ONE"], "REPLICAOF"),
        (&["SLAVEOF", "127.0.0.1", "1"], "SLAVEOF"),
        (&["FAILOVER"], "FAILOVER"),
        (&["SHUTDOWN", "NOSAVE"], "SHUTDOWN"),
        (&["DEBUG", "RELOAD"], "DEBUG RELOAD"),
        (&["DEBUG", "POPULATE", "10"], "DEBUG POPULATE"),
        (&["DEBUG", "REPLICATE", "SET", "x", "1"], "DEBUG REPLICATE"),
        (&["DEBUG", "CHANGE-REPL-ID"], "DEBUG CHANGE-REPL-ID"),
        (&["DEBUG", "SEGFAULT"], "DEBUG SEGFAULT"),
        (&["MONITOR"], "MONITOR"),
        (
            &["CONFIG", "SET", "replica-read-only", "no"],
            "CONFIG SET replica-read-only",
        ),
        (&["CONFIG", "SET", "save", "3600 1"], "CONFIG SET save"),
        (
            &["CONFIG", "SET", "appendonly", "yes"],
            "CONFIG SET appendonly",
        ),
        (
            &["CONFIG", "SET", "requirepass", "x"],
            "CONFIG SET requirepass",
        ),
        (
            &["CONFIG", "SET", "masterauth", "x"],
            "CONFIG SET masterauth",
        ),
        (&["CONFIG", "SET", "dir", "/"], "CONFIG SET dir"),
        (
            &["CONFIG", "SET", "hz", "12", "repl-backlog-size", "1mb"],
            "CONFIG SET repl-backlog-size is",
        ),
    ];
    for (via, id) in [("active", &active), ("standby", &standby)] {
        let mut c = cluster.raw(id).await.unwrap();
        for (args, name) in refused {
            match call(&mut c, args).await {
                Value::Error(e) => assert!(
                    e.starts_with(&format!("ERR {name}"))
                        && e.contains("not allowed through understudy: "),
                    "via the {via}: {args:?}: {e}"
                ),
                other => panic!("via the {via}: {args:?} was not refused: {}", other.show()),
            }
        }
        // A refused setting set to the value it has changes nothing: it
        // runs (the redis-servers run without persistence).
        for args in [
            &["CONFIG", "SET", "save", ""][..],
            &["CONFIG", "SET", "appendonly", "no"][..],
        ] {
            assert_eq!(
                call(&mut c, args).await.show(),
                "OK",
                "via the {via}: {args:?}"
            );
        }
        // The session goes on, and the rest runs as in Redis, `DEBUG`
        // that only looks inside or tunes the upstream included.
        let k = format!("{via}:k");
        assert_eq!(call(&mut c, &["SET", &k, "v"]).await.show(), "OK");
        let object = call(&mut c, &["DEBUG", "OBJECT", &k]).await.show();
        assert!(
            object.contains("encoding:embstr"),
            "via the {via}: {object}"
        );
        assert_eq!(call(&mut c, &["DEBUG", "SLEEP", "0"]).await.show(), "OK");
        for pause in ["1", "0"] {
            let paused = call(&mut c, &["DEBUG", "PAUSE-CRON", pause]).await;
            assert_eq!(paused.show(), "OK", "via the {via}");
        }
        assert_eq!(
            call(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "1"])
                .await
                .show(),
            "OK"
        );
        // The tap acknowledges what the log committed: WAIT counts it.
        assert_eq!(call(&mut c, &["WAIT", "1", "5000"]).await, Value::Int(1));
        assert_eq!(
            call(&mut c, &["CONFIG", "SET", "hz", "12"]).await.show(),
            "OK"
        );
        assert_eq!(
            call(&mut c, &["CONFIG", "GET", "hz"]).await.show(),
            "[\"hz\", \"12\"]"
        );
        assert_eq!(
            call(&mut c, &["CONFIG", "GET", "maxmemory-policy"])
                .await
                .show(),
            "[\"maxmemory-policy\", \"noeviction\"]"
        );
        assert_eq!(call(&mut c, &["SWAPDB", "0", "1"]).await.show(), "OK");
        assert_eq!(call(&mut c, &["SWAPDB", "0", "1"]).await.show(), "OK");
        assert_eq!(call(&mut c, &["GET", &k]).await.show(), "\"v\"");
    }
    // Nothing refused reached a redis-server: the active's is a master, the
    // standby's still follows its replica, and both hold the same data.
    let a = cluster.upstream_info(&active, "replication").await.unwrap();
    assert_eq!(info_field(&a, "role").as_deref(), Some("master"), "{a}");
    let b = cluster
        .upstream_info(&standby, "replication")
        .await
        .unwrap();
    assert_eq!(info_field(&b, "role").as_deref(), Some("slave"), "{b}");
    let mut c = cluster.raw(&active).await.unwrap();
    assert_eq!(call(&mut c, &["FLUSHALL"]).await.show(), "OK");
    assert_eq!(call(&mut c, &["SET", "after", "flush"]).await.show(), "OK");
    let data = cluster
        .wait_same_upstream_data(&active, &standby, DEADLINE)
        .await
        .unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["after"]);
}

/// A command understudy refuses inside `MULTI` aborts the whole
/// transaction: it is answered `+QUEUED`, and `EXEC` is answered
/// `-EXECABORT` naming it (as Redis aborts at `EXEC` one whose command it
/// cannot run then), never sent on to run the rest. (Found as a bug: the
/// refusal was answered at once but `EXEC` still reached the redis-server.
/// Answered at `EXEC`, a client that stops at the first error does not stay
/// inside `MULTI`: Redis's own suite left its connection there, and every
/// later test of unit/multi failed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_with_a_refused_command_is_aborted() {
    let _serial = serial().await;
    let (_dir, cluster, active, standby) = cluster("proxy-refused-in-multi").await;
    for (via, id) in [("active", &active), ("standby", &standby)] {
        let k = format!("{via}:k");
        let mut c = cluster.raw(id).await.unwrap();
        assert_eq!(call(&mut c, &["MULTI"]).await.show(), "OK");
        assert_eq!(call(&mut c, &["SET", &k, "1"]).await.show(), "QUEUED");
        // Queued, and refused with the transaction at EXEC, by name.
        let refused = call(&mut c, &["CONFIG", "SET", "save", "3600 1"]).await;
        assert_eq!(refused.show(), "QUEUED");
        let exec = call(&mut c, &["EXEC"]).await;
        assert!(
            matches!(&exec, Value::Error(e) if e.starts_with("EXECABORT")
                && e.contains("CONFIG SET save is not allowed through understudy")),
            "via the {via}: EXEC after a refused command answered {}",
            exec.show()
        );
        // The connection has left the transaction. What Redis itself
        // refuses inside one (`no-multi`) is refused while queueing, as
        // Redis does, whether understudy refuses it too or not.
        for no_multi in ["SHUTDOWN", "SYNC"] {
            assert_eq!(call(&mut c, &["MULTI"]).await.show(), "OK");
            let refused = call(&mut c, &[no_multi]).await;
            assert!(
                matches!(&refused, Value::Error(e) if e.contains("not allowed inside a transaction")),
                "via the {via}: {no_multi} inside MULTI answered {}",
                refused.show()
            );
            let exec = call(&mut c, &["EXEC"]).await;
            assert!(
                matches!(&exec, Value::Error(e) if e.starts_with("EXECABORT")),
                "{}",
                exec.show()
            );
        }
        assert_eq!(
            call(&mut c, &["EXISTS", &k]).await,
            Value::Int(0),
            "via the {via}: the aborted transaction ran"
        );
    }
}

/// `min-replicas-to-write` is the upstream's own rule, and runs: the tap is
/// the active's redis-server's one replica, so asking for two refuses
/// writes with Redis's `NOREPLICAS` (a transaction is aborted at `EXEC`, as
/// Redis's own suite expects) and asking for one takes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_replicas_to_write_counts_the_tap() {
    let _serial = serial().await;
    let (_dir, cluster, active, standby) = cluster("proxy-min-replicas").await;
    for (via, id) in [("active", &active), ("standby", &standby)] {
        let k = format!("{via}:k");
        let mut c = cluster.raw(id).await.unwrap();
        let mut other = cluster.raw(id).await.unwrap();
        assert_eq!(call(&mut c, &["SET", &k, "1"]).await.show(), "OK");
        assert_eq!(call(&mut c, &["MULTI"]).await.show(), "OK");
        assert_eq!(call(&mut c, &["INCR", &k]).await.show(), "QUEUED");
        let set = call(&mut other, &["CONFIG", "SET", "min-replicas-to-write", "2"]).await;
        assert_eq!(set.show(), "OK", "via the {via}");
        let exec = call(&mut c, &["EXEC"]).await;
        assert!(
            matches!(&exec, Value::Error(e) if e.starts_with("EXECABORT") && e.contains("NOREPLICAS")),
            "via the {via}: {}",
            exec.show()
        );
        let write = call(&mut c, &["SET", &k, "2"]).await;
        assert!(
            matches!(&write, Value::Error(e) if e.starts_with("NOREPLICAS")),
            "via the {via}: {}",
            write.show()
        );
        assert_eq!(call(&mut c, &["GET", &k]).await.show(), "\"1\"");
        let one = call(&mut other, &["CONFIG", "SET", "min-replicas-to-write", "1"]).await;
        assert_eq!(one.show(), "OK", "via the {via}");
        assert_eq!(
            call(&mut c, &["INCR", &k]).await,
            Value::Int(2),
            "via the {via}"
        );
        let none = call(&mut other, &["CONFIG", "SET", "min-replicas-to-write", "0"]).await;
        assert_eq!(none.show(), "OK", "via the {via}");
    }
}
