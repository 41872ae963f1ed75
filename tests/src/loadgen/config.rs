//! loadgen's flags, what they mean together, and the list of runs they ask for.
//!
//! The flags are a clap `Parser` so the binary is a thin wrapper and tests
//! build a config the same way a person does:
//! `Config::try_parse_from(["loadgen", "--target", url, "--clients", "4"])`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Closed-loop load against understudy replicas (`http://`) or etcd
/// (`etcd://`), one target after another, one report row per target.
#[derive(Clone, Debug, Parser)]
#[command(name = "loadgen", version)]
pub struct Config {
    /// Where to send load: `http(s)://host:port` (an understudy replica) or
    /// `etcd://host:port[,host:port...]`. Repeat for several targets; each
    /// is measured on its own, one after another.
    #[arg(long = "target", required = true, value_parser = Target::parse)]
    pub targets: Vec<Target>,

    /// Concurrent clients, each with its own connection, each sending its
    /// next operation as soon as the previous one completes.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,

    /// How long to measure after warm-up (`500ms`, `10s`, `2m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Load before measuring, not counted: fills caches and connections.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Key length in bytes: `k` followed by the zero-padded key number.
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,

    /// Value length in bytes (at least the `c{client}-o{op}-` prefix).
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,

    /// Size of the key space; keys are drawn uniformly from it.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,

    /// Fraction of operations that are reads (0.0 = all writes).
    #[arg(long, default_value_t = 0.0)]
    pub get_ratio: f64,

    /// Measure this many operations in total (split evenly over the
    /// clients) instead of running for `--duration`.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Fill the key space: writes only, every key from 0 to `--keys` - 1
    /// once (client c writes keys c, c + clients, ...); sets `--ops` to
    /// `--keys` and skips the warm-up. For loading a dataset.
    #[arg(long)]
    pub fill: bool,

    /// Print one JSON object per target on stdout instead of a table.
    #[arg(long)]
    pub json: bool,

    /// For `https://` targets: the CA that signed the replicas'
    /// certificates.
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,

    /// Pace the load to about this many operations per second in total
    /// (split over the clients); a client that falls behind its schedule
    /// does not burst to catch up. Without it the loop is closed: each
    /// client goes as fast as answers come.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Seeds the per-client key and operation choice, so runs repeat.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Write one JSON line per operation to this file, for failover and
    /// consistency checks (fields: see tests/src/loadgen/history.rs).
    #[arg(long)]
    pub history: Option<PathBuf>,

    /// The `http://` targets are replicas of ONE cluster: run them as one
    /// target, and on a connection error or a retryable 503 move to the next
    /// URL and retry the same operation. Also reports the longest write gap.
    #[arg(long)]
    pub targets_all: bool,

    /// Pause before retrying at the next URL (with `--targets-all`); without
    /// it, the pause after a request that got no answer, so a dead target is
    /// not hammered in a tight loop.
    #[arg(long, default_value_t = 5)]
    pub retry_ms: u64,

    /// Bound on one request; a request to a paused server ends as `timeout`.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// An operation retried for this long (with `--targets-all`) is given
    /// up and counted as an error of its last kind.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub give_up: Duration,
}

/// One `--target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An understudy replica's client API, `http://host:port`.
    Http(String),
    /// An etcd cluster, as `http://host:port` endpoints for etcd-client.
    Etcd(Vec<String>),
}

impl Target {
    /// Parses `http://host:port` or `etcd://host:port[,host:port...]`.
    pub fn parse(text: &str) -> Result<Target, String> {
        if let Some(rest) = text.strip_prefix("etcd://") {
            let endpoints: Vec<String> = rest
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(|e| format!("http://{}", e.trim_end_matches('/')))
                .collect();
            if endpoints.is_empty() {
                return Err(format!(
                    "{text:?} names no etcd endpoint; use etcd://host:port"
                ));
            }
            return Ok(Target::Etcd(endpoints));
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            let uri: hyper::Uri = text
                .trim_end_matches('/')
                .parse()
                .map_err(|e| format!("target {text:?}: {e}"))?;
            if uri.authority().is_none() || uri.path_and_query().is_some_and(|p| p.as_str() != "/")
            {
                return Err(format!("target {text:?} must be http(s)://host:port"));
            }
            return Ok(Target::Http(text.trim_end_matches('/').to_string()));
        }
        Err(format!(
            "target {text:?} must start with http:// or https:// (a replica) or etcd:// (an \
             etcd cluster)"
        ))
    }
}

/// What one report row measures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Run {
    /// Replica URLs; more than one only with `--targets-all` (one cluster).
    Http(Vec<String>),
    /// etcd endpoints, balanced by etcd-client.
    Etcd(Vec<String>),
}

impl Run {
    /// The name of the row: the URL(s) as given.
    pub fn label(&self) -> String {
        match self {
            Run::Http(urls) => urls.join(","),
            Run::Etcd(endpoints) => {
                let hosts: Vec<&str> = endpoints
                    .iter()
                    .map(|e| e.trim_start_matches("http://"))
                    .collect();
                format!("etcd://{}", hosts.join(","))
            }
        }
    }
}

impl Config {
    /// Checks the flags together; the message names the value and the fix.
    /// With `--tls-ca`: every `https://` target is reached in TLS trusting
    /// that CA (see `client::credentials`).
    pub fn remember_tls(&self) -> Result<(), String> {
        let Some(ca) = &self.tls_ca else {
            return Ok(());
        };
        let tls = proto_common::tls::TlsFiles::client(Some(ca.clone()), None, None)?
            .map(|f| proto_common::tls::Tls::load(f, false))
            .transpose()?;
        for target in &self.targets {
            if let Target::Http(url) = target {
                let authority = url
                    .parse::<hyper::Uri>()
                    .ok()
                    .and_then(|u| u.authority().map(|a| a.to_string()))
                    .unwrap_or_default();
                crate::client::credentials::remember(
                    &authority,
                    crate::client::credentials::Credentials {
                        tls: tls.clone(),
                        token: None,
                    },
                );
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.clients == 0 {
            return Err("--clients=0: need at least one client".into());
        }
        if self.keys == 0 {
            return Err("--keys=0: the key space needs at least one key".into());
        }
        let digits = (self.keys - 1).to_string().len();
        if self.key_size < digits + 1 {
            return Err(format!(
                "--key-size={} is too small for --keys={}: keys are 'k' plus {digits} digits; \
                 use --key-size={} or more",
                self.key_size,
                self.keys,
                digits + 1
            ));
        }
        if !(0.0..=1.0).contains(&self.get_ratio) {
            return Err(format!(
                "--get-ratio={} must be between 0.0 and 1.0",
                self.get_ratio
            ));
        }
        if self.ops.is_none() && self.duration.is_zero() {
            return Err("--duration=0 measures nothing; give a duration or --ops".into());
        }
        if self.ops == Some(0) {
            return Err("--ops=0 measures nothing".into());
        }
        if self.targets_all && self.targets.iter().any(|t| !matches!(t, Target::Http(_))) {
            return Err("--targets-all groups http:// replicas of one cluster; \
                        etcd:// targets cannot be part of it"
                .into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout=0 would fail every request".into());
        }
        Ok(())
    }

    /// The runs, in order: each target alone, or all http targets as one.
    pub fn runs(&self) -> Vec<Run> {
        if self.targets_all {
            let urls = self
                .targets
                .iter()
                .filter_map(|t| match t {
                    Target::Http(url) => Some(url.clone()),
                    Target::Etcd(_) => None,
                })
                .collect();
            return vec![Run::Http(urls)];
        }
        self.targets
            .iter()
            .map(|t| match t {
                Target::Http(url) => Run::Http(vec![url.clone()]),
                Target::Etcd(endpoints) => Run::Etcd(endpoints.clone()),
            })
            .collect()
    }

    /// The pause before a retry.
    pub fn retry_delay(&self) -> Duration {
        Duration::from_millis(self.retry_ms)
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h`, `1.5s`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; use e.g. 500ms, 10s, 2m"))?;
    let seconds_per_unit = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "us" | "µs" => 0.000_001,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|e| format!("{text:?} is not a usable duration: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_people_write_them() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "s", "10 parsecs", "1.2.3s", "-1s", "ms10"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn targets_parse_and_group() {
        let c = Config::try_parse_from([
            "loadgen",
            "--target",
            "http://127.0.0.1:1/",
            "--target",
            "etcd://a:1,b:2",
        ])
        .unwrap();
        assert_eq!(
            c.runs(),
            vec![
                Run::Http(vec!["http://127.0.0.1:1".into()]),
                Run::Etcd(vec!["http://a:1".into(), "http://b:2".into()]),
            ]
        );
        assert_eq!(c.runs()[1].label(), "etcd://a:1,b:2");
        assert!(c.validate().is_ok());
        assert!(Config::try_parse_from(["loadgen", "--target", "tcp://a:1"]).is_err());
        assert!(Config::try_parse_from(["loadgen", "--target", "etcd://"]).is_err());

        let all = Config::try_parse_from([
            "loadgen",
            "--targets-all",
            "--target",
            "http://a:1",
            "--target",
            "http://b:2",
        ])
        .unwrap();
        assert_eq!(
            all.runs(),
            vec![Run::Http(vec!["http://a:1".into(), "http://b:2".into()])]
        );
    }

    #[test]
    fn flags_are_checked_together() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["loadgen", "--target", "http://a:1"];
            args.extend_from_slice(extra);
            Config::try_parse_from(args).unwrap().validate()
        };
        assert!(parse(&[]).is_ok());
        let err = parse(&["--key-size", "4", "--keys", "100000"]).unwrap_err();
        assert!(err.contains("--key-size=6"), "{err}");
        assert!(parse(&["--key-size", "6", "--keys", "100000"]).is_ok());
        assert!(parse(&["--get-ratio", "1.5"]).is_err());
        assert!(parse(&["--clients", "0"]).is_err());
        assert!(parse(&["--duration", "0s"]).is_err());
        assert!(parse(&["--duration", "0s", "--ops", "10"]).is_ok());
    }
}
