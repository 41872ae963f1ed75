//! Replica configuration: defaults → TOML file (`--config`) → environment
//! (`UNDERSTUDY_*`) → flags, then validated as a whole into [`Settings`].
//!
//! One struct, [`Options`], is both the clap argument set and the TOML
//! schema, so a key can never exist in one and not the other. Every field
//! is optional there; [`Options::resolve`] fills defaults and checks rules,
//! with messages that name the value and the rule.

use std::net::SocketAddr;
use std::path::PathBuf;

use proto_common::auth::{Access, Token};
use proto_common::tls::{check_plaintext, Tls};
use proto_common::NodeId;
use serde::Deserialize;

mod error;
pub use error::ConfigError;

/// Everything `replica run` can be told. Flags and environment override
/// the file; the file overrides defaults.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Unique, stable id of this replica (letters, digits, '.', '_', '-').
    #[arg(long, env = "UNDERSTUDY_NODE_ID")]
    pub node_id: Option<String>,
    /// Directory for the write log, snapshots and quarantine.
    #[arg(long, env = "UNDERSTUDY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Client API address [default: 127.0.0.1:7000].
    #[arg(long, env = "UNDERSTUDY_LISTEN")]
    pub listen: Option<String>,
    /// URL other nodes and clients use to reach the client API
    /// [default: http://<listen>].
    #[arg(long, env = "UNDERSTUDY_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// `always` (fdatasync before every acknowledgement) or `never`
    /// (experiments only: a crash loses acknowledged writes) [default: always].
    #[arg(long, env = "UNDERSTUDY_FSYNC")]
    pub fsync: Option<String>,
    /// Size of each preallocated log segment file [default: 67108864].
    #[arg(long, env = "UNDERSTUDY_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,
    /// Take a snapshot (and delete covered segments) after this many log
    /// bytes [default: 268435456].
    #[arg(long, env = "UNDERSTUDY_SNAPSHOT_EVERY_BYTES")]
    pub snapshot_every_bytes: Option<u64>,
    /// Also take one this often if anything was written since the last,
    /// seconds [default: 3600].
    #[arg(long, env = "UNDERSTUDY_SNAPSHOT_EVERY_SECS")]
    pub snapshot_every_secs: Option<u64>,
    /// Longest key accepted, bytes [default: 1024].
    #[arg(long, env = "UNDERSTUDY_MAX_KEY_BYTES")]
    pub max_key_bytes: Option<usize>,
    /// Longest value accepted, bytes [default: 1048576].
    #[arg(long, env = "UNDERSTUDY_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Longest request body accepted, bytes [default: 4194304].
    #[arg(long, env = "UNDERSTUDY_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most compares plus operations in one transaction [default: 128].
    #[arg(long, env = "UNDERSTUDY_MAX_TXN_OPS")]
    pub max_txn_ops: Option<usize>,
    /// Largest `limit` of one range read [default: 1000].
    #[arg(long, env = "UNDERSTUDY_MAX_LIST_LIMIT")]
    pub max_list_limit: Option<usize>,
    /// Most client API requests served at once; more are answered 503
    /// `overloaded` at once (health endpoints are exempt) [default: 1024].
    #[arg(long, env = "UNDERSTUDY_MAX_REQUESTS")]
    pub max_requests: Option<usize>,
    /// Most writes accepted and not yet answered; more are answered 503
    /// `overloaded` before they are written [default: 4096].
    #[arg(long, env = "UNDERSTUDY_MAX_PENDING_WRITES")]
    pub max_pending_writes: Option<usize>,
    /// Cluster name; replicas and arbiters of one cluster share it
    /// [default: understudy].
    #[arg(long, env = "UNDERSTUDY_CLUSTER")]
    pub cluster: Option<String>,
    /// File holding the cluster token (the secret shared by every node).
    /// The token can also come from UNDERSTUDY_TOKEN. Without a token every
    /// listener must be on a loopback address.
    #[arg(long, env = "UNDERSTUDY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The token itself, from the UNDERSTUDY_TOKEN environment variable only
    /// (never a flag: command lines are visible to every user).
    #[arg(skip)]
    #[serde(skip)]
    pub token: Option<String>,
    /// Replication address (standbys connect here when this replica is active).
    #[arg(long, env = "UNDERSTUDY_REPL_LISTEN")]
    pub repl_listen: Option<String>,
    /// Replication address other replicas use [default: <repl-listen>].
    #[arg(long, env = "UNDERSTUDY_ADVERTISE_REPL")]
    pub advertise_repl: Option<String>,
    /// Hard limit on one replication frame, bytes [default: 16777216].
    #[arg(long, env = "UNDERSTUDY_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// What a standby does with a write: `proxy` it to the active (default)
    /// or answer `redirect` (307 to the active).
    #[arg(long, env = "UNDERSTUDY_FORWARD")]
    pub forward: Option<String>,
    /// How long a read with X-Min-Version waits for this replica to catch up
    /// before answering 503, ms [default: 1000].
    #[arg(long, env = "UNDERSTUDY_MIN_VERSION_WAIT_MS")]
    pub min_version_wait_ms: Option<u64>,
    /// Arbiter URL(s), comma-separated. Without it the replica runs
    /// standalone as its own active; with it, it starts as a standby and
    /// takes its role from the arbiter.
    #[arg(long, env = "UNDERSTUDY_ARBITER")]
    pub arbiter: Option<String>,
    /// Promotion priority: among equally caught-up standbys the higher one is
    /// promoted; 0 means never promote this replica [default: 100].
    #[arg(long, env = "UNDERSTUDY_PRIORITY")]
    pub priority: Option<u32>,
    /// After a write, keep one CPU awake this long (µs) under SCHED_IDLE so
    /// the next wake-up on a write's path does not wait for a halted CPU;
    /// 0 switches it off (see README, "Idle polling") [default: 0].
    #[arg(long, env = "UNDERSTUDY_IDLE_POLL_US")]
    pub idle_poll_us: Option<u64>,
    /// Proxy mode: front this standalone Redis-compatible server instead of
    /// the embedded store, `redis://HOST:PORT` (see README, "Proxy mode").
    #[arg(long, env = "UNDERSTUDY_UPSTREAM")]
    pub upstream: Option<String>,
    /// File holding the upstream's password (`requirepass`); every
    /// replica's upstream must use the same one (full resyncs use it).
    #[arg(long, env = "UNDERSTUDY_UPSTREAM_PASSWORD_FILE")]
    pub upstream_password_file: Option<PathBuf>,
    /// Proxy mode: the upstream's Unix socket (Redis: `unixsocket`), which
    /// client sessions use instead of TCP when set: the same redis-server
    /// as --upstream (checked at start), on this host. Cheaper per command.
    #[arg(long, env = "UNDERSTUDY_UPSTREAM_SOCKET")]
    pub upstream_socket: Option<PathBuf>,
    /// Proxy mode: where Redis clients connect (RESP2) [default: 127.0.0.1:6380].
    #[arg(long, env = "UNDERSTUDY_RESP_LISTEN")]
    pub resp_listen: Option<String>,
    /// Proxy mode: pin the RESP thread (every Redis client's session) to
    /// these CPUs, written as `0`, `0,2` or `1-3`; put it on the CPU of the
    /// upstream's main thread (Redis: `server_cpulist`). See README,
    /// "Proxy mode" [default: not pinned].
    #[arg(long, env = "UNDERSTUDY_RESP_CPUS")]
    pub resp_cpus: Option<String>,
    /// RESP address other replicas forward commands to [default: <resp-listen>].
    #[arg(long, env = "UNDERSTUDY_ADVERTISE_RESP")]
    pub advertise_resp: Option<String>,
    /// The upstream's address as other replicas' upstreams reach it for a
    /// full resync (REPLICAOF) [default: the --upstream host:port].
    #[arg(long, env = "UNDERSTUDY_ADVERTISE_UPSTREAM")]
    pub advertise_upstream: Option<String>,
    /// Sessions on a standby: `forward` them to the active (default; never
    /// stale) or serve them from the standby's own upstream, a Redis
    /// replica of committed data (`local`: reads possibly stale, writes
    /// refused with `READONLY`).
    #[arg(long, env = "UNDERSTUDY_STANDBY_READS")]
    pub standby_reads: Option<String>,
    /// An upstream that leaves a PING unanswered this long (stopped, or a
    /// command running that long without yielding) is this replica's
    /// failure: an active steps down, a standby leaves the sync set
    /// [default: 5000: past Redis's busy-reply threshold a script's server
    /// answers -BUSY, so only a stopped or stuck one stays silent longer].
    #[arg(long, env = "UNDERSTUDY_UPSTREAM_TIMEOUT_MS")]
    pub upstream_timeout_ms: Option<u64>,
    /// File holding a password Redis clients may AUTH with (besides the
    /// cluster token).
    #[arg(long, env = "UNDERSTUDY_CLIENT_PASSWORD_FILE")]
    pub client_password_file: Option<PathBuf>,
    /// Take the data already in the upstream as the cluster's first state
    /// (a new cluster only; see README).
    #[arg(
        long,
        env = "UNDERSTUDY_ADOPT_UPSTREAM_DATA",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub adopt_upstream_data: Option<bool>,
    /// PEM certificate (chain) of this replica: TLS on every listener, and
    /// the client certificate it offers other nodes. Needs --tls-key and
    /// --tls-ca (deploy/make-certs.sh makes all three).
    #[arg(long, env = "UNDERSTUDY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "UNDERSTUDY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate(s) of the CA that signs the cluster's certificates:
    /// other nodes' certificates are checked against it.
    #[arg(long, env = "UNDERSTUDY_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: standbys connecting to the replication port must present
    /// a certificate signed by --tls-ca.
    #[arg(
        long,
        env = "UNDERSTUDY_TLS_CLIENT_AUTH",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub tls_client_auth: Option<bool>,
    /// Serve without TLS on a non-loopback address (a trusted network
    /// only: everything crosses it in clear text).
    #[arg(
        long,
        env = "UNDERSTUDY_INSECURE_PLAINTEXT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub insecure_plaintext: Option<bool>,
    /// File holding a read-write client token for the data API (besides
    /// the cluster token).
    #[arg(long, env = "UNDERSTUDY_CLIENT_TOKEN_FILE")]
    pub client_token_file: Option<PathBuf>,
    /// File holding a read-only client token: reads, /v1/status and
    /// /metrics.
    #[arg(long, env = "UNDERSTUDY_READ_TOKEN_FILE")]
    pub read_token_file: Option<PathBuf>,
}

/// How a standby handles a write it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardMode {
    /// Send it to the active and relay the answer.
    Proxy,
    /// Answer 307 with the active's URL.
    Redirect,
}

/// Bounds on client input.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_body_bytes: usize,
    pub max_txn_ops: usize,
    pub max_list_limit: usize,
    /// Client API requests served at once.
    pub max_requests: usize,
    /// Writes accepted and not yet answered.
    pub max_pending_writes: usize,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub advertise_url: String,
    pub fsync: bool,
    pub segment_bytes: u64,
    pub snapshot_every_bytes: u64,
    pub snapshot_every: std::time::Duration,
    pub limits: Limits,
    pub cluster: String,
    /// The cluster token; `None` only when every listener is on loopback.
    pub token: Option<Token>,
    pub repl_listen: Option<SocketAddr>,
    pub advertise_repl: Option<String>,
    pub max_frame_bytes: usize,
    pub forward: ForwardMode,
    pub min_version_wait: std::time::Duration,
    /// Arbiter base URLs; empty = standalone.
    pub arbiters: Vec<String>,
    pub priority: u32,
    /// How long the idle poller spins after the last write; zero = off.
    pub idle_poll: std::time::Duration,
    /// Proxy mode's settings; `None`: the embedded store.
    pub proxy: Option<crate::proxy::ProxySettings>,
    /// TLS for every listener and connection; `None`: clear text (loopback,
    /// or `--insecure-plaintext`).
    pub tls: Option<std::sync::Arc<proto_common::tls::Tls>>,
    /// Who may use the client API.
    pub access: proto_common::auth::Access,
}

macro_rules! overlay {
    ($hi:expr, $lo:expr; $($field:ident),*) => {
        Options { $($field: $hi.$field.or($lo.$field)),* }
    };
}

impl Options {
    /// Reads a TOML file into options.
    pub fn from_file(path: &std::path::Path) -> Result<Options, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// `self` wins over `lower` field by field.
    pub fn over(self, lower: Options) -> Options {
        overlay!(self, lower; node_id, data_dir, listen, advertise_url, fsync, segment_bytes,
            snapshot_every_bytes, snapshot_every_secs, max_key_bytes, max_value_bytes, max_body_bytes, max_txn_ops,
            max_list_limit, max_requests, max_pending_writes, cluster, token_file, token, repl_listen, advertise_repl,
            max_frame_bytes, forward, min_version_wait_ms, arbiter, priority, idle_poll_us,
            upstream, upstream_password_file, upstream_socket, resp_listen, resp_cpus, advertise_resp, advertise_upstream,
            standby_reads, upstream_timeout_ms, client_password_file, adopt_upstream_data, tls_cert, tls_key,
            tls_ca, tls_client_auth, insecure_plaintext, client_token_file, read_token_file)
    }

    /// Applies defaults and checks every rule.
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        let node_id = NodeId::new(self.node_id.ok_or(ConfigError::Missing {
            key: "node_id",
            flag: "--node-id",
            env: "UNDERSTUDY_NODE_ID",
        })?)
        .map_err(ConfigError::NodeId)?;
        let data_dir = self.data_dir.ok_or(ConfigError::Missing {
            key: "data_dir",
            flag: "--data-dir",
            env: "UNDERSTUDY_DATA_DIR",
        })?;
        let listen_text = self.listen.unwrap_or_else(|| "127.0.0.1:7000".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| ConfigError::NotAnAddress {
            key: "listen",
            value: listen_text.clone(),
            example: "127.0.0.1:7000",
        })?;
        let tls = Tls::from_settings(
            self.tls_cert,
            self.tls_key,
            self.tls_ca,
            self.tls_client_auth,
        )
        .map_err(ConfigError::Tls)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let advertise_url = self
            .advertise_url
            .unwrap_or_else(|| format!("{scheme}://{listen}"));
        if !(advertise_url.starts_with("http://") || advertise_url.starts_with("https://")) {
            return Err(ConfigError::NotHttpUrl {
                key: "advertise_url",
                value: advertise_url,
            });
        }
        if tls.is_some() && !advertise_url.starts_with("https://") {
            return Err(ConfigError::AdvertiseNeedsHttps {
                value: advertise_url,
            });
        }
        let fsync = match self.fsync.as_deref().unwrap_or("always") {
            "always" => true,
            "never" => false,
            other => {
                return Err(ConfigError::NotAChoice {
                    key: "fsync",
                    value: other.to_string(),
                    kind: "policy",
                    choices: "\"always\" (default) or \"never\"",
                })
            }
        };
        let segment_bytes = self.segment_bytes.unwrap_or(64 << 20);
        check_range("segment_bytes", segment_bytes, 64 << 10, 1 << 30)?;
        let snapshot_every_bytes = self.snapshot_every_bytes.unwrap_or(256 << 20);
        check_range(
            "snapshot_every_bytes",
            snapshot_every_bytes,
            64 << 10,
            1 << 40,
        )?;
        let snapshot_every_secs = self.snapshot_every_secs.unwrap_or(3600);
        check_range("snapshot_every_secs", snapshot_every_secs, 1, 7 * 86_400)?;
        let limits = Limits {
            max_key_bytes: self.max_key_bytes.unwrap_or(1024),
            max_value_bytes: self.max_value_bytes.unwrap_or(1 << 20),
            max_body_bytes: self.max_body_bytes.unwrap_or(4 << 20),
            max_txn_ops: self.max_txn_ops.unwrap_or(128),
            max_list_limit: self.max_list_limit.unwrap_or(1000),
            max_requests: self.max_requests.unwrap_or(1024),
            max_pending_writes: self.max_pending_writes.unwrap_or(4096),
        };
        check_range("max_key_bytes", limits.max_key_bytes as u64, 1, 65536)?;
        check_range(
            "max_body_bytes",
            limits.max_body_bytes as u64,
            1024,
            32 << 20,
        )?;
        check_range(
            "max_value_bytes",
            limits.max_value_bytes as u64,
            1,
            32 << 20,
        )?;
        if limits.max_value_bytes > limits.max_body_bytes {
            return Err(ConfigError::ValueExceedsBody {
                value: limits.max_value_bytes,
                body: limits.max_body_bytes,
            });
        }
        check_range("max_txn_ops", limits.max_txn_ops as u64, 1, 10_000)?;
        check_range("max_list_limit", limits.max_list_limit as u64, 1, 100_000)?;
        check_range("max_requests", limits.max_requests as u64, 1, 1_000_000)?;
        check_range(
            "max_pending_writes",
            limits.max_pending_writes as u64,
            1,
            1_000_000,
        )?;
        let cluster = self.cluster.unwrap_or_else(|| "understudy".into());
        check_cluster_name(&cluster).map_err(ConfigError::Cluster)?;
        let token = match (self.token, self.token_file) {
            (Some(t), _) => Some(Token::new(&t).map_err(ConfigError::TokenEnv)?),
            (None, Some(path)) => Some(Token::from_file(&path).map_err(ConfigError::TokenFile)?),
            (None, None) => None,
        };
        let repl_listen = match self.repl_listen {
            Some(text) => {
                Some(
                    text.parse::<SocketAddr>()
                        .map_err(|_| ConfigError::NotAnAddress {
                            key: "repl_listen",
                            value: text.clone(),
                            example: "127.0.0.1:7100",
                        })?,
                )
            }
            None => None,
        };
        let advertise_repl = self
            .advertise_repl
            .or_else(|| repl_listen.map(|a| a.to_string()));
        if token.is_none() {
            for (name, addr) in [("listen", Some(listen)), ("repl_listen", repl_listen)] {
                if let Some(addr) = addr {
                    if !addr.ip().is_loopback() {
                        return Err(ConfigError::NeedsToken { key: name, addr });
                    }
                }
            }
        }
        let max_frame_bytes = self.max_frame_bytes.unwrap_or(16 << 20);
        check_range(
            "max_frame_bytes",
            max_frame_bytes as u64,
            64 << 10,
            256 << 20,
        )?;
        if max_frame_bytes < limits.max_body_bytes + 4096 {
            return Err(ConfigError::FrameTooSmall {
                frame: max_frame_bytes,
                body: limits.max_body_bytes,
            });
        }
        let forward = match self.forward.as_deref().unwrap_or("proxy") {
            "proxy" => ForwardMode::Proxy,
            "redirect" => ForwardMode::Redirect,
            other => {
                return Err(ConfigError::NotAChoice {
                    key: "forward",
                    value: other.to_string(),
                    kind: "mode",
                    choices: "\"proxy\" (default) or \"redirect\"",
                })
            }
        };
        let wait = self.min_version_wait_ms.unwrap_or(1000);
        check_range("min_version_wait_ms", wait, 0, 60_000)?;
        let idle_poll_us = self.idle_poll_us.unwrap_or(DEFAULT_IDLE_POLL_US);
        let max_idle_poll_us = crate::idle_poll::MAX_TAIL.as_micros() as u64;
        check_range("idle_poll_us", idle_poll_us, 0, max_idle_poll_us)?;
        let arbiters: Vec<String> = self
            .arbiter
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        for url in &arbiters {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::NotHttpUrl {
                    key: "arbiter",
                    value: url.clone(),
                });
            }
        }
        if !arbiters.is_empty() && repl_listen.is_none() {
            return Err(ConfigError::ArbiterNeedsReplListen);
        }
        let proxy = crate::proxy::config::resolve(
            crate::proxy::config::ProxyOptions {
                upstream: self.upstream,
                upstream_password_file: self.upstream_password_file,
                upstream_socket: self.upstream_socket,
                resp_listen: self.resp_listen,
                resp_cpus: self.resp_cpus,
                advertise_resp: self.advertise_resp,
                advertise_upstream: self.advertise_upstream,
                standby_reads: self.standby_reads,
                client_password_file: self.client_password_file,
                adopt_upstream_data: self.adopt_upstream_data,
                upstream_timeout_ms: self.upstream_timeout_ms,
            },
            token.is_some(),
        )
        .map_err(ConfigError::Proxy)?;
        let insecure_plaintext = self.insecure_plaintext.unwrap_or(false);
        let resp_listen = proxy.as_ref().map(|p| p.resp_listen);
        for (name, addr) in [
            ("listen", Some(listen)),
            ("repl_listen", repl_listen),
            ("resp_listen", resp_listen),
        ] {
            if let Some(addr) = addr {
                check_plaintext(name, addr, tls.is_some(), insecure_plaintext)
                    .map_err(ConfigError::Plaintext)?;
            }
        }
        let access = Access::new(
            token.clone(),
            self.client_token_file
                .map(|p| Token::from_file(&p))
                .transpose()
                .map_err(ConfigError::TokenFile)?,
            self.read_token_file
                .map(|p| Token::from_file(&p))
                .transpose()
                .map_err(ConfigError::TokenFile)?,
        );
        Ok(Settings {
            node_id,
            data_dir,
            listen,
            advertise_url,
            fsync,
            segment_bytes,
            snapshot_every_bytes,
            snapshot_every: std::time::Duration::from_secs(snapshot_every_secs),
            limits,
            cluster,
            token,
            repl_listen,
            advertise_repl,
            max_frame_bytes,
            forward,
            min_version_wait: std::time::Duration::from_millis(wait),
            arbiters,
            priority: self.priority.unwrap_or(100),
            idle_poll: std::time::Duration::from_micros(idle_poll_us),
            proxy,
            tls,
            access,
        })
    }
}

/// Default of `idle_poll_us`.
pub const DEFAULT_IDLE_POLL_US: u64 = 0;

pub use proto_common::ids::check_cluster_name;

fn check_range(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::OutOfRange {
            key,
            value,
            min,
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Options {
        Options {
            node_id: Some("a".into()),
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_resolve() {
        let s = base().resolve().unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(s.advertise_url, "http://127.0.0.1:7000");
        assert!(s.fsync);
        assert_eq!(s.idle_poll, std::time::Duration::ZERO, "off by default");
    }

    #[test]
    fn idle_poll_is_bounded_and_can_be_switched_off() {
        let off = Options {
            idle_poll_us: Some(0),
            ..base()
        };
        assert!(off.resolve().unwrap().idle_poll.is_zero());
        let err = Options {
            idle_poll_us: Some(10_001),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "idle_poll_us=10001 must be between 0 and 10000"
        );
        assert_eq!(err.code(), "out_of_range");
    }

    #[test]
    fn flags_win_over_file() {
        let file: Options = toml::from_str("node_id = \"f\"\nlisten = \"127.0.0.1:1\"").unwrap();
        let flags = Options {
            listen: Some("127.0.0.1:2".into()),
            data_dir: Some("/d".into()),
            ..Default::default()
        };
        let s = flags.over(file).resolve().unwrap();
        assert_eq!(s.node_id.as_str(), "f");
        assert_eq!(s.listen.port(), 2);
    }

    #[test]
    fn errors_name_value_and_rule() {
        let err = Options {
            max_value_bytes: Some(10 << 20),
            max_body_bytes: Some(1 << 20),
            ..base()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.contains("max_value_bytes=10485760") && err.contains("max_body_bytes=1048576"));
        let err = Options {
            fsync: Some("sometimes".into()),
            ..base()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.contains("sometimes"), "{err}");
        let err = Options {
            node_id: None,
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::Missing { key: "node_id", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("--node-id"), "{err}");
        assert!(toml::from_str::<Options>("no_such_key = 1").is_err());
    }

    #[test]
    fn the_sample_config_in_deploy_is_valid() {
        let sample: Options = toml::from_str(include_str!("../../deploy/replica.toml")).unwrap();
        let s = sample.resolve().unwrap();
        assert_eq!(s.node_id.as_str(), "a");
        assert_eq!(s.limits.max_key_bytes, 1024);
        assert_eq!(s.forward, ForwardMode::Proxy);
        // Every commented-out setting is a real one, of the right type.
        let commented: Vec<&str> = include_str!("../../deploy/replica.toml")
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.split_once(" = ")
                    .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            })
            .collect();
        assert!(commented.len() > 10, "{commented:?}");
        for line in commented {
            toml::from_str::<Options>(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let err = Options {
            listen: Some("0.0.0.0:7000".into()),
            ..base()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("listen=0.0.0.0:7000") && err.contains("token"),
            "{err}"
        );
        let ok = Options {
            listen: Some("0.0.0.0:7000".into()),
            token: Some("0123456789abcdef0123".into()),
            insecure_plaintext: Some(true),
            ..base()
        }
        .resolve();
        assert!(ok.is_ok());
        // A token alone is not enough: the network would see it.
        let err = Options {
            listen: Some("0.0.0.0:7000".into()),
            token: Some("0123456789abcdef0123".into()),
            ..base()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("listen=0.0.0.0:7000") && err.contains("TLS"),
            "{err}"
        );
        let err = Options {
            repl_listen: Some("10.1.2.3:7100".into()),
            ..base()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(err.contains("repl_listen"), "{err}");
    }
}
