//! repl-bench's flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::loadgen::parse_duration;

/// Which part of the benchmark to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// Throughput, lag and catch-up (the replicated cluster).
    All,
    Throughput,
    Lag,
    Catchup,
    /// One standalone replica against a one-member etcd (no replication).
    Standalone,
    /// Proxy mode under redis-benchmark, against a redis-server alone.
    Redis,
    /// Resident memory after loading 1 M and 5 M keys and overwriting,
    /// against etcd.
    Memory,
    /// The replicated write benchmark on two clusters, TLS off and TLS on
    /// (every listener and connection), alternated `--rounds` times.
    Tls,
}

/// Replication benchmark against a three-member etcd.
#[derive(Clone, Debug, Parser)]
#[command(name = "repl-bench", version)]
pub struct Config {
    /// Directory holding the `replica` and `arbiter` binaries.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// What to run.
    #[arg(long, value_enum, default_value_t = Phase::All)]
    pub phase: Phase,
    /// Measuring time of each throughput and lag run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Concurrent clients of the many-client runs.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Value size of the throughput and lag runs.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Paced rate of the lag run; default half the measured maximum.
    #[arg(long)]
    pub lag_rate: Option<f64>,
    /// Dataset size for the catch-up run.
    #[arg(long, default_value_t = 1 << 30)]
    pub catchup_bytes: u64,
    /// Value size of the catch-up dataset.
    #[arg(long, default_value_t = 1024)]
    pub catchup_value_size: usize,
    /// `--phase redis`: requests per many-client redis-benchmark run (a
    /// tenth of it for the single-client run).
    #[arg(long, default_value_t = 300_000)]
    pub redis_requests: u64,
    /// `--phase redis` and `--phase tls`: runs of each target, alternated.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Also measure every understudy target with Debian's `wrk` and
    /// `tests/wrk/put.lua` (same clients, duration, value size), next to
    /// loadgen's numbers: a load generator nobody here wrote.
    #[arg(long)]
    pub wrk: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}
