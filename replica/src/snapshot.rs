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
use std::io::{self, BufWriter, Read, Write};
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
    list_named(dir, parse_file_name)
}

/// Files in `dir` whose name `parse` reads as a position, oldest first;
/// leftover temporary files (`*.tmp`) are removed. A missing `dir` holds
/// none.
pub fn list_named(
    dir: &Path,
    parse: impl Fn(&str) -> Option<Position>,
) -> io::Result<Vec<(Position, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            std::fs::remove_file(entry.path())?;
        } else if let Some(pos) = parse(&name) {
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

/// Epoch runs of the log up to a snapshot: `(first index, epoch)`.
pub type EpochRuns = Vec<(LogIndex, Epoch)>;

/// Bytes of the encoded snapshot of `state` with `runs` epoch runs, known
/// before encoding (the active announces it before streaming).
pub fn encoded_len(state: &KvState, runs: usize) -> u64 {
    let header = 8 + 8 + 8 + 4 + 16 * runs as u64 + 8;
    let per_entry = 4 + 4 + 8 + 8;
    header + per_entry * state.len() as u64 + state.data_bytes() + 4
}

/// Encodes the snapshot of `map` at `pos` into `out`, checksum included.
pub fn encode(
    out: impl Write,
    pos: Position,
    epochs: &[(LogIndex, Epoch)],
    map: &OrdMap<Bytes, KvEntry>,
) -> io::Result<()> {
    let mut w = Crc { inner: out, crc: 0 };
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
    w.inner.write_all(&crc.to_le_bytes())?;
    w.inner.flush()
}

/// Writes a snapshot of `map` at `pos` into `dir` and returns its path.
/// Older snapshots are removed once the new one is durable.
pub fn write(
    dir: &Path,
    pos: Position,
    epochs: &[(LogIndex, Epoch)],
    map: &OrdMap<Bytes, KvEntry>,
) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{}.tmp", file_name(pos)));
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
    encode(&mut out, pos, epochs, map)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    publish(dir, &tmp, pos)
}

/// Makes the durable snapshot file `tmp` (of the state at `pos`) the
/// current one in `dir`: renamed into place, the directory synced, older
/// snapshots removed. Returns its path.
pub fn publish(dir: &Path, tmp: &Path, pos: Position) -> io::Result<PathBuf> {
    let final_path = dir.join(file_name(pos));
    std::fs::rename(tmp, &final_path)?;
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
    decode(FileChunks { file }, &path.display().to_string())
}

/// Where a snapshot's bytes come from, a chunk at a time: a file, or the
/// frames arriving from the active. Each key and value is copied out of
/// its chunk into an allocation of its own, so memory stays proportional
/// to the data: a slice would keep its whole 4 MiB chunk alive until every
/// key in it was overwritten (up to the snapshot's size next to the
/// current data). Slicing made a 1 GiB catch-up faster (273-619 against
/// 196-266 MB/s here) at that cost, which a store that must not be killed
/// by the OOM killer cannot pay.
pub trait Chunks {
    /// The next chunk; `None` at the end.
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>>;
}

/// Bytes per chunk of a snapshot read from its file or sent to a standby.
pub const CHUNK: usize = 4 << 20;

/// A snapshot file read in [`CHUNK`]s.
struct FileChunks {
    file: File,
}

impl Chunks for FileChunks {
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let mut buf = Vec::with_capacity(CHUNK);
        (&mut self.file).take(CHUNK as u64).read_to_end(&mut buf)?;
        Ok((!buf.is_empty()).then(|| Bytes::from(buf)))
    }
}

/// Decodes and verifies a snapshot from its chunks; `name` is for error
/// messages.
pub fn decode(chunks: impl Chunks, name: &str) -> io::Result<(KvState, EpochRuns)> {
    decode_chunks(chunks, name).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot {name} is invalid: it ends early"),
        ),
        _ => e,
    })
}

fn decode_chunks(chunks: impl Chunks, name: &str) -> io::Result<(KvState, EpochRuns)> {
    let bad = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot {name} is invalid: {why}"),
        )
    };
    let mut r = Source {
        chunks,
        chunk: Bytes::new(),
        pos: 0,
        crc_from: 0,
        crc: Some(0),
    };
    if r.array::<8>()? != MAGIC {
        return Err(bad("bad magic".into()));
    }
    let epoch = r.u64()?;
    let index = r.u64()?;
    let n_runs = r.u32()? as usize;
    if n_runs > 1 << 20 {
        return Err(bad(format!("{n_runs} epoch runs is impossible")));
    }
    let mut epochs = Vec::with_capacity(n_runs);
    for _ in 0..n_runs {
        epochs.push((LogIndex(r.u64()?), Epoch(r.u64()?)));
    }
    let count = r.u64()?;
    let mut map = OrdMap::new();
    for i in 0..count {
        let key = r.field().map_err(|e| bad(format!("entry {i}: {e}")))?;
        let value = r.field().map_err(|e| bad(format!("entry {i}: {e}")))?;
        let (key, value) = (Bytes::copy_from_slice(&key), Bytes::copy_from_slice(&value));
        let ve = r.u64()?;
        let vi = r.u64()?;
        map.insert(
            key,
            KvEntry {
                value,
                version: Position::new(ve, vi),
            },
        );
    }
    let computed = r.finish_crc();
    if r.u32()? != computed {
        return Err(bad("checksum mismatch".into()));
    }
    let rest = r.remaining()?;
    if rest > 0 {
        return Err(bad(format!("{rest} bytes after the checksum")));
    }
    Ok((
        KvState::from_parts(map, Position::new(epoch, index)),
        epochs,
    ))
}

/// The decoder's view of the chunks: takes bytes in order, as slices of the
/// chunk holding them where it can, and checksums them a chunk at a time.
struct Source<C> {
    chunks: C,
    chunk: Bytes,
    /// Bytes of `chunk` taken.
    pos: usize,
    /// Bytes of `chunk` before this are in `crc`.
    crc_from: usize,
    /// The running checksum; `None` once finished.
    crc: Option<u32>,
}

impl<C: Chunks> Source<C> {
    /// Moves to the next chunk; false at the end.
    fn advance(&mut self) -> io::Result<bool> {
        self.finish_crc_of_chunk();
        match self.chunks.next_chunk()? {
            Some(c) => {
                self.chunk = c;
                self.pos = 0;
                self.crc_from = 0;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn finish_crc_of_chunk(&mut self) {
        if let Some(crc) = &mut self.crc {
            *crc = crc32c::crc32c_append(*crc, &self.chunk[self.crc_from..self.pos]);
        }
        self.crc_from = self.pos;
    }

    /// The checksum of everything taken so far; nothing after counts.
    fn finish_crc(&mut self) -> u32 {
        self.finish_crc_of_chunk();
        self.crc.take().unwrap_or_default()
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> io::Result<Bytes> {
        if self.chunk.len() - self.pos >= n {
            let b = self.chunk.slice(self.pos..self.pos + n);
            self.pos += n;
            return Ok(b);
        }
        // Spans chunks: the one copy.
        let mut out = bytes::BytesMut::with_capacity(n);
        while out.len() < n {
            if self.pos == self.chunk.len() && !self.advance()? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let k = (n - out.len()).min(self.chunk.len() - self.pos);
            out.extend_from_slice(&self.chunk[self.pos..self.pos + k]);
            self.pos += k;
        }
        Ok(out.freeze())
    }

    /// The next `N` bytes, copied out (no slice of the chunk to count).
    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut out = [0u8; N];
        match self.chunk.get(self.pos..self.pos + N) {
            Some(b) => {
                out.copy_from_slice(b);
                self.pos += N;
            }
            None => out.copy_from_slice(&self.take(N)?),
        }
        Ok(out)
    }

    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length-prefixed field.
    fn field(&mut self) -> io::Result<Bytes> {
        let len = self.u32()? as usize;
        if len > proto_common::record::MAX_PAYLOAD_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("field length {len} is impossible"),
            ));
        }
        self.take(len)
    }

    /// Bytes left after what was taken.
    fn remaining(&mut self) -> io::Result<u64> {
        let mut n = (self.chunk.len() - self.pos) as u64;
        self.pos = self.chunk.len();
        while self.advance()? {
            n += self.chunk.len() as u64;
            self.pos = self.chunk.len();
        }
        Ok(n)
    }
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
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            encoded_len(&s, runs.len()),
            "the announced size is the encoded size"
        );
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

    /// Chunks of a fixed size cut from one buffer.
    struct Cut(Bytes, usize);

    impl Chunks for Cut {
        fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
            if self.0.is_empty() {
                return Ok(None);
            }
            let n = self.1.min(self.0.len());
            Ok(Some(self.0.split_to(n)))
        }
    }

    #[test]
    fn decoding_does_not_depend_on_where_chunks_end() {
        let mut s = KvState::default();
        for i in 0..40u64 {
            let cmd = Command::Put {
                key: Bytes::from(format!("key-{i}")),
                value: Bytes::from(vec![b'a' + (i % 26) as u8; (i * 37 % 300) as usize]),
            };
            s.apply(Position::new(2, i + 7), &cmd);
        }
        let runs = vec![(LogIndex(1), Epoch(1)), (LogIndex(5), Epoch(2))];
        let mut encoded = Vec::new();
        encode(&mut encoded, s.applied(), &runs, s.map()).unwrap();
        assert_eq!(encoded.len() as u64, encoded_len(&s, runs.len()));
        let encoded = Bytes::from(encoded);
        for size in [1, 2, 3, 5, 8, 13, 100, 4096, encoded.len()] {
            let (back, back_runs) = decode(Cut(encoded.clone(), size), "test").unwrap();
            assert_eq!(back.map(), s.map(), "chunks of {size}");
            assert_eq!(back.applied(), s.applied());
            assert_eq!(back_runs, runs);
        }
        let short = encoded.slice(..encoded.len() - 1);
        let err = decode(Cut(short, 7), "test").unwrap_err().to_string();
        assert!(
            err.contains("snapshot test is invalid: it ends early"),
            "{err}"
        );
        let mut long = encoded.to_vec();
        long.push(0);
        let err = decode(Cut(Bytes::from(long), 7), "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 bytes after the checksum"), "{err}");
        let mut flipped = encoded.to_vec();
        let last_value_byte = encoded.len() - 4 - 16 - 1;
        flipped[last_value_byte] ^= 1;
        let err = decode(Cut(Bytes::from(flipped), 9), "test")
            .unwrap_err()
            .to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
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
