//! The understudy test crate: the end-to-end test harness, a client for the
//! replica's HTTP API, and the `loadgen` benchmark tool.
//!
//! Layout:
//! - [`client`]: one keep-alive HTTP/1.1 connection to a replica's client
//!   API, and its answers with the API's headers and JSON shapes.
//! - [`harness`]: free loopback ports, test directories, child processes
//!   that die with the test, polling with a deadline, local etcd clusters,
//!   real `replica` processes, and damaging a stopped replica's log.
//! - [`loadgen`]: closed-loop load against understudy replicas or etcd,
//!   latency histograms, per-operation histories for failover checks, and
//!   a background load with a ledger of acknowledged writes.
//! - [`failover_bench`]: the `failover-bench` tool: client-observed write
//!   gaps of kills and switchovers of a real cluster.
//! - [`repl_bench`]: the `repl-bench` tool: replication throughput, lag and
//!   catch-up against a three-member etcd.
//!
//! End-to-end tests live in `tests/` and use only this library's public API.
//! They run the workspace's binaries from the same target dir and profile,
//! so build those first: `cargo build --workspace --bins`.

pub mod client;
pub mod failover_bench;
pub mod fault;
pub mod harness;
pub mod loadgen;
pub mod repl_bench;
