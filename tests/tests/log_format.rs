//! `--log-format json`: every line a replica writes is one JSON object a
//! log collector can parse, with a timestamp, a level and the message.

use std::time::Duration;

use understudy_tests::harness::{ReplicaConfig, TestDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let dir = TestDir::new("log-format-json").unwrap();
    let mut replica = ReplicaConfig::new(&dir, "a")
        .args(["--log-format", "json"])
        .start()
        .await
        .unwrap();
    replica.terminate(Duration::from_secs(30)).await.unwrap();
    let text = replica.stderr();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("=== harness"))
        .collect();
    assert!(lines.len() >= 2, "{text}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["level"].is_string(), "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
}
