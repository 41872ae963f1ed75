//! kill -9 of the active under a 64-client write load, three times in a
//! row, with `sync_standbys = 1`.
//!
//! Each round: the standby must be a confirmed sync-set member (so it holds
//! every acknowledged write); the active is killed mid-load; the standby
//! must become the active, in a higher epoch, and take writes; every write
//! any client saw acknowledged must be in the new active's data (checked by
//! the ledger's last-write-wins rule, see `loadgen::ledger`). Then the
//! killed replica is restarted on its data dir: it must come back as a
//! standby, rejoin the sync set, and hold exactly the active's data once
//! the load is quiesced. The roles swap every round, so each replica is
//! killed as the active at least once.

use std::time::Duration;

use proto_common::heartbeat::Role;
use understudy_tests::harness::{replica_status, role_code, serial, Cluster, TestDir};
use understudy_tests::loadgen::background::failover_load_config;
use understudy_tests::loadgen::BackgroundLoad;

const CLIENTS: usize = 64;
const ROUNDS: usize = 3;
/// Generous: a debug build on two busy cores.
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_loses_no_acknowledged_write() {
    let _serial = serial().await;
    let dir = TestDir::new("failover-kill").unwrap();
    let mut cluster = Cluster::builder()
        .sync_standbys(1)
        .start(&dir)
        .await
        .unwrap();
    let load = BackgroundLoad::start(failover_load_config(&cluster.urls(), CLIENTS, &[])).unwrap();
    load.wait_acks(500, DEADLINE).await.unwrap();

    for round in 1..=ROUNDS {
        let (active, standby) = cluster
            .wait_active_with_sync_standby(DEADLINE)
            .await
            .unwrap();
        load.wait_acks(300, DEADLINE).await.unwrap();

        let killed_at = load.now_ns();
        cluster.kill(&active.id).unwrap();
        let promoted = cluster
            .wait_for_active_after(active.epoch, DEADLINE)
            .await
            .unwrap();
        assert_eq!(
            promoted.id, standby,
            "round {round}: the sync standby must take over"
        );
        load.wait_acks_after_epoch(active.epoch, 200, DEADLINE)
            .await
            .unwrap();

        // Every acknowledged write is on the new active.
        load.quiesce(DEADLINE).await.unwrap();
        let data = cluster.dump(&promoted.id).await.unwrap();
        let verification = load.ledger().verify(&data);
        assert!(
            verification.is_ok(),
            "round {round}: after killing {} (epoch {}), {} (epoch {}) lost writes: {}",
            active.id,
            active.epoch,
            promoted.id,
            promoted.epoch,
            verification.summary()
        );
        let gap = load.ledger().timeline().gap_around(killed_at, active.epoch);
        println!(
            "round {round}: killed {} in epoch {}; {} active in epoch {}; write gap {} ms \
             (kill to first new ack {} ms); {}",
            active.id,
            active.epoch,
            promoted.id,
            promoted.epoch,
            gap.map_or("-".into(), |g| format!("{:.1}", g.gap_ms())),
            gap.map_or("-".into(), |g| format!("{:.1}", g.recovery_ms())),
            verification.summary()
        );
        load.resume();

        // The old active comes back as a standby and rejoins the sync set.
        cluster.restart(&active.id).await.unwrap();
        cluster
            .wait_sync_confirmed(&active.id, DEADLINE)
            .await
            .unwrap();
        let url = cluster.replica(&active.id).url();
        let own = replica_status(&url).await.unwrap();
        assert_eq!(own.role, Role::Standby, "round {round}: {own:?}");
        assert!(own.epoch.0 >= promoted.epoch, "{own:?}");
        assert_eq!(role_code(&url).await, Some(503));

        // ... with exactly the active's data once the load stands still.
        load.quiesce(DEADLINE).await.unwrap();
        // (A loaded machine may have failed over again meanwhile: compare
        // whoever is active now with the other.)
        let now_active = cluster.wait_for_active(DEADLINE).await.unwrap();
        cluster
            .wait_same_data(
                &now_active.id,
                &cluster.other_than(&now_active.id),
                DEADLINE,
            )
            .await
            .unwrap();
        load.resume();
    }

    let (report, ledger) = load.stop(DEADLINE).await.unwrap();
    let active = cluster.wait_for_active(DEADLINE).await.unwrap();
    let standby = cluster.other_than(&active.id);
    let data = cluster
        .wait_same_data(&active.id, &standby, DEADLINE)
        .await
        .unwrap();
    let verification = ledger.verify(&data);
    assert!(verification.is_ok(), "{}", verification.summary());
    assert!(
        ledger.acks_by_epoch().len() > ROUNDS,
        "{:?}",
        ledger.acks_by_epoch()
    );
    println!(
        "{} ops, {} errors {:?}, {} retries; acks by epoch {:?}; {}",
        report.ops,
        report.errors,
        report.errors_by_kind,
        report.retries,
        ledger.acks_by_epoch(),
        verification.summary()
    );
}
