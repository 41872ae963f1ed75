//! How to start a [`Cluster`]: the builder, with the test defaults.
//!
//! Defaults: replicas `a` and `b`, heartbeat 50 ms, lease 400 ms, initial
//! wait 300 ms, `sync_standbys` as the arbiter's default (1), no token, the
//! workspace's binaries, the harness's 1 MiB log segments. `start` brings up
//! the arbiter first, then every replica, and waits (unless told not to)
//! until there is an active and its sync set is confirmed.

use std::path::PathBuf;
use std::time::Duration;

use super::arbiter::ArbiterConfig;
use super::certs::TestCerts;
use super::cluster::{ActiveNode, Cluster};
use super::dirs::TestDir;

/// Name of the cluster tests run.
pub const TEST_CLUSTER: &str = "test-cluster";

/// How long [`ClusterBuilder::start`] waits for the first active and its
/// sync set.
pub const FORMATION_TIMEOUT: Duration = Duration::from_secs(30);

/// One replica to start.
#[derive(Clone, Debug)]
struct NodeSpec {
    /// `--node-id`.
    id: String,
    /// `--priority`, when set.
    priority: Option<u32>,
    /// Flags for this replica only (e.g. its own `--upstream`).
    args: Vec<String>,
}

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    /// `--cluster` of every process.
    name: String,
    /// The replicas, in order.
    nodes: Vec<NodeSpec>,
    /// `--heartbeat-ms`; `None`: the built-in default.
    heartbeat_ms: Option<u64>,
    /// `--lease-ms`; `None`: the built-in default.
    lease_ms: Option<u64>,
    /// `--drift`; `None`: the built-in default.
    drift: Option<f64>,
    /// `--sync-standbys`; `None`: the built-in default (1).
    sync_standbys: Option<u32>,
    /// `--initial-wait-ms`.
    initial_wait_ms: Option<u64>,
    /// Whether every process gets `--token-file`.
    token: bool,
    /// Whether every process serves TLS (certificates from
    /// `deploy/make-certs.sh`).
    tls: bool,
    /// Extra flags for the arbiter.
    arbiter_args: Vec<String>,
    /// Extra flags for every replica.
    replica_args: Vec<String>,
    /// Extra environment variables for every replica.
    replica_env: Vec<(String, String)>,
    /// Whether `start` waits for the first active and its sync set.
    wait_formed: bool,
    /// Where `arbiter` and `replica` are; `None`: the workspace's.
    bin_dir: Option<PathBuf>,
    /// `--segment-bytes` of every replica; `None`: the harness's small one.
    segment_bytes: Option<u64>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            name: TEST_CLUSTER.to_string(),
            nodes: ["a", "b"]
                .iter()
                .map(|id| NodeSpec {
                    id: id.to_string(),
                    priority: None,
                    args: Vec::new(),
                })
                .collect(),
            heartbeat_ms: Some(50),
            lease_ms: Some(400),
            drift: None,
            sync_standbys: None,
            initial_wait_ms: Some(300),
            token: false,
            tls: false,
            arbiter_args: Vec::new(),
            replica_args: Vec::new(),
            replica_env: Vec::new(),
            wait_formed: true,
            bin_dir: None,
            segment_bytes: None,
        }
    }
}

impl ClusterBuilder {
    /// Replicas with these node ids, in this order (default `a`, `b`).
    pub fn replicas<I, S>(mut self, ids: I) -> ClusterBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.nodes = ids
            .into_iter()
            .map(|id| NodeSpec {
                id: id.into(),
                priority: None,
                args: Vec::new(),
            })
            .collect();
        self
    }

    /// Flags for replica `id` only.
    pub fn node_args<I, S>(mut self, id: &str, args: I) -> ClusterBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no replica {id:?} in the cluster"));
        node.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `--priority` of one replica (0: never promoted).
    pub fn priority(mut self, id: &str, priority: u32) -> ClusterBuilder {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no replica {id:?} in the cluster"));
        node.priority = Some(priority);
        self
    }

    pub fn heartbeat_ms(mut self, ms: u64) -> ClusterBuilder {
        self.heartbeat_ms = Some(ms);
        self
    }

    pub fn lease_ms(mut self, ms: u64) -> ClusterBuilder {
        self.lease_ms = Some(ms);
        self
    }

    pub fn drift(mut self, drift: f64) -> ClusterBuilder {
        self.drift = Some(drift);
        self
    }

    /// The arbiter's built-in heartbeat, lease and drift (100/1000/0.1).
    pub fn builtin_timing(mut self) -> ClusterBuilder {
        self.heartbeat_ms = None;
        self.lease_ms = None;
        self.drift = None;
        self
    }

    pub fn sync_standbys(mut self, k: u32) -> ClusterBuilder {
        self.sync_standbys = Some(k);
        self
    }

    pub fn initial_wait_ms(mut self, ms: u64) -> ClusterBuilder {
        self.initial_wait_ms = Some(ms);
        self
    }

    /// Give every process a cluster token (`--token-file`).
    pub fn with_token(mut self) -> ClusterBuilder {
        self.token = true;
        self
    }

    /// Every process serves TLS with a certificate from a new CA in
    /// `{test dir}/tls`, and connects to the others in TLS.
    pub fn with_tls(mut self) -> ClusterBuilder {
        self.tls = true;
        self
    }

    /// Extra flags for the arbiter.
    pub fn arbiter_args<I, S>(mut self, args: I) -> ClusterBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.arbiter_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Extra flags for every replica.
    /// An environment variable for every replica (e.g. a failpoint).
    pub fn replica_env(mut self, key: &str, value: &str) -> ClusterBuilder {
        self.replica_env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn replica_args<I, S>(mut self, args: I) -> ClusterBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.replica_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Run the `arbiter` and `replica` executables in `dir` (e.g. a release
    /// build for a benchmark).
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> ClusterBuilder {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Log segments of this size in every replica.
    pub fn segment_bytes(mut self, bytes: u64) -> ClusterBuilder {
        self.segment_bytes = Some(bytes);
        self
    }

    /// Return from `start` as soon as the processes serve, without waiting
    /// for an active.
    pub fn no_wait(mut self) -> ClusterBuilder {
        self.wait_formed = false;
        self
    }

    /// Starts the cluster and waits (at most `within`) for an active and a
    /// confirmed sync standby; returns all three.
    pub async fn start_with_sync_standby(
        self,
        dir: &TestDir,
        within: std::time::Duration,
    ) -> Result<(Cluster, ActiveNode, String), String> {
        let cluster = self.start(dir).await?;
        let (active, standby) = cluster.wait_active_with_sync_standby(within).await?;
        Ok((cluster, active, standby))
    }

    /// Starts the arbiter and the replicas, then (unless [`no_wait`]) waits
    /// until there is an active and its sync set is confirmed.
    ///
    /// [`no_wait`]: ClusterBuilder::no_wait
    pub async fn start(self, dir: &TestDir) -> Result<Cluster, String> {
        let token_file = if self.token {
            let path = dir.join("cluster.token");
            std::fs::write(&path, format!("{}\n", random_token()))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Some(path)
        } else {
            None
        };
        let mut config = ArbiterConfig::new(dir, &self.name).args(self.arbiter_args.clone());
        if let Some(path) = &token_file {
            config = config.token_file(path);
        }
        let token = super::cluster::read_token(token_file.as_deref());
        let certs = if self.tls {
            let mut names = vec!["arbiter"];
            names.extend(self.nodes.iter().map(|n| n.id.as_str()));
            let certs = TestCerts::make(&dir.join("tls"), &names)?;
            config = config.tls(&certs, "arbiter", token.clone());
            Some(certs)
        } else {
            super::cluster::remember_token(config.port, token);
            None
        };
        if let Some(bin_dir) = &self.bin_dir {
            config = config.program(bin_dir.join("arbiter"));
        }
        config.heartbeat_ms = self.heartbeat_ms;
        config.lease_ms = self.lease_ms;
        config.drift = self.drift;
        config.sync_standbys = self.sync_standbys;
        config.initial_wait_ms = self.initial_wait_ms;
        let arbiter = config.start().await?;

        let mut cluster = Cluster {
            name: self.name.clone(),
            arbiter,
            replicas: Vec::new(),
            token_file,
            replica_args: self.replica_args.clone(),
            replica_env: self.replica_env.clone(),
            replica_program: self.bin_dir.as_ref().map(|d| d.join("replica")),
            segment_bytes: self.segment_bytes,
            certs,
        };
        let mut spawned = Vec::new();
        for node in &self.nodes {
            let mut config = cluster
                .replica_config(dir, &node.id)
                .args(node.args.clone());
            if let Some(priority) = node.priority {
                config = config.args(["--priority".to_string(), priority.to_string()]);
            }
            spawned.push(
                config
                    .spawn()
                    .map_err(|e| format!("cannot start replica {}: {e}", node.id))?,
            );
        }
        for replica in &mut spawned {
            replica.wait_healthy(super::replica::START_TIMEOUT).await?;
        }
        cluster.replicas = spawned;
        if self.wait_formed {
            cluster.wait_formed(FORMATION_TIMEOUT).await?;
        }
        Ok(cluster)
    }
}

/// 32 hex digits from the kernel's random source.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    // Mixed with the time so a missing /dev/urandom still varies per run.
    bytes
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{:02x}", b ^ (nanos >> (8 * (i % 16))) as u8))
        .collect()
}
