//! `MemoryStore`: the state store in a mutex, for unit tests and in-process
//! clusters.
//!
//! "Durable" here means: as long as any clone of the store lives. Clones
//! share one state, so a test can drop the arbiter and "reopen" the store by
//! keeping a clone.

use std::sync::{Arc, Mutex};

use super::cas::{check_version_rule, version_matches, CasOutcome, StateStore, StoreFuture};
use super::state::ClusterState;

/// An in-memory [`StateStore`]; clones share the same state.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    /// The stored state; the mutex makes each CAS atomic.
    state: Arc<Mutex<Option<ClusterState>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// A store that already holds `state` (as if written before).
    pub fn with_state(state: ClusterState) -> MemoryStore {
        MemoryStore {
            state: Arc::new(Mutex::new(Some(state))),
        }
    }

    /// What is stored now, synchronously (for tests).
    pub fn snapshot(&self) -> Option<ClusterState> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ClusterState>> {
        // A panic while holding the lock cannot leave a half-written state
        // (assignments are whole), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StateStore for MemoryStore {
    fn load(&self) -> StoreFuture<'_, Option<ClusterState>> {
        let current = self.lock().clone();
        Box::pin(async move { Ok(current) })
    }

    fn compare_and_swap<'a>(
        &'a self,
        expected: Option<u64>,
        new: &'a ClusterState,
    ) -> StoreFuture<'a, CasOutcome> {
        let result = check_version_rule(expected, new).map(|()| {
            let mut stored = self.lock();
            if version_matches(stored.as_ref(), expected) {
                *stored = Some(new.clone());
                CasOutcome::Written
            } else {
                CasOutcome::Conflict(stored.clone())
            }
        });
        Box::pin(async move { result })
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{self, Harness};

    struct MemoryHarness;

    impl Harness for MemoryHarness {
        type Store = MemoryStore;

        async fn fresh(&mut self) -> MemoryStore {
            MemoryStore::new()
        }

        async fn reopen(&mut self, store: MemoryStore) -> MemoryStore {
            let again = store.clone();
            drop(store);
            again
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_store_passes_the_conformance_suite() {
        conformance::run_all(&mut MemoryHarness).await;
    }

    /// A store that forgets to compare: the suite must catch it.
    struct BlindStore(MemoryStore);

    impl StateStore for BlindStore {
        fn load(&self) -> StoreFuture<'_, Option<ClusterState>> {
            self.0.load()
        }
        fn compare_and_swap<'a>(
            &'a self,
            _: Option<u64>,
            new: &'a ClusterState,
        ) -> StoreFuture<'a, CasOutcome> {
            *self.0.lock() = Some(new.clone());
            Box::pin(async { Ok(CasOutcome::Written) })
        }
        fn describe(&self) -> String {
            "blind".into()
        }
    }

    struct BlindHarness;

    impl Harness for BlindHarness {
        type Store = BlindStore;
        async fn fresh(&mut self) -> BlindStore {
            BlindStore(MemoryStore::new())
        }
        async fn reopen(&mut self, store: BlindStore) -> BlindStore {
            store
        }
    }

    #[tokio::test]
    #[should_panic(expected = "create when a state exists must conflict")]
    async fn the_suite_catches_a_store_that_does_not_compare() {
        conformance::run_all(&mut BlindHarness).await;
    }
}
