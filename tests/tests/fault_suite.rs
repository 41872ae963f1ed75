//! The fault suite's short form: every kind of fault once, in an order
//! drawn from a printed seed (set `UNDERSTUDY_FAULT_SEED` to replay one),
//! against each topology, in proxy mode (Redis clients) and with one
//! replica's clock running slow, with every checker; and the checkers shown able
//! to fail, on a run in asynchronous mode that loses acknowledged writes.
//!
//! The long form is `tests/fault.sh --minutes N` (RELIABILITY.md).

use std::cell::{Cell, RefCell};
use std::time::Duration;

use understudy_tests::fault::cluster::{fill_disk, ClusterOptions, Topology};
use understudy_tests::fault::history::Outcome;
use understudy_tests::fault::nemesis::{wait_recovered, Fault, FaultKind, Schedule};
use understudy_tests::fault::run::{Run, RunReport};
use understudy_tests::harness::{serial, wait_for, TestDir};

const CLIENTS: usize = 12;
const DEADLINE: Duration = Duration::from_secs(60);

fn seed() -> u64 {
    let seed = match std::env::var("UNDERSTUDY_FAULT_SEED") {
        Ok(s) => s.parse().expect("UNDERSTUDY_FAULT_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .subsec_nanos() as u64,
    };
    eprintln!("fault suite seed {seed} (replay with UNDERSTUDY_FAULT_SEED={seed})");
    seed
}

async fn short_run(options: ClusterOptions, name: &str) -> RunReport {
    let dir = TestDir::new(name).unwrap();
    let seed = seed();
    let (topology, proxy) = (options.topology, options.proxy);
    let mut run = Run::start(dir.path(), options, seed, CLIENTS)
        .await
        .unwrap();
    let kinds = FaultKind::for_cluster(topology, proxy);
    let schedule = Schedule {
        seed,
        kinds: kinds.clone(),
        hold_ms: (1500, 2500),
        calm_ms: (300, 800),
    };
    // Each kind once: the schedule draws every kind before any repeats.
    run.faults(&schedule, Duration::from_secs(180), kinds.len())
        .await;
    let report = run.finish(dir.path()).await;
    eprintln!("{}", report.table());
    let injected: Vec<FaultKind> = report.faults.iter().map(|f| f.kind).collect();
    for kind in &kinds {
        assert!(
            injected.contains(kind),
            "{} was not injected (seed {seed}); injected: {injected:?}",
            kind.name()
        );
    }
    assert!(
        report.findings.anomalies.is_empty(),
        "{} anomalies (seed {seed}); files kept in {}",
        report.findings.anomalies.len(),
        dir.keep().display()
    );
    assert!(report.findings.acked_adds > 0, "no write was acknowledged");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_once_on_a_file_store_arbiter_breaks_no_promise() {
    let _serial = serial().await;
    short_run(ClusterOptions::default(), "fault-suite-file").await;
}

/// Clock-rate skew within the configured drift (0.1): the first replica's
/// clocks run 8 % slow (libfaketime), so its lease lasts 8 % longer in
/// real time than it believes, less than the arbiter's margin. (Beyond
/// the drift the promise does not hold, and the checkers say so:
/// RELIABILITY.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_once_with_a_replica_clock_8_percent_slow_breaks_no_promise() {
    let _serial = serial().await;
    let options = ClusterOptions {
        clock_rate: Some(0.92),
        ..ClusterOptions::default()
    };
    short_run(options, "fault-suite-skew").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_once_in_proxy_mode_with_redis_clients_breaks_no_promise() {
    let _serial = serial().await;
    let options = ClusterOptions {
        proxy: true,
        ..ClusterOptions::default()
    };
    let report = short_run(options, "fault-suite-proxy").await;
    // Every form of operation the Redis clients have was answered, so
    // every checker had something to judge.
    for label in [
        "add",
        "write",
        "read",
        "cas/eval",
        "cas/watch",
        "push",
        "pop",
    ] {
        let ok = report.outcomes.get(label).map_or(0, |o| o[0]);
        assert!(ok > 0, "no {label} succeeded: {:?}", report.outcomes);
    }
    assert!(
        report.findings.popped_items > 0,
        "no pop took an item: {:?}",
        report.findings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_once_on_two_arbiters_and_etcd_breaks_no_promise() {
    let _serial = serial().await;
    let options = ClusterOptions {
        topology: Topology::Etcd,
        ..ClusterOptions::default()
    };
    short_run(options, "fault-suite-etcd").await;
}

/// Asynchronous replication (`sync_standbys = 0`) acknowledges writes no
/// standby holds: the active is cut off from the arbiter and the standbys
/// (its clients still reach it) and acknowledges writes until its lease
/// runs out; a standby is promoted without them. The checker must report
/// them lost (and the old active's copies are set aside in quarantine when
/// it rejoins).
///
/// The random clients may send the isolated active no write at all in
/// that second: a client that picked a standby waits there for its
/// forwarded write until the promotion, and soon every client has. So a
/// writer of the test's own sends writes straight to the isolated active
/// until it acknowledges one, and the checker must report that one lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_reports_writes_lost_in_async_mode() {
    let _serial = serial().await;
    let dir = TestDir::new("fault-suite-async").unwrap();
    let options = ClusterOptions {
        sync_standbys: 0,
        ..ClusterOptions::default()
    };
    let mut run = Run::start(dir.path(), options, seed(), CLIENTS)
        .await
        .unwrap();
    let (_, status) = run.cluster.leader_status().await.unwrap();
    let active = status.active.unwrap().as_str().to_string();
    let writer = tokio::sync::Mutex::new(run.writer(&active).expect("the active is a replica"));
    let member = run.cluster.replica(&active).unwrap();
    let others: Vec<u32> = run
        .cluster
        .uids()
        .into_iter()
        .filter(|u| *u != member.uid)
        .collect();
    let partition_started = std::time::Instant::now();
    run.firewall
        .partition(member.uid, &member.ports, &others)
        .unwrap();
    let partition_took = partition_started.elapsed();
    // From here on nothing the isolated active sends reaches another
    // cluster process: a write it acknowledges now is in no standby's log.
    let answers = RefCell::new(Vec::new());
    let lost_write = wait_for(
        DEADLINE,
        "a write acknowledged by the isolated active",
        || {
            let (writer, answers) = (&writer, &answers);
            async move {
                let op = writer.lock().await.add().await;
                if op.outcome == Outcome::Ok {
                    return Some(Ok(op));
                }
                answers.borrow_mut().push(op.code.clone());
                // Its lease has ended: it acknowledges nothing more.
                (op.code == "not_writable").then_some(Err(op.code))
            }
        },
    )
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|code| format!("the isolated active answered {code}")))
    .unwrap_or_else(|e| {
        panic!(
            "{e}: it acknowledged no write between the partition (which took {partition_took:?} \
             to make) and the end of its lease; answers: {:?}",
            answers.borrow()
        )
    });
    eprintln!(
        "{active}, isolated (the partition took {partition_took:?}), acknowledged {} at {} \
         after {} refusals",
        lost_write.key,
        lost_write
            .version
            .map(|v| v.to_string())
            .unwrap_or_default(),
        answers.borrow().len()
    );
    wait_for(DEADLINE, "a standby promoted", || {
        let cluster = &run.cluster;
        let old = active.clone();
        async move {
            let (_, s) = cluster.leader_status().await?;
            s.active.filter(|n| n.as_str() != old).map(drop)
        }
    })
    .await
    .unwrap();
    run.firewall.heal().unwrap();
    let report = run.finish(dir.path()).await;
    eprintln!("{}", report.table());
    // The loss must be reported: by (a) when one of the lost writes was a
    // put of its own key (the usual case), else by the register check (b)
    // or the quarantine check (f) seeing an acknowledged write cut.
    let lost: Vec<_> = report
        .findings
        .anomalies
        .iter()
        .filter(|a| {
            (a.check == "set" && a.what.contains("is missing at the end"))
                || a.check == "register"
                || (a.check == "quarantine" && a.what.contains("acknowledged write"))
        })
        .collect();
    assert!(
        !lost.is_empty(),
        "the checker reported no lost write: {:?}",
        report.findings.anomalies
    );
    assert!(
        lost.iter().any(|a| a.ops.contains(&lost_write.id)),
        "the checker did not report the write the isolated active acknowledged after the \
         partition ({}) as lost; it reported: {:?}",
        lost_write.describe(0),
        lost
    );
    if report.findings.acked_adds > 0 && lost.iter().any(|a| a.check == "set") {
        assert!(
            report.findings.present_adds < report.findings.acked_adds,
            "{} of {} acknowledged adds present",
            report.findings.present_adds,
            report.findings.acked_adds
        );
    }
}

/// The disk-full test's log segments.
const SEGMENT_BYTES: u64 = 1 << 20;

/// The size of each value the disk-full test writes to fill the full
/// standby's log (a quarter of a segment).
const PUSH_VALUE_BYTES: usize = 256 << 10;

/// A replica's `/v1/status`, when it answers.
async fn replica_status_json(url: &str) -> Option<serde_json::Value> {
    let raw = understudy_tests::client::KvClient::new(url)
        .ok()?
        .request(hyper::Method::GET, "/v1/status", &[], "")
        .await
        .ok()?;
    serde_json::from_slice(&raw.body).ok()
}

/// A sync standby's disk fills up (its data directory is a small tmpfs,
/// filled with a ballast file) and the test writes to the active until the
/// standby's write log needs space it cannot get: the log fails and stops, its
/// connection closes, the arbiter replaces it in the sync set with the
/// other standby, and writes go on. Once space is freed and it is
/// restarted (a failed write log takes no more writes until then), it
/// catches up, and the checkers find nothing. Meanwhile a read sent to it
/// with a newer `X-Min-Version` is refused at once (it used to wait the
/// whole second for a version it could never reach).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_standby_whose_disk_fills_up_is_replaced_and_nothing_is_lost() {
    let _serial = serial().await;
    let dir = TestDir::new("fault-suite-disk-full").unwrap();
    let options = ClusterOptions {
        disk_mib: Some(96),
        segment_bytes: Some(SEGMENT_BYTES),
        ..ClusterOptions::default()
    };
    let mut run = Run::start(dir.path(), options, seed(), CLIENTS)
        .await
        .unwrap();
    let (_, status) = run.cluster.leader_status().await.unwrap();
    let active = status.active.unwrap().as_str().to_string();
    let full = status
        .confirmed_sync
        .iter()
        .map(|n| n.as_str().to_string())
        .find(|n| *n != active)
        .expect("a confirmed sync standby");
    let data_dir = run.cluster.replica(&full).unwrap().data_dir.clone();
    let url = run.cluster.replica(&full).unwrap().url.clone();
    let active_url = run.cluster.replica(&active).unwrap().url.clone();
    let start_ns = run.history.now_ns();
    let ballast = fill_disk(&data_dir).unwrap();

    // A full disk does not fail the log at once: the rest of its current
    // segment and the next one, preallocated (zero-filled) before the disk
    // filled up, still take entries, up to twice SEGMENT_BYTES; only the
    // segment after them cannot be made. The clients' small writes (about
    // 55 log bytes each) need over a minute for that on a busy machine, so
    // the test writes it itself: large values to the active, which ships
    // them to the full standby, until its log fails.
    let pushed = Cell::new((0usize, 0usize));
    let last = RefCell::new(String::new());
    let failure = wait_for(DEADLINE, "the full standby's write log failed", || {
        let (url, active_url, pushed, last) = (&url, &active_url, &pushed, &last);
        let (full, active) = (&full, &active);
        async move {
            let v = replica_status_json(url).await?;
            if let Some(failure) = v["storage_failure"].as_str() {
                return Some(failure.to_string());
            }
            let (sent, acked) = pushed.get();
            let answer = understudy_tests::client::KvClient::new(active_url)
                .ok()?
                .put(format!("fill/{sent}"), vec![b'x'; PUSH_VALUE_BYTES])
                .await;
            let answer = match answer {
                Ok(r) if r.is_success() => {
                    pushed.set((sent + 1, acked + 1));
                    "acknowledged".to_string()
                }
                Ok(r) => {
                    pushed.set((sent + 1, acked));
                    format!("{} {}", r.status, r.body_text())
                }
                Err(e) => {
                    pushed.set((sent + 1, acked));
                    e.to_string()
                }
            };
            let (sent, acked) = pushed.get();
            *last.borrow_mut() = format!(
                "{full} is at position {} with {} log bytes since its last snapshot and no \
                 storage failure; the test sent {sent} values of {PUSH_VALUE_BYTES} bytes to \
                 {active} ({acked} acknowledged; the last: {answer})",
                v["position"], v["log_bytes_since_snapshot"]
            );
            None
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", last.borrow()));
    eprintln!("{full}: {failure}");
    // It will never reach a newer version: a read that asks for one is
    // told so at once, not after the whole X-Min-Version wait (which held
    // every client that picked it for a second: a 0.9 s write gap).
    let mut to_active = understudy_tests::client::KvClient::new(&active_url).unwrap();
    let newer = to_active.put("newer", "v").await.unwrap();
    let newer_version = newer.write_version().expect("a version").to_string();
    let mut to_full = understudy_tests::client::KvClient::new(&url).unwrap();
    let refused = to_full
        .request(
            hyper::Method::GET,
            "/v1/kv/newer",
            &[("x-min-version", &newer_version)],
            "",
        )
        .await
        .unwrap();
    assert_eq!(
        refused.error_code().as_deref(),
        Some("version_not_reached"),
        "{}",
        refused.body_text()
    );
    assert!(
        refused.body_text().contains("write log failed"),
        "{}",
        refused.body_text()
    );
    wait_for(
        DEADLINE,
        "another standby confirmed in the sync set",
        || {
            let cluster = &run.cluster;
            let (full, active) = (full.clone(), active.clone());
            async move {
                let (_, s) = cluster.leader_status().await?;
                s.confirmed_sync
                    .iter()
                    .any(|n| n.as_str() != full && n.as_str() != active)
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();
    let before = run.acked_writes();
    wait_for(
        DEADLINE,
        "writes acknowledged without the full standby",
        || {
            let acked = run.acked_writes();
            async move { (acked >= before + 200).then_some(()) }
        },
    )
    .await
    .unwrap();

    std::fs::remove_file(&ballast).unwrap();
    run.cluster
        .replica_mut(&full)
        .unwrap()
        .process
        .restart()
        .unwrap();
    let heal_ns = run.history.now_ns();
    let recovered = wait_recovered(&run.cluster, &run.history).await;
    run.note_fault(Fault {
        kind: FaultKind::FillSyncStandbyDisk,
        target: full.clone(),
        start_ns,
        heal_ns,
        recovered_ns: recovered.as_ref().ok().copied(),
        stuck: recovered.err(),
    });
    let report = run.finish(dir.path()).await;
    eprintln!("{}", report.table());
    assert!(
        report.findings.anomalies.is_empty(),
        "{} anomalies; files kept in {}",
        report.findings.anomalies.len(),
        dir.keep().display()
    );
}
