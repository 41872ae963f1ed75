//! The `StateStore` trait: load the cluster state, and replace it only by
//! compare-and-swap on its version.
//!
//! This is the one seam the arbiter's safety rests on. An epoch bump is a
//! CAS (DESIGN.md, "Numbers everybody shares"): if two arbiters — or one
//! arbiter and a stale copy of itself — both try to name an active from the
//! same version, exactly one write lands and the other learns the winner.
//!
//! The trait is object-safe (`Arc<dyn StateStore>`) without extra crates:
//! methods return boxed futures.

use std::future::Future;
use std::pin::Pin;

use super::error::StoreError;
use super::state::ClusterState;

/// A boxed, `Send` future returned by store methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The result of a compare-and-swap that reached the store.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // one per write; boxing would only add noise
pub enum CasOutcome {
    /// The new state is stored (durably; see [`StateStore`]).
    Written,
    /// The stored version was not the expected one; nothing was written.
    /// Carries what is stored now (`None`: nothing is stored), so the caller
    /// can reconcile without another round trip.
    Conflict(Option<ClusterState>),
}

/// Where the arbiter keeps [`ClusterState`].
///
/// # What an implementation must guarantee
///
/// - **Atomic.** A reader sees either the old state or the new one, never a
///   mix, and a crash in the middle of a write leaves the old one.
/// - **Compare-and-swap.** `compare_and_swap(expected, new)` writes `new`
///   only if the stored version equals `expected` (`None`: only if nothing
///   is stored). Of any number of concurrent calls with the same `expected`,
///   at most one returns [`CasOutcome::Written`]; every other returns
///   [`CasOutcome::Conflict`] with the state that is stored now.
/// - **Version rule.** `new.version` must be `expected + 1` (or 1 when
///   `expected` is `None`); otherwise the call fails with
///   [`StoreError::BadVersion`] and writes nothing.
/// - **Durable before returning.** `Written` is returned only once the new
///   state would be read back after a crash or power loss: a CAS that
///   returned `Written` is never lost on restart, and `load` on a new
///   instance over the same storage returns it.
/// - **Exclusive writer.** An implementation only writes on behalf of the
///   arbiter entitled to: the file store holds an exclusive lock for its
///   whole life; a shared store (etcd) makes every write conditional on this
///   arbiter still being leader and fails with [`StoreError::NotLeader`]
///   otherwise.
/// - **Honest loads.** `load` returns `Ok(None)` only when nothing was ever
///   stored; unreadable data is [`StoreError::Corrupt`], never "empty".
///
/// An `Err` from `compare_and_swap` means the outcome is unknown (the write
/// may or may not have landed); the caller's next CAS settles it.
pub trait StateStore: Send + Sync {
    /// The stored state, or `None` if nothing was ever written.
    fn load(&self) -> StoreFuture<'_, Option<ClusterState>>;

    /// Replaces the stored state with `new` if its version is `expected`.
    fn compare_and_swap<'a>(
        &'a self,
        expected: Option<u64>,
        new: &'a ClusterState,
    ) -> StoreFuture<'a, CasOutcome>;

    /// Where the state lives, for logs and status (`file:/var/lib/x.json`).
    fn describe(&self) -> String;
}

/// Checks the version rule every implementation enforces.
pub fn check_version_rule(expected: Option<u64>, new: &ClusterState) -> Result<(), StoreError> {
    let want = expected.map_or(1, |v| v + 1);
    if new.version != want {
        return Err(StoreError::BadVersion {
            expected,
            got: new.version,
            want,
        });
    }
    Ok(())
}

/// Whether a stored state matches the caller's expectation.
pub fn version_matches(stored: Option<&ClusterState>, expected: Option<u64>) -> bool {
    stored.map(|s| s.version) == expected
}
