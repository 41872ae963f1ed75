//! The killed old active comes back.
//!
//! - Sync mode (`sync_standbys = 1`), under load: restarted on its data
//!   dir, it is a standby of the new epoch, catches up, rejoins the sync
//!   set and holds exactly the active's data; no acknowledged write is lost.
//! - Async mode (`sync_standbys = 0`): an active can acknowledge writes it
//!   never shipped. Here it is made to: the standby is killed first, N
//!   writes are acknowledged by the active alone, then the active is
//!   killed and the standby restarted, which the arbiter promotes (async:
//!   any live standby within `max_lag_on_failover`). When the old active
//!   returns, those N entries are a divergent tail: they must be cut and
//!   set aside in its `quarantine/index.jsonl` (count N, their keys listed),
//!   must not be in its data, and its data must equal the new active's.

use std::collections::BTreeSet;
use std::time::Duration;

use proto_common::heartbeat::Role;
use understudy_tests::client::KvClient;
use understudy_tests::harness::{replica_status, role_code, serial, wait_for, Cluster, TestDir};
use understudy_tests::loadgen::background::failover_load_config;
use understudy_tests::loadgen::BackgroundLoad;

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_old_active_is_a_caught_up_standby() {
    let _serial = serial().await;
    let dir = TestDir::new("failover-restart").unwrap();
    let mut cluster = Cluster::builder()
        .sync_standbys(1)
        .start(&dir)
        .await
        .unwrap();
    let load = BackgroundLoad::start(failover_load_config(&cluster.urls(), 64, &[])).unwrap();
    let (old, standby) = cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    load.wait_acks(1000, DEADLINE).await.unwrap();

    cluster.kill(&old.id).unwrap();
    let new = cluster
        .wait_for_active_after(old.epoch, DEADLINE)
        .await
        .unwrap();
    assert_eq!(new.id, standby);
    // The new active runs alone (degraded) for a while: the old one has
    // much to catch up on when it returns.
    load.wait_acks_after_epoch(old.epoch, 2000, DEADLINE)
        .await
        .unwrap();

    cluster.restart(&old.id).await.unwrap();
    let url = cluster.replica(&old.id).url();
    let own = replica_status(&url).await.unwrap();
    assert_eq!(own.role, Role::Standby, "{own:?}");
    assert_eq!(role_code(&url).await, Some(503));
    cluster
        .wait_sync_confirmed(&old.id, DEADLINE)
        .await
        .unwrap();
    load.quiesce(DEADLINE).await.unwrap();
    let data = cluster
        .wait_same_data(&new.id, &old.id, DEADLINE)
        .await
        .unwrap();
    let own = replica_status(&url).await.unwrap();
    assert_eq!(
        (own.role, own.epoch.0),
        (Role::Standby, new.epoch),
        "{own:?}"
    );

    let (_, ledger) = load.stop(DEADLINE).await.unwrap();
    let verification = ledger.verify(&data);
    assert!(verification.is_ok(), "{}", verification.summary());
    println!(
        "{} restarted as a standby of {} in epoch {}; it set aside {} unacknowledged \
         entries; {}",
        old.id,
        new.id,
        new.epoch,
        own.quarantined_entries,
        verification.summary()
    );
}

/// Writes `key` = `key` through `client`; panics unless acknowledged.
async fn put_acked(client: &mut KvClient, key: &str) {
    let response = client.put(key, key.to_string()).await.unwrap();
    assert_eq!(
        response.status,
        200,
        "PUT {key} to {}: {}",
        client.base_url(),
        response.body_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_mode_quarantines_the_writes_nobody_else_has() {
    const UNSHIPPED: usize = 20;
    let _serial = serial().await;
    let dir = TestDir::new("failover-async-quarantine").unwrap();
    let mut cluster = Cluster::builder()
        .sync_standbys(0)
        .start(&dir)
        .await
        .unwrap();
    let old = cluster.wait_for_active(DEADLINE).await.unwrap();
    let standby = cluster.other_than(&old.id);

    // Common history, on both.
    let mut to_old = cluster.replica(&old.id).client();
    for i in 0..50 {
        put_acked(&mut to_old, &format!("base-{i:03}")).await;
    }
    cluster
        .wait_same_data(&old.id, &standby, DEADLINE)
        .await
        .unwrap();

    // Writes only the active has: the standby is down.
    cluster.kill(&standby).unwrap();
    let unshipped: BTreeSet<String> = (0..UNSHIPPED)
        .map(|i| format!("unshipped-{i:03}"))
        .collect();
    for key in &unshipped {
        put_acked(&mut to_old, key).await;
    }
    cluster.kill(&old.id).unwrap();

    // The standby returns alone and is promoted.
    cluster.restart(&standby).await.unwrap();
    let new = cluster
        .wait_for_active_after(old.epoch, DEADLINE)
        .await
        .unwrap();
    assert_eq!(new.id, standby);
    let mut to_new = cluster.replica(&new.id).client();
    for i in 0..10 {
        put_acked(&mut to_new, &format!("after-{i:03}")).await;
    }

    // The old active returns: its unshipped tail is cut and kept aside.
    cluster.restart(&old.id).await.unwrap();
    let url = cluster.replica(&old.id).url();
    let own = wait_for(DEADLINE, "the old active quarantined its tail", || {
        let url = url.clone();
        async move {
            let own = replica_status(&url).await.ok()?;
            (own.role == Role::Standby && own.quarantined_entries > 0).then_some(own)
        }
    })
    .await
    .unwrap();
    assert_eq!(own.quarantined_entries, UNSHIPPED as u64, "{own:?}");
    let data = cluster
        .wait_same_data(&new.id, &old.id, DEADLINE)
        .await
        .unwrap();
    assert!(
        data.keys().all(|k| !k.starts_with("unshipped-")),
        "cut writes are served: {:?}",
        data.keys()
            .filter(|k| k.starts_with("unshipped-"))
            .collect::<Vec<_>>()
    );
    assert_eq!(data.keys().filter(|k| k.starts_with("base-")).count(), 50);
    assert_eq!(data.keys().filter(|k| k.starts_with("after-")).count(), 10);

    let index_path = cluster
        .replica(&old.id)
        .data_dir()
        .join("quarantine/index.jsonl");
    let index = std::fs::read_to_string(&index_path)
        .unwrap_or_else(|e| panic!("{}: {e}", index_path.display()));
    let mut count = 0;
    let mut keys = BTreeSet::new();
    for line in index.lines() {
        let cut: serde_json::Value = serde_json::from_str(line).unwrap();
        count += cut["count"].as_u64().unwrap();
        for entry in cut["entries"].as_array().unwrap() {
            assert_eq!(entry["op"], "put", "{entry}");
            for key in entry["keys"].as_array().unwrap() {
                keys.insert(key.as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(count, UNSHIPPED as u64, "{index}");
    assert_eq!(keys, unshipped, "{index}");

    // The arbiter shows the count too, from the replica's heartbeats.
    wait_for(
        DEADLINE,
        "the arbiter showing the quarantined entries",
        || async {
            let status = cluster.status().await.ok()?;
            status
                .replicas
                .iter()
                .any(|r| r.node_id.as_str() == old.id && r.quarantined_entries == count)
                .then_some(())
        },
    )
    .await
    .unwrap();
    println!(
        "{} quarantined {count} entries; index: {}",
        old.id,
        index.trim()
    );
}
