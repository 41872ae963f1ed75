//! The one owner of a replica's role: the role machine behind a lock, and
//! the role it decided, published whole to every reader on a `watch`
//! channel. Nothing else holds a copy: the log reads the writable epoch
//! from here, the commit rule leads a [`Term`] it was handed, the API and
//! the RESP server answer through an [`ActiveGuard`] obtained here.
//!
//! Every change goes through the machine (`machine.rs`) and is published
//! before the lock is released, so readers see the transitions in the
//! order the machine made them. The actions it returns are carried out by
//! the caller (`repl::Replication::execute`).

use std::sync::Arc;

use parking_lot::Mutex;
use proto_common::heartbeat::{ActiveInfo, HeartbeatReply};
use proto_common::{Epoch, NodeId, Position};
use tokio::sync::watch;

use super::machine::{Action, RoleMachine, RoleState};
use super::term::{ActiveGuard, NotActive, Term};
use crate::sync_set::SyncSet;

/// The role as readers see it: one value, replaced whole on each change.
#[derive(Clone, Debug)]
pub struct RoleView {
    pub state: RoleState,
    /// Highest epoch seen.
    pub seen: Epoch,
    /// The cluster runs with `sync_standbys = 0` (only then may committed
    /// entries be cut by a new active: `repl::cut`). Unknown counts as sync.
    pub async_mode: bool,
}

impl RoleView {
    /// The active's client URL, when this replica is a standby that knows it.
    pub fn active_url(&self) -> Option<&str> {
        self.state.following().map(|a| a.client_url.as_str())
    }

    /// Why this replica takes no new writes now, for clients and status.
    pub fn not_writable(&self) -> Option<String> {
        match &self.state {
            RoleState::Active(_) => None,
            RoleState::Standby { why, .. } => Some(why.clone()),
            RoleState::Opening(t) => Some(format!(
                "this replica is becoming the active in epoch {}; retry in a moment",
                t.epoch()
            )),
            RoleState::Fenced { target, .. } => Some(
                NotActive::Fenced {
                    target: target.clone(),
                }
                .to_string(),
            ),
        }
    }

    fn not_active(&self) -> NotActive {
        match &self.state {
            RoleState::Fenced { target, .. } => NotActive::Fenced {
                target: target.clone(),
            },
            _ => NotActive::Standby {
                why: self.not_writable().unwrap_or_default(),
                active_url: self.active_url().map(str::to_string),
            },
        }
    }
}

/// The role's owner (see the module docs).
pub struct Roles {
    machine: Mutex<RoleMachine>,
    published: watch::Sender<Arc<RoleView>>,
}

impl Roles {
    pub fn new(me: NodeId, seen: Epoch, active_epoch: Epoch) -> Roles {
        let machine = RoleMachine::new(me, seen, active_epoch);
        let (published, _) = watch::channel(Arc::new(view_of(&machine)));
        Roles {
            machine: Mutex::new(machine),
            published,
        }
    }

    /// The role now.
    pub fn now(&self) -> Arc<RoleView> {
        self.published.borrow().clone()
    }

    /// Follows the role (the log thread, waiters for a new active).
    pub fn subscribe(&self) -> watch::Receiver<Arc<RoleView>> {
        self.published.subscribe()
    }

    /// Highest epoch this replica took writes in.
    pub fn active_epoch(&self) -> Epoch {
        self.machine.lock().active_epoch()
    }

    /// The right to take a new write now: active, not handing over, lease
    /// held.
    pub fn writer(&self) -> Result<ActiveGuard, NotActive> {
        let view = self.now();
        match &view.state {
            RoleState::Active(term) => {
                let guard = ActiveGuard::new(term.clone());
                guard.check()?;
                Ok(guard)
            }
            _ => Err(view.not_active()),
        }
    }

    /// The right to answer a read with the latest data: [`Roles::writer`],
    /// and the term's own epoch applied (`applied`, the state machine's
    /// position) — until then writes an earlier active acknowledged may
    /// still wait here to be applied. The one answer to "may this active
    /// serve a linearizable read?".
    pub fn reader(&self, applied: Position) -> Result<ActiveGuard, NotActive> {
        let guard = self.writer()?;
        if applied.epoch < guard.epoch() {
            return Err(NotActive::CatchingUp {
                epoch: guard.epoch(),
            });
        }
        Ok(guard)
    }

    /// Completes once the active this replica knows of is no longer the
    /// one at `url` (another was named, or this replica became the active):
    /// requests relayed to the old one stop waiting.
    pub fn active_moved(&self, url: Option<&str>) -> impl std::future::Future<Output = ()> {
        let url = url.map(str::to_string);
        let mut role = self.subscribe();
        async move {
            let _ = role.wait_for(|v| v.active_url() != url.as_deref()).await;
        }
    }

    /// Whether this replica holds a term whose lease holds, fenced or not
    /// (`/v1/role`, the load balancers' check).
    pub fn holds_lease(&self) -> bool {
        self.now().state.term().is_some_and(|t| t.may_answer())
    }

    /// Runs `f` on the machine and publishes what it decided.
    fn step<R>(&self, f: impl FnOnce(&mut RoleMachine) -> R) -> R {
        let mut machine = self.machine.lock();
        let out = f(&mut machine);
        let view = view_of(&machine);
        self.published.send_if_modified(|current| {
            let changed = !same(current, &view);
            if changed {
                *current = Arc::new(view);
            }
            changed
        });
        out
    }

    pub fn on_reply(&self, seq: u64, t_send: u64, reply: &HeartbeatReply) -> Vec<Action> {
        self.step(|m| m.on_reply(seq, t_send, reply))
    }

    /// A grant outside a heartbeat reply (tests drive roles this way).
    pub fn grant(
        &self,
        epoch: Epoch,
        sync: SyncSet,
        lease: (u64, std::time::Duration),
    ) -> Vec<Action> {
        self.step(|m| m.grant(epoch, sync, lease))
    }

    /// See `RoleMachine::drained`.
    pub fn drained(&self, target: &NodeId) {
        self.step(|m| m.drained(target))
    }

    pub fn fence(&self, target: NodeId) -> Vec<Action> {
        self.step(|m| m.fence(target))
    }

    /// As the arbiter's replies would say (tests drive it this way).
    pub fn set_async_mode(&self, on: bool) {
        self.step(|m| m.set_async_mode(on))
    }

    pub fn follow(&self, active: ActiveInfo, epoch: Epoch) -> Vec<Action> {
        self.step(|m| m.follow(active, epoch))
    }

    pub fn deposed(&self, epoch: Epoch, why: &str) -> Vec<Action> {
        self.step(|m| m.deposed(epoch, why))
    }

    pub fn step_down(&self, why: &str) -> Vec<Action> {
        self.step(|m| m.step_down(why))
    }

    pub fn opened(&self, epoch: Epoch) -> Option<Arc<Term>> {
        self.step(|m| m.opened(epoch))
    }

    pub fn promotion_failed(&self, epoch: Epoch, why: &str) -> Vec<Action> {
        self.step(|m| m.promotion_failed(epoch, why))
    }

    pub fn standalone(&self, epoch: Epoch) -> Arc<Term> {
        self.step(|m| m.standalone(epoch))
    }

    /// Records an epoch seen in a frame or the log; returns whether it is
    /// new (the caller persists it).
    pub fn note_epoch(&self, epoch: Epoch) -> bool {
        self.step(|m| m.note_epoch(epoch))
    }
}

fn view_of(m: &RoleMachine) -> RoleView {
    RoleView {
        state: m.state().clone(),
        seen: m.seen(),
        async_mode: m.async_mode(),
    }
}

/// Whether two views describe the same role (terms compared by identity).
fn same(a: &RoleView, b: &RoleView) -> bool {
    let state = match (&a.state, &b.state) {
        (
            RoleState::Standby {
                following: fa,
                why: wa,
            },
            RoleState::Standby {
                following: fb,
                why: wb,
            },
        ) => fa == fb && wa == wb,
        (RoleState::Opening(x), RoleState::Opening(y))
        | (RoleState::Active(x), RoleState::Active(y)) => Arc::ptr_eq(x, y),
        (
            RoleState::Fenced {
                term: x,
                target: tx,
                drained: dx,
            },
            RoleState::Fenced {
                term: y,
                target: ty,
                drained: dy,
            },
        ) => Arc::ptr_eq(x, y) && tx == ty && dx == dy,
        _ => false,
    };
    state && a.seen == b.seen && a.async_mode == b.async_mode
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_common::clock;
    use std::time::Duration;

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

    #[test]
    fn guards_follow_the_published_role() {
        let roles = Roles::new(id("a"), Epoch(0), Epoch(0));
        let mut changes = roles.subscribe();
        assert!(roles.writer().unwrap_err().is_standby());
        roles.follow(info("b"), Epoch(1));
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        match roles.writer() {
            Err(NotActive::Standby { active_url, .. }) => {
                assert_eq!(active_url.as_deref(), Some("http://b"))
            }
            other => panic!("{other:?}"),
        }
        // Granted epoch 2: not writable until the epoch is open.
        let lease = (clock::now_nanos(), Duration::from_secs(60));
        roles.grant(Epoch(2), SyncSet::local(), lease);
        assert!(roles.writer().unwrap_err().is_standby());
        roles.opened(Epoch(2)).unwrap();
        let guard = roles.writer().unwrap();
        assert_eq!(guard.epoch(), Epoch(2));
        assert!(roles.holds_lease());
        // A read needs the epoch applied.
        assert_eq!(
            roles.reader(Position::new(1, 9)).unwrap_err(),
            NotActive::CatchingUp { epoch: Epoch(2) }
        );
        assert!(roles.reader(Position::new(2, 10)).is_ok());
        // Deposed: the guard taken before fails at its next check.
        roles.deposed(Epoch(3), "standby b has seen epoch 3");
        assert_eq!(guard.check(), Err(NotActive::LeaseLapsed));
        assert!(roles.writer().unwrap_err().is_standby());
        assert!(!roles.holds_lease());
        assert_eq!(roles.now().seen, Epoch(3));
    }

    #[test]
    fn a_renewal_alone_publishes_nothing() {
        let roles = Roles::new(id("a"), Epoch(0), Epoch(0));
        let lease = (clock::now_nanos(), Duration::from_secs(60));
        roles.grant(Epoch(1), SyncSet::local(), lease);
        roles.opened(Epoch(1)).unwrap();
        let mut changes = roles.subscribe();
        roles.grant(Epoch(1), SyncSet::local(), lease);
        assert!(!changes.has_changed().unwrap());
        changes.mark_unchanged();
    }
}
