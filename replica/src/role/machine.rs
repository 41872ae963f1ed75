//! The replica's role transitions as a plain state machine: events in
//! (heartbeat replies, a newer epoch seen elsewhere, a step-down), the new
//! role and actions out. No I/O and no clock reads: the owner (`roles.rs`)
//! publishes the role, the executor (`repl::replication`) carries out the
//! actions.
//!
//! Rules (DESIGN.md, "Roles", "The lease"):
//! - Every replica starts as a standby; only a reply saying `active` in an
//!   epoch makes it active, and that reply also renews the term's lease
//!   (from the time the heartbeat was *sent*).
//! - A grant first *opens* its epoch (`Opening`: the log's first entry of
//!   the epoch is written by the executor); only then is the replica
//!   `Active` and takes writes. A term that ended meanwhile is not reopened.
//! - Replies are applied in heartbeat order; a reply to an older heartbeat
//!   than one already applied is ignored (it may describe a past world).
//! - A grant for an epoch this replica already took writes in and lost
//!   (restart, demotion) is refused: it may have shipped entries it no
//!   longer has (node_state.rs). The arbiter sees `active_epoch` and opens a
//!   new epoch.
//! - A reply saying `standby`, a newer epoch seen from a standby, a failed
//!   write log or upstream: the term ends at once; naming an active makes
//!   the standby follow it.
//! - `switchover_to` fences the active (no new writes) until the reply that
//!   demotes it, or one that grants it again without `switchover_to`.

use std::sync::Arc;
use std::time::Duration;

use proto_common::heartbeat::{ActiveInfo, HeartbeatReply, Role};
use proto_common::{Epoch, NodeId};

use super::term::Term;
use crate::sync_set::SyncSet;

/// What the replica is. One value; each state carries its own data.
#[derive(Clone, Debug)]
pub enum RoleState {
    /// Not taking writes: `why` says why (for clients); `following` is the
    /// active it follows, when it knows one.
    Standby {
        following: Option<ActiveInfo>,
        why: String,
    },
    /// Granted `term`; its epoch is being opened in the log. No writes yet.
    Opening(Arc<Term>),
    /// The active: takes writes while the term's lease holds.
    Active(Arc<Term>),
    /// Active, but handing over to `target`: takes no new writes, still
    /// commits and answers the ones it holds. `drained`: this replica has
    /// told the arbiter that `target` holds every entry it wrote.
    Fenced {
        term: Arc<Term>,
        target: NodeId,
        drained: bool,
    },
}

impl RoleState {
    fn standby(why: impl Into<String>) -> RoleState {
        RoleState::Standby {
            following: None,
            why: why.into(),
        }
    }

    /// The term this replica is active in (also while fenced).
    pub fn term(&self) -> Option<&Arc<Term>> {
        match self {
            RoleState::Active(t) | RoleState::Fenced { term: t, .. } => Some(t),
            RoleState::Standby { .. } | RoleState::Opening(_) => None,
        }
    }

    /// The epoch new client writes are stamped with: active and not fenced.
    pub fn writable_epoch(&self) -> Option<Epoch> {
        match self {
            RoleState::Active(t) => Some(t.epoch()),
            _ => None,
        }
    }

    /// The term this replica has been granted and not lost, including one
    /// still being opened (its log and commit rule belong to it).
    fn granted(&self) -> Option<&Arc<Term>> {
        match self {
            RoleState::Opening(t) => Some(t),
            other => other.term(),
        }
    }

    /// The role as heartbeats and status report it.
    pub fn role(&self) -> Role {
        match self.term() {
            Some(_) => Role::Active,
            None => Role::Standby,
        }
    }

    pub fn following(&self) -> Option<&ActiveInfo> {
        match self {
            RoleState::Standby { following, .. } => following.as_ref(),
            _ => None,
        }
    }

    pub fn fenced_for(&self) -> Option<&NodeId> {
        match self {
            RoleState::Fenced { target, .. } => Some(target),
            _ => None,
        }
    }
}

/// Something the executor must do, in order.
#[derive(Clone, Debug)]
pub enum Action {
    /// Persist a newer epoch seen.
    NoteEpoch(Epoch),
    /// Open `term`'s epoch in the log, lead under `sync`, then report
    /// `opened` (or `promotion_failed`).
    Promote { term: Arc<Term>, sync: SyncSet },
    /// Adopt a new sync set or rule (active only).
    SetSyncSet(SyncSet),
    /// `term` ended: stop leading it and taking writes in it.
    Demote { term: Arc<Term>, why: String },
    /// Follow this active.
    Follow { active: ActiveInfo, epoch: Epoch },
    /// New writes stop; let the ones already accepted reach the log.
    Fence { target: NodeId },
    /// The switchover was cancelled: writes are taken again.
    Unfence,
    /// Something worth a log line at warn level.
    Warn(String),
}

/// The role state machine.
#[derive(Debug)]
pub struct RoleMachine {
    me: NodeId,
    state: RoleState,
    /// Highest epoch seen.
    seen: Epoch,
    /// Highest epoch this replica took writes in (persisted by the node).
    active_epoch: Epoch,
    /// Highest heartbeat sequence number whose reply was applied.
    applied_seq: u64,
    /// Sync set and rule last adopted.
    sync: SyncSet,
    /// The cluster runs with `sync_standbys = 0`, per the last reply.
    async_mode: bool,
}

impl RoleMachine {
    pub fn new(me: NodeId, seen: Epoch, active_epoch: Epoch) -> RoleMachine {
        RoleMachine {
            me,
            state: RoleState::standby("this replica has not been made active"),
            seen,
            active_epoch,
            applied_seq: 0,
            sync: SyncSet::default(),
            async_mode: false,
        }
    }

    pub fn state(&self) -> &RoleState {
        &self.state
    }

    pub fn seen(&self) -> Epoch {
        self.seen
    }

    pub fn async_mode(&self) -> bool {
        self.async_mode
    }

    pub fn active_epoch(&self) -> Epoch {
        self.active_epoch
    }

    /// Records an epoch seen elsewhere (a frame, the log). Returns whether
    /// it is new.
    pub fn note_epoch(&mut self, epoch: Epoch) -> bool {
        if epoch > self.seen {
            self.seen = epoch;
            true
        } else {
            false
        }
    }

    /// Runs as its own active with no arbiter: a term whose lease never
    /// ends, in `epoch`, already open in the log.
    pub fn standalone(&mut self, epoch: Epoch) -> Arc<Term> {
        let term = Term::unlimited(epoch);
        self.note_epoch(epoch);
        self.active_epoch = self.active_epoch.max(epoch);
        self.state = RoleState::Active(term.clone());
        term
    }

    /// The epoch of `term` is open in the log: the replica is the active.
    /// `None` when the term ended meanwhile (it is not reopened).
    pub fn opened(&mut self, epoch: Epoch) -> Option<Arc<Term>> {
        match &self.state {
            RoleState::Opening(t) if t.epoch() == epoch && !t.has_ended() => {
                let term = t.clone();
                self.state = RoleState::Active(term.clone());
                Some(term)
            }
            _ => None,
        }
    }

    /// Opening `epoch` failed: back to standby; the arbiter opens a new
    /// epoch. The actions for the rest of that reply do not apply.
    pub fn promotion_failed(&mut self, epoch: Epoch, why: &str) -> Vec<Action> {
        match self.state.granted() {
            Some(t) if t.epoch() == epoch => self.step_down(&format!("promotion failed: {why}")),
            _ => Vec::new(),
        }
    }

    /// Another path (a standby's handshake) showed a newer epoch exists:
    /// the active was deposed.
    pub fn deposed(&mut self, epoch: Epoch, why: &str) -> Vec<Action> {
        let mut out = Vec::new();
        if self.note_epoch(epoch) {
            out.push(Action::NoteEpoch(epoch));
        }
        out.extend(self.step_down(why));
        out
    }

    /// Ends the term, if any (a failed log, an upstream that cannot be
    /// used, a lost race): the replica becomes a standby that follows
    /// nobody until told whom to follow.
    pub fn step_down(&mut self, why: &str) -> Vec<Action> {
        let Some(term) = self.state.granted().cloned() else {
            return Vec::new();
        };
        term.end();
        self.state = RoleState::standby(why);
        vec![Action::Demote {
            term,
            why: why.to_string(),
        }]
    }

    /// Applies the reply to heartbeat `seq`, sent at `t_send`.
    pub fn on_reply(&mut self, seq: u64, t_send: u64, reply: &HeartbeatReply) -> Vec<Action> {
        let mut out = Vec::new();
        if seq <= self.applied_seq {
            return out;
        }
        self.applied_seq = seq;
        let epoch = reply.epoch;
        if let Err(why) = epoch
            .check_plausible(self.seen)
            .and_then(|_| reply.params.validate())
        {
            out.push(Action::Warn(format!("ignoring the arbiter's reply: {why}")));
            return out;
        }
        self.set_async_mode(reply.params.sync_standbys == 0);
        if self.note_epoch(epoch) {
            out.push(Action::NoteEpoch(epoch));
        }
        match reply.role {
            Role::Active => {
                let lease = reply.params.replica_lease();
                let sync = SyncSet::from_reply(reply);
                self.on_grant(epoch, sync, (t_send, lease), &mut out);
                self.on_switchover(reply.switchover_to.as_ref(), &mut out);
            }
            Role::Standby => self.on_standby(epoch, reply.active.as_ref(), &mut out),
        }
        out
    }

    /// Granted `epoch` (again) with `sync`; the lease runs `lease.1` from
    /// `lease.0`, the send time of the heartbeat that earned the grant.
    pub fn grant(&mut self, epoch: Epoch, sync: SyncSet, lease: (u64, Duration)) -> Vec<Action> {
        let mut out = Vec::new();
        if self.note_epoch(epoch) {
            out.push(Action::NoteEpoch(epoch));
        }
        self.on_grant(epoch, sync, lease, &mut out);
        out
    }

    fn on_grant(
        &mut self,
        epoch: Epoch,
        sync: SyncSet,
        (t_send, length): (u64, Duration),
        out: &mut Vec<Action>,
    ) {
        let current = self.state.granted().filter(|t| t.epoch() == epoch).cloned();
        let term = match current {
            Some(term) => {
                if sync != self.sync {
                    self.sync = sync.clone();
                    out.push(Action::SetSyncSet(sync));
                }
                term
            }
            None => {
                if epoch <= self.active_epoch {
                    out.push(Action::Warn(format!(
                        "refusing the grant for epoch {epoch}: this replica took writes in epoch \
                         {} and lost the role since (restart or demotion); waiting for a new epoch",
                        self.active_epoch
                    )));
                    return;
                }
                // A term of an older epoch still held ends first.
                out.extend(self.step_down(&format!("granted the newer epoch {epoch}")));
                self.active_epoch = epoch;
                self.sync = sync.clone();
                let term = Term::new(epoch);
                self.state = RoleState::Opening(term.clone());
                out.push(Action::Promote {
                    term: term.clone(),
                    sync,
                });
                term
            }
        };
        term.renew(t_send, length);
    }

    fn on_switchover(&mut self, target: Option<&NodeId>, out: &mut Vec<Action>) {
        match (&self.state, target) {
            (RoleState::Active(_), Some(target)) => out.extend(self.fence(target.clone())),
            (RoleState::Fenced { term, .. }, None) => {
                out.push(Action::Unfence);
                self.state = RoleState::Active(term.clone());
            }
            _ => {}
        }
    }

    fn on_standby(&mut self, epoch: Epoch, active: Option<&ActiveInfo>, out: &mut Vec<Action>) {
        if let RoleState::Fenced {
            term,
            target,
            drained: true,
        } = &self.state
        {
            if active.is_some_and(|a| a.node_id == *target) {
                term.end_handed_over();
            }
        }
        if self.state.granted().is_some() {
            let why = match active {
                Some(a) => format!(
                    "this replica was demoted: the arbiter names {} the active in epoch {epoch}",
                    a.node_id
                ),
                None => format!("the arbiter withholds the grant in epoch {epoch}"),
            };
            out.extend(self.step_down(&why));
        }
        if let Some(active) = active.filter(|a| a.node_id != self.me) {
            out.extend(self.follow(active.clone(), epoch));
        }
    }

    /// Stops new writes for a planned switchover to `target` (active only).
    pub fn fence(&mut self, target: NodeId) -> Vec<Action> {
        let RoleState::Active(term) = &self.state else {
            return Vec::new();
        };
        self.state = RoleState::Fenced {
            term: term.clone(),
            target: target.clone(),
            drained: false,
        };
        vec![Action::Fence { target }]
    }

    /// This replica reported (in a heartbeat) that it is fenced for
    /// `target` and `target` holds every entry it wrote: if the arbiter
    /// then names `target` the active, the handover is complete.
    pub fn drained(&mut self, to: &NodeId) {
        if let RoleState::Fenced {
            target, drained, ..
        } = &mut self.state
        {
            if target == to {
                *drained = true;
            }
        }
    }

    /// Records whether the cluster runs with `sync_standbys = 0` (from a
    /// heartbeat reply's parameters).
    pub fn set_async_mode(&mut self, on: bool) {
        self.async_mode = on;
    }

    /// Follows `active` in `epoch` (ending a term first, if any). Following
    /// the one already followed changes nothing.
    pub fn follow(&mut self, active: ActiveInfo, epoch: Epoch) -> Vec<Action> {
        let mut out = Vec::new();
        if self.note_epoch(epoch) {
            out.push(Action::NoteEpoch(epoch));
        }
        out.extend(self.step_down(&format!(
            "this replica was demoted: {} is the active in epoch {epoch}",
            active.node_id
        )));
        if self.state.following() == Some(&active) {
            return out;
        }
        self.state = RoleState::Standby {
            why: format!(
                "this replica is a standby; the active is {}",
                active.node_id
            ),
            following: Some(active.clone()),
        };
        out.push(Action::Follow { active, epoch });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_common::params::ClusterParams;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn info(s: &str) -> ActiveInfo {
        ActiveInfo {
            node_id: id(s),
            client_url: format!("http://{s}"),
            repl_addr: format!("{s}:1"),
        }
    }

    fn reply(role: Role, epoch: u64, active: Option<&str>) -> HeartbeatReply {
        HeartbeatReply {
            seq: 0,
            role,
            epoch: Epoch(epoch),
            active: active.map(info),
            sync_set: vec![],
            sync_version: 1,
            params: ClusterParams::default(),
            switchover_to: None,
            next_heartbeat_ms: None,
            leader: None,
            reinit: None,
        }
    }

    fn kinds(actions: &[Action]) -> Vec<&'static str> {
        actions
            .iter()
            .map(|a| match a {
                Action::NoteEpoch(_) => "note_epoch",
                Action::Promote { .. } => "promote",
                Action::SetSyncSet(_) => "set_sync_set",
                Action::Demote { .. } => "demote",
                Action::Follow { .. } => "follow",
                Action::Fence { .. } => "fence",
                Action::Unfence => "unfence",
                Action::Warn(_) => "warn",
            })
            .collect()
    }

    fn state(m: &RoleMachine) -> &'static str {
        match m.state() {
            RoleState::Standby {
                following: None, ..
            } => "standby",
            RoleState::Standby {
                following: Some(_), ..
            } => "following",
            RoleState::Opening(_) => "opening",
            RoleState::Active(_) => "active",
            RoleState::Fenced { .. } => "fenced",
        }
    }

    /// The term's lease deadline, as `t_send + lease` would give it.
    fn lease_left_at(m: &RoleMachine, now: u64) -> Option<u64> {
        m.state
            .granted()
            .and_then(|t| t.lease().remaining_nanos_at(now))
    }

    #[test]
    fn scripted_life_of_a_replica() {
        let mut m = RoleMachine::new(id("a"), Epoch(0), Epoch(0));
        // Formation: b is active; a follows.
        let out = m.on_reply(1, 10, &reply(Role::Standby, 1, Some("b")));
        assert_eq!(kinds(&out), ["note_epoch", "follow"]);
        assert_eq!(state(&m), "following");
        // Failover to a: promote, with the lease counted from the send time;
        // writes only once the epoch is open.
        let out = m.on_reply(2, 20, &reply(Role::Active, 2, Some("a")));
        assert_eq!(kinds(&out), ["note_epoch", "promote"]);
        assert_eq!(state(&m), "opening");
        assert_eq!(m.state().writable_epoch(), None);
        assert_eq!(lease_left_at(&m, 20), Some(900_000_000));
        assert!(m.opened(Epoch(2)).is_some());
        assert_eq!(m.state().writable_epoch(), Some(Epoch(2)));
        // Renewal in the same epoch: the lease moves, nothing to do.
        let out = m.on_reply(3, 30, &reply(Role::Active, 2, Some("a")));
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(lease_left_at(&m, 30), Some(900_000_000));
        // A stale reply (older heartbeat) changes nothing.
        assert!(m
            .on_reply(2, 40, &reply(Role::Standby, 2, Some("b")))
            .is_empty());
        assert_eq!(state(&m), "active");
        // Sync set change.
        let mut r = reply(Role::Active, 2, Some("a"));
        r.sync_set = vec![id("b")];
        r.sync_version = 2;
        assert_eq!(kinds(&m.on_reply(4, 40, &r)), ["set_sync_set"]);
        // strict mode switched on: the rule changes without a new version.
        r.params.strict = true;
        let out = m.on_reply(5, 45, &r);
        assert_eq!(kinds(&out), ["set_sync_set"]);
        assert!(matches!(&out[0], Action::SetSyncSet(s) if s.strict && s.version == 2));
        // Switchover ordered, then completed: fence, then demote and follow.
        r.switchover_to = Some(id("b"));
        assert_eq!(kinds(&m.on_reply(6, 50, &r)), ["fence"]);
        assert_eq!(state(&m), "fenced");
        assert_eq!(m.state().writable_epoch(), None);
        let term = m.state().term().unwrap().clone();
        let out = m.on_reply(7, 60, &reply(Role::Standby, 3, Some("b")));
        assert_eq!(kinds(&out), ["note_epoch", "demote", "follow"]);
        assert_eq!(state(&m), "following");
        assert!(term.has_ended() && !term.may_answer());
        // Never active again in epoch 2.
        let out = m.on_reply(8, 70, &reply(Role::Active, 2, Some("a")));
        assert_eq!(kinds(&out), ["warn"]);
        assert_eq!(state(&m), "following");
    }

    #[test]
    fn a_restarted_replica_refuses_its_old_epoch_and_takes_a_new_one() {
        let mut m = RoleMachine::new(id("a"), Epoch(4), Epoch(4));
        let out = m.on_reply(1, 10, &reply(Role::Active, 4, Some("a")));
        assert_eq!(kinds(&out), ["warn"]);
        let out = m.on_reply(2, 20, &reply(Role::Active, 5, Some("a")));
        assert_eq!(kinds(&out), ["note_epoch", "promote"]);
        assert_eq!(m.active_epoch(), Epoch(5));
    }

    #[test]
    fn cancelled_switchover_unfences() {
        let mut m = RoleMachine::new(id("a"), Epoch(0), Epoch(0));
        m.on_reply(1, 1, &reply(Role::Active, 1, Some("a")));
        m.opened(Epoch(1)).unwrap();
        let mut r = reply(Role::Active, 1, Some("a"));
        r.switchover_to = Some(id("b"));
        assert_eq!(kinds(&m.on_reply(2, 2, &r)), ["fence"]);
        r.switchover_to = None;
        assert_eq!(kinds(&m.on_reply(3, 3, &r)), ["unfence"]);
        assert_eq!(m.state().writable_epoch(), Some(Epoch(1)));
    }

    #[test]
    fn a_reply_with_an_implausible_epoch_or_parameters_changes_nothing() {
        let mut m = RoleMachine::new(id("a"), Epoch(3), Epoch(0));
        let out = m.on_reply(1, 1, &reply(Role::Active, u64::MAX, Some("a")));
        assert_eq!(kinds(&out), ["warn"]);
        assert_eq!(state(&m), "standby");
        let mut bad = reply(Role::Active, 4, Some("a"));
        bad.params.lease_ms = 1;
        assert_eq!(kinds(&m.on_reply(2, 2, &bad)), ["warn"]);
        let out = m.on_reply(3, 3, &reply(Role::Active, 4, Some("a")));
        assert_eq!(kinds(&out), ["note_epoch", "promote"]);
    }

    #[test]
    fn withheld_grant_demotes_without_following() {
        let mut m = RoleMachine::new(id("a"), Epoch(0), Epoch(0));
        m.on_reply(1, 1, &reply(Role::Active, 1, Some("a")));
        m.opened(Epoch(1)).unwrap();
        let out = m.on_reply(2, 2, &reply(Role::Standby, 1, None));
        assert_eq!(kinds(&out), ["demote"]);
        assert_eq!(state(&m), "standby");
    }

    #[test]
    fn a_term_deposed_while_its_epoch_is_opened_is_not_reopened() {
        let mut m = RoleMachine::new(id("a"), Epoch(0), Epoch(0));
        let out = m.on_reply(1, 1, &reply(Role::Active, 1, Some("a")));
        let Action::Promote { term, .. } = &out[1] else {
            panic!("{out:?}")
        };
        // A standby shows epoch 2 while the executor writes epoch 1's
        // first entry.
        let out = m.deposed(Epoch(2), "standby b has seen epoch 2");
        assert_eq!(kinds(&out), ["note_epoch", "demote"]);
        assert!(term.has_ended());
        assert!(m.opened(Epoch(1)).is_none(), "an ended term opened");
        assert_eq!(state(&m), "standby");
        assert_eq!(m.seen(), Epoch(2));
        // Deposing a standby only notes the epoch.
        assert_eq!(kinds(&m.deposed(Epoch(3), "x")), ["note_epoch"]);
    }

    #[test]
    fn a_failed_promotion_ends_the_term_and_only_that_one() {
        let mut m = RoleMachine::new(id("a"), Epoch(0), Epoch(0));
        m.on_reply(1, 1, &reply(Role::Active, 1, Some("a")));
        assert!(m.promotion_failed(Epoch(7), "other epoch").is_empty());
        let out = m.promotion_failed(Epoch(1), "the disk failed");
        assert_eq!(kinds(&out), ["demote"]);
        assert_eq!(state(&m), "standby");
        // The epoch stays taken: a new grant must be newer.
        assert_eq!(
            kinds(&m.on_reply(2, 2, &reply(Role::Active, 1, Some("a")))),
            ["warn"]
        );
    }

    #[test]
    fn only_a_drained_handover_lets_committed_writes_be_acknowledged_late() {
        let drained_run = |report_drained: bool, successor: &str| {
            let mut m = RoleMachine::new(id("a"), Epoch(0), Epoch(0));
            m.on_reply(1, 1, &reply(Role::Active, 1, Some("a")));
            let term = m.opened(Epoch(1)).unwrap();
            let mut r = reply(Role::Active, 1, Some("a"));
            r.switchover_to = Some(id("b"));
            m.on_reply(2, 2, &r);
            if report_drained {
                m.drained(&id("b"));
            }
            let out = m.on_reply(3, 3, &reply(Role::Standby, 2, Some(successor)));
            assert_eq!(kinds(&out), ["note_epoch", "demote", "follow"]);
            let guard = crate::role::ActiveGuard::new(term);
            (guard.check().is_ok(), guard.check_committed().is_ok())
        };
        assert_eq!(drained_run(true, "b"), (false, true));
        assert_eq!(
            drained_run(false, "b"),
            (false, false),
            "not reported drained"
        );
        assert_eq!(
            drained_run(true, "c"),
            (false, false),
            "another active was named"
        );
    }

    #[test]
    fn async_mode_follows_the_replies() {
        let mut m = RoleMachine::new(id("a"), Epoch(0), Epoch(0));
        let mut r = reply(Role::Standby, 1, Some("b"));
        r.params.sync_standbys = 0;
        m.on_reply(1, 1, &r);
        assert!(m.async_mode());
        r.params.sync_standbys = 1;
        m.on_reply(2, 2, &r);
        assert!(!m.async_mode());
    }
}
