//! loadgen against a real single-member etcd: the etcd harness starts and
//! stops cleanly, and the same closed loop that measures understudy gets
//! answers from etcd with no errors, writing a history line per operation.

use std::time::Duration;

use clap::Parser;
use understudy_tests::harness::{EtcdCluster, TestDir};
use understudy_tests::loadgen::{self, Config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_measures_a_single_etcd() {
    let dir = TestDir::new("loadgen-etcd").expect("test dir");
    // Killed and reaped when `etcd` drops, also if an assertion fails.
    let etcd = EtcdCluster::start(1, dir.path())
        .await
        .expect("etcd starts");
    let history = dir.join("history.jsonl");

    let config = Config::try_parse_from([
        "loadgen",
        "--target",
        &etcd.etcd_url(),
        "--clients",
        "4",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--keys",
        "1000",
        "--value-size",
        "64",
        "--get-ratio",
        "0.3",
        "--history",
        history.to_str().expect("utf-8 path"),
    ])
    .expect("flags parse");
    let reports = loadgen::run(&config).await.expect("loadgen runs");

    assert_eq!(reports.len(), 1);
    let report = &reports[0];
    assert_eq!(report.target, etcd.etcd_url());
    assert_eq!(report.setup_error, None);
    assert!(report.ops > 0, "no operations completed: {report:?}");
    assert_eq!(report.errors, 0, "errors: {:?}", report.errors_by_kind);
    assert_eq!(report.ops, report.puts + report.gets);
    assert!(report.puts > 0 && report.gets > 0);
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.p50 <= report.latency_ms.max);

    let lines = std::fs::read_to_string(&history).expect("history written");
    let counted = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|v| v["counted"] == true)
        .inspect(|v| assert_eq!(v["error"], serde_json::Value::Null))
        .count() as u64;
    assert_eq!(counted, report.ops);
}

#[tokio::test]
async fn an_unreachable_etcd_is_reported_not_fatal() {
    let port = understudy_tests::harness::free_port();
    let config = Config::try_parse_from([
        "loadgen",
        "--target",
        &format!("etcd://127.0.0.1:{port}"),
        "--clients",
        "2",
        "--duration",
        "200ms",
        "--warmup",
        "0s",
        "--timeout",
        "500ms",
    ])
    .expect("flags parse");
    let started = std::time::Instant::now();
    let reports = loadgen::run(&config).await.expect("loadgen runs");
    let report = &reports[0];
    // etcd-client may connect lazily (then every op fails) or eagerly
    // (then the target cannot be set up); either way, no successes.
    assert_eq!(report.ops, 0);
    assert!(
        report.setup_error.is_some() || report.errors > 0,
        "{report:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_member_etcd_survives_a_member_restart() {
    let dir = TestDir::new("etcd-three").expect("test dir");
    let mut etcd = EtcdCluster::start(3, dir.path())
        .await
        .expect("etcd starts");
    assert_eq!(etcd.client_urls().len(), 3);

    // A crashed member comes back from its data dir and rejoins.
    etcd.members[1].process.kill().expect("kill member");
    assert!(!etcd.members[1].is_healthy().await);
    etcd.members[1].process.restart().expect("restart member");
    etcd.wait_healthy(Duration::from_secs(30))
        .await
        .expect("member rejoins");

    let config = Config::try_parse_from([
        "loadgen",
        "--target",
        &etcd.etcd_url(),
        "--clients",
        "2",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
    ])
    .expect("flags parse");
    let report = &loadgen::run(&config).await.expect("loadgen runs")[0];
    assert!(report.ops > 0);
    assert_eq!(report.errors, 0, "errors: {:?}", report.errors_by_kind);
}
