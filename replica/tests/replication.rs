//! Replication between in-process replicas, roles driven through the
//! library: joining empty, joining far behind (snapshot), divergent tails
//! (quarantined, then identical state), and the commit rule with a sync
//! standby.

mod support;

use std::time::Duration;

use proto_common::Position;
use replica::commit::WriteError;
use support::{eventually, TestNode};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_joining_empty_catches_up_to_identical_state() {
    let a = TestNode::start("a", |_| {}).await;
    a.make_active(1, &[]).await;
    for i in 0..500 {
        a.put(&format!("k{i:04}"), &format!("v{i}")).await.unwrap();
    }
    let b = TestNode::start("b", |_| {}).await;
    b.follow(&a, 1).await;
    // Live writes while it catches up.
    for i in 500..600 {
        a.put(&format!("k{i:04}"), &format!("v{i}")).await.unwrap();
    }
    let target = a.applied();
    eventually(WAIT, "b to apply everything", || b.applied() == target).await;
    assert_eq!(a.dump(), b.dump());
    assert_eq!(b.dump().len(), 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_far_behind_a_compacted_log_gets_a_snapshot() {
    let a = TestNode::start("a", |o| o.segment_bytes = Some(64 << 10)).await;
    a.make_active(1, &[]).await;
    let big = "x".repeat(2000);
    for i in 0..400 {
        a.put(&format!("k{i:04}"), &format!("{i}{big}"))
            .await
            .unwrap();
    }
    let snap = replica::server::take_snapshot(&a.node, None).await.unwrap();
    assert!(
        a.node.reader.base().index > proto_common::LogIndex(1),
        "log not compacted"
    );
    for i in 400..450 {
        a.put(&format!("k{i:04}"), &format!("{i}")).await.unwrap();
    }
    let before_b = a.applied();
    let b = TestNode::start("b", |o| o.segment_bytes = Some(64 << 10)).await;
    b.follow(&a, 1).await;
    // Writes go on while the snapshot streams.
    for i in 450..500 {
        a.put(&format!("k{i:04}"), &format!("{i}{big}"))
            .await
            .unwrap();
    }
    let target = a.applied();
    eventually(WAIT, "b to catch up", || b.applied() == target).await;
    assert_eq!(a.dump(), b.dump());
    let metrics = b.node.metrics.render();
    assert!(
        metrics.contains("understudy_snapshot_transfers_total{direction=\"received\"} 1"),
        "no snapshot was installed:\n{metrics}"
    );
    // The snapshot is of a's state when b connected, not a's older file.
    let base = b.node.reader.base();
    assert!(
        base.index >= before_b.index && base.index > snap.index,
        "b's log should start after a snapshot of a's current state (at least {before_b}), \
         not after a's snapshot file at {snap}; it starts after {base}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_divergent_tail_is_quarantined_and_the_states_become_identical() {
    // Async mode: a commits alone, so its unshipped tail is applied on a.
    let a = TestNode::start("a", |_| {}).await;
    let b = TestNode::start("b", |_| {}).await;
    a.node.roles.set_async_mode(true); // as the arbiter's replies say
    a.make_active(1, &[]).await;
    b.follow(&a, 1).await;
    for i in 0..50 {
        a.put(&format!("k{i}"), "first").await.unwrap();
    }
    let shared = a.applied();
    eventually(WAIT, "b to catch up", || b.applied() == shared).await;
    // b is cut off and promoted in epoch 2; a keeps writing in epoch 1.
    b.make_active(2, &[]).await;
    for i in 0..7 {
        a.put(&format!("lost{i}"), "only on a").await.unwrap();
    }
    for i in 0..5 {
        b.put(&format!("k{i}"), "second").await.unwrap();
    }
    // a learns of epoch 2 and follows b: its tail is cut into quarantine.
    a.follow(&b, 2).await;
    let target = b.applied();
    eventually(WAIT, "a to converge", || a.applied() == target).await;
    assert_eq!(a.dump(), b.dump());
    assert!(a.dump().iter().all(|(k, _, _)| !k.starts_with(b"lost")));
    let index = std::fs::read_to_string(a.dir.path().join("quarantine/index.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(index.lines().next().unwrap()).unwrap();
    assert_eq!(line["count"], 7, "{index}");
    assert_eq!(line["first"], format!("1.{}", shared.index.0 + 1));
    assert_eq!(a.node.node_state().quarantined_entries, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_sync_standby_nothing_is_acknowledged_until_it_has_it() {
    let a = TestNode::start("a", |_| {}).await;
    let b = TestNode::start("b", |_| {}).await;
    a.make_active(1, &[&b]).await;
    // Read before the write is sent: it may be durable before the spawned
    // task is even polled.
    let opened = a.node.commit.durable().index;
    // No standby connected: the write must wait.
    let pending = support::spawn_put(&a.node, "k", "v");
    eventually(WAIT, "the write to be durable on a", || {
        a.node.commit.durable().index > opened
    })
    .await;
    // Durable on the active, but the sync standby does not have it: it is
    // not committed, not visible, not acknowledged.
    assert!(*a.node.commit.commit_index().borrow() <= opened);
    assert!(
        a.node.kv.read().get(b"k").is_none(),
        "visible before commit"
    );
    assert!(
        !pending.is_finished(),
        "acknowledged without the sync standby"
    );
    b.follow(&a, 1).await;
    let ack = tokio::time::timeout(WAIT, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Once acknowledged, the standby holds it durably.
    assert!(b.node.commit.durable().index >= ack.position.index);
    // And a divergent, uncommitted tail on a is cut when b takes over.
    b.make_active(2, &[]).await;
    let before = a.node.commit.durable().index;
    let stuck = support::spawn_put(&a.node, "never", "acked");
    // In a's log (durable there) but never acknowledged by b: pending.
    eventually(WAIT, "the stuck write to be durable on a", || {
        a.node.commit.durable().index > before
    })
    .await;
    a.follow(&b, 2).await;
    let result = tokio::time::timeout(WAIT, stuck).await.unwrap().unwrap();
    assert!(
        matches!(result, Err(WriteError::Indeterminate(_))),
        "{result:?}"
    );
    b.put("after", "failover").await.unwrap();
    let target = b.applied();
    eventually(WAIT, "a to converge", || a.applied() == target).await;
    assert_eq!(a.dump(), b.dump());
    assert!(a.node.kv.read().get(b"never").is_none());
    assert!(target > Position::new(2, 0));
}

/// a and b share `shared` entries; then b is promoted in epoch 2 while a,
/// cut off, goes on committing `lost` entries of `value_bytes` alone in
/// epoch 1. Returns the position they share.
async fn diverge(a: &TestNode, b: &TestNode, lost: usize, value_bytes: usize) -> Position {
    a.make_active(1, &[]).await;
    b.follow(a, 1).await;
    for i in 0..20 {
        a.put(&format!("k{i}"), "first").await.unwrap();
    }
    let shared = a.applied();
    eventually(WAIT, "b to catch up", || b.applied() == shared).await;
    b.make_active(2, &[]).await;
    let value = "x".repeat(value_bytes);
    for i in 0..lost {
        a.put(&format!("lost{i}"), &value).await.unwrap();
    }
    shared
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_replica_refuses_to_cut_its_committed_entries() {
    // Not async mode: the entries a committed are acknowledged writes, and
    // no correct active can lack them. Cutting them is refused, not done.
    let a = TestNode::start("a", |_| {}).await;
    let b = TestNode::start("b", |_| {}).await;
    let shared = diverge(&a, &b, 7, 1).await;
    let before = (a.node.reader.last(), a.dump());
    let err = replica::repl::cut::cut_after(&a.node, &b.info(), shared)
        .await
        .unwrap_err();
    assert!(
        matches!(err, replica::repl::ReplError::WouldCutCommitted { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("could lose acknowledged writes") && text.contains("refuses"),
        "{err}"
    );
    assert_eq!(
        (a.node.reader.last(), a.dump()),
        before,
        "something was cut"
    );
    assert!(!a.dir.path().join("quarantine").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_holding_cut_entries_is_set_aside_whole_before_a_full_resync() {
    let small = |o: &mut replica::config::Options| o.segment_bytes = Some(64 << 10);
    let a = TestNode::start("a", small).await;
    let b = TestNode::start("b", small).await;
    a.node.roles.set_async_mode(true);
    let shared = diverge(&a, &b, 200, 2000).await;
    // a's snapshot now holds entries b never had, and the log before them
    // is compacted away.
    let snap = replica::server::take_snapshot(&a.node, None).await.unwrap();
    assert!(
        a.node.reader.base().index > shared.index,
        "nothing was compacted"
    );
    b.put("after", "failover").await.unwrap();
    a.follow(&b, 2).await;
    let target = b.applied();
    eventually(WAIT, "a to converge", || a.applied() == target).await;
    assert_eq!(a.dump(), b.dump());
    let index = std::fs::read_to_string(a.dir.path().join("quarantine/index.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = index
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let snapshot_line = lines
        .iter()
        .find(|l| l.get("snapshot").is_some())
        .unwrap_or_else(|| panic!("no snapshot line in {index}"));
    assert_eq!(snapshot_line["snapshot"], snap.to_string());
    assert_eq!(snapshot_line["cut_after"], shared.to_string());
    let kept = a
        .dir
        .path()
        .join("quarantine")
        .join(snapshot_line["file"].as_str().unwrap());
    assert!(kept.metadata().unwrap().len() > 0, "{}", kept.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_promotion_commits_and_applies_nothing() {
    // a waits for b and c; only b is connected, so nothing a writes
    // commits, but b holds it all, uncommitted.
    let a = TestNode::start("a", |_| {}).await;
    let b = TestNode::start("b", |_| {}).await;
    let c = TestNode::start("c", |_| {}).await;
    a.make_active(1, &[&b, &c]).await;
    b.follow(&a, 1).await;
    let writes: Vec<_> = (0..3)
        .map(|i| support::spawn_put(&a.node, &format!("pending{i}"), "v"))
        .collect();
    eventually(WAIT, "b to hold a's entries", || {
        b.node.commit.durable().index.0 >= 4
    })
    .await;
    let applied = b.applied();
    // b is told to lead in an epoch it may not take (it took writes in it
    // before): the promotion fails, and must leave nothing visible.
    b.node
        .update_node_state(|s| s.active_epoch = proto_common::Epoch(5))
        .unwrap();
    let err = b
        .repl
        .grant(
            proto_common::Epoch(5),
            replica::sync_set::SyncSet::local(),
            support::NEVER_ENDING,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            replica::node::PromotionError::EpochTaken {
                epoch: proto_common::Epoch(5),
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("refusing to become active in epoch 5"),
        "{err}"
    );
    assert_eq!(b.applied(), applied, "a failed promotion applied entries");
    assert!(b.dump().iter().all(|(k, _, _)| !k.starts_with(b"pending")));
    for w in writes {
        w.abort();
    }
}
