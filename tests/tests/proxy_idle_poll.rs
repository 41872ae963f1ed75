//! Idle polling (`idle_poll_us`, README "Idle polling") in proxy mode: the
//! active counts a client's command whose reply is gated as in flight from
//! when it goes to the upstream until its reply is released, so its spinner
//! keeps a CPU awake for the wake-ups on the way (the tap, the log, the
//! standby's ack, the gate), as it does for a write on the embedded store.

use std::time::{Duration, Instant};

use understudy_tests::client::resp_raw::Value;
use understudy_tests::harness::replica_status::metric_value;
use understudy_tests::harness::{metrics_text, serial, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);
const SPUN: &str = "understudy_idle_poll_seconds_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_spins_while_a_proxied_write_is_on_its_way() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-idle-poll").unwrap();
    let spin = ["--idle-poll-us", "2000"];
    let cluster = ProxyCluster::start(&dir, &["a", "b"], |b| {
        b.sync_standbys(1).node_args("a", spin).node_args("b", spin)
    })
    .await
    .unwrap();
    let (active, _standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    let url = cluster.cluster.replica(&active.id).url();
    let spun = |text: &str| metric_value(text, SPUN).unwrap_or(0.0);
    let before = spun(&metrics_text(&url).await.unwrap());
    let mut c = cluster.raw(&active.id).await.unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut written = 0u64;
    loop {
        for _ in 0..50 {
            written += 1;
            let reply = c.call(&["SET", "k", &written.to_string()]).await.unwrap();
            assert_eq!(reply, Value::Simple("OK".into()));
        }
        let now = spun(&metrics_text(&url).await.unwrap());
        if now > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {written} SETs one at a time the active's {SPUN} is still {now}: its idle \
             poller never ran for a proxied write"
        );
    }
}
