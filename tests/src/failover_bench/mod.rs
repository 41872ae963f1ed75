//! `failover-bench`: how long clients cannot write when the active dies
//! (or hands over), measured on a real cluster under load.
//!
//! The tool starts its own cluster from release binaries (`--bin-dir`): an
//! arbiter with a file store and two replicas with `sync_standbys = 1`,
//! timing flags passed through. A 64-client closed-loop write load runs
//! against both replicas as one target (retrying at the other replica
//! every few ms on a refused connection or a retryable 503). Each round
//! kills the active with SIGKILL (`--mode kill`, default) or asks for a
//! planned switchover (`--mode switchover`), waits for the new active,
//! brings the old one back as a confirmed sync standby and lets the load
//! run `--settle`. At the end every acknowledged write is checked on both
//! replicas, and each round's **client-observed write gap** is reported:
//! the longest time without any acknowledged write, from the last ack
//! before the event to the first ack in the new epoch, across all clients.
//!
//! ```text
//! cargo build --release --bins
//! target/release/failover-bench                       # 20 kills, default timing
//! target/release/failover-bench --heartbeat-ms 25 --lease-ms 150
//! target/release/failover-bench --mode switchover --json
//! target/release/failover-bench --protocol resp       # proxy mode, Redis clients
//! ```
//!
//! Layout: [`config`] (flags), [`rounds`] (the run), [`report`] (rows,
//! percentiles, text and JSON).

pub mod config;
pub mod report;
pub mod resp;
pub mod rounds;

pub use config::{Config, Mode, Protocol};
pub use report::{BenchReport, RoundReport, Summary};
pub use rounds::run;
