//! The seam between the log and what its entries mean (DESIGN.md,
//! "Proxy mode"): a [`StateMachine`] takes committed entries in log order
//! and makes them visible to readers, then answers the clients waiting for
//! them. The log, replication, the commit rule, the lease and the arbiter
//! are the same whatever sits behind it.
//!
//! Two implementations:
//! - [`kv::KvMachine`]: the embedded key-value store (the default), applied
//!   in memory on the committing thread; it passes [`conformance`].
//! - `proxy::stream::StreamMachine`: the upstream's replication stream; a
//!   committed entry becomes part of the committed history, which releases
//!   replies on the active and bounds what a standby feeds its upstream
//!   (the upstream is written by Redis's own replication, not here).
//!
//! [`answer`] is the one place a waiting write gets its outcome. The lease is
//! not the state machine's business: the write path answers its client
//! through the role's guard.

pub mod answer;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod kv;

use proto_common::Position;
use tokio::sync::watch;

use crate::pending::PendingEntry;

pub use answer::Answerer;
pub use kv::KvMachine;

/// What a log's committed entries are applied to.
///
/// Guarantees an implementation must give:
/// - entries are applied exactly once, in the order given, and `apply` is
///   called in log order (under the commit tracker's lock), each call
///   continuing right after the previous one;
/// - `apply` does not block on I/O: an implementation that talks to a
///   server queues the entries and applies them on a task of its own;
/// - a waiting client is answered only after its entry's effect is visible
///   to readers, and `applied()` has reached the entry by then;
/// - `applied()` never goes backwards except through `reset`.
pub trait StateMachine: Send + Sync {
    /// Applies committed entries.
    fn apply(&self, entries: Vec<PendingEntry>);

    /// The position of the last entry readers see.
    fn applied(&self) -> Position;

    /// Follows `applied()` (for `X-Min-Version` waits).
    fn watch_applied(&self) -> watch::Receiver<Position>;

    /// The state was replaced from outside the log (a snapshot install, a
    /// rewind, a full resync): it now holds exactly the entries up to
    /// `applied`.
    fn reset(&self, applied: Position);

    /// Why entries cannot be applied now (the replica reports itself
    /// unhealthy), if they cannot.
    fn problem(&self) -> Option<String> {
        None
    }
}
