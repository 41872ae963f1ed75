//! What end-to-end tests need to run real processes safely in parallel.
//!
//! Each test owns its ports, its directory and its processes:
//! - [`ports`]: free loopback ports, never the same one twice in a process.
//! - [`dirs`]: a per-test directory, kept (and its path printed) when the
//!   test fails, so logs and data can be read afterwards.
//! - [`process`]: spawn any binary with logs captured to files; a
//!   [`ChildGuard`] kills it on drop, even when the test panics, and sends
//!   SIGKILL, SIGTERM, SIGSTOP and SIGCONT for fault injection.
//! - [`wait`]: poll a condition until it holds or a deadline passes; tests
//!   never sleep a fixed time to "let things settle".
//! - [`etcd`]: a 1- or 3-member etcd on loopback, for the arbiter's etcd
//!   store and for benchmark baselines.
//! - [`fake_replica`]: an in-process stand-in for a replica's client API
//!   (active, standby, redirecting, crashed), for testing API clients.
//! - [`binaries`]: where the workspace's `replica` and `arbiter` binaries
//!   are (the test's own target dir and profile).
//! - [`replica`]: a real `replica run` process on a free port with its own
//!   data dir: start, crash, restart, SIGTERM, its stderr.
//! - [`replica_status`]: a replica's own `/v1/status` and `/v1/role`, and a
//!   dump of all its data.
//! - [`arbiter`]: a real `arbiter run` process with a file store: start,
//!   kill, restart, its status, the operator calls.
//! - [`cluster`], [`cluster_builder`]: an arbiter and N replicas wired
//!   together: who is active (asked of both), the sync set, data dumps,
//!   kill and restart.
//! - [`fake_arbiter`]: an in-process arbiter that points a replica at any
//!   active, to test what the active does with a replica the real arbiter
//!   would refuse.
//! - [`serial`]: one failover test at a time per test binary, so timing
//!   tests do not starve each other of CPU.
//! - [`log_files`]: a stopped replica's log segments and records, to
//!   damage them on purpose.
//! - [`redis`], [`proxy_cluster`]: real redis-servers, and a cluster of
//!   replicas fronting them (proxy mode).

pub mod arbiter;
pub mod binaries;
pub mod browser;
pub mod certs;
pub mod cluster;
pub mod cluster_builder;
pub mod dirs;
pub mod etcd;
pub mod fake_arbiter;
mod fake_http;
pub mod fake_replica;
pub mod log_files;
pub mod ports;
pub mod process;
pub mod proxy_cluster;
pub mod redis;
pub mod replica;
pub mod replica_status;
pub mod serial;
pub mod wait;

pub use arbiter::{ArbiterConfig, ArbiterProcess};
pub use binaries::{arbiter_binary, bin_dir, binary, replica_binary};
pub use certs::TestCerts;
pub use cluster::{ActiveNode, Cluster};
pub use cluster_builder::ClusterBuilder;
pub use dirs::TestDir;
pub use etcd::{etcd_binary, EtcdCluster, EtcdMember};
pub use fake_arbiter::FakeArbiter;
pub use fake_replica::{FakeReplica, FakeRole};
pub use ports::{free_port, free_ports};
pub use process::{describe_exit, ChildGuard, ProcessSpec};
pub use proxy_cluster::ProxyCluster;
pub use redis::RedisServer;
pub use replica::{ReplicaConfig, ReplicaProcess};
pub use replica_status::{
    dump, metric_value, metrics_text, replica_status, role_code, ReplicaSelfStatus,
};
pub use serial::serial;
pub use wait::{wait_for, wait_until, WaitTimeout};
