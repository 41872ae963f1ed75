//! The faults, injected one at a time in an order drawn from a seed: each
//! is held for a while, healed, and followed by a wait until the cluster
//! has fully recovered (an active, a full sync set, every process serving)
//! before the next one.

use std::time::Duration;

use proto_common::heartbeat::Role;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use super::cluster::{FaultCluster, Topology};
use super::firewall::Firewall;
use super::history::History;
use crate::client::resp::{show, Frame, RespClient};
use crate::harness::wait_for;

/// Longest a recovery may take before the run counts it as an anomaly.
pub const RECOVERY_DEADLINE: Duration = Duration::from_secs(60);

/// Longest the recovery check waits for the active's RESP port to answer.
const RESP_PROBE: Duration = Duration::from_millis(500);

/// What was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `kill -9` of the active replica, restarted after the hold.
    KillActive,
    /// SIGSTOP of the active replica, SIGCONT after the hold.
    PauseActive,
    /// The active cut off from the arbiters and the other replicas (its
    /// clients still reach it).
    PartitionActive,
    /// `kill -9` of a standby in the sync set.
    KillSyncStandby,
    /// `kill -9` of the leading arbiter.
    KillArbiter,
    /// `kill -9` of the etcd member that leads.
    KillEtcdLeader,
    /// `kill -9` of an etcd member that follows.
    KillEtcdFollower,
    /// `kill -9` of every process at once, all restarted together.
    RestartAll,
    /// Proxy mode: `kill -9` of the active's redis-server, restarted
    /// empty (its data lost) after the hold.
    KillActiveUpstream,
    /// Proxy mode: `kill -9` of a sync standby's redis-server, restarted
    /// empty after the hold.
    KillStandbyUpstream,
    /// Proxy mode: SIGSTOP of the active's redis-server (there, but not
    /// answering), SIGCONT after the hold.
    PauseActiveUpstream,
    /// The sync standby's disk filled up (a dedicated test, not drawn: the
    /// data directories must be small tmpfs mounts).
    FillSyncStandbyDisk,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillActive => "kill -9 active",
            FaultKind::PauseActive => "SIGSTOP active",
            FaultKind::PartitionActive => "partition active",
            FaultKind::KillSyncStandby => "kill -9 sync standby",
            FaultKind::KillArbiter => "kill -9 leading arbiter",
            FaultKind::KillEtcdLeader => "kill -9 etcd leader",
            FaultKind::KillEtcdFollower => "kill -9 etcd follower",
            FaultKind::RestartAll => "kill -9 everything, restart",
            FaultKind::KillActiveUpstream => "kill -9 active's redis",
            FaultKind::KillStandbyUpstream => "kill -9 standby's redis",
            FaultKind::PauseActiveUpstream => "SIGSTOP active's redis",
            FaultKind::FillSyncStandbyDisk => "sync standby's disk full",
        }
    }

    /// A kind by its report name (`kill_active`, `restart_all`, ...).
    pub fn parse(s: &str) -> Result<FaultKind, String> {
        let all = [
            FaultKind::KillActive,
            FaultKind::PauseActive,
            FaultKind::PartitionActive,
            FaultKind::KillSyncStandby,
            FaultKind::KillArbiter,
            FaultKind::KillEtcdLeader,
            FaultKind::KillEtcdFollower,
            FaultKind::RestartAll,
            FaultKind::KillActiveUpstream,
            FaultKind::KillStandbyUpstream,
            FaultKind::PauseActiveUpstream,
        ];
        let name = |k: &FaultKind| {
            serde_json::to_value(k)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        };
        all.iter().find(|k| name(k) == s).copied().ok_or_else(|| {
            format!(
                "unknown fault {s:?}: use {}",
                all.iter().map(name).collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// The faults that apply to `topology`, and to proxy mode.
    pub fn for_cluster(topology: Topology, proxy: bool) -> Vec<FaultKind> {
        let mut kinds = vec![
            FaultKind::KillActive,
            FaultKind::PauseActive,
            FaultKind::PartitionActive,
            FaultKind::KillSyncStandby,
            FaultKind::KillArbiter,
            FaultKind::RestartAll,
        ];
        if topology == Topology::Etcd {
            kinds.extend([FaultKind::KillEtcdLeader, FaultKind::KillEtcdFollower]);
        }
        if proxy {
            kinds.extend([
                FaultKind::KillActiveUpstream,
                FaultKind::KillStandbyUpstream,
                FaultKind::PauseActiveUpstream,
            ]);
        }
        kinds
    }
}

/// One fault as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    /// The process it hit.
    pub target: String,
    pub start_ns: u64,
    pub heal_ns: u64,
    /// When the cluster was whole again; `None`: not within the deadline.
    pub recovered_ns: Option<u64>,
    /// What recovery was still waiting for, when it did not come.
    pub stuck: Option<String>,
}

/// How faults are drawn.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub seed: u64,
    /// The kinds to draw from.
    pub kinds: Vec<FaultKind>,
    /// How long a fault is held (drawn uniformly).
    pub hold_ms: (u64, u64),
    /// Calm between a recovery and the next fault (drawn uniformly).
    pub calm_ms: (u64, u64),
}

/// Injects faults until `until_ns` (on the history's clock), or `max`
/// faults; returns them.
pub async fn run(
    cluster: &mut FaultCluster,
    firewall: &Firewall,
    history: &History,
    schedule: &Schedule,
    until_ns: u64,
    max: usize,
) -> Vec<Fault> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(schedule.seed);
    let mut faults = Vec::new();
    // Every kind once before any repeats (shuffled), so a short run covers
    // them all; then uniformly at random.
    let mut queue = schedule.kinds.clone();
    while history.now_ns() < until_ns && faults.len() < max {
        let calm = rng.random_range(schedule.calm_ms.0..=schedule.calm_ms.1);
        tokio::time::sleep(Duration::from_millis(calm)).await;
        let kind = if queue.is_empty() {
            schedule.kinds[rng.random_range(0..schedule.kinds.len())]
        } else {
            queue.remove(rng.random_range(0..queue.len()))
        };
        let hold = Duration::from_millis(rng.random_range(schedule.hold_ms.0..=schedule.hold_ms.1));
        let pick = rng.random_range(0..u32::MAX);
        let fault = inject(cluster, firewall, history, kind, hold, pick).await;
        match &fault {
            Ok(f) => eprintln!(
                "fault {}: {} on {} held {:.1} s, recovered {}",
                faults.len() + 1,
                kind.name(),
                f.target,
                (f.heal_ns - f.start_ns) as f64 / 1e9,
                f.recovered_ns
                    .map(|r| format!("{:.2} s after the heal", (r - f.heal_ns) as f64 / 1e9))
                    .unwrap_or_else(|| format!("NOT ({})", f.stuck.clone().unwrap_or_default()))
            ),
            Err(e) => eprintln!(
                "fault {}: {} not injected: {e}",
                faults.len() + 1,
                kind.name()
            ),
        }
        if let Ok(f) = fault {
            let stuck = f.recovered_ns.is_none();
            faults.push(f);
            if stuck {
                break;
            }
        }
    }
    faults
}

/// A confirmed sync standby other than `active`, the target of a standby
/// fault.
fn confirmed_standby(
    status: &arbiter::status::ClusterStatus,
    active: &str,
) -> Result<String, String> {
    status
        .confirmed_sync
        .iter()
        .find(|n| n.as_str() != active)
        .map(|n| n.as_str().to_string())
        .ok_or_else(|| "no confirmed sync standby before the fault".to_string())
}

/// Injects one fault, holds it, heals it and waits for recovery.
async fn inject(
    cluster: &mut FaultCluster,
    firewall: &Firewall,
    history: &History,
    kind: FaultKind,
    hold: Duration,
    pick: u32,
) -> Result<Fault, String> {
    let (_, status) = cluster
        .leader_status()
        .await
        .ok_or("no arbiter leads before the fault")?;
    let active = status
        .active
        .as_ref()
        .map(|n| n.as_str().to_string())
        .ok_or("no active before the fault")?;
    let start_ns;
    let target;
    match kind {
        FaultKind::KillActive | FaultKind::PauseActive | FaultKind::PartitionActive => {
            let member = cluster
                .replica_mut(&active)
                .ok_or("the active is unknown")?;
            target = active.clone();
            start_ns = history.now_ns();
            match kind {
                FaultKind::KillActive => member.process.kill().map(drop),
                FaultKind::PauseActive => member.process.sigstop(),
                _ => Ok(()),
            }
            .map_err(|e| format!("cannot signal {target}: {e}"))?;
            if kind == FaultKind::PartitionActive {
                let ports = member.ports.clone();
                let uid = member.uid;
                let others: Vec<u32> = cluster.uids().into_iter().filter(|u| *u != uid).collect();
                firewall.partition(uid, &ports, &others)?;
            }
            tokio::time::sleep(hold).await;
            let member = cluster.replica_mut(&active).expect("still there");
            match kind {
                FaultKind::KillActive => member.process.restart(),
                FaultKind::PauseActive => member.process.sigcont(),
                _ => Ok(()),
            }
            .map_err(|e| format!("cannot bring {target} back: {e}"))?;
            if kind == FaultKind::PartitionActive {
                firewall.heal()?;
            }
        }
        FaultKind::KillSyncStandby => {
            let standby = confirmed_standby(&status, &active)?;
            let member = cluster.replica_mut(&standby).ok_or("unknown standby")?;
            target = standby;
            start_ns = history.now_ns();
            member.process.kill().map_err(|e| e.to_string())?;
            tokio::time::sleep(hold).await;
            member.process.restart().map_err(|e| e.to_string())?;
        }
        FaultKind::KillArbiter => {
            let (leader, _) = cluster.leader_status().await.ok_or("no leader")?;
            let member = &mut cluster.arbiters[leader];
            target = member.name.clone();
            start_ns = history.now_ns();
            member.process.kill().map_err(|e| e.to_string())?;
            // A lone arbiter is restarted at once: what is measured is
            // what its restart costs, not how long it was away.
            if cluster.topology == Topology::Etcd {
                tokio::time::sleep(hold).await;
            }
            let member = &mut cluster.arbiters[leader];
            member.process.restart().map_err(|e| e.to_string())?;
        }
        FaultKind::KillEtcdLeader | FaultKind::KillEtcdFollower => {
            let leader = cluster.etcd_leader().await.ok_or("no etcd leader")?;
            let etcd = cluster.etcd.as_mut().ok_or("no etcd in this topology")?;
            let index = if kind == FaultKind::KillEtcdLeader {
                leader
            } else {
                let followers: Vec<usize> =
                    (0..etcd.members.len()).filter(|i| *i != leader).collect();
                followers[pick as usize % followers.len()]
            };
            let member = &mut etcd.members[index];
            target = member.name.clone();
            start_ns = history.now_ns();
            member.process.kill().map_err(|e| e.to_string())?;
            tokio::time::sleep(hold).await;
            member.process.restart().map_err(|e| e.to_string())?;
        }
        FaultKind::KillActiveUpstream | FaultKind::KillStandbyUpstream => {
            let node = if kind == FaultKind::KillActiveUpstream {
                active.clone()
            } else {
                confirmed_standby(&status, &active)?
            };
            let member = cluster.replica_mut(&node).ok_or("unknown replica")?;
            let (_, redis) = member
                .resp
                .as_mut()
                .ok_or("an upstream is killed only in proxy mode")?;
            target = format!("{node}'s redis-server");
            start_ns = history.now_ns();
            redis.process().kill().map_err(|e| e.to_string())?;
            tokio::time::sleep(hold).await;
            redis.restart_empty().await?;
        }
        FaultKind::PauseActiveUpstream => {
            let member = cluster.replica_mut(&active).ok_or("unknown replica")?;
            let (_, redis) = member
                .resp
                .as_mut()
                .ok_or("an upstream is paused only in proxy mode")?;
            target = format!("{active}'s redis-server");
            start_ns = history.now_ns();
            redis.process().sigstop().map_err(|e| e.to_string())?;
            tokio::time::sleep(hold).await;
            redis.process().sigcont().map_err(|e| e.to_string())?;
        }
        FaultKind::FillSyncStandbyDisk => {
            return Err("a disk is filled by its own test, not drawn".into());
        }
        FaultKind::RestartAll => {
            target = "all".into();
            start_ns = history.now_ns();
            let mut processes: Vec<&mut crate::harness::ChildGuard> = Vec::new();
            if let Some(etcd) = cluster.etcd.as_mut() {
                processes.extend(etcd.members.iter_mut().map(|m| &mut m.process));
            }
            processes.extend(cluster.arbiters.iter_mut().map(|m| &mut m.process));
            processes.extend(cluster.replicas.iter_mut().map(|m| &mut m.process));
            for p in processes.iter_mut() {
                p.kill().map_err(|e| e.to_string())?;
            }
            tokio::time::sleep(hold.min(Duration::from_secs(1))).await;
            for p in processes.iter_mut() {
                p.restart().map_err(|e| e.to_string())?;
            }
        }
    }
    let heal_ns = history.now_ns();
    let (recovered_ns, stuck) = match wait_recovered(cluster, history).await {
        Ok(at) => (Some(at), None),
        Err(e) => (None, Some(e)),
    };
    Ok(Fault {
        kind,
        target,
        start_ns,
        heal_ns,
        recovered_ns,
        stuck,
    })
}

/// Waits until the cluster is whole: every process running, etcd healthy,
/// an arbiter leading, the active it names serving as active (in proxy
/// mode: answering a Redis client's `GET` too), the sync set full, and
/// every replica following it. Returns when, on the history's
/// clock; or what it was still waiting for.
pub async fn wait_recovered(cluster: &FaultCluster, history: &History) -> Result<u64, String> {
    let last = std::cell::RefCell::new(String::from("nothing checked yet"));
    let outcome = wait_for(RECOVERY_DEADLINE, "the cluster recovered", || {
        let last = &last;
        async move {
            let missing = missing_for_recovery(cluster).await;
            match missing {
                None => Some(history.now_ns()),
                Some(what) => {
                    *last.borrow_mut() = what;
                    None
                }
            }
        }
    })
    .await;
    outcome.map_err(|timeout| format!("{timeout}; still: {}", last.borrow()))
}

/// What the cluster still lacks to be whole; `None` when it is.
pub async fn missing_for_recovery(cluster: &FaultCluster) -> Option<String> {
    if let Some(etcd) = &cluster.etcd {
        for m in &etcd.members {
            if !m.is_healthy().await {
                return Some(format!("{} not healthy", m.name));
            }
        }
    }
    let Some((_, status)) = cluster.leader_status().await else {
        return Some("no arbiter leads".into());
    };
    let Some(active) = status.active.as_ref().map(|n| n.as_str().to_string()) else {
        return Some("no active named".into());
    };
    if status.degraded {
        return Some(format!("degraded (sync set {:?})", status.sync_set));
    }
    if status.params.sync_standbys as usize > status.confirmed_sync.len() {
        return Some(format!("sync set {:?} not confirmed", status.sync_set));
    }
    for (name, s) in cluster.replica_statuses().await {
        let Some(s) = s else {
            return Some(format!("{name} does not answer"));
        };
        let should = if name == active {
            Role::Active
        } else {
            Role::Standby
        };
        if s.role != should || (should == Role::Active && !s.writable) {
            return Some(format!("{name} is {} (writable {})", s.role, s.writable));
        }
        if should == Role::Standby && s.active_url.is_none() {
            return Some(format!("{name} follows no active"));
        }
    }
    if let Some((port, _)) = cluster.replica(&active).and_then(|m| m.resp.as_ref()) {
        if let Err(e) = resp_answers(&format!("127.0.0.1:{port}")).await {
            return Some(format!("{active} is active but its RESP port {e}"));
        }
    }
    None
}

/// Whether a Redis client's `GET` is answered at `addr` (a replica's RESP
/// port): an active serves sessions only once its upstream leads.
async fn resp_answers(addr: &str) -> Result<(), String> {
    let probe = async {
        let mut c = RespClient::connect(addr).await?;
        match c.call(&["GET", "recovery-probe"]).await? {
            Frame::Null | Frame::BulkString(_) => Ok(()),
            other => Err(format!("answers {}", show(&other))),
        }
    };
    tokio::time::timeout(RESP_PROBE, probe)
        .await
        .unwrap_or_else(|_| Err(format!("does not answer GET within {RESP_PROBE:?}")))
}
