//! The leading arbiter dies in the middle of a failover — after the epoch
//! bump is stored, before any reply carries the grant — and the other
//! arbiter finishes it (DESIGN.md, "Arbiter high availability").
//!
//! The window is hit deterministically with the arbiter's test hook
//! `UNDERSTUDY_FAILPOINT=abort_after_epoch_bump:failover`
//! (`arbiter::failpoint`): the armed arbiter leads from the start (it
//! forms the cluster, which is not a failover), the active replica is
//! killed, the armed arbiter bumps the epoch naming the standby and
//! aborts — without revoking its etcd lease. What must hold:
//!
//! - the bump is in the store (the surviving arbiter, still following,
//!   shows the new epoch and active) while the new active has not been
//!   told (it is still a standby);
//! - the surviving arbiter leads once the dead one's lease expires and
//!   grants the recorded active: the cluster converges to exactly one
//!   active, in the bumped epoch, and takes writes; the killed replica
//!   comes back as its standby;
//! - no write is acknowledged under two epochs: from the clients' ledger,
//!   the old epoch's acks all come before the new epoch's first, and no
//!   log index is acknowledged in two epochs; polling both replicas, never
//!   two active and writable at once;
//! - no acknowledged write is lost.

mod arbiter_etcd_support;
mod etcd_support;

use std::time::Instant;

use arbiter_etcd_support::{single_leader, EtcdArbiter, TTL_S};
use etcd_support::{
    check_single_epoch_acks, start_replicas, wait_active, wait_same_data, RoleWatch, ARBITER_FLAGS,
    CLIENTS, DEADLINE,
};
use proto_common::heartbeat::Role;
use std::time::Duration;
use understudy_tests::harness::{
    describe_exit, dump, replica_status, serial, wait_for, EtcdCluster, TestDir,
};
use understudy_tests::loadgen::background::failover_load_config;
use understudy_tests::loadgen::BackgroundLoad;

/// SIGABRT: how `std::process::abort` ends a process.
const SIGABRT: i32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arbiter_dying_between_epoch_bump_and_grant_leaves_one_active() {
    let _serial = serial().await;
    let dir = TestDir::new("etcd-failpoint-failover").expect("test dir");
    let etcd = EtcdCluster::start(1, dir.path())
        .await
        .expect("etcd starts");
    // The armed arbiter starts alone, so it leads and forms the cluster.
    let mut armed = EtcdArbiter::spawn_with_env(
        &dir,
        "arb-armed",
        "c1",
        &etcd.etcd_url(),
        ARBITER_FLAGS,
        &[("UNDERSTUDY_FAILPOINT", "abort_after_epoch_bump:failover")],
    );
    single_leader(&[&armed], DEADLINE).await;
    let other = EtcdArbiter::spawn(&dir, "arb-other", "c1", &etcd.etcd_url(), ARBITER_FLAGS);
    assert_eq!(
        single_leader(&[&armed, &other], DEADLINE).await,
        0,
        "the armed arbiter leads"
    );
    let urls = format!("{},{}", armed.url, other.url);
    let mut replicas = start_replicas(&dir, "c1", &["r1", "r2"], &urls).await;
    let pairs: Vec<(String, String)> = replicas
        .iter()
        .map(|r| (r.config().node_id.clone(), r.url()))
        .collect();
    let client_urls: Vec<String> = pairs.iter().map(|(_, url)| url.clone()).collect();
    let before = {
        let r: Vec<_> = replicas.iter().collect();
        wait_active(&[&armed, &other], &r, 0, true, DEADLINE)
            .await
            .unwrap()
    };
    assert_eq!(before.leader, 0, "the armed arbiter formed the cluster");
    let (standby, standby_url) = pairs
        .iter()
        .find(|(id, _)| *id != before.id)
        .cloned()
        .expect("two replicas");
    let load = BackgroundLoad::start(failover_load_config(&client_urls, CLIENTS, &[])).unwrap();
    load.wait_acks(300, DEADLINE).await.unwrap();
    assert!(armed.is_leader().await, "the armed arbiter still leads");

    let watch = RoleWatch::start(&pairs, Duration::from_millis(20));
    let killed_ns = load.now_ns();
    let killed_at = Instant::now();
    replicas
        .iter_mut()
        .find(|r| r.config().node_id == before.id)
        .expect("the active")
        .kill()
        .expect("kill -9 the active");

    // The armed arbiter waits out the dead active's lease, bumps the epoch
    // and aborts.
    let exit = armed
        .process
        .wait_for_exit(DEADLINE)
        .await
        .unwrap()
        .expect("the armed arbiter aborted at the failpoint");
    let aborted_after = killed_at.elapsed();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exit),
        Some(SIGABRT),
        "{}",
        describe_exit(exit)
    );
    assert!(
        armed
            .process
            .stderr()
            .contains("failpoint: aborting after the epoch bump was stored"),
        "the arbiter says why it aborted"
    );
    // The bump is stored (the follower reads it from etcd), the grant was
    // never sent (the standby does not know it is active).
    let stored = other.status().await.expect("the follower's status");
    let own = replica_status(&standby_url).await.unwrap();
    println!(
        "armed arbiter aborted {} ms after the kill; stored: epoch {} active {:?} (the \
         follower's view, is_leader {}); {standby} says role {} epoch {}",
        aborted_after.as_millis(),
        stored.epoch,
        stored.active.as_ref().map(|a| a.to_string()),
        stored.is_leader,
        own.role,
        own.epoch
    );
    assert!(
        !stored.is_leader,
        "the dead arbiter's lease still holds the leader key"
    );
    assert_eq!(stored.epoch.0, before.epoch + 1, "the epoch bump is stored");
    assert_eq!(
        stored.active.as_ref().map(|a| a.as_str()),
        Some(standby.as_str())
    );
    assert_eq!(
        (own.role, own.writable),
        (Role::Standby, false),
        "no grant was sent: {own:?}"
    );

    // The other arbiter takes over and finishes the failover.
    let after = {
        let r: Vec<_> = replicas.iter().collect();
        wait_active(&[&other], &r, before.epoch, false, DEADLINE)
            .await
            .unwrap()
    };
    let finished_after = killed_at.elapsed();
    assert_eq!(
        (after.id.as_str(), after.epoch),
        (standby.as_str(), before.epoch + 1),
        "the failover the dead arbiter started, not another one"
    );
    load.wait_acks_after_epoch(before.epoch, 300, DEADLINE)
        .await
        .unwrap();

    // The killed replica comes back and follows: exactly one active.
    let old_url = pairs
        .iter()
        .find(|(id, _)| *id == before.id)
        .map(|(_, url)| url.clone())
        .expect("the old active's URL");
    replicas
        .iter_mut()
        .find(|r| r.config().node_id == before.id)
        .expect("the old active")
        .restart()
        .await
        .unwrap();
    wait_for(DEADLINE, "the old active back as a standby", || {
        let url = old_url.clone();
        async move {
            let own = replica_status(&url).await.ok()?;
            (own.role == Role::Standby && own.epoch.0 >= after.epoch && !own.writable).then_some(())
        }
    })
    .await
    .unwrap();
    load.wait_acks(200, DEADLINE).await.unwrap();
    let roles = watch.stop().await;
    let status = other.status().await.expect("the new leader's status");
    assert!(status.is_leader);
    assert_eq!(
        (
            status.active.as_ref().map(|a| a.to_string()),
            status.epoch.0
        ),
        (Some(after.id.clone()), after.epoch),
        "converged on the one active"
    );

    let (report, ledger) = load.stop(DEADLINE).await.unwrap();
    let gap = ledger.timeline().gap_around(killed_ns, before.epoch);
    let boundary = check_single_epoch_acks(&ledger, before.epoch);
    let data = dump(&after.url).await.unwrap();
    let verification = ledger.verify(&data);
    println!(
        "{} killed in epoch {}; the failover finished by the other arbiter {} ms after the \
         kill (lease TTL {TTL_S} s); write gap {} ms; {}; role watch: {}; {} ops, errors \
         {:?}; acks by epoch {:?}; {}",
        before.id,
        before.epoch,
        finished_after.as_millis(),
        gap.map_or("-".into(), |g| format!("{:.1}", g.gap_ms())),
        boundary.as_deref().unwrap_or_else(|e| e),
        roles.summary(),
        report.ops,
        report.errors_by_kind,
        ledger.acks_by_epoch(),
        verification.summary()
    );
    assert!(
        roles.both_active().is_empty(),
        "two replicas active and writable at once: {:#?}",
        roles.both_active()
    );
    boundary.unwrap();
    assert!(verification.is_ok(), "{}", verification.summary());
    assert_eq!(
        ledger.acks_by_epoch().keys().copied().collect::<Vec<_>>(),
        [before.epoch, after.epoch],
        "acks in exactly the two epochs"
    );
    wait_same_data(&after.url, &old_url, DEADLINE)
        .await
        .unwrap();
}
