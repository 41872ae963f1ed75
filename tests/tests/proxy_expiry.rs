//! Expiry is decided by the active and carried by the log (DESIGN.md,
//! "Expiry"): every upstream holds the same (shifted) deadline, clients see
//! Redis's own TTLs, a key past its deadline is never read on the active,
//! and the active's expiry is applied on every replica alike.

use std::time::Duration;

use understudy_tests::client::resp::{show, Frame};
use understudy_tests::harness::{serial, wait_for, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);
/// How far in the future upstreams keep deadlines (100 years, in ms).
const SHIFT_MS: i64 = 3_155_760_000_000;

fn int(f: &Frame) -> i64 {
    match f {
        Frame::Integer(i) => *i,
        other => panic!("expected an integer, got {}", show(other)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_equal_everywhere_and_expiry_reaches_every_upstream() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-expiry").unwrap();
    let cluster = ProxyCluster::start(&dir, &["a", "b"], |b| b.sync_standbys(1))
        .await
        .unwrap();
    let (active, standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    let mut c = cluster.client(&active.id).await.unwrap();
    assert_eq!(
        show(&c.call(&["SET", "short", "v", "PX", "1500"]).await.unwrap()),
        "OK"
    );
    assert_eq!(
        show(&c.call(&["SET", "long", "v", "EX", "1000"]).await.unwrap()),
        "OK"
    );
    assert_eq!(int(&c.call(&["EXPIRE", "gone", "10"]).await.unwrap()), 0);

    // Clients see Redis's TTLs.
    let pttl = int(&c.call(&["PTTL", "short"]).await.unwrap());
    assert!((1..=1500).contains(&pttl), "PTTL {pttl}");
    let ttl = int(&c.call(&["TTL", "long"]).await.unwrap());
    assert!((998..=1000).contains(&ttl), "TTL {ttl}");

    // Every upstream holds the same deadline, shifted far away.
    cluster
        .wait_same_upstream_data(&active.id, &standby, DEADLINE)
        .await
        .unwrap();
    let mut raw_a = cluster.redis[&active.id].client().await.unwrap();
    let mut raw_b = cluster.redis[&standby].client().await.unwrap();
    for key in ["short", "long"] {
        let ta = int(&raw_a.call(&["PEXPIRETIME", key]).await.unwrap());
        let tb = int(&raw_b.call(&["PEXPIRETIME", key]).await.unwrap());
        assert_eq!(ta, tb, "{key}: deadlines differ between the upstreams");
        assert!(ta > SHIFT_MS, "{key}: deadline {ta} not shifted");
        let exp = int(&c.call(&["PEXPIRETIME", key]).await.unwrap());
        assert_eq!(exp, ta - SHIFT_MS, "{key}: PEXPIRETIME through understudy");
    }

    // Past its deadline, the key is gone: on the active at once, and on
    // both upstreams once the active's expiry is applied.
    wait_for(
        DEADLINE,
        "the short key to expire through the active",
        || {
            let addr = cluster.resp_addr(&active.id);
            async move {
                let mut c = understudy_tests::client::resp::RespClient::connect(&addr)
                    .await
                    .ok()?;
                (c.call(&["GET", "short"]).await.ok()? == Frame::Null).then_some(())
            }
        },
    )
    .await
    .unwrap();
    for id in [&active.id, &standby] {
        let addr = cluster.redis[id].addr();
        wait_for(DEADLINE, "the expiry to reach the upstream", || {
            let addr = addr.clone();
            async move {
                let mut raw = understudy_tests::client::resp::RespClient::connect(&addr)
                    .await
                    .ok()?;
                (int(&raw.call(&["EXISTS", "short"]).await.ok()?) == 0).then_some(())
            }
        })
        .await
        .unwrap();
    }
    assert_eq!(int(&raw_a.call(&["EXISTS", "long"]).await.unwrap()), 1);
    // An expiry in the past (a negative TTL) deletes at the next touch.
    assert_eq!(int(&c.call(&["EXPIRE", "long", "-1"]).await.unwrap()), 1);
    assert_eq!(int(&c.call(&["EXISTS", "long"]).await.unwrap()), 0);
    assert_eq!(int(&c.call(&["TTL", "long"]).await.unwrap()), -2);
    cluster
        .wait_same_upstream_data(&active.id, &standby, DEADLINE)
        .await
        .unwrap();
}
