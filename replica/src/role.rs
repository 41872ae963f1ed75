//! The replica's role transitions as a plain state machine: heartbeat
//! replies in, actions out. No I/O, no clock reads — the heartbeat loop
//! (`heartbeat.rs`) feeds it and carries out what it returns.
//!
//! Rules (DESIGN.md, "Heartbeats, lease and fencing", "Arbiter decisions"):
//! - Every replica starts as a standby; only a reply saying `active` in an
//!   epoch makes it active, and that reply also extends its lease (from the
//!   time the heartbeat was *sent*).
//! - Replies are applied in heartbeat order; a reply to an older heartbeat
//!   than one already applied is ignored (it may describe a past world).
//! - A grant for an epoch this replica already took writes in and lost
//!   (restart, demotion) is refused: it may have shipped entries it no
//!   longer has (node_state.rs). The arbiter sees `active_epoch` and opens a
//!   new epoch.
//! - A reply saying `standby` demotes an active at once; naming an active
//!   makes the standby follow it.
//! - `switchover_to` fences the active (no new writes) until the reply that
//!   demotes it, or one that grants it again without `switchover_to`.

use proto_common::heartbeat::{ActiveInfo, HeartbeatReply, Role};
use proto_common::{Epoch, NodeId};

use crate::sync_set::SyncSet;

/// What the replica is, as far as this machine knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Local {
    Standby,
    Active {
        epoch: Epoch,
    },
    /// Active, but handing over to `target`: takes no new writes.
    Fenced {
        epoch: Epoch,
        target: NodeId,
    },
}

/// Something the heartbeat loop must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Remember a newer epoch.
    NoteEpoch(Epoch),
    /// Become the active in `epoch` with this sync set.
    Promote { epoch: Epoch, sync: SyncSet },
    /// Extend the lease: writes allowed until `t_send + lease`.
    Renew { t_send: u64, lease_nanos: u64 },
    /// Adopt a new sync set or rule (active only).
    SetSyncSet(SyncSet),
    /// Stop taking writes now.
    Demote { why: String },
    /// Follow this active.
    Follow { active: ActiveInfo, epoch: Epoch },
    /// Stop new writes and drain to `target` (planned switchover).
    Fence { target: NodeId },
    /// The switchover was cancelled: take writes again.
    Unfence,
    /// Something worth a log line at warn level.
    Warn(String),
}

/// The role state machine.
#[derive(Debug)]
pub struct RoleMachine {
    me: NodeId,
    local: Local,
    /// Highest epoch seen.
    seen: Epoch,
    /// Highest epoch this replica took writes in (persisted by the node).
    active_epoch: Epoch,
    /// Highest heartbeat sequence number whose reply was applied.
    applied_seq: u64,
    /// Sync set and rule last adopted.
    sync: SyncSet,
}

impl RoleMachine {
    pub fn new(me: NodeId, seen: Epoch, active_epoch: Epoch) -> RoleMachine {
        RoleMachine {
            me,
            local: Local::Standby,
            seen,
            active_epoch,
            applied_seq: 0,
            sync: SyncSet::default(),
        }
    }

    pub fn local(&self) -> &Local {
        &self.local
    }

    pub fn active_epoch(&self) -> Epoch {
        self.active_epoch
    }

    /// Another path (a standby's handshake) showed a newer epoch exists:
    /// the active was deposed.
    pub fn deposed(&mut self, epoch: Epoch) {
        self.seen = self.seen.max(epoch);
        self.local = Local::Standby;
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
        if epoch > self.seen {
            self.seen = epoch;
            out.push(Action::NoteEpoch(epoch));
        }
        let lease_nanos = reply.params.replica_lease().as_nanos() as u64;
        match reply.role {
            Role::Active => self.on_grant(epoch, t_send, lease_nanos, reply, &mut out),
            Role::Standby => self.on_standby(epoch, reply, &mut out),
        }
        out
    }

    fn on_grant(
        &mut self,
        epoch: Epoch,
        t_send: u64,
        lease_nanos: u64,
        reply: &HeartbeatReply,
        out: &mut Vec<Action>,
    ) {
        let current = match &self.local {
            Local::Active { epoch: e } | Local::Fenced { epoch: e, .. } => Some(*e),
            Local::Standby => None,
        };
        if current != Some(epoch) {
            if epoch <= self.active_epoch {
                out.push(Action::Warn(format!(
                    "refusing the grant for epoch {epoch}: this replica took writes in epoch {} \
                     and lost the role since (restart or demotion); waiting for a new epoch",
                    self.active_epoch
                )));
                return;
            }
            self.active_epoch = epoch;
            self.sync = SyncSet::from_reply(reply);
            self.local = Local::Active { epoch };
            out.push(Action::Promote {
                epoch,
                sync: self.sync.clone(),
            });
        } else {
            let sync = SyncSet::from_reply(reply);
            if sync != self.sync {
                self.sync = sync.clone();
                out.push(Action::SetSyncSet(sync));
            }
        }
        out.push(Action::Renew {
            t_send,
            lease_nanos,
        });
        match (&self.local, &reply.switchover_to) {
            (Local::Active { epoch }, Some(target)) => {
                out.push(Action::Fence {
                    target: target.clone(),
                });
                self.local = Local::Fenced {
                    epoch: *epoch,
                    target: target.clone(),
                };
            }
            (Local::Fenced { epoch, .. }, None) => {
                out.push(Action::Unfence);
                self.local = Local::Active { epoch: *epoch };
            }
            _ => {}
        }
    }

    fn on_standby(&mut self, epoch: Epoch, reply: &HeartbeatReply, out: &mut Vec<Action>) {
        if self.local != Local::Standby {
            let why = match &reply.active {
                Some(a) => format!(
                    "the arbiter names {} the active in epoch {epoch}",
                    a.node_id
                ),
                None => format!("the arbiter withholds the grant in epoch {epoch}"),
            };
            out.push(Action::Demote { why });
            self.local = Local::Standby;
        }
        if let Some(active) = &reply.active {
            if active.node_id != self.me {
                out.push(Action::Follow {
                    active: active.clone(),
                    epoch,
                });
            }
        }
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
                Action::Renew { .. } => "renew",
                Action::SetSyncSet(_) => "set_sync_set",
                Action::Demote { .. } => "demote",
                Action::Follow { .. } => "follow",
                Action::Fence { .. } => "fence",
                Action::Unfence => "unfence",
                Action::Warn(_) => "warn",
            })
            .collect()
    }

    #[test]
    fn scripted_life_of_a_replica() {
        let mut m = RoleMachine::new(id("a"), Epoch(0), Epoch(0));
        // Formation: b is active; a follows.
        let out = m.on_reply(1, 10, &reply(Role::Standby, 1, Some("b")));
        assert_eq!(kinds(&out), ["note_epoch", "follow"]);
        // Failover to a: promote and renew from the send time.
        let out = m.on_reply(2, 20, &reply(Role::Active, 2, Some("a")));
        assert_eq!(kinds(&out), ["note_epoch", "promote", "renew"]);
        assert_eq!(
            out[2],
            Action::Renew {
                t_send: 20,
                lease_nanos: 900_000_000
            }
        );
        // Renewal in the same epoch: renew only.
        let out = m.on_reply(3, 30, &reply(Role::Active, 2, Some("a")));
        assert_eq!(kinds(&out), ["renew"]);
        // A stale reply (older heartbeat) changes nothing.
        assert!(m
            .on_reply(2, 40, &reply(Role::Standby, 2, Some("b")))
            .is_empty());
        // Sync set change.
        let mut r = reply(Role::Active, 2, Some("a"));
        r.sync_set = vec![id("b")];
        r.sync_version = 2;
        assert_eq!(kinds(&m.on_reply(4, 40, &r)), ["set_sync_set", "renew"]);
        // strict mode switched on: the rule changes without a new version.
        r.params.strict = true;
        let out = m.on_reply(5, 45, &r);
        assert_eq!(kinds(&out), ["set_sync_set", "renew"]);
        assert!(matches!(&out[0], Action::SetSyncSet(s) if s.strict && s.version == 2));
        // Switchover ordered, then completed: fence, then demote and follow.
        r.switchover_to = Some(id("b"));
        assert_eq!(kinds(&m.on_reply(6, 50, &r)), ["renew", "fence"]);
        let out = m.on_reply(7, 60, &reply(Role::Standby, 3, Some("b")));
        assert_eq!(kinds(&out), ["note_epoch", "demote", "follow"]);
        assert_eq!(m.local(), &Local::Standby);
        // Never active again in epoch 2.
        let out = m.on_reply(8, 70, &reply(Role::Active, 2, Some("a")));
        assert_eq!(kinds(&out), ["warn"]);
        assert_eq!(m.local(), &Local::Standby);
    }

    #[test]
    fn a_restarted_replica_refuses_its_old_epoch_and_takes_a_new_one() {
        let mut m = RoleMachine::new(id("a"), Epoch(4), Epoch(4));
        let out = m.on_reply(1, 10, &reply(Role::Active, 4, Some("a")));
        assert_eq!(kinds(&out), ["warn"]);
        let out = m.on_reply(2, 20, &reply(Role::Active, 5, Some("a")));
        assert_eq!(kinds(&out), ["note_epoch", "promote", "renew"]);
        assert_eq!(m.active_epoch(), Epoch(5));
    }

    #[test]
    fn cancelled_switchover_unfences() {
        let mut m = RoleMachine::new(id("a"), Epoch(0), Epoch(0));
        m.on_reply(1, 1, &reply(Role::Active, 1, Some("a")));
        let mut r = reply(Role::Active, 1, Some("a"));
        r.switchover_to = Some(id("b"));
        assert_eq!(kinds(&m.on_reply(2, 2, &r)), ["renew", "fence"]);
        r.switchover_to = None;
        assert_eq!(kinds(&m.on_reply(3, 3, &r)), ["renew", "unfence"]);
        assert_eq!(m.local(), &Local::Active { epoch: Epoch(1) });
    }

    #[test]
    fn a_reply_with_an_implausible_epoch_or_parameters_changes_nothing() {
        let mut m = RoleMachine::new(id("a"), Epoch(3), Epoch(0));
        let out = m.on_reply(1, 1, &reply(Role::Active, u64::MAX, Some("a")));
        assert_eq!(kinds(&out), ["warn"]);
        assert_eq!(m.local(), &Local::Standby);
        let mut bad = reply(Role::Active, 4, Some("a"));
        bad.params.lease_ms = 1;
        assert_eq!(kinds(&m.on_reply(2, 2, &bad)), ["warn"]);
        let out = m.on_reply(3, 3, &reply(Role::Active, 4, Some("a")));
        assert_eq!(kinds(&out), ["note_epoch", "promote", "renew"]);
    }

    #[test]
    fn withheld_grant_demotes_without_following() {
        let mut m = RoleMachine::new(id("a"), Epoch(0), Epoch(0));
        m.on_reply(1, 1, &reply(Role::Active, 1, Some("a")));
        let out = m.on_reply(2, 2, &reply(Role::Standby, 1, None));
        assert_eq!(kinds(&out), ["demote"]);
    }
}
