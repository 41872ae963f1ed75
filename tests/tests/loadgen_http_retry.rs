//! loadgen's HTTP retry policy against fake replicas: a standby's retryable
//! 503 moves a client on, a redirect is followed, and a failover shows up
//! as a write gap with no errors and a history that says who answered.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use clap::Parser;
use understudy_tests::harness::{FakeReplica, FakeRole, TestDir};
use understudy_tests::loadgen::workload::value_for;
use understudy_tests::loadgen::{self, Config};

fn config(targets: &[&str], extra: &[&str]) -> Config {
    let mut args = vec![
        "loadgen",
        "--clients",
        "4",
        "--warmup",
        "0s",
        "--keys",
        "50",
    ];
    for t in targets {
        args.extend(["--target", t]);
    }
    args.extend_from_slice(extra);
    Config::try_parse_from(args).expect("flags parse")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_sends_clients_to_the_next_replica() {
    let standby = FakeReplica::start(FakeRole::Standby).await.unwrap();
    let active = FakeReplica::start(FakeRole::Active { epoch: 1 })
        .await
        .unwrap();
    let c = config(
        &[standby.url(), active.url()],
        &["--targets-all", "--duration", "300ms"],
    );
    let report = &loadgen::run(&c).await.unwrap()[0];

    assert_eq!(report.target, format!("{},{}", standby.url(), active.url()));
    assert!(report.ops > 0);
    assert_eq!(report.errors, 0, "{:?}", report.errors_by_kind);
    // Each client asked the standby once, then stayed on the active.
    assert_eq!(report.retries, 4);
    assert_eq!(standby.requests(), 4);
    assert_eq!(active.writes(), report.puts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_targets_all_a_standby_answer_is_an_error() {
    let standby = FakeReplica::start(FakeRole::Standby).await.unwrap();
    let c = config(&[standby.url()], &["--duration", "100ms"]);
    let report = &loadgen::run(&c).await.unwrap()[0];
    assert_eq!(report.ops, 0);
    assert!(report.errors_by_kind["not_writable"] > 0);
    assert_eq!(report.retries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_and_remembered() {
    let active = FakeReplica::start(FakeRole::Active { epoch: 1 })
        .await
        .unwrap();
    let redirector = FakeReplica::start(FakeRole::RedirectTo(active.url().into()))
        .await
        .unwrap();
    let c = config(
        &[redirector.url()],
        &["--duration", "200ms", "--get-ratio", "0.5"],
    );
    let report = &loadgen::run(&c).await.unwrap()[0];
    assert!(report.ops > 0);
    assert_eq!(report.errors, 0, "{:?}", report.errors_by_kind);
    assert_eq!(redirector.requests(), 4, "one redirect per client");
    assert_eq!(active.writes(), report.puts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_a_write_gap_not_an_error() {
    let dir = TestDir::new("loadgen-failover").unwrap();
    let history = dir.join("history.jsonl");
    let old = FakeReplica::start(FakeRole::Active { epoch: 1 })
        .await
        .unwrap();
    let new = FakeReplica::start(FakeRole::Standby).await.unwrap();
    let c = config(
        &[old.url(), new.url()],
        &[
            "--targets-all",
            "--duration",
            "1500ms",
            "--history",
            history.to_str().unwrap(),
        ],
    );
    let scenario = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        old.crash();
        tokio::time::sleep(Duration::from_millis(300)).await;
        new.set_role(FakeRole::Active { epoch: 2 });
    };
    let (reports, ()) = tokio::join!(loadgen::run(&c), scenario);
    let report = &reports.unwrap()[0];

    assert_eq!(report.errors, 0, "{:?}", report.errors_by_kind);
    assert!(report.retries > 0);
    let gap = report.write_gap.as_ref().expect("a write gap");
    assert!((290.0..1000.0).contains(&gap.gap_ms), "{gap:?}");
    assert!((0.3..0.8).contains(&gap.at_s), "{gap:?}");
    assert_eq!(old.writes() + new.writes(), report.puts);

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&history)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, report.puts);
    for line in &lines {
        let version = line["version"].as_str().unwrap();
        let epoch = if line["url"] == old.url() { "1." } else { "2." };
        assert!(version.starts_with(epoch), "{line}");
    }
    // Every key the new active took writes for holds one of those values,
    // byte for byte as loadgen generates it from the history's value id.
    let mut written: HashMap<&str, Vec<Bytes>> = HashMap::new();
    for line in lines.iter().filter(|l| l["url"] == new.url()) {
        let (client, seq) = (
            line["client"].as_u64().unwrap(),
            line["seq"].as_u64().unwrap(),
        );
        assert_eq!(line["value_id"], format!("c{client}-o{seq}"));
        let value = value_for(client as u32, seq, 256);
        written
            .entry(line["key"].as_str().unwrap())
            .or_default()
            .push(value);
    }
    assert!(!written.is_empty(), "no writes after the failover");
    for (key, values) in written {
        let stored = new.value(key).expect("key stored");
        assert!(values.contains(&stored), "{key} holds a value nobody wrote");
    }
}
