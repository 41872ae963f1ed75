//! Two etcd-backed arbiters and two replicas under a write load: `kill -9`
//! of the leading arbiter, then `kill -9` of the active replica (DESIGN.md,
//! "Arbiter high availability").
//!
//! 1. Leading arbiter killed: the other one leads within etcd's lease TTL
//!    plus 1 s (measured from the kill to its status saying `is_leader`,
//!    and to it hearing the active renew), and no replica changes role or epoch
//!    meanwhile (both replicas' own `/v1/status` polled throughout): the
//!    new leader grants the recorded active at once, so writes only pause
//!    while the active's lease is not renewed.
//! 2. Then the active replica killed: the standby becomes active in a new
//!    epoch under the new leader, never two actives at once, and no
//!    acknowledged write of the whole run is lost (the ledger of the load
//!    that ran across both events, verified at the end).
//!
//! `arbiter_etcd_replicas.rs` checks the first half without a load; this
//! test adds the load, the role polling and the second kill.

mod arbiter_etcd_support;
mod etcd_support;

use std::time::{Duration, Instant};

use arbiter_etcd_support::{single_leader, EtcdArbiter, TTL_S};
use etcd_support::{
    start_replicas, wait_active, wait_same_data, RoleWatch, ARBITER_FLAGS, CLIENTS, DEADLINE,
};
use proto_common::heartbeat::Role;
use understudy_tests::harness::{dump, replica_status, serial, wait_for, EtcdCluster, TestDir};
use understudy_tests::loadgen::background::failover_load_config;
use understudy_tests::loadgen::BackgroundLoad;

/// How often both replicas' status is read while a fault lasts.
const POLL: Duration = Duration::from_millis(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leading_arbiter_then_of_the_active_loses_nothing() {
    let _serial = serial().await;
    let dir = TestDir::new("etcd-kill-arbiter-active").expect("test dir");
    let etcd = EtcdCluster::start(1, dir.path())
        .await
        .expect("etcd starts");
    let mut arbiters = [
        EtcdArbiter::spawn(&dir, "arb-a", "c1", &etcd.etcd_url(), ARBITER_FLAGS),
        EtcdArbiter::spawn(&dir, "arb-b", "c1", &etcd.etcd_url(), ARBITER_FLAGS),
    ];
    let first = single_leader(&[&arbiters[0], &arbiters[1]], DEADLINE).await;
    let urls = format!("{},{}", arbiters[1 - first].url, arbiters[first].url);
    let mut replicas = start_replicas(&dir, "c1", &["r1", "r2"], &urls).await;
    let pairs: Vec<(String, String)> = replicas
        .iter()
        .map(|r| (r.config().node_id.clone(), r.url()))
        .collect();
    let client_urls: Vec<String> = pairs.iter().map(|(_, url)| url.clone()).collect();

    let before = {
        let a: Vec<&EtcdArbiter> = arbiters.iter().collect();
        let r: Vec<_> = replicas.iter().collect();
        wait_active(&a, &r, 0, true, DEADLINE).await.unwrap()
    };
    assert_eq!(before.leader, first);
    let load = BackgroundLoad::start(failover_load_config(&client_urls, CLIENTS, &[])).unwrap();
    load.wait_acks(300, DEADLINE).await.unwrap();

    // 1. kill -9 the leading arbiter.
    let watch = RoleWatch::start(&pairs, POLL);
    let killed_ns = load.now_ns();
    let killed_at = Instant::now();
    arbiters[first]
        .process
        .kill()
        .expect("kill -9 the leading arbiter");
    let next = &arbiters[1 - first];
    wait_for(DEADLINE, "the other arbiter leads", || async {
        next.status().await.filter(|s| s.is_leader)
    })
    .await
    .unwrap();
    let leads_after = killed_at.elapsed();
    let active_id = before.id.clone();
    wait_for(
        DEADLINE,
        "the new leader hears the active renew its grant",
        || {
            let active_id = active_id.clone();
            async move {
                let s = next.status().await.filter(|s| s.is_leader)?;
                s.replicas
                    .iter()
                    .any(|r| {
                        r.node_id.as_str() == active_id
                            && r.reported_role == Some(Role::Active)
                            && r.last_heartbeat_age_ms.is_some_and(|age| age < 500)
                    })
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();
    let renewed_after = killed_at.elapsed();
    load.wait_acks(300, DEADLINE).await.unwrap();
    let roles = watch.stop().await;
    let status = next.status().await.expect("the new leader's status");
    let gap_ns = load
        .ledger()
        .timeline()
        .longest_gap_between(killed_ns, load.now_ns());
    println!(
        "arbiter handover after kill -9: leads after {} ms, hears the active renew after {} ms \
         (lease TTL {TTL_S} s, bound {} ms); longest write gap {:.1} ms; role watch: {}",
        leads_after.as_millis(),
        renewed_after.as_millis(),
        TTL_S * 1000 + 1000,
        gap_ns as f64 / 1e6,
        roles.summary()
    );
    assert!(
        leads_after <= Duration::from_millis(TTL_S * 1000 + 1000),
        "the other arbiter led only {leads_after:?} after the kill, more than the lease TTL \
         ({TTL_S} s) + 1 s"
    );
    assert_eq!(
        (status.active.as_ref().map(|a| a.as_str()), status.epoch.0),
        (Some(before.id.as_str()), before.epoch),
        "the same active in the same epoch: no replica failover"
    );
    let changes = roles.changes();
    assert!(
        changes.is_empty(),
        "a replica changed role or epoch while the arbiter failed over: {changes:#?}"
    );
    assert!(roles.both_active().is_empty(), "{:#?}", roles.both_active());
    // Every round in which both answered: the same active and standby.
    for round in &roles.rounds {
        for (i, view) in round.views.iter().enumerate() {
            let Some(view) = view else { continue };
            let want = if pairs[i].0 == before.id {
                Role::Active
            } else {
                Role::Standby
            };
            assert_eq!(
                (view.role, view.epoch),
                (want, before.epoch),
                "{} at {} ms",
                pairs[i].0,
                round.at_ms
            );
        }
    }

    // 2. kill -9 the active replica.
    let watch = RoleWatch::start(&pairs, POLL);
    let killed_ns = load.now_ns();
    let standby = pairs
        .iter()
        .find(|(id, _)| *id != before.id)
        .expect("two replicas")
        .clone();
    replicas
        .iter_mut()
        .find(|r| r.config().node_id == before.id)
        .expect("the active")
        .kill()
        .expect("kill -9 the active");
    let after = {
        let a: Vec<&EtcdArbiter> = vec![next];
        let r: Vec<_> = replicas.iter().collect();
        wait_active(&a, &r, before.epoch, false, DEADLINE)
            .await
            .unwrap()
    };
    assert_eq!(after.id, standby.0, "the sync standby takes over");
    load.wait_acks_after_epoch(before.epoch, 300, DEADLINE)
        .await
        .unwrap();
    let roles = watch.stop().await;
    assert!(
        roles.both_active().is_empty(),
        "two replicas active and writable at once: {:#?}",
        roles.both_active()
    );
    let gap = load.ledger().timeline().gap_around(killed_ns, before.epoch);

    // Bring the killed replica back: it follows, and both hold the same data.
    replicas
        .iter_mut()
        .find(|r| r.config().node_id == before.id)
        .expect("the old active")
        .restart()
        .await
        .unwrap();
    let old_url = pairs
        .iter()
        .find(|(id, _)| *id == before.id)
        .map(|(_, url)| url.clone())
        .expect("the old active's URL");
    let own = wait_for(DEADLINE, "the old active back as a standby", || {
        let url = old_url.clone();
        async move {
            let own = replica_status(&url).await.ok()?;
            (own.role == Role::Standby && own.epoch.0 >= after.epoch).then_some(own)
        }
    })
    .await
    .unwrap();
    assert!(!own.writable, "{own:?}");

    let (report, ledger) = load.stop(DEADLINE).await.unwrap();
    let data = dump(&after.url).await.unwrap();
    let verification = ledger.verify(&data);
    println!(
        "active {} (epoch {}) killed; {} active in epoch {}: write gap {} ms, kill to first \
         new ack {} ms; {} ops, errors {:?}, {} retries; acks by epoch {:?}; {}",
        before.id,
        before.epoch,
        after.id,
        after.epoch,
        gap.map_or("-".into(), |g| format!("{:.1}", g.gap_ms())),
        gap.map_or("-".into(), |g| format!("{:.1}", g.recovery_ms())),
        report.ops,
        report.errors_by_kind,
        report.retries,
        ledger.acks_by_epoch(),
        verification.summary()
    );
    assert!(verification.is_ok(), "{}", verification.summary());
    wait_same_data(&after.url, &old_url, DEADLINE)
        .await
        .unwrap();
}
