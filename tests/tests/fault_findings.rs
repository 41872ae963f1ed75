//! Regression tests for what the fault suite (and the trial run that asked
//! for it) found, each named after its finding:
//!
//! - a write waiting for its commit on an active that is cut off from the
//!   arbiter and its standbys was never answered: nothing answered waiting
//!   writes when the lease ran out, so clients sat out their whole timeout
//!   although a standby had long been promoted;
//! - a killed sync standby stopped every write for a whole lease, although
//!   the active saw its connection close at once;
//! - a write a standby had forwarded to an active that then froze waited
//!   the whole forward timeout (10 s), although another active had been
//!   named within about a second; and the same through a Redis client in
//!   proxy mode (the standby's RESP forward waited its 10 s call timeout:
//!   partitions of the active cost clients up to 5 s in the fault suite's
//!   proxy-mode runs).

use std::time::Duration;

use understudy_tests::client::resp::{show, Frame};
use understudy_tests::harness::{serial, wait_for, Cluster, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

/// The cut-off is made with SIGSTOP: the arbiter (no renewal, no demotion)
/// and the sync standby (no acknowledgement, so no commit) are paused, and
/// a write is sent to the active while its lease still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_waiting_on_a_cut_off_active_is_answered_when_its_lease_runs_out() {
    let _serial = serial().await;
    let dir = TestDir::new("lease-lapse-answers").unwrap();
    let (mut cluster, active, standby) = Cluster::builder()
        .heartbeat_ms(50)
        .lease_ms(1000)
        .sync_standbys(1)
        .start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    let mut client = cluster.replica(&active.id).client().with_timeout(DEADLINE);
    let warm = client.put("warm", "up").await.unwrap();
    assert_eq!(warm.status, 200, "{}", warm.body_text());

    cluster.arbiter.process().sigstop().unwrap();
    cluster.replica_mut(&standby).process().sigstop().unwrap();
    let answer = client.put("cut-off", "v").await;
    cluster.replica_mut(&standby).process().sigcont().unwrap();
    cluster.arbiter.process().sigcont().unwrap();

    let answer = answer.expect("the write is answered, not left to the client's timeout");
    assert_eq!(answer.status, 503, "{}", answer.body_text());
    assert_eq!(
        answer.error_code().as_deref(),
        Some("outcome_unknown"),
        "{}",
        answer.body_text()
    );
    assert!(
        answer.body_text().contains("lease ran out"),
        "{}",
        answer.body_text()
    );
    // The cluster carries on: an active takes writes again.
    let now = cluster.wait_for_active(DEADLINE).await.unwrap();
    let url = cluster.replica(&now.id).url();
    wait_for(DEADLINE, "a write acknowledged after the cut-off", || {
        let url = url.clone();
        async move {
            let mut client = understudy_tests::client::KvClient::new(&url).ok()?;
            let r = client.put("after", "v").await.ok()?;
            (r.status == 200).then_some(())
        }
    })
    .await
    .unwrap();
}

/// The active reports the closed connection at once and the arbiter drops
/// the member for that (not for a lease of silence); writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sync_standby_is_dropped_when_the_active_sees_its_connection_close() {
    let _serial = serial().await;
    let dir = TestDir::new("sync-standby-killed").unwrap();
    let (mut cluster, active, standby) = Cluster::builder()
        .replicas(["a", "b", "c"])
        .heartbeat_ms(100)
        .lease_ms(5000)
        .sync_standbys(1)
        .start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    cluster.kill(&standby).unwrap();
    let removal = wait_for(DEADLINE, "the killed sync standby dropped", || {
        let cluster = &cluster;
        let standby = standby.clone();
        async move {
            let status = cluster.status().await.ok()?;
            if status.sync_set.iter().any(|n| n.as_str() == standby) {
                return None;
            }
            status
                .recent_decisions
                .iter()
                .rev()
                .find(|d| d.taken && d.reason.contains(&format!("removed {standby}:")))
                .map(|d| d.reason.clone())
        }
    })
    .await
    .unwrap();
    // With a 5 s lease the silence rule could not have fired yet.
    assert!(
        removal.contains("the active reports its replication connection closed"),
        "{removal}"
    );
    let mut client = cluster.replica(&active.id).client().with_timeout(DEADLINE);
    let r = client.put("after", "v").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
}

/// The active is frozen (SIGSTOP) with a forwarded write on its way to it;
/// the arbiter promotes the standby after the lease, and the standby
/// answers the forwarded write shortly after (outcome unknown: it was
/// sent; the old active gets 100 ms to answer first), not after its 10 s
/// forward timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_forwarded_to_a_frozen_active_is_answered_when_another_is_named() {
    let _serial = serial().await;
    let dir = TestDir::new("forward-active-changed").unwrap();
    let (mut cluster, active, standby) = Cluster::builder()
        .heartbeat_ms(50)
        .lease_ms(1000)
        .sync_standbys(1)
        .start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    // Shorter than the forward timeout: only an early answer passes.
    let mut client = cluster
        .replica(&standby)
        .client()
        .with_timeout(Duration::from_secs(8));
    let warm = client.put("warm", "up").await.unwrap();
    assert_eq!(warm.status, 200, "{}", warm.body_text());

    cluster.replica_mut(&active.id).process().sigstop().unwrap();
    let answer = client.put("frozen", "v").await;
    let promoted = cluster.wait_for_active(DEADLINE).await;
    cluster.replica_mut(&active.id).process().sigcont().unwrap();

    let answer = answer.expect("the forwarded write is answered before the forward timeout");
    assert_eq!(
        answer.error_code().as_deref(),
        Some("outcome_unknown"),
        "{}",
        answer.body_text()
    );
    assert!(
        answer.body_text().contains("named another active"),
        "{}",
        answer.body_text()
    );
    assert_eq!(promoted.unwrap().id, standby);
}

/// The same as the test above, through a standby's RESP port in proxy mode:
/// the session, passed to the frozen active, ends once another is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_forwarded_through_resp_to_a_frozen_active_is_answered_when_another_is_named() {
    let _serial = serial().await;
    let dir = TestDir::new("resp-forward-active-changed").unwrap();
    let mut proxy = ProxyCluster::start(&dir, &["a", "b"], |b| {
        b.heartbeat_ms(50).lease_ms(1000).sync_standbys(1)
    })
    .await
    .unwrap();
    let (active, standby) = proxy
        .cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    let mut client = proxy.client(&standby).await.unwrap();
    let warm = client.call(&["SET", "warm", "up"]).await.unwrap();
    assert_eq!(show(&warm), "OK");
    // Frozen while the standby's upstream is still being filled, the
    // active would hold up the promotion itself (a standby whose upstream
    // is refilled cannot lead until the fill's position is committed),
    // not the forward this test is about.
    proxy
        .wait_upstream_caught_up(&standby, &active.id, DEADLINE)
        .await
        .unwrap();

    proxy
        .cluster
        .replica_mut(&active.id)
        .process()
        .sigstop()
        .unwrap();
    // Shorter than the forward's 10 s call timeout: only an early answer
    // passes.
    let answer =
        tokio::time::timeout(Duration::from_secs(8), client.call(&["SET", "frozen", "v"])).await;
    let promoted = proxy.cluster.wait_for_active(DEADLINE).await;
    proxy
        .cluster
        .replica_mut(&active.id)
        .process()
        .sigcont()
        .unwrap();

    // The standby's session to the frozen active ends when the standby is
    // named the active (sessions end with the role they began in): the
    // client learns at once that the outcome is unknown, by an error or a
    // closed connection, and reconnects — it is not left waiting.
    match answer.expect("the forwarded SET is answered before the forward's timeout") {
        Ok(Frame::Error(e)) => {
            assert!(e.starts_with("UNKNOWN") || e.starts_with("TRYAGAIN"), "{e}")
        }
        Ok(other) => panic!(
            "expected an error or a closed connection, got {}",
            show(&other)
        ),
        Err(closed) => eprintln!("the session ended: {closed}"),
    }
    assert_eq!(promoted.unwrap().id, standby);
}
