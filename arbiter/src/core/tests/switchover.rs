//! Planned switchover: the happy path without a lease wait, the checks on
//! the target, and the timeout.

use proto_common::heartbeat::Role;
use proto_common::params::ClusterParams;

use super::harness::{id, Sim};
use crate::core::SWITCHOVER_HEARTBEAT_MS;

#[test]
fn happy_path_hands_over_without_waiting_for_a_lease() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.write(7);
    sim.run_for(150);
    let epoch = sim.stored().epoch;
    let started = sim.now.0;
    assert_eq!(
        sim.core.switchover(Some(id("b")), sim.now).unwrap(),
        id("b")
    );

    // The active is told at its next heartbeat, and asked to come back fast.
    sim.run_until_cond(200, |s| s.replicas[&id("a")].switchover_to.is_some());
    let reply = sim.replicas[&id("a")].last_reply.clone().unwrap();
    assert_eq!(reply.role, Role::Active);
    assert_eq!(reply.switchover_to, Some(id("b")));
    assert_eq!(reply.next_heartbeat_ms, Some(SWITCHOVER_HEARTBEAT_MS));

    // It drains and reports; the arbiter writes epoch + 1 with b active.
    sim.run_until_cond(50, |s| s.active().as_deref() == Some("b"));
    let s = sim.stored().clone();
    assert_eq!(s.epoch, epoch.checked_next().unwrap());
    assert!(s.sync_set.is_empty());
    sim.assert_decision(&[
        "switchover from a to b complete: a drained at 1.8 and b acknowledged it",
    ]);
    let a_reply = sim.replicas[&id("a")].last_reply.clone().unwrap();
    assert_eq!(
        a_reply.role,
        Role::Standby,
        "the old active must be told to stand by"
    );
    assert_eq!(a_reply.epoch, epoch.checked_next().unwrap());

    // b is granted at its next heartbeat, far sooner than a lease.
    sim.run_until_cond(50, |s| s.replicas[&id("b")].role == Role::Active);
    assert!(
        sim.now.0 - started < 200,
        "switchover took {} ms",
        sim.now.0 - started
    );
    assert_eq!(sim.replicas[&id("b")].epoch, epoch.checked_next().unwrap());
    // The old active is caught up and joins the sync set again.
    sim.run_for(300);
    assert_eq!(sim.stored().sync_set, vec![id("a")]);
    assert!(sim.core.status(sim.now).switchover.is_none());
}

#[test]
fn without_a_target_the_best_candidate_is_chosen() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1), ("c", 1)]);
    assert_eq!(sim.core.switchover(None, sim.now).unwrap(), id("b"));
    sim.run_until_cond(200, |s| s.active().as_deref() == Some("b"));
}

#[test]
fn targets_are_checked() {
    let mut sim = Sim::formed(
        ClusterParams::default(),
        &[("a", 1), ("b", 1), ("c", 1), ("z", 0)],
    );
    let now = sim.now;
    let code = |sim: &mut Sim, to: &str| sim.core.switchover(Some(id(to)), now).unwrap_err().code();
    assert_eq!(code(&mut sim, "nobody"), "unknown_target");
    assert_eq!(code(&mut sim, "a"), "target_is_active");
    assert_eq!(code(&mut sim, "z"), "target_priority_zero");
    assert_eq!(code(&mut sim, "c"), "target_not_in_sync_set");
    let err = sim.core.switchover(Some(id("c")), now).unwrap_err();
    assert!(err.to_string().contains("not in the sync set"), "{err}");
    sim.core.switchover(Some(id("b")), now).unwrap();
    assert_eq!(code(&mut sim, "b"), "switchover_running");

    let mut fresh = Sim::new(ClusterParams::default());
    assert_eq!(
        fresh.core.switchover(None, fresh.now).unwrap_err().code(),
        "no_active"
    );

    // A dead active is automatic failover's business, not a switchover's.
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.auto_tick = false;
    sim.kill("a");
    sim.kill("b");
    sim.run_for(1200);
    let err = sim.core.switchover(None, sim.now).unwrap_err();
    assert_eq!(err.code(), "active_missing");
    assert!(err.to_string().contains("silent for 12"), "{err}");
}

#[test]
fn a_switchover_that_does_not_drain_times_out_and_the_active_keeps_its_role() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.replica("a").drains = false;
    let epoch = sim.stored().epoch;
    sim.core.switchover(Some(id("b")), sim.now).unwrap();
    sim.run_for(2199);
    assert_eq!(
        sim.replicas[&id("a")]
            .last_reply
            .as_ref()
            .unwrap()
            .switchover_to,
        Some(id("b"))
    );
    sim.run_for(2);
    sim.assert_decision(&[
        "switchover from a to b cancelled: not complete after 2200 ms",
        "a reported drained: no",
    ]);
    sim.run_for(20);
    let reply = sim.replicas[&id("a")].last_reply.clone().unwrap();
    assert_eq!(reply.role, Role::Active);
    assert_eq!(
        reply.switchover_to, None,
        "the cancel must reach the active"
    );
    assert_eq!(reply.next_heartbeat_ms, None);
    assert_eq!(sim.stored().epoch, epoch);
    assert_eq!(sim.active().as_deref(), Some("a"));
    // And a new switchover may start.
    sim.replica("a").drains = true;
    sim.core.switchover(Some(id("b")), sim.now).unwrap();
    sim.run_for(100);
    assert_eq!(sim.active().as_deref(), Some("b"));
}

#[test]
fn the_active_dying_mid_switchover_falls_back_to_failover() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.replica("a").drains = false;
    sim.core.switchover(Some(id("b")), sim.now).unwrap();
    sim.run_for(120);
    sim.kill("a");
    let t_grant = sim.last_grant_at().unwrap().0;
    sim.run_until(t_grant + 1100);
    assert_eq!(
        sim.active().as_deref(),
        Some("a"),
        "switchover skipped the lease wait of a live grant"
    );
    sim.run_for(10);
    assert_eq!(sim.active().as_deref(), Some("b"));
    assert!(sim.core.status(sim.now).switchover.is_none());
}
