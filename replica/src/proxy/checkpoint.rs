//! Checkpoints: what lets proxy mode delete old log segments (DESIGN.md,
//! "Checkpoints and compaction"). A checkpoint is an RDB of an upstream at
//! a committed stream position `(replid, offset)`, together with the log
//! entry it covers up to and what the log's history had said by then (the
//! replication ids begun, the log's epoch runs), so that the entries
//! before it can go. It is one file, written whole or not at all
//! (temporary name, fsync, rename, fsync of the directory):
//!
//! ```text
//! RDB bytes (Redis's own, as the upstream sent them) |
//! trailer: epoch u64 | index u64 | end u64 | rdb offset u64 | rdb replid 40 |
//!          n_lineages u32 | n × (index u64 | start u64 | replid 40) |
//!          n_runs u32 | n × (first index u64 | epoch u64) |
//! trailer length u32 | crc32c of the trailer u32 | "USTDYCP1"
//! ```
//!
//! The RDB comes first so that a full resync of this replica's upstream
//! serves the file's first bytes as they are; the same file is what the
//! active streams to a standby whose log is behind the active's oldest
//! entry.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, BytesMut};
use proto_common::{Epoch, LogIndex, Position};

use super::entry::ReplId;
use super::history::{Lineage, Seed};
use super::rdb::Snapshot;
use crate::log::writer::sync_dir;
use crate::snapshot::EpochRuns;

const MAGIC: [u8; 8] = *b"USTDYCP1";
/// A trailer larger than this is not one of ours.
const MAX_TRAILER: u32 = 16 << 20;

/// A checkpoint as read from its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last log entry it covers.
    pub position: Position,
    /// The history up to that entry.
    pub seed: Seed,
    /// The log's epoch runs up to that entry.
    pub epochs: EpochRuns,
    /// The RDB: the file's first `rdb.len` bytes.
    pub rdb: Snapshot,
    /// The whole file's size.
    pub file_len: u64,
}

pub fn file_name(pos: Position) -> String {
    format!("checkpoint-{:020}-{:020}.rdb", pos.epoch.0, pos.index.0)
}

fn parse_file_name(name: &str) -> Option<Position> {
    let rest = name.strip_prefix("checkpoint-")?.strip_suffix(".rdb")?;
    let (e, i) = rest.split_once('-')?;
    Some(Position::new(e.parse().ok()?, i.parse().ok()?))
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("checkpoint {} is invalid: {why}", path.display()),
    )
}

/// Encodes the trailer that follows an RDB of `rdb_len` bytes.
pub fn trailer(
    position: Position,
    seed: &Seed,
    epochs: &[(LogIndex, Epoch)],
    replid: &ReplId,
    offset: u64,
) -> Vec<u8> {
    let mut t = BytesMut::new();
    t.put_u64_le(position.epoch.0);
    t.put_u64_le(position.index.0);
    t.put_u64_le(seed.end);
    t.put_u64_le(offset);
    t.put_slice(replid.as_str().as_bytes());
    t.put_u32_le(seed.lineages.len() as u32);
    for l in &seed.lineages {
        t.put_u64_le(l.index.0);
        t.put_u64_le(l.start);
        t.put_slice(l.replid.as_str().as_bytes());
    }
    t.put_u32_le(epochs.len() as u32);
    for (first, epoch) in epochs {
        t.put_u64_le(first.0);
        t.put_u64_le(epoch.0);
    }
    let len = t.len() as u32;
    let crc = crc32c::crc32c(&t);
    t.put_u32_le(len);
    t.put_u32_le(crc);
    t.put_slice(&MAGIC);
    t.to_vec()
}

/// Reads and checks the checkpoint at `path`.
pub fn read(path: &Path) -> io::Result<Checkpoint> {
    let mut f = std::fs::File::open(path)?;
    let file_len = f.metadata()?.len();
    if file_len < 16 {
        return Err(invalid(path, "shorter than its trailer"));
    }
    let mut tail = [0u8; 16];
    f.seek(SeekFrom::Start(file_len - 16))?;
    f.read_exact(&mut tail)?;
    if tail[8..] != MAGIC {
        return Err(invalid(path, "no checkpoint trailer at its end"));
    }
    let len = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(tail[4..8].try_into().expect("4 bytes"));
    if len > MAX_TRAILER || u64::from(len) + 16 > file_len {
        return Err(invalid(path, format!("a trailer of {len} bytes")));
    }
    let rdb_len = file_len - 16 - u64::from(len);
    let mut t = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(rdb_len))?;
    f.read_exact(&mut t)?;
    if crc32c::crc32c(&t) != crc {
        return Err(invalid(path, "trailer checksum mismatch"));
    }
    decode_trailer(&t)
        .ok_or_else(|| invalid(path, "a trailer that ends early"))
        .map(|(position, seed, epochs, replid, offset)| Checkpoint {
            position,
            seed,
            epochs,
            rdb: Snapshot {
                replid,
                offset,
                path: path.to_path_buf(),
                len: rdb_len,
            },
            file_len,
        })
}

type Trailer = (Position, Seed, EpochRuns, ReplId, u64);

fn decode_trailer(mut t: &[u8]) -> Option<Trailer> {
    fn need(t: &[u8], n: usize) -> Option<()> {
        (t.remaining() >= n).then_some(())
    }
    fn replid(t: &mut &[u8]) -> Option<ReplId> {
        need(t, 40)?;
        let id = ReplId::parse(std::str::from_utf8(&t[..40]).ok()?)?;
        t.advance(40);
        Some(id)
    }
    need(t, 32)?;
    let position = Position::new(t.get_u64_le(), t.get_u64_le());
    let end = t.get_u64_le();
    let offset = t.get_u64_le();
    let rdb_id = replid(&mut t)?;
    need(t, 4)?;
    let n = t.get_u32_le() as usize;
    let mut lineages = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        need(t, 16)?;
        let index = LogIndex(t.get_u64_le());
        let start = t.get_u64_le();
        lineages.push(Lineage {
            replid: replid(&mut t)?,
            start,
            index,
        });
    }
    need(t, 4)?;
    let n = t.get_u32_le() as usize;
    let mut epochs = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        need(t, 16)?;
        epochs.push((LogIndex(t.get_u64_le()), Epoch(t.get_u64_le())));
    }
    let seed = Seed {
        index: position.index,
        end,
        lineages,
    };
    t.is_empty()
        .then_some((position, seed, epochs, rdb_id, offset))
}

/// Checkpoint files in `dir`, oldest first; leftover temporary files are
/// removed.
pub fn list(dir: &Path) -> io::Result<Vec<(Position, PathBuf)>> {
    crate::snapshot::list_named(dir, parse_file_name)
}

/// The newest checkpoint in `dir`, if any.
pub fn newest(dir: &Path) -> io::Result<Option<Checkpoint>> {
    match list(dir)?.last() {
        Some((_, path)) => read(path).map(Some),
        None => Ok(None),
    }
}

/// Makes the RDB in `tmp` a checkpoint: appends the trailer, fsyncs and
/// renames it into place, fsyncs the directory. Older checkpoints stay
/// until [`remove_older`] (the log still relies on them until its
/// segments are deleted). Blocking.
pub fn publish(dir: &Path, tmp: &Path, position: Position, trailer: &[u8]) -> io::Result<PathBuf> {
    let mut f = std::fs::OpenOptions::new().append(true).open(tmp)?;
    f.write_all(trailer)?;
    f.sync_all()?;
    drop(f);
    let path = dir.join(file_name(position));
    std::fs::rename(tmp, &path)?;
    sync_dir(dir)?;
    Ok(path)
}

/// Deletes the checkpoints older than `position`. Blocking.
pub fn remove_older(dir: &Path, position: Position) -> io::Result<()> {
    for (p, path) in list(dir)? {
        if p < position {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> ReplId {
        ReplId::parse(&c.to_string().repeat(40)).unwrap()
    }

    #[test]
    fn a_checkpoint_round_trips_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let seed = Seed {
            index: LogIndex(41),
            end: 9_000,
            lineages: vec![
                Lineage {
                    replid: id('a'),
                    start: 100,
                    index: LogIndex(2),
                },
                Lineage {
                    replid: id('b'),
                    start: 5_000,
                    index: LogIndex(30),
                },
            ],
        };
        let epochs = vec![(LogIndex(1), Epoch(1)), (LogIndex(30), Epoch(3))];
        let position = Position::new(3, 41);
        let tmp = dir.path().join("x.tmp");
        std::fs::write(&tmp, b"REDIS0011 the rdb").unwrap();
        let t = trailer(position, &seed, &epochs, &id('b'), 9_010);
        let path = publish(dir.path(), &tmp, position, &t).unwrap();
        let cp = newest(dir.path()).unwrap().unwrap();
        assert_eq!(cp.position, position);
        assert_eq!(cp.seed, seed);
        assert_eq!(cp.epochs, epochs);
        assert_eq!((cp.rdb.replid.clone(), cp.rdb.offset), (id('b'), 9_010));
        assert_eq!(cp.rdb.len, 17, "the RDB is the file's first bytes");
        assert_eq!(cp.rdb.path, path);

        // An older one goes only when asked.
        let older = Position::new(2, 7);
        let tmp = dir.path().join("y.tmp");
        std::fs::write(&tmp, b"old").unwrap();
        publish(dir.path(), &tmp, older, &t).unwrap();
        assert_eq!(list(dir.path()).unwrap().len(), 2);
        assert_eq!(newest(dir.path()).unwrap().unwrap().position, position);
        remove_older(dir.path(), position).unwrap();
        assert_eq!(list(dir.path()).unwrap().len(), 1);

        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 30] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(
            err.contains("checkpoint") && err.contains("checksum"),
            "{err}"
        );
        std::fs::write(&path, b"REDIS0011 no trailer at all").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("no checkpoint trailer"), "{err}");
    }
}
