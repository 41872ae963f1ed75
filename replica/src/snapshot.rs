//! Snapshots of the state machine: one file per snapshot, written to a
//! temporary name, fsynced, renamed into place, and the directory fsynced,
//! so a snapshot either exists whole or not at all. Once one is durable the
//! log segments it covers can be deleted.
//!
//! ```text
//! magic "USTDYSN1" | epoch u64 | index u64 |
//!   n_runs u32 | n_runs × (first index u64 | epoch u64) |   (epoch history)
//!   count u64 |
//!   count × (key_len u32 | key | value_len u32 | value | ver_epoch u64 | ver_index u64) |
//! crc32c u32 (of everything before it)
//! ```
//!
//! The same file is what the active streams to a standby that is too far
//! behind for the log. It carries the log's epoch history (which epoch
//! started at which index) so that divergence can still be located exactly
//! after the entries themselves are compacted away.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use imbl::OrdMap;
use proto_common::{Epoch, LogIndex, Position};

use crate::log::writer::sync_dir;
use crate::state::{KvEntry, KvState};

const MAGIC: [u8; 8] = *b"USTDYSN1";

pub fn file_name(pos: Position) -> String {
    format!("snapshot-{:020}-{:020}.snap", pos.epoch.0, pos.index.0)
}

fn parse_file_name(name: &str) -> Option<Position> {
    let rest = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
    let (e, i) = rest.split_once('-')?;
    Some(Position::new(e.parse().ok()?, i.parse().ok()?))
}

/// Snapshot files in `dir`, newest (highest position) last.
pub fn list(dir: &Path) -> io::Result<Vec<(Position, PathBuf)>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            std::fs::remove_file(entry.path())?;
        } else if let Some(pos) = parse_file_name(&name) {
            out.push((pos, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// A checksumming writer: everything written also feeds the CRC.
struct Crc<W> {
    inner: W,
    crc: u32,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
}

/// Epoch runs of the log up to a snapshot: `(first index, epoch)`.
pub type EpochRuns = Vec<(LogIndex, Epoch)>;

/// Writes a snapshot of `map` at `pos` into `dir` and returns its path.
/// Older snapshots are removed once the new one is durable.
pub fn write(
    dir: &Path,
    pos: Position,
    epochs: &[(LogIndex, Epoch)],
    map: &OrdMap<Bytes, KvEntry>,
) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let final_path = dir.join(file_name(pos));
    let tmp = dir.join(format!("{}.tmp", file_name(pos)));
    let file = File::create(&tmp)?;
    let mut w = Crc {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: 0,
    };
    w.write_all(&MAGIC)?;
    w.write_all(&pos.epoch.0.to_le_bytes())?;
    w.write_all(&pos.index.0.to_le_bytes())?;
    w.write_all(&(epochs.len() as u32).to_le_bytes())?;
    for (first, epoch) in epochs {
        w.write_all(&first.0.to_le_bytes())?;
        w.write_all(&epoch.0.to_le_bytes())?;
    }
    w.write_all(&(map.len() as u64).to_le_bytes())?;
    for (k, e) in map.iter() {
        w.write_all(&(k.len() as u32).to_le_bytes())?;
        w.write_all(k)?;
        w.write_all(&(e.value.len() as u32).to_le_bytes())?;
        w.write_all(&e.value)?;
        w.write_all(&e.version.epoch.0.to_le_bytes())?;
        w.write_all(&e.version.index.0.to_le_bytes())?;
    }
    let crc = w.crc;
    let mut buf = w.inner;
    buf.write_all(&crc.to_le_bytes())?;
    let file = buf.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &final_path)?;
    sync_dir(dir)?;
    for (old, path) in list(dir)? {
        if old < pos {
            std::fs::remove_file(path)?;
        }
    }
    Ok(final_path)
}

/// Reads and verifies a snapshot file into a state and its epoch history.
pub fn read(path: &Path) -> io::Result<(KvState, EpochRuns)> {
    let file = File::open(path)?;
    decode(
        BufReader::with_capacity(1 << 20, file),
        &path.display().to_string(),
    )
}

/// Decodes and verifies a snapshot from any byte stream (a file, or the
/// chunks arriving from the active); `name` is for error messages.
pub fn decode(input: impl Read, name: &str) -> io::Result<(KvState, EpochRuns)> {
    let bad = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot {name} is invalid: {why}"),
        )
    };
    let mut r = Crc {
        inner: input,
        crc: 0,
    };
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(bad("bad magic".into()));
    }
    let epoch = read_u64(&mut r)?;
    let index = read_u64(&mut r)?;
    let mut runs = [0u8; 4];
    r.read_exact(&mut runs)?;
    let n_runs = u32::from_le_bytes(runs) as usize;
    if n_runs > 1 << 20 {
        return Err(bad(format!("{n_runs} epoch runs is impossible")));
    }
    let mut epochs = Vec::with_capacity(n_runs);
    for _ in 0..n_runs {
        epochs.push((LogIndex(read_u64(&mut r)?), Epoch(read_u64(&mut r)?)));
    }
    let count = read_u64(&mut r)?;
    let mut map = OrdMap::new();
    for i in 0..count {
        let key = read_field(&mut r).map_err(|e| bad(format!("entry {i}: {e}")))?;
        let value = read_field(&mut r).map_err(|e| bad(format!("entry {i}: {e}")))?;
        let ve = read_u64(&mut r)?;
        let vi = read_u64(&mut r)?;
        map.insert(
            key,
            KvEntry {
                value,
                version: Position::new(ve, vi),
            },
        );
    }
    let computed = r.crc;
    let mut stored = [0u8; 4];
    r.inner.read_exact(&mut stored)?;
    if u32::from_le_bytes(stored) != computed {
        return Err(bad("checksum mismatch".into()));
    }
    let mut rest = Vec::new();
    r.inner.read_to_end(&mut rest)?;
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes after the checksum", rest.len())));
    }
    Ok((
        KvState::from_parts(map, Position::new(epoch, index)),
        epochs,
    ))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_field(r: &mut impl Read) -> io::Result<Bytes> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    let len = u32::from_le_bytes(b) as usize;
    if len > proto_common::record::MAX_PAYLOAD_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("field length {len} is impossible"),
        ));
    }
    let mut v = vec![0u8; len];
    r.read_exact(&mut v)?;
    Ok(Bytes::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;

    #[test]
    fn write_read_round_trip_and_corruption_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = KvState::default();
        for i in 0..100u64 {
            let cmd = Command::Put {
                key: Bytes::from(format!("k{i:03}")),
                value: Bytes::from(vec![i as u8; i as usize]),
            };
            s.apply(Position::new(1, i + 1), &cmd);
        }
        let runs = vec![(LogIndex(1), Epoch(1))];
        let path = write(dir.path(), s.applied(), &runs, s.map()).unwrap();
        let (back, back_runs) = read(&path).unwrap();
        assert_eq!(back_runs, runs);
        assert_eq!(back.applied(), s.applied());
        assert_eq!(back.map(), s.map());
        assert_eq!(list(dir.path()).unwrap().len(), 1);

        let mut data = std::fs::read(&path).unwrap();
        data[100] ^= 0x10;
        std::fs::write(&path, &data).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("snapshot") && err.contains(".snap"), "{err}");
    }

    #[test]
    fn newer_snapshot_replaces_older() {
        let dir = tempfile::tempdir().unwrap();
        let s = KvState::default();
        write(dir.path(), Position::new(1, 5), &[], s.map()).unwrap();
        write(dir.path(), Position::new(2, 9), &[], s.map()).unwrap();
        let all = list(dir.path()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, Position::new(2, 9));
    }
}
