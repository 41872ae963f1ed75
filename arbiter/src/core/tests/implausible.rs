//! Numbers from a replica are checked before they change anything: an
//! epoch that would overflow, or that is absurdly far ahead of the store's,
//! is refused and recorded, never believed and never wrapped.

use proto_common::params::ClusterParams;
use proto_common::Epoch;

use super::harness::{id, Sim};
use crate::error::ArbiterError;

#[test]
fn a_heartbeat_with_an_implausible_epoch_is_refused_and_the_epoch_never_wraps() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.write(5);
    sim.run_for(200);
    let epoch = sim.stored().epoch;
    for forged in [u64::MAX, u64::MAX - 1, epoch.0 + Epoch::MAX_LEAP + 1] {
        let mut hb = sim.heartbeat_of("b");
        hb.epoch = Epoch(forged);
        hb.seq += 1000;
        let err = sim.core.on_heartbeat(&hb, sim.now).unwrap_err();
        assert!(
            matches!(&err, ArbiterError::BadHeartbeat { detail, .. } if detail.contains("implausible")),
            "{err}"
        );
    }
    sim.assert_decision(&["heartbeat from b refused", "is implausible"]);
    // The forged number left no trace: a failover opens the next epoch.
    sim.kill("a");
    sim.run_for(1500);
    assert_eq!(sim.active().as_deref(), Some("b"));
    assert_eq!(sim.stored().epoch, Epoch(epoch.0 + 1));
}

#[test]
fn a_heartbeat_whose_epochs_contradict_each_other_is_refused() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    let mut hb = sim.heartbeat_of("b");
    hb.active_epoch = Epoch(hb.epoch.0 + 1);
    hb.seq += 1000;
    let err = sim.core.on_heartbeat(&hb, sim.now).unwrap_err();
    assert!(err.to_string().contains("never below"), "{err}");
}

#[test]
fn a_store_at_the_largest_epoch_names_no_new_active_and_says_why() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    let mut state = sim.stored().clone();
    state.epoch = Epoch(u64::MAX);
    let mut sim2 = Sim::with_state(state.clone(), Some(state), sim.now);
    for name in ["a", "b"] {
        let r = sim.replica(name).clone();
        sim2.replicas.insert(id(name), r);
    }
    sim2.kill("a");
    sim2.run_for(3000);
    assert_eq!(sim2.stored().epoch, Epoch(u64::MAX));
    assert_eq!(sim2.active().as_deref(), Some("a"));
    sim2.assert_decision(&["is the largest there can be"]);
}
