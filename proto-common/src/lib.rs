//! Types and formats shared by the understudy replica and arbiter.
//!
//! Layout:
//! - [`ids`]: `NodeId`, `Epoch`, `LogIndex`, `Position` (the data version `E.I`).
//! - [`record`]: the write-log record format and its CRC32C, used on disk and
//!   on the replication stream alike.
//! - [`error`]: the JSON error body and its stable codes.
//! - [`params`]: cluster timing and policy, validated as a whole.
//! - [`heartbeat`]: heartbeat and grant messages between replicas and the arbiter.
//! - [`wire`]: the replication protocol (frames and their codec).
//! - [`auth`]: the cluster token and HMAC proofs.
//! - [`tls`]: TLS for listeners and clients, reloaded when its files change.
//! - [`http_client`]: the one HTTP(S) client.
//! - [`clock`]: `CLOCK_BOOTTIME`, the lease rule's clock.
//! - [`ids::check_cluster_name`]: what a cluster name may be.

pub mod auth;
pub mod clock;
pub mod cpus;
pub mod error;
pub mod exposition;
pub mod heartbeat;
pub mod http_client;
pub mod ids;
pub mod logging;
pub mod params;
pub mod record;
pub mod tls;
pub mod wire;

pub use error::{ErrorBody, ErrorCode};
pub use ids::{Epoch, LogIndex, NodeId, Position};
