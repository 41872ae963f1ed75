//! First formation: wait `initial_wait_ms` (or until every recorded member
//! reported), then the highest position wins, then priority, then the
//! lowest node id; priority 0 never.

use proto_common::heartbeat::Role;
use proto_common::params::ClusterParams;
use proto_common::{Epoch, Position};

use super::harness::{id, Sim};
use crate::core::Millis;
use crate::store::{ClusterState, MemberRecord};

#[test]
fn waits_initial_wait_then_the_highest_position_wins() {
    let mut sim = Sim::new(ClusterParams::default());
    sim.add("a", Position::new(0, 3), 1);
    sim.add("b", Position::new(0, 7), 1);
    sim.add("c", Position::new(0, 9), 0);
    sim.run_until(2000);
    assert_eq!(sim.active(), None, "named an active before initial_wait_ms");
    sim.assert_decision(&[
        "first formation: waiting",
        "initial_wait_ms=2000",
        "0 of 0 recorded",
    ]);
    // Membership is recorded while waiting.
    assert_eq!(sim.store.as_ref().unwrap().members.len(), 3);

    sim.step(); // t = 2000
    assert_eq!(sim.active().as_deref(), Some("b"));
    let s = sim.stored();
    assert_eq!(s.epoch, Epoch(1));
    assert!(s.sync_set.is_empty());
    assert!(s.degraded, "k = 1 and no sync standby yet");
    sim.assert_decision(&[
        "epoch 1: first formation: b at position 0.7",
        "c has priority 0",
    ]);
    sim.run_for(200);
    assert_eq!(sim.replicas[&id("b")].role, Role::Active);
    assert_eq!(sim.replicas[&id("a")].role, Role::Standby);
    assert_eq!(sim.replicas[&id("c")].role, Role::Standby);
}

#[test]
fn ties_go_to_higher_priority_then_lowest_node_id() {
    for (nodes, winner) in [
        (vec![("a", 1), ("b", 2), ("c", 1)], "b"),
        (vec![("c", 1), ("b", 1), ("d", 1)], "b"),
        (vec![("x", 3), ("y", 3)], "x"),
    ] {
        let mut sim = Sim::new(ClusterParams::default());
        for (n, p) in &nodes {
            sim.add(n, Position::new(0, 5), *p);
        }
        sim.run_until(2001);
        assert_eq!(sim.active().as_deref(), Some(winner), "{nodes:?}");
    }
}

#[test]
fn priority_zero_is_never_made_active() {
    let mut sim = Sim::new(ClusterParams::default());
    sim.add("c", Position::new(0, 9), 0);
    sim.run_until(5000);
    assert_eq!(sim.active(), None);
    sim.assert_decision(&["no eligible replica", "c has priority 0"]);
    assert_eq!(
        sim.count_decisions("no eligible replica"),
        1,
        "repeated every tick"
    );
    sim.add("d", Position::ZERO, 1);
    sim.run_for(10);
    assert_eq!(sim.active().as_deref(), Some("d"));
}

#[test]
fn existing_data_wins_and_the_epoch_goes_above_it() {
    // The store is new but the replicas ran before (e.g. the store was lost):
    // the one with the most data wins, and the new epoch is above any epoch
    // a replica has seen, so its old frames are fenced.
    let mut sim = Sim::new(ClusterParams::default());
    sim.add("a", Position::new(3, 40), 1);
    sim.add("b", Position::new(4, 12), 1);
    sim.add("c", Position::new(4, 11), 5);
    sim.run_until(2001);
    assert_eq!(sim.active().as_deref(), Some("b"));
    assert_eq!(sim.stored().epoch, Epoch(5));
    sim.assert_decision(&["b reports epoch 4 but the store is at epoch 0"]);
}

#[test]
fn skips_the_wait_once_every_recorded_member_reported() {
    let member = |pos| MemberRecord {
        client_url: "http://x".into(),
        repl_addr: "x:1".into(),
        priority: 1,
        position: pos,
        quarantined_entries: 0,
    };
    let mut state = ClusterState::new("test", ClusterParams::default());
    state.version = 1;
    state.members.insert(id("a"), member(Position::ZERO));
    state.members.insert(id("b"), member(Position::ZERO));
    let mut sim = Sim::with_state(state.clone(), Some(state), Millis(0));
    sim.add("a", Position::new(0, 2), 1);
    sim.run_for(500);
    assert_eq!(
        sim.active(),
        None,
        "b, a recorded member, has not reported yet"
    );
    sim.assert_decision(&["1 of 2 recorded members reported"]);
    sim.add("b", Position::new(0, 1), 1);
    sim.step();
    assert_eq!(sim.active().as_deref(), Some("a"));
}

#[test]
fn the_chosen_replica_is_granted_inside_its_own_heartbeat() {
    let mut sim = Sim::new(ClusterParams::default());
    sim.auto_tick = false;
    sim.add("a", Position::new(0, 1), 1);
    sim.run_until(2000);
    sim.now = Millis(2000);
    let reply = sim.beat("a");
    assert_eq!(reply.role, Role::Active, "{reply:?}");
    assert_eq!(reply.epoch, Epoch(1));
    assert_eq!(sim.last_grant_at(), Some(Millis(2000)));
}
