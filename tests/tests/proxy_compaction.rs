//! Compaction in proxy mode (DESIGN.md, "Checkpoints and compaction"): each
//! replica keeps an RDB of its own redis-server at a committed stream
//! position as a checkpoint and deletes the log segments before it, so its
//! data directory is bounded by the data, not by the history. A replica
//! restarts from its checkpoint and the log after it; a standby whose log
//! is behind the active's oldest entry (here: one started on an empty data
//! directory, with an empty redis-server) gets the active's checkpoint,
//! fills its redis-server from it and follows; and it can then take over.

use std::path::Path;
use std::time::Duration;

use understudy_tests::client::resp_raw::RawResp;
use understudy_tests::harness::replica_status::{metric_value, metrics_text};
use understudy_tests::harness::{serial, wait_for, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);
/// Small, so that a few megabytes of writes make many segments and
/// several checkpoints.
const SEGMENT: u64 = 64 << 10;
const SNAPSHOT_EVERY: u64 = 256 << 10;

/// Bytes of the regular files under `dir`, recursively.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Overwrites the same `keys` keys `rounds` times with 1 KiB values.
async fn overwrite(addr: &str, keys: usize, rounds: usize, tag: &str) {
    let mut c = RawResp::connect(addr).await.unwrap();
    let value = format!("{tag}{}", "x".repeat(1024));
    for _ in 0..rounds {
        for k in 0..keys {
            let r = c.call(&["SET", &format!("k{k}"), &value]).await.unwrap();
            assert_eq!(r.show(), "OK");
        }
    }
}

async fn metric(url: &str, name: &str) -> f64 {
    let text = metrics_text(url).await.unwrap_or_default();
    metric_value(&text, name).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_compacted_and_a_standby_with_nothing_starts_from_the_checkpoint() {
    let _serial = serial().await;
    let dir = TestDir::new("proxy-compaction").unwrap();
    let mut cluster = ProxyCluster::start(&dir, &["a", "b"], |b| {
        b.sync_standbys(1)
            .segment_bytes(SEGMENT)
            .replica_args(["--snapshot-every-bytes", &SNAPSHOT_EVERY.to_string()])
    })
    .await
    .unwrap();
    let (active, standby) = cluster
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    let on_active = cluster.resp_addr(&active.id);

    // 200 keys of 1 KiB (~0.2 MB of data), overwritten 40 times: ~8 MB of
    // stream, about 130 segments without compaction.
    overwrite(&on_active, 200, 40, "first").await;
    cluster
        .wait_upstream_caught_up(&standby, &active.id, DEADLINE)
        .await
        .unwrap();
    for id in [&active.id, &standby] {
        let data = cluster.cluster.replica(id).data_dir().to_path_buf();
        let bound = 2 * SNAPSHOT_EVERY + 4 * SEGMENT + 4 * (300 << 10);
        wait_for(
            DEADLINE,
            &format!("{id}'s data directory within {bound} bytes"),
            || {
                let data = data.clone();
                async move {
                    let cps = files_in(&data.join("checkpoint"));
                    let used = dir_bytes(&data);
                    (!cps.is_empty() && used <= bound).then_some(())
                }
            },
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}: {} bytes; log/ {:?}; checkpoint/ {:?}",
                dir_bytes(&data),
                files_in(&data.join("log")).len(),
                files_in(&data.join("checkpoint"))
            )
        });
        let url = cluster.cluster.replica(id).url();
        assert!(
            metric(&url, "understudy_snapshots_written_total").await >= 1.0,
            "{id} counts its checkpoints"
        );
        assert!(
            metric(&url, "understudy_snapshot_age_seconds").await >= 0.0,
            "{id} exports its newest checkpoint's age"
        );
    }
    // The arbiter shows each replica's disk use and checkpoint age.
    wait_for(
        DEADLINE,
        "both replicas' disk use in the status",
        || async {
            let status = cluster.cluster.status().await.ok()?;
            status
                .replicas
                .iter()
                .all(|r| {
                    r.disk
                        .as_ref()
                        .is_some_and(|d| d.snapshot_age_secs.is_some() && d.data_dir_bytes > 0)
                })
                .then_some(())
        },
    )
    .await
    .unwrap();

    // A restart reads the checkpoint and the log after it.
    cluster.cluster.restart(&standby).await.unwrap();
    overwrite(&on_active, 200, 2, "second").await;
    let expected = cluster
        .wait_same_upstream_data(&active.id, &standby, DEADLINE)
        .await
        .unwrap();
    assert_eq!(expected.len(), 200);

    // A standby with an empty data directory and an empty redis-server,
    // after the active compacted past everything it could have.
    cluster.cluster.kill(&standby).unwrap();
    let data = cluster.cluster.replica(&standby).data_dir().to_path_buf();
    std::fs::remove_dir_all(&data).unwrap();
    cluster
        .redis
        .get_mut(&standby)
        .unwrap()
        .restart_empty()
        .await
        .unwrap();
    overwrite(&on_active, 200, 10, "third").await;
    cluster
        .cluster
        .replica_mut(&standby)
        .restart()
        .await
        .unwrap();
    let data = cluster
        .wait_same_upstream_data(&active.id, &standby, DEADLINE)
        .await
        .unwrap();
    assert_eq!(data.len(), 200);
    let url = cluster.cluster.replica(&standby).url();
    assert!(
        metric(
            &url,
            "understudy_snapshot_transfers_total{direction=\"received\"}"
        )
        .await
            >= 1.0,
        "{standby} started from the active's checkpoint: {}",
        cluster.cluster.replica(&standby).stderr_of_this_life()
    );
    cluster
        .cluster
        .wait_sync_confirmed(&standby, DEADLINE)
        .await
        .unwrap();

    // It can take over, with everything.
    cluster.cluster.kill(&active.id).unwrap();
    let promoted = cluster
        .cluster
        .wait_for_active_after(active.epoch, DEADLINE)
        .await
        .unwrap();
    assert_eq!(promoted.id, standby);
    let mut c = RawResp::connect(&cluster.resp_addr(&standby))
        .await
        .unwrap();
    let got = c.call(&["GET", "k199"]).await.unwrap().show();
    assert!(got.starts_with("\"third"), "{got}");
    let r = c.call(&["SET", "after", "promotion"]).await.unwrap();
    assert_eq!(r.show(), "OK");
}
