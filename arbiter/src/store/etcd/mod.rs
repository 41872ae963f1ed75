//! The etcd state store, `--store etcd://h1:2379,h2:2379` (DESIGN.md,
//! "Arbiter high availability"): several arbiters share one cluster state
//! in etcd, and only the elected leader may change it.
//!
//! - [`keys`]: `ClusterKeys`, every key of one cluster under `/<cluster>/`
//!   so one etcd serves many clusters, and `LeaderRecord`, the leader key's
//!   value.
//! - [`connection`]: connecting through `etcd-client` (v3 API), per-call
//!   deadlines, and etcd errors as `StoreError::Unavailable`.
//! - [`store`]: `EtcdStore`, the `StateStore` whose compare-and-swap is one
//!   transaction comparing both the state key's `mod_revision` and the
//!   leader key (the `Fence` of the caller's term), so a deposed arbiter
//!   cannot write.
//!
//! Leader election itself (campaign, lease keep-alive, stepping down) is in
//! [`crate::election`]; this module only knows the fence a term hands it.

pub mod connection;
pub mod keys;
pub mod store;

pub use connection::{connect, CALL_TIMEOUT};
pub use keys::{ClusterKeys, LeaderRecord};
pub use store::{EtcdStore, Fence};
