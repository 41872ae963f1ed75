//! `failover-bench`'s flags.
//!
//! Timing flags are passed through to the arbiter only when given, so the
//! default run measures the built-in defaults (heartbeat 100 ms, lease
//! 1000 ms, drift 0.1) rather than a copy of them that could drift apart.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::loadgen::parse_duration;

/// What each round does to the active.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// kill -9 the active, then restart it once a standby has taken over.
    Kill,
    /// `POST /v1/switchover` to the standby (a planned handover).
    Switchover,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Kill => "kill",
            Mode::Switchover => "switchover",
        }
    }
}

/// How the clients write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// The embedded store's HTTP API (`loadgen`).
    Http,
    /// Proxy mode: redis-servers fronted by the replicas, Redis clients.
    Resp,
}

/// Measures the client-observed write gap of failovers (or switchovers)
/// of a real cluster: an arbiter with a file store and two replicas, under
/// a closed-loop write load that retries across the replicas.
#[derive(Clone, Debug, Parser)]
#[command(name = "failover-bench", version)]
pub struct Config {
    /// kill: kill -9 the active each round; switchover: ask the arbiter for
    /// a planned switchover each round.
    #[arg(long, value_enum, default_value = "kill")]
    pub mode: Mode,

    /// http: the embedded store under `loadgen`; resp: proxy mode under
    /// Redis clients (kill rounds only).
    #[arg(long, value_enum, default_value = "http")]
    pub protocol: Protocol,

    /// Rounds: kills (or switchovers with --mode switchover).
    #[arg(long = "kills", visible_alias = "rounds", default_value_t = 20)]
    pub rounds: usize,

    /// Concurrent writers, each with its own connection.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,

    /// `--heartbeat-ms` for the arbiter [default: the arbiter's own].
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,

    /// `--lease-ms` for the arbiter [default: the arbiter's own].
    #[arg(long)]
    pub lease_ms: Option<u64>,

    /// `--drift` for the arbiter [default: the arbiter's own].
    #[arg(long)]
    pub drift: Option<f64>,

    /// Where the `arbiter` and `replica` executables are.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,

    /// How long the load runs between rounds, once the cluster is whole
    /// again (the restarted replica a confirmed sync member).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub settle: Duration,

    /// Size of the key space the writers draw from (writes overwrite keys
    /// once it is small compared to the number of writes).
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,

    /// Value length in bytes.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,

    /// Pause before a writer retries at the next replica after a refused
    /// connection or a retryable 503.
    #[arg(long, default_value_t = 2)]
    pub retry_ms: u64,

    /// Log segment size of the replicas.
    #[arg(long, default_value_t = 64 << 20)]
    pub segment_bytes: u64,

    /// Bound on each wait (takeover, catch-up, sync-set confirmation).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub deadline: Duration,

    /// Print one JSON object with every number instead of a text report.
    #[arg(long)]
    pub json: bool,

    /// Keep the cluster's directory (logs, data, state) after the run.
    #[arg(long)]
    pub keep_dir: bool,
}

impl Config {
    /// Checks the flags together; the message names the value and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.rounds == 0 {
            return Err("--kills=0 measures nothing; use 1 or more".into());
        }
        if self.clients == 0 {
            return Err("--clients=0: need at least one writer".into());
        }
        if self.protocol == Protocol::Resp && self.mode != Mode::Kill {
            return Err("--protocol resp measures kill rounds only; drop --mode".into());
        }
        for name in ["arbiter", "replica"] {
            let path = self.bin_dir.join(name);
            if !path.is_file() {
                return Err(format!(
                    "no `{name}` executable at {}; build them with `cargo build --release \
                     --bins` or point --bin-dir at them",
                    path.display()
                ));
            }
        }
        Ok(())
    }
}
