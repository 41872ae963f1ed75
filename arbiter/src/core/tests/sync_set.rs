//! Sync-set upkeep: add caught-up standbys, confirm, remove failed members,
//! degrade, and never let an unconfirmed member be a candidate.

use proto_common::params::ClusterParams;
use proto_common::Position;

use super::harness::{id, Sim};

#[test]
fn a_caught_up_standby_is_added_then_confirmed_then_a_candidate() {
    let mut sim = Sim::new(ClusterParams::default());
    sim.add("a", Position::new(0, 1), 1);
    sim.add("b", Position::ZERO, 1);
    sim.run_until(2001);
    assert_eq!(sim.active().as_deref(), Some("a"));
    let formed = sim.stored().clone();
    assert!(formed.sync_set.is_empty() && formed.degraded);
    assert_eq!(sim.core.status(sim.now).failover.candidate, None);

    // b is behind the active until it copies a's entry.
    sim.run_until_cond(500, |s| !s.stored().sync_set.is_empty());
    let added = sim.stored().clone();
    assert_eq!(added.sync_set, vec![id("b")]);
    assert_eq!(added.sync_version, formed.sync_version + 1);
    assert!(
        added.confirmed_sync.is_empty(),
        "added and confirmed in one step"
    );
    assert!(!added.degraded);
    sim.assert_decision(&["sync set v", "added b: caught up (lag 0 entries"]);

    sim.run_until_cond(500, |s| !s.stored().confirmed_sync.is_empty());
    let confirmed = sim.stored().clone();
    assert_eq!(confirmed.confirmed_sync, vec![id("b")]);
    assert_eq!(confirmed.confirmed_sync_version, added.sync_version);
    sim.assert_decision(&["the active confirmed sync set v"]);
    assert_eq!(sim.core.status(sim.now).failover.candidate, Some(id("b")));
}

#[test]
fn a_lagging_standby_is_not_added() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.kill("b");
    sim.run_for(1300);
    assert!(sim.stored().sync_set.is_empty());
    sim.revive("b");
    sim.replica("b").caught_up = false;
    sim.write(20);
    sim.run_for(1000);
    assert!(sim.stored().sync_set.is_empty());
    sim.assert_decision(&[
        "sync set has 0 of sync_standbys=1 members",
        "b lags 20 entries",
    ]);
    assert_eq!(sim.count_decisions("b lags"), 1, "repeated every tick");
    sim.replica("b").position = sim.replicas[&id("a")].position;
    sim.run_for(200);
    assert_eq!(sim.stored().sync_set, vec![id("b")]);
}

#[test]
fn a_dead_sync_member_is_removed_and_the_cluster_degrades() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    let before = sim.stored().clone();
    sim.kill("b");
    let last_b = sim.now.0;
    sim.run_for(1090);
    assert_eq!(
        sim.stored().sync_set,
        vec![id("b")],
        "removed before lease·(1+drift) of silence"
    );
    sim.run_for(300);
    let after = sim.stored().clone();
    assert!(after.sync_set.is_empty());
    assert!(after.confirmed_sync.is_empty());
    assert_eq!(after.sync_version, before.sync_version + 1);
    assert!(after.degraded);
    sim.assert_decision(&[
        "removed b: silent for",
        "more than lease·(1+drift) = 1100 ms",
    ]);
    sim.assert_decision(&["degraded: sync set [] has fewer than sync_standbys=1"]);
    // The active learns the new set from its next reply.
    let reply = sim.replicas[&id("a")].last_reply.clone().unwrap();
    assert!(reply.sync_set.is_empty());
    assert_eq!(reply.sync_version, after.sync_version);
    assert!(sim.now.0 - last_b < 1500);
}

#[test]
fn a_member_whose_connection_the_active_reports_closed_is_removed_at_once() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    let before = sim.stored().sync_version;
    sim.replica("b").connected = false; // b still heartbeats the arbiter
    let lost_at = sim.now.0;
    // The active's next heartbeat reports it; the next tick records the
    // removal, and the active, asked back within a few ms, learns it.
    sim.run_until_cond(1000, |s| {
        s.replicas[&id("a")]
            .last_reply
            .as_ref()
            .is_some_and(|r| r.sync_set.is_empty())
    });
    let took = sim.now.0 - lost_at;
    assert!(
        took <= 2 * ClusterParams::default().heartbeat_ms,
        "the active learned the new set {took} ms after reporting the connection closed"
    );
    let after = sim.stored().clone();
    assert!(after.sync_set.is_empty());
    assert_eq!(after.sync_version, before + 1);
    sim.assert_decision(&["removed b: the active reports its replication connection closed"]);
    // Recorded before the active heard of it: the reply that carried the
    // new set came from the stored state.
    let reply = sim.replicas[&id("a")].last_reply.clone().unwrap();
    assert_eq!(reply.sync_version, after.sync_version);
}

#[test]
fn a_member_the_active_never_reports_is_removed_after_lease_ms() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.replica("b").reported = false; // b still heartbeats the arbiter
    sim.run_for(950);
    assert_eq!(sim.stored().sync_set, vec![id("b")]);
    sim.run_for(200);
    assert!(sim.stored().sync_set.is_empty());
    sim.assert_decision(&[
        "removed b: the active has not reported it connected for",
        "lease_ms=1000",
    ]);
}

#[test]
fn a_member_that_left_and_returned_must_be_confirmed_again() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.replica("b").connected = false;
    sim.run_for(300);
    assert!(sim.stored().sync_set.is_empty());
    let removed_version = sim.stored().sync_version;
    sim.replica("a").confirms = false;
    sim.replica("b").connected = true;
    sim.write(1);
    sim.run_for(300);
    let s = sim.stored().clone();
    assert_eq!(s.sync_set, vec![id("b")]);
    assert_eq!(s.sync_version, removed_version + 1);
    assert!(
        s.confirmed_sync.is_empty(),
        "b regained candidacy without a new confirmation"
    );
    sim.replica("a").confirms = true;
    sim.run_for(300);
    assert_eq!(sim.stored().confirmed_sync, vec![id("b")]);
}

#[test]
fn with_k_two_promotable_standbys_are_preferred() {
    let params = ClusterParams {
        sync_standbys: 2,
        ..Default::default()
    };
    let mut sim = Sim::formed(params, &[("a", 1), ("b", 0), ("c", 1), ("d", 1)]);
    let s = sim.stored().clone();
    assert_eq!(
        s.sync_set,
        vec![id("c"), id("d")],
        "a priority-0 standby took a promotable one's place"
    );
    assert!(!s.degraded);
    // One member dies: the priority-0 standby fills in (priority is no bar
    // to holding the data), and the set is whole again.
    sim.kill("c");
    sim.run_for(1300);
    let s = sim.stored().clone();
    assert_eq!(s.sync_set, vec![id("d"), id("b")]);
    assert_eq!(s.confirmed_sync, vec![id("d"), id("b")]);
}

#[test]
fn strict_mode_changes_the_set_the_same_way_and_shows_degraded() {
    let params = ClusterParams {
        strict: true,
        ..Default::default()
    };
    let mut sim = Sim::formed(params, &[("a", 1), ("b", 1)]);
    sim.kill("b");
    sim.run_for(1300);
    let s = sim.stored().clone();
    assert!(s.sync_set.is_empty() && s.degraded);
    sim.assert_decision(&["strict mode: the active refuses writes"]);
    assert!(sim.core.status(sim.now).degraded);
}

#[test]
fn an_unhealthy_sync_member_is_removed() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.replica("b").healthy = false;
    sim.run_for(150);
    assert!(sim.stored().sync_set.is_empty());
    sim.assert_decision(&["removed b: reports unhealthy (disk failed)"]);
}
