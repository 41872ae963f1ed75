//! Helpers of the HA tests over etcd (`etcd_*.rs`): real replicas behind
//! real etcd-backed arbiters (`arbiter_etcd_support::EtcdArbiter`).
//!
//! - [`start_replicas`]: replicas of one cluster heartbeating to a list of
//!   arbiter URLs, started together.
//! - [`wait_active`]: the leading arbiter and the replica itself agree on
//!   an active in an epoch above a given one (and, if asked, its sync set
//!   is confirmed).
//! - `role_watch`: [`RoleWatch`] polls every replica's own `/v1/status` in
//!   the background, all at once, for the whole of a fault; [`RoleLog`]
//!   then says whether a replica changed role or epoch, and whether two
//!   were ever active and writable in the same round.
//! - `ack_epochs`: [`check_single_epoch_acks`], from the clients' ledger:
//!   no write was acknowledged under two epochs at once.
//! - [`etcd_leader`]: which member of a local etcd cluster leads.
//! - [`wait_same_data`]: two replicas at one position hold the same data.

#![allow(dead_code)] // each test file uses a different part

mod ack_epochs;
mod role_watch;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use proto_common::heartbeat::Role;
use understudy_tests::harness::replica_status::wait_same_data as same_data_at;
use understudy_tests::harness::{
    free_port, replica_status, role_code, wait_for, EtcdCluster, ReplicaConfig, ReplicaProcess,
    TestDir,
};
use understudy_tests::loadgen::Ledger;

use crate::arbiter_etcd_support::EtcdArbiter;

#[allow(unused_imports)] // each test file uses a different part
pub use ack_epochs::check_single_epoch_acks;
#[allow(unused_imports)] // each test file uses a different part
pub use role_watch::RoleLog;
pub use role_watch::RoleWatch;

/// Generous bound on any one wait: a debug build on two busy cores.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Clients of the background write load: enough to keep writes flowing
/// every millisecond, few enough to leave CPU for etcd and the arbiters.
pub const CLIENTS: usize = 16;

/// Flags of every arbiter in these tests: the built-in replica timing
/// (heartbeat 100 ms, lease 1000 ms, drift 0.1 — failover tests of their
/// own use shorter ones; here etcd's 2 s lease TTL dominates anyway), and
/// a short first-formation wait.
pub const ARBITER_FLAGS: &[&str] = &["--initial-wait-ms", "500"];

/// Starts replicas `ids` of `cluster`, heartbeating to `arbiters` (a
/// comma-separated list of URLs, tried in order, 307s followed), and waits
/// until all serve.
pub async fn start_replicas(
    dir: &TestDir,
    cluster: &str,
    ids: &[&str],
    arbiters: &str,
) -> Vec<ReplicaProcess> {
    let mut spawned = Vec::new();
    for id in ids {
        let replica = ReplicaConfig::new(dir, id)
            .args([
                "--repl-listen".to_string(),
                format!("127.0.0.1:{}", free_port()),
                "--arbiter".to_string(),
                arbiters.to_string(),
                "--cluster".to_string(),
                cluster.to_string(),
            ])
            .spawn()
            .unwrap_or_else(|e| panic!("replica {id}: {e}"));
        spawned.push(replica);
    }
    for replica in &mut spawned {
        replica
            .wait_healthy(DEADLINE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    spawned
}

/// The active as the leading arbiter records it and the replica confirms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Active {
    /// Node id.
    pub id: String,
    /// The epoch it is active in.
    pub epoch: u64,
    /// Its client URL.
    pub url: String,
    /// Index of the leading arbiter that records it.
    pub leader: usize,
}

/// Waits until one of `arbiters` leads and records an active in an epoch
/// above `after`, that replica itself reports `active`, writable, in that
/// epoch (`/v1/role` 200), and — with `want_sync` — the leader shows a
/// confirmed, non-degraded sync set.
pub async fn wait_active(
    arbiters: &[&EtcdArbiter],
    replicas: &[&ReplicaProcess],
    after: u64,
    want_sync: bool,
    within: Duration,
) -> Result<Active, String> {
    let last = RefCell::new(String::from("no answer yet"));
    let what = format!("an active in an epoch after {after}, agreed by arbiter and replica");
    let found = wait_for(within, &what, || {
        let last = &last;
        async move {
            match agreed_active(arbiters, replicas, after, want_sync).await {
                Ok(active) => Some(active),
                Err(why) => {
                    *last.borrow_mut() = why;
                    None
                }
            }
        }
    })
    .await;
    found.map_err(|timeout| format!("{timeout}; last seen: {}", last.borrow()))
}

async fn agreed_active(
    arbiters: &[&EtcdArbiter],
    replicas: &[&ReplicaProcess],
    after: u64,
    want_sync: bool,
) -> Result<Active, String> {
    let mut leading = None;
    for (i, a) in arbiters.iter().enumerate() {
        if let Some(s) = a.status().await.filter(|s| s.is_leader) {
            leading = Some((i, s));
            break;
        }
    }
    let (leader, status) = leading.ok_or("no arbiter leads")?;
    let id = status
        .active
        .as_ref()
        .map(|a| a.to_string())
        .ok_or_else(|| format!("the leader records no active (epoch {})", status.epoch))?;
    let epoch = status.epoch.0;
    if epoch <= after {
        return Err(format!("the leader records {id} in epoch {epoch}"));
    }
    if want_sync && (status.confirmed_sync.is_empty() || status.degraded) {
        return Err(format!(
            "{id} active in epoch {epoch}, confirmed sync set {:?}, degraded {}",
            status.confirmed_sync, status.degraded
        ));
    }
    let replica = replicas
        .iter()
        .find(|r| r.config().node_id == id)
        .ok_or_else(|| format!("the leader names {id}, which is not one of ours"))?;
    let url = replica.url();
    let own = replica_status(&url).await?;
    let code = role_code(&url).await;
    if own.role != Role::Active || own.epoch.0 != epoch || !own.writable || code != Some(200) {
        return Err(format!(
            "the leader records {id} active in epoch {epoch}; {id} says role {} epoch {} \
             writable {} (/v1/role {code:?})",
            own.role, own.epoch, own.writable
        ));
    }
    Ok(Active {
        id,
        epoch,
        url,
        leader,
    })
}

/// Index in `etcd.members` of the member that leads, asked of every member
/// that answers (`None` while they disagree or none knows).
pub async fn etcd_leader(etcd: &EtcdCluster) -> Option<usize> {
    let mut ids = Vec::new();
    let mut leaders = Vec::new();
    for member in &etcd.members {
        let connected = tokio::time::timeout(
            Duration::from_secs(2),
            etcd_client::Client::connect([member.client_url()], None),
        )
        .await;
        let Ok(Ok(mut client)) = connected else {
            ids.push(None);
            continue;
        };
        let status = tokio::time::timeout(Duration::from_secs(2), client.status()).await;
        match status {
            Ok(Ok(s)) => {
                ids.push(s.header().map(|h| h.member_id()));
                leaders.push(s.leader());
            }
            _ => ids.push(None),
        }
    }
    let leader = *leaders.first()?;
    if leader == 0 || leaders.iter().any(|l| *l != leader) {
        return None;
    }
    ids.iter().position(|id| *id == Some(leader))
}

/// Waits until the replicas at `a` and `b` stand at the same applied
/// position and serve the same data; returns it. Quiesce writes first.
pub async fn wait_same_data(
    a: &str,
    b: &str,
    within: Duration,
) -> Result<BTreeMap<String, Bytes>, String> {
    same_data_at((a, a), (b, b), within).await
}

/// Writes acknowledged or failed (a final answer that was not a success)
/// among those that ended in `[from_ns, to_ns]`: `(acked, failed)`.
pub fn outcomes_between(ledger: &Ledger, from_ns: u64, to_ns: u64) -> (u64, Vec<String>) {
    let mut acked = 0;
    let mut failed = Vec::new();
    for w in ledger
        .writes()
        .iter()
        .filter(|w| w.end_ns >= from_ns && w.end_ns <= to_ns)
    {
        if w.acked {
            acked += 1;
        } else {
            failed.push(format!(
                "{} ended with status {} via {}",
                w.value_id(),
                w.status,
                ledger.url(w.answered_by)
            ));
        }
    }
    (acked, failed)
}
