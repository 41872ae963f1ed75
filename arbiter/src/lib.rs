//! The understudy arbiter: failure detection, promotion and demotion
//! decisions, the sync set, switchover and maintenance, the state store
//! they rest on, and the HTTP API, dashboard and CLI around them
//! (DESIGN.md, "Arbiter decisions", "Arbiter HTTP API").
//!
//! Layout:
//! - [`core`]: the I/O-free decision state machine (`Core`), fed heartbeats
//!   and a monotonic time in ms, returning replies and state writes. Its
//!   module docs hold the safety argument.
//! - [`store`]: the `StateStore` compare-and-swap trait, the in-memory,
//!   file and etcd stores, `StoreSpec` (`--store`), and the conformance
//!   suite.
//! - [`election`]: arbiter leader election in etcd (campaign, lease
//!   keep-alive, `Term`); its module docs hold the safety argument for a
//!   change of leader.
//! - [`server`]: the I/O shell — `run(listener, settings, shutdown)`, the
//!   HTTP API, one leadership term after another, the tick loop, metrics
//!   and the dashboard.
//! - [`cli`]: the operator commands (`status`, `switchover`, `maintenance`,
//!   `params`) and their HTTP client.
//! - [`config`]: `Options` (flags, `UNDERSTUDY_*`, TOML) → `Settings`.
//! - [`clock`]: `CLOCK_BOOTTIME` as the core's `Millis`.
//! - [`status`], [`ops`]: the JSON bodies of the API.
//! - [`error`]: `ArbiterError`, with stable codes for the JSON error body.
//! - [`failpoint`]: `UNDERSTUDY_FAILPOINT`, a fault-injection hook for
//!   end-to-end tests (abort right after an epoch bump is stored).

pub mod cli;
pub mod clock;
pub mod config;
pub mod core;
pub mod election;
pub mod error;
pub mod failpoint;
pub mod ops;
pub mod server;
pub mod status;
pub mod store;

pub use crate::core::{Core, HeartbeatOutcome, Millis, ProposedWrite};
pub use crate::error::ArbiterError;
pub use crate::status::ClusterStatus;
pub use crate::store::{
    CasOutcome, ClusterState, EtcdStore, FileStore, MemoryStore, StateStore, StoreError, StoreSpec,
};
