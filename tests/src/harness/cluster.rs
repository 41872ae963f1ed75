//! A whole cluster for end-to-end tests: one arbiter (file store) and N
//! replicas wired to it, each on its own loopback ports and data dir.
//!
//! Started by a [`ClusterBuilder`] (timing, `sync_standbys`, token,
//! priorities). [`Cluster`] answers the questions failover tests ask — who
//! is active and in which epoch (asked of the arbiter *and* of the replica
//! itself), who is a confirmed sync-set member, what data a replica holds —
//! by polling with a deadline, never by sleeping.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arbiter::ClusterStatus;
use bytes::Bytes;
use proto_common::heartbeat::Role;

use super::arbiter::ArbiterProcess;
use super::certs::TestCerts;
use super::cluster_builder::ClusterBuilder;
use super::dirs::TestDir;
use super::ports::free_port;
use super::process::{describe_exit, ChildGuard};
use super::replica::{ReplicaConfig, ReplicaProcess};
use super::replica_status::{dump, replica_status, role_code, wait_same_data};
use super::wait::wait_for;

/// The active as seen by both the arbiter and the replica itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveNode {
    /// Its node id.
    pub id: String,
    /// The epoch it is active in.
    pub epoch: u64,
    /// Its client URL.
    pub url: String,
}

/// The token in `file`, if given.
pub(super) fn read_token(file: Option<&Path>) -> Option<String> {
    std::fs::read_to_string(file?)
        .ok()
        .map(|t| t.trim().to_string())
}

/// Tells the test's clients to send `token` to the server on `port`.
pub(super) fn remember_token(port: u16, token: Option<String>) {
    if let Some(token) = token {
        crate::client::credentials::remember(
            &format!("127.0.0.1:{port}"),
            crate::client::credentials::Credentials {
                tls: None,
                token: Some(token),
            },
        );
    }
}

/// A running cluster; every process is killed on drop.
#[derive(Debug)]
pub struct Cluster {
    /// `--cluster` of every process.
    pub(super) name: String,
    /// The arbiter.
    pub arbiter: ArbiterProcess,
    /// The replicas, in the order they were given.
    pub(super) replicas: Vec<ReplicaProcess>,
    /// The token file every process was given, if any.
    pub(super) token_file: Option<PathBuf>,
    /// Extra flags every replica was started with.
    pub(super) replica_args: Vec<String>,
    pub(super) replica_env: Vec<(String, String)>,
    /// The `replica` executable, when not the workspace's.
    pub(super) replica_program: Option<PathBuf>,
    /// `--segment-bytes` of every replica, when not the harness's.
    pub(super) segment_bytes: Option<u64>,
    /// The cluster's CA and certificates, when it runs TLS.
    pub(super) certs: Option<TestCerts>,
}

impl Cluster {
    /// A builder with the test defaults (replicas `a` and `b`, fast timing).
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The cluster name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The token file, if the cluster has a token.
    pub fn token_file(&self) -> Option<&Path> {
        self.token_file.as_deref()
    }

    /// The cluster token, if it has one.
    pub fn token(&self) -> Option<String> {
        read_token(self.token_file.as_deref())
    }

    /// The CA and certificates, when the cluster runs TLS.
    pub fn certs(&self) -> Option<&TestCerts> {
        self.certs.as_ref()
    }

    /// The standard configuration of replica `id` of this cluster, with the
    /// cluster's token: a free client and replication port, data dir
    /// `{test dir}/{id}.data`. Used by `start`; tests use it for replicas
    /// they start themselves.
    pub fn replica_config(&self, dir: &TestDir, id: &str) -> ReplicaConfig {
        self.replica_config_with_token(dir, id, self.token_file.as_deref())
    }

    /// [`Cluster::replica_config`] with another token file, or none.
    pub fn replica_config_with_token(
        &self,
        dir: &TestDir,
        id: &str,
        token_file: Option<&Path>,
    ) -> ReplicaConfig {
        self.replica_config_for(dir, id, token_file, &self.arbiter.url())
    }

    /// [`Cluster::replica_config`] with another token file (or none) and
    /// another arbiter (e.g. a [`super::FakeArbiter`]).
    pub fn replica_config_for(
        &self,
        dir: &TestDir,
        id: &str,
        token_file: Option<&Path>,
        arbiter_url: &str,
    ) -> ReplicaConfig {
        let mut config = ReplicaConfig::new(dir, id)
            .args([
                "--repl-listen".to_string(),
                format!("127.0.0.1:{}", free_port()),
                "--arbiter".to_string(),
                arbiter_url.to_string(),
                "--cluster".to_string(),
                self.name.clone(),
            ])
            .args(self.replica_args.iter().cloned());
        for (k, v) in &self.replica_env {
            config = config.env(k, v);
        }
        if let Some(path) = token_file {
            config = config.args(["--token-file".to_string(), path.display().to_string()]);
        }
        if let Some(program) = &self.replica_program {
            config = config.program(program);
        }
        if let Some(bytes) = self.segment_bytes {
            config = config.segment_bytes(bytes);
        }
        let token = read_token(token_file);
        match &self.certs {
            Some(certs) => {
                if !certs.cert(id).exists() {
                    certs.renew(&[id]).expect("a certificate for a new replica");
                }
                config = config.tls(certs, id, token);
            }
            None => remember_token(config.port, token),
        }
        config
    }

    /// Node ids, in the order given.
    pub fn ids(&self) -> Vec<String> {
        self.replicas
            .iter()
            .map(|r| r.config().node_id.clone())
            .collect()
    }

    /// Client URLs, in the order given.
    pub fn urls(&self) -> Vec<String> {
        self.replicas.iter().map(ReplicaProcess::url).collect()
    }

    /// Replica `id`; panics if there is none.
    pub fn replica(&self, id: &str) -> &ReplicaProcess {
        self.replicas
            .iter()
            .find(|r| r.config().node_id == id)
            .unwrap_or_else(|| panic!("no replica {id:?} in the cluster"))
    }

    /// Replica `id`, to signal, kill or restart it; panics if there is none.
    pub fn replica_mut(&mut self, id: &str) -> &mut ReplicaProcess {
        self.replicas
            .iter_mut()
            .find(|r| r.config().node_id == id)
            .unwrap_or_else(|| panic!("no replica {id:?} in the cluster"))
    }

    /// The node id whose client URL is `url`.
    pub fn id_of_url(&self, url: &str) -> Option<String> {
        self.replicas
            .iter()
            .find(|r| r.url() == url.trim_end_matches('/'))
            .map(|r| r.config().node_id.clone())
    }

    /// The arbiter's `/v1/status`.
    pub async fn status(&self) -> Result<ClusterStatus, String> {
        self.arbiter.status().await
    }

    /// The active the arbiter records right now (no check of the replica).
    pub async fn active(&self) -> Result<Option<String>, String> {
        Ok(self.status().await?.active.map(|id| id.to_string()))
    }

    /// The replicas the arbiter assigns the standby role right now.
    pub async fn standbys(&self) -> Result<Vec<String>, String> {
        let status = self.status().await?;
        Ok(status
            .replicas
            .iter()
            .filter(|r| r.role == Role::Standby)
            .map(|r| r.node_id.to_string())
            .collect())
    }

    /// Waits until the arbiter records an active and that replica itself
    /// says so: `/v1/role` answers 200 and its `/v1/status` is active in
    /// the arbiter's epoch.
    pub async fn wait_for_active(&self, within: Duration) -> Result<ActiveNode, String> {
        self.wait_for_active_after(0, within).await
    }

    /// [`Cluster::wait_for_active`] for an epoch above `epoch`: the active
    /// named after a failover or switchover out of `epoch`.
    pub async fn wait_for_active_after(
        &self,
        epoch: u64,
        within: Duration,
    ) -> Result<ActiveNode, String> {
        let what = format!("an active in an epoch after {epoch}");
        let last = RefCell::new(String::from("no answer yet"));
        let found = wait_for(within, &what, || {
            let last = &last;
            async move {
                match self.active_both_agree(epoch).await {
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

    /// The active if the arbiter and the replica agree on it in an epoch
    /// above `after`, else why not.
    async fn active_both_agree(&self, after: u64) -> Result<ActiveNode, String> {
        let status = self.status().await?;
        let Some(id) = status.active.map(|id| id.to_string()) else {
            return Err(format!(
                "the arbiter records no active (epoch {})",
                status.epoch
            ));
        };
        let epoch = status.epoch.0;
        if epoch <= after {
            return Err(format!("the arbiter records {id} in epoch {epoch}"));
        }
        let url = self.replica(&id).url();
        let own = replica_status(&url).await?;
        let role = role_code(&url).await;
        if own.role != Role::Active || own.epoch.0 != epoch || role != Some(200) {
            return Err(format!(
                "the arbiter records {id} active in epoch {epoch}; {id} says role {} \
                 epoch {} writable {} (/v1/role: {role:?})",
                own.role, own.epoch, own.writable
            ));
        }
        Ok(ActiveNode { id, epoch, url })
    }

    /// Waits until the arbiter shows `id` as a *confirmed* sync-set member:
    /// the active has confirmed it holds every acknowledged write, so it is
    /// a failover candidate.
    pub async fn wait_sync_confirmed(&self, id: &str, within: Duration) -> Result<(), String> {
        let last = RefCell::new(String::new());
        let outcome = wait_for(within, &format!("{id} a confirmed sync member"), || {
            let last = &last;
            async move {
                let status = match self.status().await {
                    Ok(s) => s,
                    Err(e) => {
                        *last.borrow_mut() = e;
                        return None;
                    }
                };
                let confirmed = status
                    .replicas
                    .iter()
                    .any(|r| r.node_id.as_str() == id && r.in_sync_set && r.sync_confirmed);
                if confirmed && status.confirmed_sync.iter().any(|n| n.as_str() == id) {
                    return Some(());
                }
                *last.borrow_mut() = format!(
                    "sync set {:?} (v{}), confirmed {:?} (v{})",
                    status.sync_set,
                    status.sync_version,
                    status.confirmed_sync,
                    status.confirmed_sync_version
                );
                None
            }
        })
        .await;
        outcome.map_err(|timeout| format!("{timeout}; last seen: {}", last.borrow()))
    }

    /// Waits until there is an active and, unless in async mode, as many
    /// confirmed sync-set members as `sync_standbys` asks for (at most the
    /// number of other replicas); in async mode every standby is connected.
    pub async fn wait_formed(&self, within: Duration) -> Result<ActiveNode, String> {
        let deadline = tokio::time::Instant::now() + within;
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        let active = self.wait_for_active(left()).await?;
        let k = self.status().await?.params.sync_standbys as usize;
        let wanted = k.min(self.replicas.len() - 1);
        let last = RefCell::new(String::new());
        wait_for(left(), "the sync set confirmed", || {
            let last = &last;
            async move {
                let status = self.status().await.ok()?;
                let connected = status
                    .replicas
                    .iter()
                    .filter(|r| r.role == Role::Standby && r.connected_to_active == Some(true))
                    .count();
                let ok = if k == 0 {
                    connected == self.replicas.len() - 1
                } else {
                    status.confirmed_sync.len() >= wanted && !status.degraded
                };
                *last.borrow_mut() = format!(
                    "{connected} standbys connected, confirmed sync set {:?}",
                    status.confirmed_sync
                );
                ok.then_some(())
            }
        })
        .await
        .map_err(|timeout| format!("{timeout}; last seen: {}", last.borrow()))?;
        Ok(active)
    }

    /// The other replica of a two-replica cluster.
    pub fn other_than(&self, id: &str) -> String {
        self.ids()
            .into_iter()
            .find(|i| i != id)
            .expect("a cluster of two replicas")
    }

    /// Waits for the active and for a confirmed sync-set member (the other
    /// replica of a two-replica cluster; whichever the arbiter chose in a
    /// larger one); returns both.
    pub async fn wait_active_with_sync_standby(
        &self,
        within: Duration,
    ) -> Result<(ActiveNode, String), String> {
        let active = self.wait_for_active(within).await?;
        let last = RefCell::new(String::new());
        let active_id = active.id.as_str();
        let standby = wait_for(within, "a confirmed sync member", || {
            let last = &last;
            async move {
                let status = match self.status().await {
                    Ok(s) => s,
                    Err(e) => {
                        *last.borrow_mut() = e;
                        return None;
                    }
                };
                *last.borrow_mut() = format!("confirmed {:?}", status.confirmed_sync);
                status
                    .confirmed_sync
                    .iter()
                    .find(|n| n.as_str() != active_id)
                    .map(|n| n.as_str().to_string())
            }
        })
        .await
        .map_err(|timeout| format!("{timeout}; last seen: {}", last.borrow()))?;
        self.wait_sync_confirmed(&standby, within).await?;
        Ok((active, standby))
    }

    /// Every key and value replica `id` serves.
    pub async fn dump(&self, id: &str) -> Result<BTreeMap<String, Bytes>, String> {
        dump(&self.replica(id).url()).await
    }

    /// Waits until replicas `a` and `b` have applied the same position and
    /// then compares their full data; returns it when identical. Quiesce
    /// writes first: under load the two never stand still together.
    pub async fn wait_same_data(
        &self,
        a: &str,
        b: &str,
        within: Duration,
    ) -> Result<BTreeMap<String, Bytes>, String> {
        let (url_a, url_b) = (self.replica(a).url(), self.replica(b).url());
        wait_same_data((a, &url_a), (b, &url_b), within).await
    }

    /// One line per process: running, or how it exited (for messages when
    /// something that should answer does not).
    pub fn describe_processes(&mut self) -> String {
        let mut lines = Vec::new();
        let mut describe = |name: &str, process: &mut ChildGuard| {
            let state = match process.try_exit_status() {
                Ok(None) => format!("running (pid {})", process.pid()),
                Ok(Some(status)) => format!("exited: {}", describe_exit(status)),
                Err(e) => format!("unknown: {e}"),
            };
            lines.push(format!("{name}: {state}"));
        };
        describe("arbiter", self.arbiter.process());
        for replica in &mut self.replicas {
            let name = format!("replica {}", replica.config().node_id);
            describe(&name, replica.process());
        }
        lines.join("; ")
    }

    /// SIGKILL replica `id`.
    pub fn kill(&mut self, id: &str) -> Result<(), String> {
        self.replica_mut(id)
            .kill()
            .map(|_| ())
            .map_err(|e| format!("kill {id}: {e}"))
    }

    /// Restarts replica `id` on its data dir and ports; waits for `/healthz`.
    pub async fn restart(&mut self, id: &str) -> Result<(), String> {
        self.replica_mut(id).restart().await
    }
}
