//! The understudy arbiter: failure detection, promotion and demotion
//! decisions, the sync set, switchover and maintenance, the state store
//! they rest on, and the HTTP API, dashboard and CLI around them
//! (DESIGN.md, "Arbiter decisions", "Arbiter HTTP API").
//!
//! Layout:
//! - [`core`]: the I/O-free decision state machine (`Core`), fed heartbeats
//!   and a monotonic time in ms, returning replies and state writes. Its
//!   module docs hold the safety argument.
//! - [`store`]: the `StateStore` compare-and-swap trait, the in-memory and
//!   file stores, `StoreSpec` (`--store`), and the conformance suite.
//! - [`server`]: the I/O shell — `run(listener, settings, shutdown)`, the
//!   HTTP API, the tick loop, metrics and the dashboard.
//! - [`cli`]: the operator commands (`status`, `switchover`, `maintenance`)
//!   and their HTTP client.
//! - [`config`]: `Options` (flags, `UNDERSTUDY_*`, TOML) → `Settings`.
//! - [`clock`]: `CLOCK_BOOTTIME` as the core's `Millis`.
//! - [`status`], [`ops`]: the JSON bodies of the API.
//! - [`error`]: `ArbiterError`, with stable codes for the JSON error body.
//!
//! Still to come: the etcd store and arbiter leader election, TLS,
//! `POST /v1/params`.

pub mod cli;
pub mod clock;
pub mod config;
pub mod core;
pub mod error;
pub mod ops;
pub mod server;
pub mod status;
pub mod store;

pub use crate::core::{Core, HeartbeatOutcome, Millis, ProposedWrite};
pub use crate::error::ArbiterError;
pub use crate::status::ClusterStatus;
pub use crate::store::{
    CasOutcome, ClusterState, FileStore, MemoryStore, StateStore, StoreError, StoreSpec,
};
