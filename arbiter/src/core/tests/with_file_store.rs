//! The core driven against the real file store, the way the shell will:
//! propose → compare-and-swap → report the outcome. Shows that decisions
//! and their history survive an arbiter restart, and that two cores
//! sharing one store (as after a botched failover of arbiters) reconcile
//! through conflicts instead of overwriting each other.

use proto_common::heartbeat::{Heartbeat, Role};
use proto_common::params::ClusterParams;
use proto_common::{Epoch, Position};

use super::harness::id;
use crate::core::{Core, HeartbeatOutcome, Millis, ProposedWrite};
use crate::store::{CasOutcome, ClusterState, FileStore, MemoryStore, StateStore};

/// What the shell does with a proposed write.
async fn persist(core: &mut Core, store: &dyn StateStore, w: ProposedWrite, now: Millis) {
    match store.compare_and_swap(w.expected_version, &w.state).await {
        Ok(CasOutcome::Written) => core.on_persisted(now),
        Ok(CasOutcome::Conflict(current)) => core.on_conflict(current, now),
        Err(e) => core.on_persist_failed(&e, now),
    }
}

async fn heartbeat(core: &mut Core, store: &dyn StateStore, hb: &Heartbeat, now: Millis) -> Role {
    for _ in 0..3 {
        match core.on_heartbeat(hb, now).unwrap() {
            HeartbeatOutcome::Reply(r) => return r.role,
            HeartbeatOutcome::Persist(w) => persist(core, store, w, now).await,
        }
    }
    core.reply(hb, now).role
}

fn hb(node: &str, position: Position) -> Heartbeat {
    serde_json::from_value(serde_json::json!({
        "cluster": "test", "node_id": node, "seq": 1,
        "client_url": format!("http://{node}:7000"), "repl_addr": format!("{node}:7001"),
        "role": "standby", "epoch": position.epoch, "position": position,
        "commit_index": position.index, "priority": 1, "quarantined_entries": 0, "healthy": true
    }))
    .unwrap()
}

#[tokio::test]
async fn decisions_survive_an_arbiter_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("arbiter.json");
    let store = FileStore::open(&path).unwrap();
    let loaded = store.load().await.unwrap();
    assert!(loaded.is_none());
    let mut core = Core::take_office(
        ClusterState::new("test", ClusterParams::default()),
        Millis(0),
        0,
    );
    let a = hb("a", Position::new(0, 3));
    heartbeat(&mut core, &store, &a, Millis(0)).await;
    if let Some(w) = core.tick(Millis(1)) {
        persist(&mut core, &store, w, Millis(1)).await;
    }
    assert_eq!(
        heartbeat(&mut core, &store, &a, Millis(2000)).await,
        Role::Active
    );
    assert_eq!(core.state().epoch, Epoch(1));
    drop(store);

    // A new process: it loads what was written and waits a lease before
    // promoting anyone, yet grants the recorded active at once.
    let store = FileStore::open(&path).unwrap();
    let state = store.load().await.unwrap().expect("state survived");
    assert_eq!(state.epoch, Epoch(1));
    assert_eq!(state.active_id(), Some(&id("a")));
    assert!(state
        .history
        .iter()
        .any(|d| d.reason.contains("first formation: a")));
    let mut core = Core::take_office(state, Millis(0), 0);
    let mut a = hb("a", Position::new(1, 5));
    a.role = Role::Active;
    a.epoch = Epoch(1);
    assert_eq!(
        heartbeat(&mut core, &store, &a, Millis(5)).await,
        Role::Active
    );
}

#[tokio::test]
async fn two_cores_on_one_store_never_both_name_an_active() {
    let store = MemoryStore::new();
    let params = ClusterParams {
        initial_wait_ms: 0,
        ..Default::default()
    };
    let mut one = Core::take_office(ClusterState::new("test", params.clone()), Millis(0), 0);
    let mut two = Core::take_office(ClusterState::new("test", params), Millis(0), 0);
    let a = hb("a", Position::new(0, 1));
    let b = hb("b", Position::new(0, 2));
    // Each hears a different replica and wants to make it active.
    let w1 = match one.on_heartbeat(&a, Millis(1)).unwrap() {
        HeartbeatOutcome::Persist(w) => w,
        other => panic!("expected a formation write, got {other:?}"),
    };
    let w2 = match two.on_heartbeat(&b, Millis(1)).unwrap() {
        HeartbeatOutcome::Persist(w) => w,
        other => panic!("expected a formation write, got {other:?}"),
    };
    persist(&mut one, &store, w1, Millis(1)).await;
    persist(&mut two, &store, w2, Millis(1)).await;
    assert_eq!(one.state().active_id(), Some(&id("a")));
    assert_eq!(
        two.state().active_id(),
        Some(&id("a")),
        "the loser adopts the winner"
    );
    assert_eq!(store.snapshot().unwrap().active_id(), Some(&id("a")));
    // Neither grants b; both may renew a's lease (one holder, no overlap).
    assert_eq!(two.reply(&b, Millis(2)).role, Role::Standby);
    assert_eq!(one.reply(&b, Millis(2)).role, Role::Standby);
    assert_eq!(one.reply(&a, Millis(2)).role, Role::Active);
    // The loser adopted a state someone else wrote: no promotion for a lease.
    assert_eq!(two.status(Millis(2)).failover.lease_wait_left_ms, 1099);
}
