//! The conformance suite every [`StateStore`] implementation must pass.
//!
//! Modelled on openraft's storage suite: one generic set of checks, run
//! against the memory and file stores here and against the etcd store in
//! its own tests (enable the `conformance` feature). A [`Harness`] makes
//! fresh stores and reopens one over the same storage, as after a restart.
//! Every check panics with a message naming the broken guarantee.

use std::future::Future;
use std::sync::Arc;

use proto_common::heartbeat::ActiveInfo;
use proto_common::params::ClusterParams;
use proto_common::{Epoch, NodeId, Position};

use super::cas::{CasOutcome, StateStore};
use super::state::{ClusterState, MemberRecord};

/// Makes stores for the suite.
pub trait Harness {
    /// The store under test.
    type Store: StateStore + 'static;

    /// A store over new, empty storage.
    fn fresh(&mut self) -> impl Future<Output = Self::Store>;

    /// Closes `store` (dropping it releases any lock) and opens the same
    /// storage again, as a restarted arbiter would.
    fn reopen(&mut self, store: Self::Store) -> impl Future<Output = Self::Store>;
}

/// Runs every check. Needs a multi-threaded tokio runtime for the
/// concurrency check to mean anything.
pub async fn run_all<H: Harness>(harness: &mut H) {
    load_on_empty_is_none(harness).await;
    create_if_absent(harness).await;
    cas_success_replaces_and_bumps_version(harness).await;
    stale_cas_conflicts_and_returns_current(harness).await;
    version_rule_is_enforced(harness).await;
    written_state_survives_reopen(harness).await;
    concurrent_cas_has_exactly_one_winner(harness).await;
}

/// A state with some content in every field, so lossy encodings show up.
pub fn sample_state(version: u64, marker: &str) -> ClusterState {
    let id = |s: &str| NodeId::new(s).expect("valid id");
    let mut s = ClusterState::new("conformance", ClusterParams::default());
    s.version = version;
    s.epoch = Epoch(version);
    for (n, port) in [("a", 7000), ("b", 7100)] {
        s.members.insert(
            id(n),
            MemberRecord {
                client_url: format!("http://127.0.0.1:{port}"),
                repl_addr: format!("127.0.0.1:{}", port + 1),
                priority: 1,
                position: Position::new(version, 10 * version),
                quarantined_entries: 0,
            },
        );
    }
    s.active = Some(ActiveInfo {
        node_id: id("a"),
        client_url: "http://127.0.0.1:7000".into(),
        repl_addr: "127.0.0.1:7001".into(),
    });
    s.sync_set = vec![id("b")];
    s.sync_version = version;
    s.confirmed_sync = vec![id("b")];
    s.confirmed_sync_version = version;
    s.degraded = false;
    s.maintenance = marker.len() % 2 == 1;
    s.params.initial_wait_ms = 1000 + version;
    s.cluster = format!("conformance-{marker}");
    s
}

async fn cas<S: StateStore>(store: &S, expected: Option<u64>, new: &ClusterState) -> CasOutcome {
    store
        .compare_and_swap(expected, new)
        .await
        .unwrap_or_else(|e| panic!("compare_and_swap({expected:?}) failed: {e}"))
}

async fn load<S: StateStore>(store: &S) -> Option<ClusterState> {
    store
        .load()
        .await
        .unwrap_or_else(|e| panic!("load failed: {e}"))
}

/// A new store holds nothing.
pub async fn load_on_empty_is_none<H: Harness>(h: &mut H) {
    let store = h.fresh().await;
    assert_eq!(load(&store).await, None, "a fresh store must load as None");
}

/// `expected = None` creates; a second create conflicts with the first.
pub async fn create_if_absent<H: Harness>(h: &mut H) {
    let store = h.fresh().await;
    let first = sample_state(1, "first");
    assert_eq!(
        cas(&store, None, &first).await,
        CasOutcome::Written,
        "create on empty must write"
    );
    assert_eq!(
        load(&store).await,
        Some(first.clone()),
        "load must return what was created"
    );
    let second = sample_state(1, "second");
    assert_eq!(
        cas(&store, None, &second).await,
        CasOutcome::Conflict(Some(first.clone())),
        "create when a state exists must conflict and return it"
    );
    assert_eq!(
        load(&store).await,
        Some(first),
        "a conflicting create must not write"
    );
}

/// A CAS from the stored version writes and the version moves on.
pub async fn cas_success_replaces_and_bumps_version<H: Harness>(h: &mut H) {
    let store = h.fresh().await;
    cas(&store, None, &sample_state(1, "v1")).await;
    let v2 = sample_state(2, "v2");
    assert_eq!(cas(&store, Some(1), &v2).await, CasOutcome::Written);
    assert_eq!(load(&store).await, Some(v2.clone()));
    let v3 = sample_state(3, "v3");
    assert_eq!(cas(&store, Some(2), &v3).await, CasOutcome::Written);
    assert_eq!(load(&store).await.map(|s| s.version), Some(3));
}

/// A CAS from an old version, or expecting a state that does not exist,
/// conflicts, writes nothing and returns what is stored.
pub async fn stale_cas_conflicts_and_returns_current<H: Harness>(h: &mut H) {
    let store = h.fresh().await;
    let missing = sample_state(5, "missing");
    assert_eq!(
        cas(&store, Some(4), &missing).await,
        CasOutcome::Conflict(None),
        "expecting a version on an empty store must conflict with None"
    );
    assert_eq!(load(&store).await, None);
    cas(&store, None, &sample_state(1, "v1")).await;
    let v2 = sample_state(2, "v2");
    cas(&store, Some(1), &v2).await;
    let stale = sample_state(2, "stale");
    assert_eq!(
        cas(&store, Some(1), &stale).await,
        CasOutcome::Conflict(Some(v2.clone())),
        "a stale CAS must conflict and return the current state"
    );
    assert_eq!(load(&store).await, Some(v2), "a stale CAS must not write");
}

/// `new.version` must be `expected + 1`; anything else is refused unwritten.
pub async fn version_rule_is_enforced<H: Harness>(h: &mut H) {
    let store = h.fresh().await;
    let err = store
        .compare_and_swap(None, &sample_state(7, "bad"))
        .await
        .expect_err("creating with version 7 must be refused");
    assert_eq!(err.code(), "store_bad_version", "{err}");
    cas(&store, None, &sample_state(1, "v1")).await;
    let err = store
        .compare_and_swap(Some(1), &sample_state(1, "same"))
        .await
        .expect_err("writing version 1 over version 1 must be refused");
    assert_eq!(err.code(), "store_bad_version", "{err}");
    assert_eq!(
        load(&store).await.map(|s| s.cluster),
        Some("conformance-v1".to_string())
    );
}

/// What a `Written` CAS stored is what a reopened store loads.
pub async fn written_state_survives_reopen<H: Harness>(h: &mut H) {
    let store = h.fresh().await;
    cas(&store, None, &sample_state(1, "v1")).await;
    let v2 = sample_state(2, "v2");
    cas(&store, Some(1), &v2).await;
    let store = h.reopen(store).await;
    assert_eq!(
        load(&store).await,
        Some(v2.clone()),
        "a written state must survive reopening"
    );
    let v3 = sample_state(3, "v3");
    assert_eq!(
        cas(&store, Some(2), &v3).await,
        CasOutcome::Written,
        "a reopened store must accept a CAS from the version it loaded"
    );
    let store = h.reopen(store).await;
    assert_eq!(load(&store).await, Some(v3));
}

/// Many writers racing from the same version: exactly one wins, every loser
/// is told the winner's state.
pub async fn concurrent_cas_has_exactly_one_winner<H: Harness>(h: &mut H) {
    const WRITERS: usize = 16;
    let store = Arc::new(h.fresh().await);
    cas(&*store, None, &sample_state(1, "base")).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let store = store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mine = sample_state(2, &format!("writer{i}"));
            barrier.wait().await;
            let outcome = store.compare_and_swap(Some(1), &mine).await;
            (mine, outcome)
        }));
    }
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for task in tasks {
        let (mine, outcome) = task.await.expect("writer task panicked");
        match outcome.unwrap_or_else(|e| panic!("concurrent CAS failed: {e}")) {
            CasOutcome::Written => winners.push(mine),
            CasOutcome::Conflict(current) => losers.push(current),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent CAS must win, {} did",
        winners.len()
    );
    let winner = winners.pop().expect("one winner");
    for seen in losers {
        assert_eq!(
            seen.as_ref(),
            Some(&winner),
            "a loser must be shown the winner's state"
        );
    }
    assert_eq!(load(&*store).await, Some(winner));
}
