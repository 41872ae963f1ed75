//! What the core does when its writes conflict or fail: adopt what is
//! stored, and never let leases overlap because of it.

use proto_common::heartbeat::{ActiveInfo, Role};
use proto_common::params::ClusterParams;

use super::harness::{id, Sim};

#[test]
fn a_conflict_is_adopted_and_restarts_the_lease_wait() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1), ("c", 1)]);
    // Another writer (say a second arbiter) bumps the version behind our back.
    let mut theirs = sim.store.clone().unwrap();
    theirs.version += 1;
    theirs.maintenance = true;
    sim.store = Some(theirs.clone());
    let w = sim.core.set_maintenance(false, sim.now);
    assert!(w.unwrap().is_none(), "we still believe maintenance is off");
    sim.replica("a").client_url = "http://a2:7000".into(); // something to write
    sim.run_for(100);
    assert_eq!(
        sim.stored().version,
        theirs.version + 1,
        "did not adopt and then write on top"
    );
    assert!(sim.stored().maintenance);
    sim.assert_decision(&["store conflict: expected version", "adopted it"]);
}

#[test]
fn after_adopting_another_writers_promotion_no_grant_overlaps_ours() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1), ("c", 1)]);
    sim.run_for(50);
    let t_grant_a = sim.last_grant_at().unwrap().0;
    // Behind our back, c is recorded active at a higher epoch.
    let mut theirs = sim.store.clone().unwrap();
    theirs.version += 1;
    theirs.epoch = theirs.epoch.checked_next().unwrap();
    theirs.active = Some(ActiveInfo {
        node_id: id("c"),
        client_url: "http://c:7000".into(),
        repl_addr: "c:7001".into(),
    });
    theirs.sync_set.clear();
    theirs.confirmed_sync.clear();
    theirs.sync_version += 1;
    sim.store = Some(theirs.clone());
    sim.replica("a").client_url = "http://a2:7000".into();
    sim.beat("a");
    sim.tick(); // our write conflicts: we adopt theirs
    assert_eq!(sim.active().as_deref(), Some("c"));
    // c asks for its grant at once: it must wait until a's grant has ended.
    let reply = sim.beat("c");
    assert_eq!(
        reply.role,
        Role::Standby,
        "granted c while a's lease may be live"
    );
    sim.assert_decision(&["not granting active c", "the grant sent to a may be live"]);
    sim.kill("a");
    sim.run_until(t_grant_a + 1100);
    assert_ne!(sim.replicas[&id("c")].role, Role::Active);
    sim.run_for(120);
    assert_eq!(sim.replicas[&id("c")].role, Role::Active);
    // a, told it is not the active any more, stands by.
    sim.revive("a");
    assert_eq!(sim.beat("a").role, Role::Standby);
}

#[test]
fn a_failed_write_is_verified_by_the_next_one() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.kill("a");
    sim.fail_next_write = true;
    sim.run_for(1200);
    // The promotion write failed once, was retried and landed.
    assert_eq!(sim.active().as_deref(), Some("b"));
    sim.assert_decision(&[
        "store write failed (store_unavailable)",
        "not applied: epoch 2",
    ]);

    // A write that fails although it landed (unknown outcome) is found by
    // the verification write's conflict.
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.auto_tick = false;
    sim.kill("a");
    let t = sim.last_grant_at().unwrap().0 + 1100;
    sim.run_until(t);
    let w = sim.core.tick(sim.now).unwrap();
    sim.store = Some(w.state.clone()); // it landed...
    let err = crate::store::StoreError::Unavailable {
        detail: "timeout".into(),
    };
    sim.core.on_persist_failed(&err, sim.now); // ...but we were told it failed
    assert_eq!(sim.active().as_deref(), Some("a"));
    let verify = sim.core.tick(sim.now).expect("a verification write");
    sim.persist(verify); // conflicts: adopt
    assert_eq!(sim.active().as_deref(), Some("b"));
}

#[test]
fn a_vanished_state_is_recreated_with_its_epoch() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    let epoch = sim.stored().epoch;
    sim.store = None;
    sim.replica("a").client_url = "http://a2:7000".into();
    sim.beat("a");
    sim.tick();
    let s = sim.store.clone().expect("recreated");
    assert_eq!(s.version, 1);
    assert_eq!(s.epoch, epoch, "recreated with a forgotten epoch");
    sim.assert_decision(&["the store is empty; recreating it from memory at epoch 1"]);
}
