//! The understudy arbiter: failure detection, promotion and demotion
//! decisions, the sync set, switchover and maintenance, and the state store
//! they rest on (DESIGN.md, "Arbiter decisions").
//!
//! Layout:
//! - [`core`]: the I/O-free decision state machine (`Core`), fed heartbeats
//!   and a monotonic time in ms, returning replies and state writes. Its
//!   module docs hold the safety argument.
//! - [`store`]: the `StateStore` compare-and-swap trait, the in-memory and
//!   file stores, and the conformance suite every store passes.
//! - [`status`]: the `GET /v1/status` snapshot types.
//! - [`error`]: `ArbiterError`, with stable codes for the JSON error body.
//!
//! Still to come: the HTTP shell that drives `Core` and a `StateStore`, the
//! CLI, the etcd store and leader election.

pub mod core;
pub mod error;
pub mod status;
pub mod store;

pub use crate::core::{Core, HeartbeatOutcome, Millis, ProposedWrite};
pub use crate::error::ArbiterError;
pub use crate::status::ClusterStatus;
pub use crate::store::{CasOutcome, ClusterState, FileStore, MemoryStore, StateStore, StoreError};
