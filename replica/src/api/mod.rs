//! The client HTTP API (DESIGN.md, "Client API").
//!
//! - [`kv`]: `GET/PUT/DELETE /v1/kv/{key}`, `GET /v1/kv?prefix=` (range).
//! - [`txn`]: `POST /v1/txn` (compare-then-write).
//! - [`health`]: `/healthz`, `/readyz`, `/v1/role`, `/v1/status`, `/metrics`.
//! - [`input`]: key, value and body checks; [`error`]: the JSON error answer.
//! - [`forward`]: writes reaching a standby (proxy or redirect to the active).
//! - [`versions`]: `X-Min-Version` (read-your-writes on standbys).
//! - [`gate`]: no write acknowledgement leaves after the lease ended.
//! - [`router`]: routes, the request limit and `X-Data-Version` layers,
//!   unknown routes.

pub mod error;
pub mod forward;
pub mod gate;
pub mod health;
pub mod input;
pub mod kv;
pub mod router;
pub mod txn;
pub mod versions;

use std::sync::Arc;

pub use router::router;

use crate::node::Node;

/// What every handler shares.
pub struct ApiState {
    pub node: Arc<Node>,
    /// Relays requests to the active when this replica is not it.
    pub forwarder: forward::Forwarder,
    /// One per client request being served (`max_requests`).
    pub requests: tokio::sync::Semaphore,
}

/// Handler state.
pub type Shared = Arc<ApiState>;

/// The replica's applied position (`epoch.index`) on every response; on a
/// write, the write's own position.
pub const DATA_VERSION: &str = "x-data-version";
/// A key's own version (the position of its last write), on single-key reads.
pub const KEY_VERSION: &str = "x-key-version";
