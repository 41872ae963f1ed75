//! The arbiter's state store: where the epoch, the active, the members and
//! the sync set live, replaced only by compare-and-swap.
//!
//! - [`state`]: `ClusterState`, the one persisted document.
//! - [`cas`]: the `StateStore` trait and exactly what an implementation must
//!   guarantee (atomic, compare-and-swap, durable before `Written`).
//! - [`error`]: `StoreError` with stable codes (`not_leader` for a deposed
//!   arbiter of a shared store).
//! - [`memory`]: in-memory store for unit tests.
//! - [`file`](mod@file) and [`file_lock`]: the embedded store `--store file:PATH`, an
//!   atomically replaced JSON file under an exclusive `flock`.
//! - [`etcd`]: the shared store `--store etcd://…`: `EtcdStore`, whose
//!   every write is a transaction fenced by the writer's leadership term.
//! - [`spec`]: `StoreSpec`, the parsed `--store` value, and opening it as
//!   `Arc<dyn StateStore>`.
//! - `conformance`: the suite every store passes (feature `conformance`
//!   exposes it outside this crate, e.g. to the etcd store's tests).

pub mod cas;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod error;
pub mod etcd;
pub mod file;
pub mod file_lock;
pub mod memory;
pub mod spec;
pub mod state;

pub use cas::{CasOutcome, StateStore, StoreFuture};
pub use error::StoreError;
pub use etcd::EtcdStore;
pub use file::FileStore;
pub use memory::MemoryStore;
pub use spec::StoreSpec;
pub use state::{ClusterState, MemberRecord, HISTORY_LIMIT, STATE_FORMAT};
