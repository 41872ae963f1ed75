//! `repl-bench`: replication measured on a real cluster, with the
//! comparison against a three-member etcd in the same run.
//!
//! The tool starts everything itself from release binaries (`--bin-dir`):
//! a three-member etcd on loopback, and an arbiter (file store) with two
//! replicas, `sync_standbys = 1`, fsync on. Three phases:
//!
//! 1. **throughput** — `loadgen` against the active and against etcd, 64
//!    clients and 1 client, 256-byte values: puts/s and latency.
//! 2. **lag** — a paced load at half the maximum puts/s of phase 1; the
//!    replication lag is the time from the active writing a batch to the
//!    sync standby's durable acknowledgement, read from the active's
//!    `understudy_replication_ack_latency_seconds` histogram (before/after
//!    difference; percentiles are bucket upper bounds).
//! 3. **catch-up** — `--catchup-bytes` of distinct keys (1 KiB values) are
//!    written; once the active has finished its own periodic snapshots, a
//!    third, empty replica (priority 0) joins; the time from its start until
//!    it has applied the active's position gives the catch-up rate (dataset
//!    bytes / seconds), whether by log or by snapshot.
//!
//! `--phase standalone` instead runs one standalone replica (no arbiter, no
//! replication) against a one-member etcd, 64 and 1 clients; `--phase
//! redis` runs proxy mode under `redis-benchmark` against a redis-server
//! alone ([`redis`]).
//!
//! ```text
//! cargo build --release --bins
//! target/release/repl-bench                    # all phases, 1 GiB catch-up
//! target/release/repl-bench --phase standalone
//! target/release/repl-bench --phase lag --json
//! target/release/repl-bench --phase redis --rounds 3
//! target/release/repl-bench --phase memory
//! ```
//!
//! Layout: [`config`] (flags), [`scrape`] (Prometheus histograms), [`run`]
//! (the phases and the report).

pub mod config;
pub mod memory;
pub mod redis;
pub mod run;
pub mod scrape;

pub use config::{Config, Phase};
pub use run::run;
