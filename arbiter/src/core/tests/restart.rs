//! A recorded active that restarts (or steps down) comes back as a standby
//! and may never take writes in that epoch again: the arbiter must open a
//! new epoch at once instead of granting it the old one again — which would
//! leave the cluster with an active that refuses its grant and nobody else.

use proto_common::heartbeat::Role;
use proto_common::params::ClusterParams;

use super::harness::{id, Sim};

#[test]
fn a_restarted_active_gets_a_new_epoch_without_a_lease_wait() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.write(10);
    sim.run_for(200);
    let epoch = sim.stored().epoch;
    assert_eq!(sim.replicas[&id("a")].active_epoch, epoch);
    let t_grant = sim.last_grant_at().unwrap();
    // a restarts at once: far sooner than its lease would have ended.
    sim.restart("a");
    sim.run_for(5);
    assert!(
        sim.now.0 < t_grant.0 + 1100,
        "the test must finish before the lease wait would have"
    );
    let s = sim.stored().clone();
    assert_eq!(s.epoch, epoch.next(), "no new epoch opened");
    assert!(s.active.is_some());
    sim.assert_decision(&["lost its role in epoch", "no lease wait is needed"]);
    // Whoever was named gets the grant in the new epoch; a is never granted
    // its old epoch again.
    sim.run_for(200);
    let active = sim.active().unwrap();
    assert_eq!(sim.replicas[&id(&active)].role, Role::Active);
    assert_eq!(sim.replicas[&id(&active)].epoch, epoch.next());
}

#[test]
fn a_restarted_active_alone_leads_again_in_a_new_epoch() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.write(10);
    sim.run_for(200);
    let epoch = sim.stored().epoch;
    sim.kill("b");
    sim.run_for(3000); // b leaves the sync set; a goes on degraded
    assert!(sim.stored().sync_set.is_empty());
    sim.write(5);
    sim.run_for(100);
    sim.restart("a");
    sim.run_for(300);
    let s = sim.stored().clone();
    assert_eq!(s.active_id().map(|a| a.to_string()).as_deref(), Some("a"));
    assert!(s.epoch > epoch);
    assert_eq!(sim.replicas[&id("a")].role, Role::Active);
    assert_eq!(sim.replicas[&id("a")].epoch, s.epoch);
    sim.assert_decision(&["it holds every write it acknowledged"]);
}

#[test]
fn a_promoted_standby_that_has_not_taken_its_grant_yet_is_not_mistaken_for_a_restart() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.write(3);
    sim.run_for(200);
    let epoch = sim.stored().epoch;
    sim.kill("a");
    sim.run_for(1400);
    // b was promoted in epoch+1 and took the grant; exactly one epoch bump.
    assert_eq!(sim.active().as_deref(), Some("b"));
    assert_eq!(sim.stored().epoch, epoch.next());
    assert_eq!(sim.replicas[&id("b")].role, Role::Active);
    assert_eq!(sim.count_decisions("lost its role"), 0);
}
