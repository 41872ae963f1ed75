//! Expiry in proxy mode is Redis's own: the active's redis-server holds the
//! real deadline and expires the key by its clock; Redis replicates every
//! relative expiry as an absolute deadline and every expiry as a `DEL`, so
//! every redis-server holds the same deadline, clients see Redis's TTLs,
//! and a key past its deadline is gone from every redis-server — removed,
//! not only hidden (a replica hides expired keys from reads until its
//! master's `DEL` comes).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use understudy_tests::client::resp_raw::{RawResp, Value};
use understudy_tests::harness::{serial, wait_for, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

async fn int(c: &mut RawResp, args: &[&str]) -> i64 {
    let v = c
        .call(args)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    v.int()
        .unwrap_or_else(|| panic!("{args:?} answered {}", v.show()))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_equal_everywhere_and_expiry_reaches_every_upstream() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-expiry").unwrap();
    let (cluster, active, standby) = ProxyCluster::start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    let (active, standby) = (active.id, standby);
    let mut c = cluster.raw(&active).await.unwrap();
    let before = now_ms();
    let set = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    for args in [
        set(&["SET", "short", "v", "PX", "1500"]),
        set(&["SET", "long", "v", "EX", "1000"]),
    ] {
        assert_eq!(c.call(&args).await.unwrap().show(), "OK");
    }
    assert_eq!(int(&mut c, &["EXPIRE", "gone", "10"]).await, 0);

    // Clients see Redis's TTLs.
    let pttl = int(&mut c, &["PTTL", "short"]).await;
    assert!((1..=1500).contains(&pttl), "PTTL {pttl}");
    let ttl = int(&mut c, &["TTL", "long"]).await;
    assert!((998..=1000).contains(&ttl), "TTL {ttl}");

    // Every redis-server holds the same, real deadline.
    cluster
        .wait_upstream_caught_up(&standby, &active, DEADLINE)
        .await
        .unwrap();
    let mut raw_a = RawResp::connect(&cluster.redis[&active].addr())
        .await
        .unwrap();
    let mut raw_b = RawResp::connect(&cluster.redis[&standby].addr())
        .await
        .unwrap();
    for (key, ms) in [("long", 1_000_000), ("short", 1500)] {
        let ta = int(&mut raw_a, &["PEXPIRETIME", key]).await;
        let tb = int(&mut raw_b, &["PEXPIRETIME", key]).await;
        assert_eq!(
            ta, tb,
            "{key}: the deadlines differ between the redis-servers"
        );
        assert!(
            (before + ms..=now_ms() + ms).contains(&ta),
            "{key}: deadline {ta} is not {ms} ms after the write"
        );
        assert_eq!(int(&mut c, &["PEXPIRETIME", key]).await, ta, "{key}");
    }

    // Past its deadline the key is gone: through the active at once, and
    // removed from both redis-servers (the standby's holds one key: the
    // DEL reached it).
    let addr = cluster.resp_addr(&active);
    wait_for(DEADLINE, "the short key to expire", || {
        let addr = addr.clone();
        async move {
            let mut c = RawResp::connect(&addr).await.ok()?;
            (c.call(&["GET", "short"]).await.ok()? == Value::NullBulk).then_some(())
        }
    })
    .await
    .unwrap();
    for id in [&active, &standby] {
        let addr = cluster.redis[id].addr();
        wait_for(
            DEADLINE,
            &format!("the expiry to reach {id}'s redis-server"),
            || {
                let addr = addr.clone();
                async move {
                    let mut raw = RawResp::connect(&addr).await.ok()?;
                    (raw.call(&["DBSIZE"]).await.ok()? == Value::Int(1)).then_some(())
                }
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(int(&mut raw_b, &["EXISTS", "long"]).await, 1);
    // An expiry in the past deletes at once, everywhere.
    assert_eq!(int(&mut c, &["EXPIRE", "long", "-1"]).await, 1);
    assert_eq!(int(&mut c, &["EXISTS", "long"]).await, 0);
    assert_eq!(int(&mut c, &["TTL", "long"]).await, -2);
    cluster
        .wait_upstream_caught_up(&standby, &active, DEADLINE)
        .await
        .unwrap();
    assert_eq!(int(&mut raw_b, &["DBSIZE"]).await, 0);
}
