//! Maintenance mode, membership upkeep (`remove_after`, address changes)
//! and the status snapshot.

use proto_common::heartbeat::Role;
use proto_common::params::ClusterParams;
use proto_common::Position;

use super::harness::{id, Sim};

#[test]
fn maintenance_blocks_failover_but_keeps_granting_and_upkeep() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1), ("c", 1)]);
    let w = sim
        .core
        .set_maintenance(true, sim.now)
        .unwrap()
        .expect("a write");
    assert_eq!(
        sim.core.set_maintenance(false, sim.now).unwrap_err().code(),
        "write_in_progress"
    );
    sim.persist(w);
    assert!(sim.stored().maintenance);
    assert!(
        sim.core.set_maintenance(true, sim.now).unwrap().is_none(),
        "already on"
    );

    // Upkeep goes on: a dead sync member is replaced.
    sim.kill("b");
    sim.run_for(1300);
    assert_eq!(sim.stored().sync_set, vec![id("c")]);
    sim.run_for(300);
    assert_eq!(sim.stored().confirmed_sync, vec![id("c")]);
    assert_eq!(
        sim.replicas[&id("a")].last_reply.as_ref().unwrap().role,
        Role::Active
    );

    sim.kill("a");
    sim.run_for(3000);
    assert_eq!(sim.active().as_deref(), Some("a"));
    sim.assert_decision(&["active a missing", "maintenance mode is on"]);
    assert_eq!(
        sim.count_decisions("maintenance mode is on"),
        1,
        "repeated every tick"
    );

    let w = sim.core.set_maintenance(false, sim.now).unwrap().unwrap();
    sim.persist(w);
    sim.run_for(150);
    assert_eq!(sim.active().as_deref(), Some("c"));
    sim.assert_decision(&["maintenance mode off"]);
}

#[test]
fn silent_standbys_are_dropped_after_remove_after_but_never_the_active_or_a_sync_member() {
    let params = ClusterParams {
        remove_after_ms: 5000,
        ..Default::default()
    };
    let mut sim = Sim::formed(params, &[("a", 1), ("b", 1), ("c", 1)]);
    sim.kill("c");
    sim.run_for(4990);
    assert!(sim.stored().members.contains_key(&id("c")));
    sim.run_for(20);
    assert!(!sim.stored().members.contains_key(&id("c")));
    sim.assert_decision(&["c dropped from membership: silent for 5000 ms (remove_after_ms=5000)"]);

    // It rejoins by heartbeating again.
    sim.revive("c");
    sim.run_for(10);
    assert!(sim.stored().members.contains_key(&id("c")));
    sim.assert_decision(&["c joined"]);

    // The active, even silent, stays a member (nobody can replace it: k = 1
    // and b died too).
    sim.kill("b");
    sim.run_for(300);
    sim.kill("a");
    sim.run_for(6000);
    let s = sim.stored().clone();
    assert!(
        s.members.contains_key(&id("a")),
        "dropped the recorded active"
    );
    // b left the sync set only... it did not: the active was missing when
    // b's silence passed the limit, so b stayed a (confirmed) sync member
    // and therefore a member.
    assert_eq!(s.sync_set, vec![id("b")]);
    assert!(s.members.contains_key(&id("b")), "dropped a sync member");
}

#[test]
fn the_operator_removes_a_stopped_member_at_once_but_not_the_active_a_sync_member_or_a_live_one() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1), ("c", 1)]);
    assert_eq!(sim.stored().sync_set, vec![id("b")]);
    let refusal = |sim: &mut Sim, node: &str| match sim.core.remove_member(&id(node), sim.now) {
        Ok(_) => panic!("removing {node} was allowed"),
        Err(e) => (e.code(), e.to_string()),
    };
    for (node, why) in [
        ("a", "it is the active"),
        ("b", "it is in the sync set"),
        ("c", "heartbeated"),
        ("zz", "not a member (members: a, b, c)"),
    ] {
        let (code, message) = refusal(&mut sim, node);
        assert_eq!(code, "cannot_remove", "{message}");
        assert!(message.contains(why), "{node}: {message}");
    }

    sim.kill("c");
    sim.run_for(1100);
    let w = match sim.core.remove_member(&id("c"), sim.now) {
        Ok(w) => w,
        Err(e) => panic!("{e}"),
    };
    sim.persist(w);
    assert!(!sim.stored().members.contains_key(&id("c")));
    sim.assert_decision(&["c removed by the operator"]);
    // Nothing else changed, and it rejoins if it heartbeats again.
    assert_eq!(sim.active().as_deref(), Some("a"));
    assert_eq!(sim.stored().sync_set, vec![id("b")]);
    sim.revive("c");
    sim.run_for(10);
    assert!(sim.stored().members.contains_key(&id("c")));
}

#[test]
fn a_sync_member_leaves_the_sync_set_before_membership() {
    let params = ClusterParams {
        remove_after_ms: 1000,
        ..Default::default()
    };
    let mut sim = Sim::formed(params, &[("a", 1), ("b", 1)]);
    let writes_before = sim.writes.len();
    sim.kill("b");
    sim.run_for(1500);
    let later: Vec<_> = sim.writes[writes_before..].to_vec();
    let out_of_set = later
        .iter()
        .position(|s| s.sync_set.is_empty())
        .expect("b left the sync set");
    let out_of_members = later
        .iter()
        .position(|s| !s.members.contains_key(&id("b")))
        .expect("b was dropped");
    assert!(
        out_of_set < out_of_members,
        "dropped from membership in the same write"
    );
}

#[test]
fn address_changes_are_recorded_and_handed_to_standbys() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1)]);
    sim.replica("a").client_url = "http://a-new:7000".into();
    sim.run_for(200);
    assert_eq!(
        sim.stored().members[&id("a")].client_url,
        "http://a-new:7000"
    );
    assert_eq!(
        sim.stored().active.as_ref().unwrap().client_url,
        "http://a-new:7000"
    );
    sim.assert_decision(&["a changed client_url http://a:7000 → http://a-new:7000"]);
    let reply = sim.replicas[&id("b")].last_reply.clone().unwrap();
    assert_eq!(reply.active.unwrap().client_url, "http://a-new:7000");
}

#[test]
fn status_shows_roles_lag_sync_membership_and_reasons() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1), ("c", 0)]);
    sim.replica("c").caught_up = false;
    sim.write(4);
    sim.run_for(150);
    let st = sim.core.status(sim.now);
    assert_eq!(st.active, Some(id("a")));
    assert_eq!(st.epoch, sim.stored().epoch);
    assert_eq!(st.replicas.len(), 3);
    let a = &st.replicas[0];
    assert_eq!((a.role, a.lag_entries), (Role::Active, None));
    let b = &st.replicas[1];
    assert_eq!(b.role, Role::Standby);
    assert!(b.in_sync_set && b.sync_confirmed);
    assert_eq!(b.lag_entries, Some(0));
    assert_eq!(b.not_eligible, None);
    let c = &st.replicas[2];
    assert_eq!(c.lag_entries, Some(4));
    assert_eq!(c.priority, 0);
    assert!(c.not_eligible.as_deref().unwrap().contains("priority 0"));
    assert!(c.last_heartbeat_age_ms.unwrap() < 100);
    assert_eq!(st.failover.candidate, Some(id("b")));
    assert!(st.failover.lease_wait_left_ms > 1000);
    assert!(!st.recent_decisions.is_empty() && !st.history.is_empty());
    assert!(st
        .history
        .iter()
        .any(|d| d.reason.contains("first formation")));
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["replicas"][0]["role"], "active");
    assert_eq!(json["active"], "a");
    assert!(json["replicas"][1]["position"]
        .as_str()
        .unwrap()
        .contains('.'));
    let back: crate::status::ClusterStatus = serde_json::from_value(json).unwrap();
    assert_eq!(back, st);
}

#[test]
fn decisions_carry_wall_clock_times_from_the_monotonic_clock() {
    let mut sim = Sim::new(ClusterParams::default());
    sim.add("a", Position::new(0, 1), 1);
    sim.run_until(2001);
    let formation = sim
        .core
        .recent_decisions()
        .find(|d| d.reason.contains("first formation: a"))
        .unwrap()
        .clone();
    assert_eq!(formation.unix_ms, super::harness::UNIX_AT_ZERO + 2000);
    assert!(formation.taken);
    assert_eq!(formation.epoch.0, 1);
}

#[test]
fn a_forced_promotion_is_refused_while_anything_safer_is_possible_then_names_the_standby() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1), ("c", 1)]);
    sim.write(5);
    sim.run_for(300);
    assert_eq!(sim.stored().sync_set, vec![id("b")]);
    let refusal = |sim: &mut Sim, node: &str| match sim.core.force_promote(&id(node), sim.now) {
        Ok(_) => panic!("forcing {node} was allowed"),
        Err(e) => (e.code(), e.to_string()),
    };
    let (code, message) = refusal(&mut sim, "c");
    assert_eq!(code, "cannot_force");
    assert!(message.contains("is alive"), "{message}");
    assert!(message.contains("switchover --to c"), "{message}");

    // The active and its only sync standby die: no safe promotion exists.
    sim.kill("a");
    sim.kill("b");
    sim.run_for(500);
    let (_, message) = refusal(&mut sim, "c");
    assert!(message.contains("lease may still hold"), "{message}");
    sim.run_for(1000);
    assert_eq!(
        sim.active().as_deref(),
        Some("a"),
        "nobody is promoted safely"
    );
    let (_, message) = refusal(&mut sim, "zz");
    assert!(message.contains("not a member"), "{message}");
    let (_, message) = refusal(&mut sim, "b");
    assert!(message.contains("not heartbeating"), "{message}");

    let epoch = sim.stored().epoch;
    let w = match sim.core.force_promote(&id("c"), sim.now) {
        Ok(w) => w,
        Err(e) => panic!("{e}"),
    };
    sim.persist(w);
    assert_eq!(sim.active().as_deref(), Some("c"));
    assert_eq!(sim.stored().epoch, epoch.checked_next().unwrap());
    sim.assert_decision(&["FORCED promotion of c", "may be lost", "sync set [b]"]);
    sim.run_for(300);
    assert_eq!(sim.replicas[&id("c")].role, Role::Active);
}

#[test]
fn a_forced_promotion_is_refused_when_the_arbiter_can_promote_safely() {
    let mut sim = Sim::formed(ClusterParams::default(), &[("a", 1), ("b", 1), ("c", 1)]);
    sim.write(5);
    sim.run_for(300);
    sim.auto_tick = false;
    sim.kill("a");
    let t_grant = sim.last_grant_at().unwrap();
    sim.run_until(t_grant.0 + 1050);
    // b's next heartbeat (in which it would be promoted) comes after the
    // lease ends: in between, b is the safe choice and c may not be forced.
    let now = sim.now;
    sim.replica("b").next_hb = now + 100;
    sim.run_until(t_grant.0 + 1120);
    assert_eq!(sim.active().as_deref(), Some("a"));
    match sim.core.force_promote(&id("c"), sim.now) {
        Ok(_) => panic!("forcing c was allowed while b could be promoted safely"),
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("b can be promoted without losing"),
                "{message}"
            );
        }
    }
}
