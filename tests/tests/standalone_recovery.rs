//! What a user sees when the real `replica` binary restarts on a damaged
//! log (DESIGN.md, "Recovery"):
//! - a torn last record (a write the crash interrupted) is cut, a warning
//!   names the file and offset, and the replica starts with everything
//!   before it and takes new writes;
//! - a damaged record in the middle (durable data) stops the start: a
//!   non-zero exit, stderr naming the segment file and the record's exact
//!   byte offset, and the client port never opens. Undoing the damage
//!   makes the same data dir start again with nothing lost.
//!
//! The library-level test of every byte offset is
//! `replica/tests/log_recovery.rs`; this covers the binary.

use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use understudy_tests::client::KvClient;
use understudy_tests::harness::log_files::{self, RecordSpan};
use understudy_tests::harness::{describe_exit, wait_for, ReplicaConfig, ReplicaProcess, TestDir};

fn value_of(key: &str) -> String {
    format!("value of {key}: {}", "x".repeat(40))
}

/// PUTs `key` and returns the write's version as text (`E.I`).
async fn put(client: &mut KvClient, key: &str) -> String {
    let r = client.put(key, value_of(key)).await.unwrap();
    assert_eq!(r.status, 200, "PUT {key}: {}", r.body_text());
    r.write_version()
        .expect("a write answers its version")
        .to_string()
}

async fn assert_present(client: &mut KvClient, keys: &[String]) {
    for key in keys {
        let r = client.get(key).await.unwrap();
        assert_eq!(r.status, 200, "GET {key}: {}", r.body_text());
        assert_eq!(r.body_text(), value_of(key), "GET {key}");
    }
}

async fn assert_absent(client: &mut KvClient, key: &str) {
    let r = client.get(key).await.unwrap();
    assert_eq!(
        r.status,
        404,
        "GET {key} (its record was cut): {}",
        r.body_text()
    );
}

fn last_record(data_dir: &Path) -> RecordSpan {
    log_files::log_records(data_dir)
        .unwrap()
        .pop()
        .expect("the log has records")
}

/// Waits for the process to exit by itself, checking all the while that
/// its port never accepts a connection.
async fn exit_without_serving(replica: &mut ReplicaProcess) -> ExitStatus {
    let addr = format!("127.0.0.1:{}", replica.port());
    let served = AtomicBool::new(false);
    let process = replica.process();
    let status = wait_for(Duration::from_secs(20), "the replica to give up", || {
        let exited = process.try_exit_status().ok().flatten();
        let (addr, served) = (addr.clone(), &served);
        async move {
            if exited.is_some() {
                return exited;
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                served.store(true, Ordering::SeqCst);
            }
            None
        }
    })
    .await
    .unwrap();
    assert!(
        !served.load(Ordering::SeqCst),
        "the port {addr} accepted a connection"
    );
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "the port {addr} is open after the replica exited"
    );
    status
}

/// How a round tears its last record.
#[derive(Clone, Copy, Debug)]
enum Tear {
    /// The first `keep` bytes reached the disk, the rest of the record is
    /// the preallocated zeros.
    Zeroed { keep: u64 },
    /// The file ends `keep` bytes into the record.
    Truncated { keep: u64 },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_is_cut_with_a_warning_and_the_replica_starts() {
    let dir = TestDir::new("recovery-torn-tail").unwrap();
    let mut replica = ReplicaConfig::new(&dir, "a").start().await.unwrap();
    let mut client = replica.client();
    let mut kept: Vec<String> = Vec::new();
    for i in 0..50 {
        let key = format!("key-{i:03}");
        put(&mut client, &key).await;
        kept.push(key);
    }

    // Header is 24 bytes: cuts inside the length, the checksum, the
    // position, right after the header, and one byte before the end.
    let tears = [
        Tear::Zeroed { keep: 1 },
        Tear::Truncated { keep: 1 },
        Tear::Zeroed { keep: 6 },
        Tear::Truncated { keep: 12 },
        Tear::Zeroed { keep: 23 },
        Tear::Truncated { keep: 24 },
        Tear::Zeroed { keep: 25 },
        Tear::Truncated { keep: u64::MAX },
        Tear::Zeroed { keep: u64::MAX },
    ];
    for (round, tear) in tears.into_iter().enumerate() {
        let torn_key = format!("torn-{round}");
        let version = put(&mut client, &torn_key).await;
        replica.kill().unwrap();

        let last = last_record(replica.data_dir());
        assert_eq!(
            last.position.to_string(),
            version,
            "the last record is the last acknowledged write"
        );
        match tear {
            Tear::Zeroed { keep } => {
                let keep = keep.min(last.len - 1);
                log_files::zero_bytes(&last.path, last.offset + keep, last.end()).unwrap();
            }
            Tear::Truncated { keep } => {
                let keep = keep.min(last.len - 1);
                log_files::truncate(&last.path, last.offset + keep).unwrap();
            }
        }

        replica
            .restart()
            .await
            .unwrap_or_else(|e| panic!("round {round} ({tear:?}): {e}"));
        let stderr = replica.stderr_of_this_life();
        let warning = stderr
            .lines()
            .find(|l| l.contains("WARN") && l.contains("torn record"))
            .unwrap_or_else(|| panic!("round {round} ({tear:?}): no torn-tail warning:\n{stderr}"));
        let path = last.path.display().to_string();
        assert!(
            warning.contains(&path) && warning.contains(&format!("offset={}", last.offset)),
            "round {round} ({tear:?}): the warning must name {path} and offset {}:\n{warning}",
            last.offset
        );

        let mut fresh = replica.client();
        assert_present(&mut fresh, &kept).await;
        assert_absent(&mut fresh, &torn_key).await;
        let after = format!("after-{round}");
        put(&mut fresh, &after).await;
        kept.push(after);
        client = fresh;
    }

    // The repaired log is a clean log: a crash now cuts nothing.
    replica.kill().unwrap();
    replica.restart().await.unwrap();
    assert!(
        !replica.stderr_of_this_life().contains("torn record"),
        "{}",
        replica.stderr_of_this_life()
    );
    assert_present(&mut replica.client(), &kept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_in_the_middle_stops_the_start_and_names_file_and_offset() {
    let dir = TestDir::new("recovery-corrupt-middle").unwrap();
    let mut replica = ReplicaConfig::new(&dir, "a").start().await.unwrap();
    let mut client = replica.client();
    let keys: Vec<String> = (0..40).map(|i| format!("key-{i:03}")).collect();
    for key in &keys {
        put(&mut client, key).await;
    }
    replica.kill().unwrap();

    let records = log_files::log_records(replica.data_dir()).unwrap();
    let n = records.len();
    assert!(n > 40, "{n} records for 40 writes");
    // (record, byte within it, what that byte is): every field of the
    // record header, and the payload.
    let damage = [
        (&records[n / 5], 0, "length"),
        (&records[n / 3], 5, "checksum"),
        (&records[n / 2], 9, "epoch"),
        (&records[2 * n / 3], 17, "index"),
        (&records[4 * n / 5], 30, "payload"),
        (&records[1], 24, "payload of an early record"),
    ];
    for (record, byte, field) in damage {
        let at = record.offset + byte;
        log_files::flip_bit(&record.path, at, 0).unwrap();
        replica.respawn().unwrap();
        let status = exit_without_serving(&mut replica).await;
        let stderr = replica.stderr_of_this_life();
        assert_eq!(
            status.code(),
            Some(2),
            "{field}: the replica exited with {}:\n{stderr}",
            describe_exit(status)
        );
        let expected = format!(
            "log segment {} is corrupt at byte offset {}",
            record.path.display(),
            record.offset
        );
        assert!(
            stderr.contains(&expected),
            "{field} flipped at byte {at}: stderr must say {expected:?}:\n{stderr}"
        );
        // Refusing to start must not have repaired (truncated) anything.
        log_files::flip_bit(&record.path, at, 0).unwrap();
        assert_eq!(log_files::log_records(replica.data_dir()).unwrap(), records);
    }

    replica.restart().await.unwrap();
    let mut client = replica.client();
    assert_present(&mut client, &keys).await;
    put(&mut client, "after").await;
    assert_present(&mut client, &["after".to_string()]).await;
}
