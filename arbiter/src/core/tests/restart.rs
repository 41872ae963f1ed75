//! A recorded active that restarts (or steps down) comes back as a standby
//! and may never take writes in that epoch again: the arbiter must open a
//! new epoch instead of granting it the old one again — which would leave
//! the cluster with an active that refuses its grant and nobody else — but
//! only once the lease of the last grant has ended, since a report is not
//! proof that no process still holds it.

use proto_common::heartbeat::Role;
use proto_common::params::ClusterParams;
use proto_common::Epoch;

use super::harness::{id, Sim};

#[test]
fn a_restarted_active_gets_a_new_epoch_once_its_lease_has_ended() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.write(10);
    sim.run_for(200);
    let epoch = sim.stored().epoch;
    assert_eq!(sim.replicas[&id("a")].active_epoch, epoch);
    let t_grant = sim.last_grant_at().unwrap();
    // a restarts at once: far sooner than its lease would have ended. Its
    // report is believed only as far as the lease rule allows.
    sim.restart("a");
    let wait = 1100; // lease_ms · (1 + drift)
    sim.run_until(t_grant.0 + wait);
    assert_eq!(
        sim.stored().epoch,
        epoch,
        "a new active before the lease ended"
    );
    sim.assert_decision(&["lost its role in epoch", "a report does not end a lease"]);
    sim.run_for(5);
    let s = sim.stored().clone();
    assert_eq!(
        s.epoch,
        next(epoch),
        "no new epoch opened once the lease ended"
    );
    assert!(s.active.is_some());
    sim.assert_decision(&[
        "lost its role in epoch",
        "the lease of its last grant has ended",
    ]);
    // Whoever was named gets the grant in the new epoch; a is never granted
    // its old epoch again.
    sim.run_for(200);
    let active = sim.active().unwrap();
    assert_eq!(sim.replicas[&id(&active)].role, Role::Active);
    assert_eq!(sim.replicas[&id(&active)].epoch, next(epoch));
}

/// Two processes started with the active's node id: the one holding the
/// grant keeps heartbeating as active, the other says it lost the role.
/// The arbiter must not name anyone while the first one's lease can run.
#[test]
fn a_lost_role_report_does_not_end_a_live_actives_lease() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.write(10);
    sim.run_for(200);
    let epoch = sim.stored().epoch;
    let mut impostor = sim.heartbeat_of("a");
    impostor.role = Role::Standby;
    impostor.active_epoch = epoch;
    for _ in 0..100 {
        sim.run_for(30);
        impostor.seq += 1;
        let reply = sim.send(&impostor);
        assert_eq!(reply.role, Role::Standby);
    }
    assert_eq!(sim.stored().epoch, epoch, "a second active was named");
    assert_eq!(sim.active().as_deref(), Some("a"));
    assert_eq!(sim.replicas[&id("a")].role, Role::Active);
}

fn next(e: Epoch) -> Epoch {
    e.checked_next().unwrap()
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
    sim.run_for(1300); // the lease of a's last grant ends first
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
    assert_eq!(sim.stored().epoch, next(epoch));
    assert_eq!(sim.replicas[&id("b")].role, Role::Active);
    assert_eq!(sim.count_decisions("lost its role"), 0);
}
