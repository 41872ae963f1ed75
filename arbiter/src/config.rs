//! Arbiter configuration: defaults → TOML file (`--config`) → environment
//! (`UNDERSTUDY_*`) → flags, then validated as a whole into [`Settings`].
//!
//! One struct, [`Options`], is both the clap argument set of `arbiter run`
//! and the TOML schema, so a key can never exist in one and not the other
//! (the replica's `config.rs` follows the same pattern). Every field is
//! optional there; [`Options::resolve`] fills defaults and checks the rules,
//! with messages that name the value and the rule.
//!
//! The timing and policy parameters are only *proposals*: once the store
//! holds a cluster state, the stored parameters win (a new leader must use
//! the lease numbers the replicas already follow; see `server::bootstrap`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use proto_common::auth::{Access, Token};
use proto_common::params::ClusterParams;
use proto_common::tls::{check_plaintext, Tls};
use serde::Deserialize;

use crate::store::StoreSpec;

/// Where the arbiter listens unless told otherwise. The port serves the
/// dashboard too, so it must be one browsers open: not on the Fetch
/// standard's list of "bad ports" (6000, X11's, is; Chromium and Firefox
/// refuse it with ERR_UNSAFE_PORT).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";

/// Default TTL of the etcd lease behind the arbiter leader key, in seconds:
/// after a leader dies without a word (`kill -9`, power loss) another
/// arbiter leads within about this long. 2 s is also the smallest TTL an
/// etcd with default timing grants (it raises smaller requests to
/// `1.5 × its election timeout`, rounded up), and leaves room for three
/// keep-alives (every TTL/4) to be lost before the leader steps down.
pub const DEFAULT_LEADER_TTL_S: u64 = 2;

/// The range `leader_ttl_s` must be in.
pub const LEADER_TTL_RANGE_S: (u64, u64) = (2, 60);

/// Everything `arbiter run` can be told. Flags and environment override the
/// file; the file overrides defaults.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// HTTP API address (heartbeats, status, dashboard) [default: 127.0.0.1:7700].
    #[arg(long, env = "UNDERSTUDY_ARBITER_LISTEN")]
    pub listen: Option<String>,
    /// URL replicas and operators use to reach this arbiter, returned as
    /// `leader` in replies and status [default: http://<listen>, or
    /// https://<listen> with TLS].
    #[arg(long, env = "UNDERSTUDY_ARBITER_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Cluster name; heartbeats naming another cluster are refused
    /// [default: understudy].
    #[arg(long, env = "UNDERSTUDY_CLUSTER")]
    pub cluster: Option<String>,
    /// Where the cluster state lives (required): file:PATH (one arbiter) or
    /// etcd://HOST:PORT,… (several arbiters electing a leader in etcd).
    #[arg(long, env = "UNDERSTUDY_STORE")]
    pub store: Option<String>,
    /// This arbiter's name in the etcd leader key, logs and status
    /// [default: the advertised URL's host:port].
    #[arg(long, env = "UNDERSTUDY_ARBITER_ID")]
    pub arbiter_id: Option<String>,
    /// etcd store only: TTL of the lease behind the arbiter leader key, in
    /// seconds (2 to 60). Another arbiter leads within about this long after
    /// the leader dies [default: 2].
    #[arg(long, env = "UNDERSTUDY_LEADER_TTL_S")]
    pub leader_ttl_s: Option<u64>,
    /// File holding the cluster token (the secret shared by every node).
    /// The token can also come from UNDERSTUDY_TOKEN. Without a token the
    /// API must listen on a loopback address.
    #[arg(long, env = "UNDERSTUDY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The token itself, from the UNDERSTUDY_TOKEN environment variable only
    /// (never a flag: command lines are visible to every user).
    #[arg(skip)]
    #[serde(skip)]
    pub token: Option<String>,
    /// Replica heartbeat interval, ms [default: 100]. Ignored when the store
    /// already holds parameters.
    #[arg(long, env = "UNDERSTUDY_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Lease of the active, ms [default: 1000].
    #[arg(long, env = "UNDERSTUDY_LEASE_MS")]
    pub lease_ms: Option<u64>,
    /// Bound on the clock-rate difference between machines [default: 0.1].
    #[arg(long, env = "UNDERSTUDY_DRIFT")]
    pub drift: Option<f64>,
    /// Standbys that must hold a write before it is acknowledged; 0 is
    /// async mode [default: 1].
    #[arg(long, env = "UNDERSTUDY_SYNC_STANDBYS")]
    pub sync_standbys: Option<u32>,
    /// Block writes when no standby can be in the sync set (`--strict` or
    /// `--strict=false`) [default: false].
    #[arg(
        long,
        env = "UNDERSTUDY_STRICT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub strict: Option<bool>,
    /// First formation: how long to wait for replicas, ms [default: 2000].
    #[arg(long, env = "UNDERSTUDY_INITIAL_WAIT_MS")]
    pub initial_wait_ms: Option<u64>,
    /// Drop a standby silent this long from membership, ms [default: 300000].
    #[arg(long, env = "UNDERSTUDY_REMOVE_AFTER_MS")]
    pub remove_after_ms: Option<u64>,
    /// Async mode: never promote a standby more entries behind than this
    /// [default: 100000].
    #[arg(long, env = "UNDERSTUDY_MAX_LAG_ON_FAILOVER")]
    pub max_lag_on_failover: Option<u64>,
    /// PEM certificate (chain) of this arbiter: TLS on its API. Needs
    /// --tls-key and --tls-ca (deploy/make-certs.sh makes all three).
    #[arg(long, env = "UNDERSTUDY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "UNDERSTUDY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate(s) of the CA that signs the cluster's certificates.
    #[arg(long, env = "UNDERSTUDY_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: every caller of the API (replicas' heartbeats, the
    /// operator CLI) must present a certificate signed by --tls-ca.
    #[arg(
        long,
        env = "UNDERSTUDY_TLS_CLIENT_AUTH",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub tls_client_auth: Option<bool>,
    /// Serve without TLS on a non-loopback address (a trusted network
    /// only: heartbeats and tokens cross it in clear text).
    #[arg(
        long,
        env = "UNDERSTUDY_INSECURE_PLAINTEXT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub insecure_plaintext: Option<bool>,
    /// File holding a read-only token: GET /v1/status, /metrics and the
    /// dashboard (the cluster token allows them too).
    #[arg(long, env = "UNDERSTUDY_READ_TOKEN_FILE")]
    pub read_token_file: Option<PathBuf>,
}

/// Validated configuration of `arbiter run`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to bind (tests bind their own listener and ignore it).
    pub listen: SocketAddr,
    /// The URL given to replicas and operators as `leader`; `None` derives
    /// `http(s)://<bound address>` once bound, so port 0 works in tests.
    pub advertise_url: Option<String>,
    /// Checked against every heartbeat and the stored state.
    pub cluster: String,
    /// Which state store to open.
    pub store: StoreSpec,
    /// The id written to the etcd leader key; `None` derives it from the
    /// advertised URL once bound.
    pub arbiter_id: Option<String>,
    /// TTL of the etcd leader lease, s (etcd store only).
    pub leader_ttl_s: u64,
    /// Bearer token required on heartbeats and operator calls; `None` only
    /// on loopback, where every caller is accepted.
    pub token: Option<Token>,
    /// Parameters to store when the store is empty (defaults + given).
    pub params: ClusterParams,
    /// Names of the parameters given explicitly, so start-up can say which
    /// ones the stored parameters override.
    pub params_given: Vec<&'static str>,
    /// TLS on the API (and for etcd at `etcds://`); `None`: clear text.
    pub tls: Option<std::sync::Arc<Tls>>,
    /// Who may read the status, the metrics and the dashboard.
    pub reads: Access,
}

macro_rules! overlay {
    ($hi:expr, $lo:expr; $($field:ident),*) => {
        Options { $($field: $hi.$field.or($lo.$field)),* }
    };
}

impl Options {
    /// Reads a TOML file into options.
    pub fn from_file(path: &Path) -> Result<Options, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    /// `self` wins over `lower` field by field.
    pub fn over(self, lower: Options) -> Options {
        overlay!(self, lower; listen, advertise_url, cluster, store, arbiter_id, leader_ttl_s,
            token_file, token,
            heartbeat_ms, lease_ms, drift, sync_standbys, strict, initial_wait_ms,
            remove_after_ms, max_lag_on_failover, tls_cert, tls_key, tls_ca, tls_client_auth,
            insecure_plaintext, read_token_file)
    }

    /// Applies defaults and checks every rule.
    pub fn resolve(self) -> Result<Settings, String> {
        let listen_text = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            format!(
                "listen={listen_text:?} is not an address; use IP:PORT such as {DEFAULT_LISTEN}"
            )
        })?;
        if let Some(url) = &self.advertise_url {
            check_url("advertise_url", url)?;
        }
        let cluster = self.cluster.unwrap_or_else(|| "understudy".into());
        check_cluster_name(&cluster)?;
        let store: StoreSpec = self
            .store
            .ok_or(
                "store is required: pass --store file:/var/lib/understudy/arbiter.json, \
                 set UNDERSTUDY_STORE or store in the config file",
            )?
            .parse()?;
        if let Some(id) = &self.arbiter_id {
            check_arbiter_id(id)?;
        }
        let leader_ttl_s = self.leader_ttl_s.unwrap_or(DEFAULT_LEADER_TTL_S);
        let (min_ttl, max_ttl) = LEADER_TTL_RANGE_S;
        if !(min_ttl..=max_ttl).contains(&leader_ttl_s) {
            return Err(format!(
                "leader_ttl_s={leader_ttl_s} must be between {min_ttl} and {max_ttl}: etcd \
                 (default timing) raises shorter leases to 2 s anyway, and a longer one only \
                 delays arbiter failover"
            ));
        }
        if matches!(store, StoreSpec::Etcd { .. })
            && listen.ip().is_unspecified()
            && self.advertise_url.is_none()
        {
            return Err(format!(
                "listen={listen} with an etcd store needs --advertise-url: the other arbiters \
                 redirect replicas to this arbiter's URL, and http://{listen} reaches nobody"
            ));
        }
        let token = match (self.token, self.token_file) {
            (Some(t), _) => Some(Token::new(&t).map_err(|e| format!("UNDERSTUDY_TOKEN: {e}"))?),
            (None, Some(path)) => Some(Token::from_file(&path)?),
            (None, None) => None,
        };
        if token.is_none() {
            check_loopback_without_token(listen)?;
        }
        let tls = Tls::from_settings(
            self.tls_cert,
            self.tls_key,
            self.tls_ca,
            self.tls_client_auth,
        )?;
        check_plaintext(
            "listen",
            listen,
            tls.is_some(),
            self.insecure_plaintext.unwrap_or(false),
        )?;
        if let (Some(_), Some(url)) = (&tls, &self.advertise_url) {
            if !url.starts_with("https://") {
                return Err(format!(
                    "advertise_url={url:?}: the API serves TLS, so replicas and operators must \
                     reach it with https://"
                ));
            }
        }
        if matches!(store, StoreSpec::Etcd { tls: true, .. }) && tls.is_none() {
            return Err(
                "store=etcds://… needs the CA that signed etcd's certificate: set --tls-cert, \
                 --tls-key and --tls-ca (the certificate is offered to etcd when it asks for one)"
                    .into(),
            );
        }
        let read_token = self
            .read_token_file
            .map(|p| Token::from_file(&p))
            .transpose()?;
        let reads = Access::new(token.clone(), None, read_token);

        let mut params = ClusterParams::default();
        let mut params_given = Vec::new();
        macro_rules! param {
            ($($field:ident),*) => {$(
                if let Some(v) = self.$field {
                    params.$field = v;
                    params_given.push(stringify!($field));
                }
            )*};
        }
        param!(
            heartbeat_ms,
            lease_ms,
            drift,
            sync_standbys,
            strict,
            initial_wait_ms,
            remove_after_ms,
            max_lag_on_failover
        );
        params.validate().map_err(|e| {
            format!("invalid cluster parameters: {e} (set by flags, UNDERSTUDY_* or the config file; defaults: heartbeat_ms=100, lease_ms=1000, drift=0.1)")
        })?;
        Ok(Settings {
            listen,
            advertise_url: self.advertise_url,
            cluster,
            store,
            arbiter_id: self.arbiter_id,
            leader_ttl_s,
            token,
            params,
            params_given,
            tls,
            reads,
        })
    }
}

/// Loads `arbiter run`'s settings: `flags` (clap already merged the
/// environment into them) over the `--config` file, plus the token from
/// `UNDERSTUDY_TOKEN`.
pub fn load(flags: Options, config_file: Option<&Path>) -> Result<Settings, String> {
    let file = config_file
        .map(Options::from_file)
        .transpose()?
        .unwrap_or_default();
    let mut flags = flags;
    flags.token = std::env::var("UNDERSTUDY_TOKEN").ok().or(flags.token);
    flags.over(file).resolve()
}

/// Without a token anyone who can connect may heartbeat or switch the
/// active over: only allowed when nobody but local users can connect.
pub fn check_loopback_without_token(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "listen={addr} is not a loopback address and no cluster token is set; \
         set --token-file or UNDERSTUDY_TOKEN, or listen on 127.0.0.1"
    ))
}

pub use proto_common::ids::check_cluster_name;

/// Arbiter ids go into the etcd leader key and logs: printable, no spaces.
fn check_arbiter_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "arbiter_id={id:?} must be 1 to 128 printable characters without spaces"
        ))
    }
}

fn check_url(name: &str, url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "{name}={url:?} must start with http:// or https://"
        ))
    }
}

#[cfg(test)]
mod tests {
    /// The Fetch standard's "bad ports" (fetch.spec.whatwg.org, port
    /// blocking): browsers refuse to open URLs on them.
    const BROWSER_BLOCKED_PORTS: &[u16] = &[
        1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101,
        102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389,
        427, 465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636,
        989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665,
        6666, 6667, 6668, 6669, 6679, 6697, 10080,
    ];

    #[test]
    fn the_sample_config_in_deploy_is_valid_and_has_every_key() {
        let text = include_str!("../../deploy/arbiter.toml");
        let sample: Options = toml::from_str(text).unwrap();
        let s = sample.resolve().unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.params, ClusterParams::default());
        // Every key of Options, set or shown commented out: serde names
        // them all when it refuses an unknown one.
        let refusal = toml::from_str::<Options>("no_such_key = 1")
            .unwrap_err()
            .to_string();
        let expected = refusal.split("expected one of").nth(1).unwrap();
        let keys: Vec<&str> = expected
            .split(',')
            .map(|k| k.trim().trim_matches('`'))
            .filter(|k| !k.is_empty())
            .collect();
        assert!(keys.len() > 10, "{refusal}");
        for key in keys {
            assert!(
                text.lines().any(|l| {
                    let l = l.trim_start_matches("# ");
                    l.starts_with(&format!("{key} ="))
                }),
                "deploy/arbiter.toml does not mention {key}"
            );
        }
    }

    #[test]
    fn the_default_port_is_one_browsers_open() {
        let port: std::net::SocketAddr = DEFAULT_LISTEN.parse().unwrap();
        assert!(
            !BROWSER_BLOCKED_PORTS.contains(&port.port()),
            "{DEFAULT_LISTEN}: browsers refuse this port, so the dashboard would not open"
        );
    }

    use super::*;

    fn base() -> Options {
        Options {
            store: Some("file:/tmp/state.json".into()),
            ..Default::default()
        }
    }

    #[test]
    fn etcd_in_tls_needs_the_tls_files() {
        let err = Options {
            store: Some("etcds://127.0.0.1:2379".into()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert!(
            err.contains("etcds://") && err.contains("--tls-ca"),
            "{err}"
        );
    }

    #[test]
    fn defaults_resolve() {
        let s = base().resolve().unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.advertise_url, None);
        assert_eq!(s.cluster, "understudy");
        assert_eq!(s.store, StoreSpec::File("/tmp/state.json".into()));
        assert_eq!(s.params, ClusterParams::default());
        assert!(s.params_given.is_empty());
        assert!(s.token.is_none());
    }

    #[test]
    fn flags_win_over_file_over_defaults() {
        let file: Options = toml::from_str(
            "cluster = \"prod\"\nlisten = \"127.0.0.1:1\"\nlease_ms = 2000\nstrict = true\n\
             store = \"file:/f.json\"",
        )
        .unwrap();
        let flags = Options {
            listen: Some("127.0.0.1:2".into()),
            heartbeat_ms: Some(50),
            ..Default::default()
        };
        let s = flags.over(file).resolve().unwrap();
        assert_eq!(s.cluster, "prod");
        assert_eq!(s.listen.port(), 2);
        assert_eq!(s.store, StoreSpec::File("/f.json".into()));
        assert_eq!(s.params.heartbeat_ms, 50);
        assert_eq!(s.params.lease_ms, 2000);
        assert!(s.params.strict);
        assert_eq!(s.params.drift, 0.1, "default kept");
        assert_eq!(s.params_given, ["heartbeat_ms", "lease_ms", "strict"]);
    }

    #[test]
    fn etcd_settings_are_checked() {
        let s = Options {
            store: Some("etcd://127.0.0.1:2379".into()),
            arbiter_id: Some("arb-1".into()),
            leader_ttl_s: Some(5),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(s.arbiter_id.as_deref(), Some("arb-1"));
        assert_eq!(s.leader_ttl_s, 5);
        assert_eq!(base().resolve().unwrap().leader_ttl_s, DEFAULT_LEADER_TTL_S);
        let err = Options {
            leader_ttl_s: Some(1),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert!(
            err.contains("leader_ttl_s=1") && err.contains("between 2 and 60"),
            "{err}"
        );
        let err = Options {
            arbiter_id: Some("a b".into()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert!(err.contains("arbiter_id=\"a b\""), "{err}");
        let err = Options {
            store: Some("etcd://127.0.0.1:2379".into()),
            listen: Some("0.0.0.0:7700".into()),
            token: Some("0123456789abcdef0123".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.contains("--advertise-url"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let err = toml::from_str::<Options>("lease = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lease"), "{err}");
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let err = Options {
            listen: Some("0.0.0.0:7700".into()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert!(
            err.contains("listen=0.0.0.0:7700") && err.contains("--token-file"),
            "{err}"
        );
        // With a token, a non-loopback listener still needs TLS, or the
        // operator's explicit --insecure-plaintext.
        let err = Options {
            listen: Some("0.0.0.0:7700".into()),
            token: Some("0123456789abcdef0123".into()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert!(
            err.contains("listen=0.0.0.0:7700") && err.contains("--insecure-plaintext"),
            "{err}"
        );
        let ok = Options {
            listen: Some("0.0.0.0:7700".into()),
            token: Some("0123456789abcdef0123".into()),
            insecure_plaintext: Some(true),
            ..base()
        }
        .resolve()
        .unwrap();
        assert!(ok.token.is_some());
        Options {
            listen: Some("[::1]:7700".into()),
            ..base()
        }
        .resolve()
        .unwrap();
    }

    #[test]
    fn invalid_timing_is_rejected_naming_the_values() {
        let err = Options {
            heartbeat_ms: Some(200),
            lease_ms: Some(300),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert!(
            err.contains("lease_ms=300") && err.contains("heartbeat_ms=200"),
            "{err}"
        );
        let err = Options {
            drift: Some(0.9),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert!(err.contains("drift=0.9"), "{err}");
    }

    #[test]
    fn other_errors_name_the_value() {
        let err = Options::default().resolve().unwrap_err();
        assert!(err.contains("--store"), "{err}");
        let err = Options {
            store: Some("/x.json".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.contains("\"/x.json\""), "{err}");
        let err = Options {
            cluster: Some("a b".into()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert!(err.contains("cluster=\"a b\""), "{err}");
        let err = Options {
            advertise_url: Some("10.0.0.1:7700".into()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert!(err.contains("advertise_url=\"10.0.0.1:7700\""), "{err}");
        let err = Options {
            token: Some("short".into()),
            ..base()
        }
        .resolve()
        .unwrap_err();
        assert!(err.contains("UNDERSTUDY_TOKEN"), "{err}");
    }

    #[test]
    fn strict_takes_an_optional_value() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            options: Options,
        }
        let on = Cli::try_parse_from(["x", "--strict"]).unwrap();
        assert_eq!(on.options.strict, Some(true));
        let off = Cli::try_parse_from(["x", "--strict=false"]).unwrap();
        assert_eq!(off.options.strict, Some(false));
        let unset = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(unset.options.strict, None);
    }
}
