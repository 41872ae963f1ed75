//! Two replicas must never share a data directory: the second one refuses
//! to start, says which directory is in use, and never opens its port; the
//! first keeps serving. The lock dies with its holder, even on SIGKILL.

use std::time::Duration;

use understudy_tests::harness::{describe_exit, ReplicaConfig, TestDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_on_the_same_data_dir_refuses_to_start() {
    let dir = TestDir::new("data-dir-lock").unwrap();
    let mut first = ReplicaConfig::new(&dir, "a").start().await.unwrap();
    let mut client = first.client();
    assert_eq!(client.put("k", "v1").await.unwrap().status, 200);

    let intruder = ReplicaConfig::new(&dir, "a")
        .data_dir(first.data_dir())
        .log_name("a-intruder");
    let intruder_url = intruder.url();
    let mut intruder = intruder.spawn().unwrap();
    let status = intruder
        .wait_for_exit(Duration::from_secs(20))
        .await
        .unwrap();
    let stderr = intruder.stderr();
    assert!(
        !status.success(),
        "the intruder exited with {}",
        describe_exit(status)
    );
    assert_eq!(
        status.code(),
        Some(2),
        "{}: {stderr}",
        describe_exit(status)
    );
    let data_dir = first.data_dir().display().to_string();
    assert!(
        stderr.contains(&data_dir) && stderr.contains("in use"),
        "stderr must name the data dir {data_dir} and say it is in use:\n{stderr}"
    );
    let mut probe = understudy_tests::client::KvClient::new(&intruder_url).unwrap();
    assert!(
        probe.get("k").await.is_err(),
        "the intruder's port serves after it refused to start"
    );

    // The first replica never noticed.
    assert!(first.is_running());
    let r = client.get("k").await.unwrap();
    assert_eq!((r.status, r.body.as_ref()), (200, b"v1".as_ref()));
    assert_eq!(client.put("k", "v2").await.unwrap().status, 200);

    // A crash releases the lock: the data dir is usable again at once.
    first.kill().unwrap();
    intruder.restart().await.unwrap();
    let mut client = intruder.client();
    let r = client.get("k").await.unwrap();
    assert_eq!((r.status, r.body.as_ref()), (200, b"v2".as_ref()));
}
