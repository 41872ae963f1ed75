//! Where a divergent tail goes: `quarantine/` in the data directory.
//!
//! Entries cut from a standby's log were never committed in sync mode (no
//! client was told they succeeded; in async mode they may have been), but
//! they are someone's writes, so they are never silently deleted. Each cut
//! becomes one file of raw log records (the same format as a segment's
//! records, decodable with the same code) plus one line in
//! `quarantine/index.jsonl` that a person can read: when, why, the
//! positions, and which keys each entry touched. A snapshot that holds cut
//! entries is moved here whole, with its own line.
//!
//! They are stored (and fsynced) *before* they are cut from the log: a
//! crash in between leaves them in both places, and the next handshake
//! cuts and stores them again (a duplicate in `quarantine/`, never a loss).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proto_common::record::{self, Decoded};
use proto_common::Position;
use serde::Serialize;

use crate::command::{Command, Op};
use crate::log::writer::sync_dir;

/// Most entries described one by one in an index line.
const MAX_DESCRIBED: usize = 1000;

/// One line of `index.jsonl`.
#[derive(Serialize)]
struct IndexLine<'a> {
    cut_at_unix_ms: u128,
    file: String,
    first: Position,
    last: Position,
    count: u64,
    reason: &'a str,
    entries: Vec<EntrySummary>,
}

#[derive(Serialize)]
struct EntrySummary {
    position: Position,
    op: &'static str,
    keys: Vec<String>,
}

/// One line of `index.jsonl` for a snapshot set aside whole: it held
/// entries after a cut, which cannot be taken out of it one by one.
#[derive(Serialize)]
struct SnapshotLine<'a> {
    cut_at_unix_ms: u128,
    file: String,
    snapshot: Position,
    cut_after: Position,
    reason: &'a str,
}

/// Moves a snapshot file that holds cut entries into `quarantine/` (a
/// rename, so it is never lost half-way) and records why.
pub fn store_snapshot(
    data_dir: &Path,
    snapshot: &Path,
    at: Position,
    cut_after: Position,
    reason: &str,
) -> io::Result<()> {
    let dir = data_dir.join("quarantine");
    fs::create_dir_all(&dir)?;
    let now = unix_ms();
    let name = format!("{now}-snapshot-{at}.snap");
    fs::rename(snapshot, dir.join(&name))?;
    sync_dir(&dir)?;
    if let Some(from) = snapshot.parent() {
        sync_dir(from)?;
    }
    append_line(
        &dir,
        &SnapshotLine {
            cut_at_unix_ms: now,
            file: name,
            snapshot: at,
            cut_after,
            reason,
        },
    )
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

fn append_line(dir: &Path, line: &impl Serialize) -> io::Result<()> {
    let mut index = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("index.jsonl"))?;
    let mut text = serde_json::to_vec(line).expect("serializable");
    text.push(b'\n');
    index.write_all(&text)?;
    index.sync_all()?;
    sync_dir(dir)
}

/// Stores cut records; returns how many entries they held.
pub fn store(data_dir: &Path, cut: &[u8], reason: &str) -> io::Result<u64> {
    let mut summaries = Vec::new();
    let mut first = None;
    let mut last = Position::ZERO;
    let mut count = 0u64;
    let mut off = 0;
    while off < cut.len() {
        let Decoded::Record(r) = record::decode(&cut[off..]) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cut entries are not valid records at offset {off}"),
            ));
        };
        first.get_or_insert(r.position);
        last = r.position;
        count += 1;
        if summaries.len() < MAX_DESCRIBED {
            summaries.push(summarize(r.position, r.payload));
        }
        off += r.encoded_len();
    }
    let Some(first) = first else { return Ok(0) };
    let dir = data_dir.join("quarantine");
    fs::create_dir_all(&dir)?;
    let now = unix_ms();
    let name = format!("{now}-{first}-{last}.records");
    let mut f = fs::File::create(dir.join(&name))?;
    f.write_all(cut)?;
    f.sync_all()?;
    let line = IndexLine {
        cut_at_unix_ms: now,
        file: name,
        first,
        last,
        count,
        reason,
        entries: summaries,
    };
    append_line(&dir, &line)?;
    Ok(count)
}

fn summarize(position: Position, payload: &[u8]) -> EntrySummary {
    let key = |k: &Bytes| String::from_utf8_lossy(k).into_owned();
    let (op, keys) = match Command::decode(&Bytes::copy_from_slice(payload)) {
        Ok(Command::Put { key: k, .. }) => ("put", vec![key(&k)]),
        Ok(Command::Delete { key: k }) => ("delete", vec![key(&k)]),
        Ok(Command::Txn { ops, .. }) => (
            "txn",
            ops.iter()
                .map(|o| match o {
                    Op::Put { key: k, .. } | Op::Delete { key: k } => key(k),
                })
                .collect(),
        ),
        Ok(Command::Noop) => ("noop", vec![]),
        Ok(Command::Stream(_)) => ("redis stream", vec![]),
        Err(_) => ("unknown", vec![]),
    };
    EntrySummary { position, op, keys }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_records_and_a_readable_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut cut = Vec::new();
        for i in 9..=10u64 {
            let cmd = Command::Put {
                key: Bytes::from(format!("k{i}")),
                value: Bytes::from("v"),
            };
            record::encode(&mut cut, Position::new(1, i), &cmd.encode());
        }
        let n = store(dir.path(), &cut, "divergent tail after 1.8").unwrap();
        assert_eq!(n, 2);
        let index = fs::read_to_string(dir.path().join("quarantine/index.jsonl")).unwrap();
        let line: serde_json::Value = serde_json::from_str(index.trim()).unwrap();
        assert_eq!(line["count"], 2);
        assert_eq!(line["first"], "1.9");
        assert_eq!(line["entries"][1]["keys"][0], "k10");
        let file = dir
            .path()
            .join("quarantine")
            .join(line["file"].as_str().unwrap());
        assert_eq!(fs::read(file).unwrap(), cut);
    }
}
