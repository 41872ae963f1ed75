//! The active's disk fails under load (an fsync error, injected with the
//! replica's `fsync_error_if_exists` failpoint): no acknowledged write may
//! be missing afterwards, and a client whose write's fate is unknown is
//! told exactly that.
//!
//! The failing active steps down and reports itself unhealthy; the sync
//! standby is promoted once the lease has ended, and holds every write any
//! client saw acknowledged (the ledger's check of the load's history).

use std::time::Duration;

use understudy_tests::client::KvClient;
use understudy_tests::harness::{serial, Cluster, TestDir};
use understudy_tests::loadgen::background::failover_load_config;
use understudy_tests::loadgen::BackgroundLoad;

const DEADLINE: Duration = Duration::from_secs(60);
/// Created in a replica's data dir, it makes that replica's fsyncs fail.
const TRIGGER: &str = "FAIL_FSYNC";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_on_the_active_loses_no_acknowledged_write() {
    let _serial = serial().await;
    let dir = TestDir::new("failing-disk").unwrap();
    let cluster = Cluster::builder()
        .sync_standbys(1)
        .replica_env(
            "UNDERSTUDY_FAILPOINT",
            &format!("fsync_error_if_exists:{TRIGGER}"),
        )
        .start(&dir)
        .await
        .unwrap();
    let (active, standby) = cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    let load = BackgroundLoad::start(failover_load_config(&cluster.urls(), 16, &[])).unwrap();
    load.wait_acks(500, DEADLINE).await.unwrap();

    // The disk fails. With the load paused, one write meets the failure
    // alone: it was written and shipped but never known durable, so its
    // outcome is unknown — and the answer must say so.
    load.quiesce(DEADLINE).await.unwrap();
    let data_dir = cluster.replica(&active.id).config().data_dir.clone();
    std::fs::write(data_dir.join(TRIGGER), b"").unwrap();
    let mut probe = KvClient::new(&cluster.replica(&active.id).url())
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    let r = probe.put("probe", "after the disk failed").await.unwrap();
    let code = r.error_code().unwrap_or_default();
    assert_eq!(
        (r.status, code.as_str()),
        (503, "outcome_unknown"),
        "{}",
        r.body_text()
    );
    // The load goes on against a log that failed for good: refused at
    // intake ("storage": nothing was written) until the active stepped
    // down, then forwarded to the new active.
    load.resume();

    let promoted = cluster
        .wait_for_active_after(active.epoch, DEADLINE)
        .await
        .unwrap();
    assert_eq!(promoted.id, standby, "the sync standby must take over");
    load.wait_acks_after_epoch(active.epoch, 300, DEADLINE)
        .await
        .unwrap();
    let (report, ledger) = load.stop(DEADLINE).await.unwrap();
    let data = cluster.dump(&promoted.id).await.unwrap();
    let verification = ledger.verify(&data);
    println!(
        "disk failed on {} (epoch {}); {} active in epoch {}; probe answered {} {code}; {}; errors {:?}",
        active.id,
        active.epoch,
        promoted.id,
        promoted.epoch,
        r.status,
        verification.summary(),
        report.errors_by_kind
    );
    assert!(
        verification.is_ok(),
        "acknowledged writes missing after the disk failed: {}",
        verification.summary()
    );
    assert!(
        report.errors_by_kind.keys().all(|k| [
            "outcome_unknown",
            "storage",
            "not_writable",
            "forward_failed"
        ]
        .contains(&k.as_str())),
        "{:?}",
        report.errors_by_kind
    );
    // The failed replica said why it stepped down.
    let log = std::fs::read_to_string(dir.join(format!("{}.stderr.log", active.id))).unwrap();
    assert!(
        log.contains("injected I/O error") && log.contains("stepped down"),
        "{}",
        &log[log.len().saturating_sub(4000)..]
    );
}
