//! SIGSTOP of the active for three leases, then SIGCONT, under a write load
//! (heartbeat 50 ms, lease 300 ms, sync_standbys = 1).
//!
//! A stopped process is the lease's hard case: it holds its sockets and
//! its belief that it is active, and resumes later as if no time had
//! passed. What must hold:
//! - the standby takes over while the old active is stopped;
//! - no client gets a write acknowledged by the old active after its lease
//!   has ended: no 200 whose data version is in the old epoch and whose
//!   answer arrived after `t_stop + lease_ms` (a write in flight when the
//!   process stopped must be refused or left unanswered when it resumes,
//!   never acknowledged in the old epoch) — save for an answer whose thread
//!   was stopped between the lease check and the send (see the end);
//! - after SIGCONT the old active is a standby (`/v1/role` 503, status role
//!   standby), rejoins the sync set and holds exactly the new active's data;
//! - every acknowledged write is there.

use std::time::Duration;

use proto_common::heartbeat::Role;
use understudy_tests::harness::{
    replica_status, role_code, serial, wait_for, wait_until, Cluster, TestDir,
};
use understudy_tests::loadgen::background::failover_load_config;
use understudy_tests::loadgen::BackgroundLoad;

const CLIENTS: usize = 64;
const HEARTBEAT_MS: u64 = 50;
const LEASE_MS: u64 = 300;
const DEADLINE: Duration = Duration::from_secs(60);
/// How soon after SIGCONT an answer stopped inside its send leaves.
const RESUME_WINDOW_NS: u64 = 100_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_active_acknowledges_nothing_after_its_lease() {
    let _serial = serial().await;
    let dir = TestDir::new("failover-pause").unwrap();
    let mut cluster = Cluster::builder()
        .heartbeat_ms(HEARTBEAT_MS)
        .lease_ms(LEASE_MS)
        .sync_standbys(1)
        .start(&dir)
        .await
        .unwrap();
    let load = BackgroundLoad::start(failover_load_config(&cluster.urls(), CLIENTS, &[])).unwrap();

    let (old, standby) = cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    load.wait_acks(500, DEADLINE).await.unwrap();

    let stopped_at = load.now_ns();
    cluster.replica_mut(&old.id).process().sigstop().unwrap();
    let new = cluster
        .wait_for_active_after(old.epoch, DEADLINE)
        .await
        .unwrap();
    assert_eq!(new.id, standby);
    // The scenario itself: the pause lasts three leases (or longer, if the
    // takeover took longer on a loaded machine). Clients waiting on the
    // stopped process get its answers when it resumes.
    let resume_at = stopped_at + 3 * LEASE_MS * 1_000_000;
    wait_until(DEADLINE, "three leases after the SIGSTOP", || {
        let due = load.now_ns() >= resume_at;
        async move { due }
    })
    .await
    .unwrap();
    let continued_at = load.now_ns();
    cluster.replica_mut(&old.id).process().sigcont().unwrap();
    load.wait_acks_after_epoch(old.epoch, 200, DEADLINE)
        .await
        .unwrap();

    // The old active comes back as a standby of the new epoch.
    let old_url = cluster.replica(&old.id).url();
    let new_epoch = new.epoch;
    let own = wait_for(DEADLINE, "the resumed old active a standby", || {
        let url = old_url.clone();
        async move {
            let own = replica_status(&url).await.ok()?;
            (own.role == Role::Standby && own.epoch.0 >= new_epoch).then_some(own)
        }
    })
    .await
    .unwrap();
    assert!(!own.writable, "{own:?}");
    assert_eq!(role_code(&old_url).await, Some(503));
    cluster
        .wait_sync_confirmed(&old.id, DEADLINE)
        .await
        .unwrap();
    load.quiesce(DEADLINE).await.unwrap();
    let still = cluster.wait_for_active(DEADLINE).await.unwrap();
    assert_eq!(
        still, new,
        "the resumed old active must not take the role back"
    );
    cluster
        .wait_same_data(&new.id, &old.id, DEADLINE)
        .await
        .unwrap();

    let (report, ledger) = load.stop(DEADLINE).await.unwrap();
    let data = cluster.dump(&new.id).await.unwrap();
    let verification = ledger.verify(&data);
    assert!(verification.is_ok(), "{}", verification.summary());
    let gap = ledger.timeline().gap_around(stopped_at, old.epoch);
    println!(
        "stopped {} (epoch {}) for {} ms; {} active in epoch {}; write gap {} ms; \
         {} ops, errors {:?}; acks by epoch {:?}; {}",
        old.id,
        old.epoch,
        (continued_at - stopped_at) / 1_000_000,
        new.id,
        new.epoch,
        gap.map_or("-".into(), |g| format!("{:.1}", g.gap_ms())),
        report.ops,
        report.errors_by_kind,
        ledger.acks_by_epoch(),
        verification.summary()
    );

    // Checked last, so every other property above has been checked when
    // this fails.
    //
    // The client API checks the lease immediately before every system call
    // that writes an acknowledgement (api/gate.rs). A check and a system
    // call are two steps, and a SIGSTOP can land between them: that thread
    // then resumes inside the write and sends an answer decided under a
    // valid lease, for a write already committed on the sync set. From the
    // outside this is an answer delayed in flight, and it is safe (the
    // write is in the new active's data, verified above). It is bounded:
    // at most one such answer per thread of the replica's runtime, and
    // each leaves at once on SIGCONT. Anything else late — more answers, or
    // a later one, or one for a write sent after the pause began — is the
    // bug this test is for (without the gate, every write committed but
    // unanswered at the SIGSTOP came back as a late 200).
    let lease_end = stopped_at + LEASE_MS * 1_000_000;
    let in_window = |w: &understudy_tests::loadgen::ledger::WriteRecord| {
        w.start_ns < stopped_at && w.end_ns < continued_at + RESUME_WINDOW_NS
    };
    let late_writes: Vec<_> = ledger
        .writes()
        .iter()
        .filter(|w| w.acked && w.end_ns > lease_end)
        .filter(|w| w.version.is_some_and(|v| v.epoch.0 <= old.epoch))
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tolerated = late_writes.len() <= threads && late_writes.iter().all(|w| in_window(w));
    let late: Vec<String> = late_writes
        .iter()
        .map(|w| {
            format!(
                "{} acknowledged via {} ({}) with version {:?}, sent {} ms after SIGSTOP, \
                 answered {} ms after SIGSTOP ({} ms after SIGCONT)",
                w.value_id(),
                cluster
                    .id_of_url(ledger.url(w.answered_by))
                    .unwrap_or_default(),
                ledger.url(w.answered_by),
                w.version.map(|v| v.to_string()),
                (w.start_ns as i64 - stopped_at as i64) / 1_000_000,
                (w.end_ns - stopped_at) / 1_000_000,
                w.end_ns as i64 / 1_000_000 - continued_at as i64 / 1_000_000,
            )
        })
        .collect();
    if !late.is_empty() && tolerated {
        println!(
            "{} answer(s) in the old epoch left as the process resumed (stopped between \
             the lease check and the send; committed before the pause): {late:#?}",
            late.len()
        );
    }
    assert!(
        tolerated,
        "{} writes acknowledged in the old epoch {} after its lease ended (at most {threads} \
         sent before the SIGSTOP and answered within {} ms of SIGCONT are tolerated): {:#?}",
        late.len(),
        old.epoch,
        RESUME_WINDOW_NS / 1_000_000,
        &late[..late.len().min(10)]
    );
}
