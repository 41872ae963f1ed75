//! Crash recovery of the write log: a torn last record at every byte offset
//! is cut and the log continues; a flipped bit in any earlier record makes
//! opening fail with the file and byte offset named.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use proto_common::record;
use proto_common::{LogIndex, Position};
use replica::log::segment::{file_name, SEGMENT_HEADER_LEN};
use replica::log::{Log, LogOptions, OpenError, ReadOutcome};

const SEGMENT: u64 = 256 << 10;

fn opts() -> LogOptions {
    LogOptions {
        segment_bytes: SEGMENT,
        fsync: true,
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!("entry {i} {}", "x".repeat((i % 7) as usize * 5)).into_bytes()
}

/// Writes `n` records (epoch 1) one batch each; returns each record's
/// offset in the first segment and its encoded length.
fn write_log(dir: &Path, n: u64) -> Vec<(u64, usize)> {
    let (mut log, torn) = Log::open(dir, opts(), Position::ZERO, &[]).unwrap();
    assert!(torn.is_none());
    let mut out = Vec::new();
    let mut off = SEGMENT_HEADER_LEN;
    for i in 1..=n {
        let mut buf = BytesMut::new();
        let pos = Position::new(1, i);
        record::encode(&mut buf, pos, &payload(i));
        log.append(&buf, &[(pos, 0)]).unwrap();
        log.sync().unwrap();
        out.push((off, buf.len()));
        off += buf.len() as u64;
    }
    out
}

fn segment_path(dir: &Path) -> PathBuf {
    dir.join(file_name(LogIndex(1)))
}

/// Every record's payload in the log, in order.
fn read_all(log: &Log) -> Vec<(Position, Vec<u8>)> {
    let reader = log.reader();
    let mut out = Vec::new();
    let mut next = reader.base().index.next();
    while let ReadOutcome::Entries { bytes, last, .. } = reader.read(next, 1 << 20).unwrap() {
        let mut off = 0;
        while off < bytes.len() {
            let record::Decoded::Record(r) = record::decode(&bytes[off..]) else {
                panic!("bad record in read")
            };
            out.push((r.position, r.payload.to_vec()));
            off += r.encoded_len();
        }
        next = last.index.next();
    }
    out
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with(".seg") {
            std::fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
        }
    }
    to
}

#[test]
fn torn_last_record_is_cut_at_every_byte_offset() {
    let src = tempfile::tempdir().unwrap();
    let n = 20;
    let records = write_log(src.path(), n);
    let (last_off, last_len) = records[(n - 1) as usize];
    // Two ways a write is torn: the file ends early (it was extended by the
    // write), or the rest of the preallocated space is still zeros.
    for truncate_file in [true, false] {
        for cut in 0..last_len {
            let dir = copy_dir(src.path());
            let seg = segment_path(dir.path());
            let f = OpenOptions::new().write(true).open(&seg).unwrap();
            let at = last_off + cut as u64;
            if truncate_file {
                f.set_len(at).unwrap();
            } else {
                f.write_all_at(&vec![0u8; last_len - cut], at).unwrap();
            }
            drop(f);
            let (mut log, torn) = Log::open(dir.path(), opts(), Position::ZERO, &[])
                .unwrap_or_else(|e| panic!("cut at {cut} (truncate={truncate_file}): {e}"));
            assert_eq!(log.last(), Position::new(1, n - 1), "cut at {cut}");
            if cut > 0 {
                let torn = torn.unwrap_or_else(|| panic!("cut at {cut}: torn tail not reported"));
                assert_eq!(torn.offset, last_off, "cut at {cut}");
            }
            // The log continues after the cut, and survives another restart.
            let mut buf = BytesMut::new();
            let pos = Position::new(1, n);
            record::encode(&mut buf, pos, b"rewritten");
            log.append(&buf, &[(pos, 0)]).unwrap();
            log.sync().unwrap();
            drop(log);
            let (log, torn) = Log::open(dir.path(), opts(), Position::ZERO, &[]).unwrap();
            assert!(torn.is_none(), "cut at {cut}: second open found damage");
            let all = read_all(&log);
            assert_eq!(all.len() as u64, n);
            assert_eq!(all.last().unwrap().1, b"rewritten");
            for (i, (p, data)) in all[..(n - 1) as usize].iter().enumerate() {
                assert_eq!(*p, Position::new(1, i as u64 + 1));
                assert_eq!(*data, payload(i as u64 + 1));
            }
        }
    }
}

#[test]
fn flipped_bit_in_an_earlier_record_refuses_to_start() {
    let src = tempfile::tempdir().unwrap();
    let n = 12;
    let records = write_log(src.path(), n);
    // Every byte of three earlier records (first, middle, second to last),
    // one bit each, cycling through bit positions.
    for &victim in &[0usize, 5, (n - 2) as usize] {
        let (off, len) = records[victim];
        for byte in 0..len {
            let dir = copy_dir(src.path());
            let seg = segment_path(dir.path());
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&seg)
                .unwrap();
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, off + byte as u64).unwrap();
            b[0] ^= 1 << (byte % 8);
            f.write_all_at(&b, off + byte as u64).unwrap();
            drop(f);
            match Log::open(dir.path(), opts(), Position::ZERO, &[]) {
                Err(OpenError::Corrupt { path, offset, .. }) => {
                    assert_eq!(path, seg);
                    assert_eq!(offset, off, "record {victim} byte {byte}");
                    let msg = OpenError::Corrupt {
                        path: path.clone(),
                        offset,
                        why: String::new(),
                    }
                    .to_string();
                    assert!(msg.contains(&seg.display().to_string()));
                    assert!(msg.contains(&format!("byte offset {off}")));
                }
                Err(other) => panic!("record {victim} byte {byte}: unexpected error {other}"),
                Ok((log, _)) => panic!(
                    "record {victim} byte {byte}: opened a corrupt log at {}",
                    log.last()
                ),
            }
        }
    }
}

#[test]
fn truncate_after_zeroes_the_cut_and_returns_it() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10);
    let (mut log, _) = Log::open(dir.path(), opts(), Position::ZERO, &[]).unwrap();
    let cut = log.truncate_after(LogIndex(6)).unwrap();
    let checked = record::check_batch(&cut, Position::new(1, 6)).unwrap();
    assert_eq!(checked.len(), 4);
    assert_eq!(log.last(), Position::new(1, 6));
    let mut buf = BytesMut::new();
    record::encode(&mut buf, Position::new(2, 7), b"new epoch");
    log.append(&buf, &[(Position::new(2, 7), 0)]).unwrap();
    log.sync().unwrap();
    drop(log);
    let (log, torn) = Log::open(dir.path(), opts(), Position::ZERO, &[]).unwrap();
    assert!(torn.is_none());
    assert_eq!(log.last(), Position::new(2, 7));
    assert_eq!(read_all(&log).len(), 7);
    assert_eq!(
        log.reader().position_of(LogIndex(6)),
        Some(Position::new(1, 6))
    );
    assert_eq!(
        log.reader().position_of(LogIndex(7)),
        Some(Position::new(2, 7))
    );
}

#[test]
fn segments_roll_and_compact() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open(dir.path(), opts(), Position::ZERO, &[]).unwrap();
    let big = vec![7u8; 10_000];
    for i in 1..=100u64 {
        let mut buf = BytesMut::new();
        record::encode(&mut buf, Position::new(1, i), &big);
        log.append(&buf, &[(Position::new(1, i), 0)]).unwrap();
    }
    log.sync().unwrap();
    let segs = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".seg")
            })
            .count()
    };
    assert!(segs() >= 4, "expected several segments, got {}", segs());
    // A standby still needs entries from 31 on: they stay.
    assert!(
        log.compact(Position::new(1, 60), Some(LogIndex(31)))
            .unwrap()
            >= 1
    );
    assert!(
        log.base().index < LogIndex(31),
        "kept entries were compacted"
    );
    assert!(matches!(
        log.reader().read(LogIndex(31), 1 << 20).unwrap(),
        ReadOutcome::Entries { .. }
    ));
    let removed = log.compact(Position::new(1, 60), None).unwrap();
    assert!(removed >= 1);
    assert!(log.base().index <= LogIndex(60) && log.base().index > LogIndex(31));
    assert!(matches!(
        log.reader().read(LogIndex(31), 1 << 20).unwrap(),
        ReadOutcome::Compacted
    ));
    drop(log);
    let (log, _) = Log::open(dir.path(), opts(), Position::new(1, 60), &[]).unwrap();
    assert_eq!(log.last(), Position::new(1, 100));
    let all = read_all(&log);
    assert_eq!(all.first().unwrap().0, Position::new(1, 61));
    assert_eq!(all.len(), 40);
}
