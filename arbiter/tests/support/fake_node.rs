//! `FakeNode`: a scripted replica that heartbeats an arbiter over HTTP and
//! obeys the replies — just enough of a replica to form a cluster, fill the
//! sync set and start a switchover.

use arbiter::cli::ArbiterClient;
use proto_common::heartbeat::{Heartbeat, HeartbeatReply, Role, StandbyProgress};
use proto_common::{Epoch, LogIndex, NodeId, Position};

use super::test_arbiter::CLUSTER;

/// A scripted replica: heartbeats as the last reply told it to be.
#[derive(Clone, Debug)]
pub struct FakeNode {
    /// Its id.
    pub id: NodeId,
    /// What it believes it is.
    pub role: Role,
    /// Highest epoch seen.
    pub epoch: Epoch,
    /// Highest epoch it was active in.
    pub active_epoch: Epoch,
    /// Log position.
    pub position: Position,
    /// Next heartbeat sequence number.
    pub seq: u64,
    /// The sync version last given (echoed while active).
    pub sync_version: u64,
    /// Standbys it reports as active (all caught up and connected).
    pub standbys: Vec<NodeId>,
}

impl FakeNode {
    /// A standby at `position`.
    pub fn new(id: &str, position: Position) -> FakeNode {
        FakeNode {
            id: NodeId::new(id).unwrap(),
            role: Role::Standby,
            epoch: position.epoch,
            active_epoch: Epoch::ZERO,
            position,
            seq: 0,
            sync_version: 0,
            standbys: Vec::new(),
        }
    }

    /// The heartbeat it would send now.
    pub fn heartbeat(&self) -> Heartbeat {
        let active = self.role == Role::Active;
        Heartbeat {
            cluster: CLUSTER.into(),
            node_id: self.id.clone(),
            seq: self.seq,
            client_url: format!("http://{}.test:7000", self.id),
            repl_addr: format!("{}.test:7100", self.id),
            role: self.role,
            epoch: self.epoch,
            active_epoch: self.active_epoch,
            position: self.position,
            commit_index: LogIndex(self.position.index.0),
            priority: 1,
            quarantined_entries: 0,
            healthy: true,
            detail: None,
            following: None,
            sync_version: if active { self.sync_version } else { 0 },
            standbys: if active {
                self.standbys
                    .iter()
                    .map(|s| StandbyProgress {
                        node_id: s.clone(),
                        acked: self.position,
                        lag_entries: 0,
                        lag_ms: 0,
                        connected: true,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            handoff: None,
            reinitialized: 0,
            can_reinit: true,
            upstream: None,
            disk: None,
            cannot_lead: None,
        }
    }

    /// Sends a heartbeat and applies the reply.
    pub async fn beat(&mut self, client: &ArbiterClient) -> HeartbeatReply {
        let reply: HeartbeatReply = client
            .post_json("/v1/heartbeat", &self.heartbeat())
            .await
            .expect("heartbeat answered");
        self.seq += 1;
        self.epoch = self.epoch.max(reply.epoch);
        self.role = reply.role;
        if reply.role == Role::Active {
            self.active_epoch = reply.epoch;
        }
        self.sync_version = reply.sync_version;
        reply
    }
}
