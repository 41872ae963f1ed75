//! Opening the log after a restart or a crash.
//!
//! Every segment is read and every record's checksum and continuity checked.
//! Damage at the very end of the log is a write the crash interrupted (it
//! was never fsynced, so never acknowledged): it is cut and logged. Damage
//! followed by any valid record, or in a segment that is not the last, is
//! corruption of data that *was* durable: the replica refuses to start and
//! names the file and byte offset, because continuing would silently drop
//! acknowledged writes.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use proto_common::{Epoch, LogIndex, Position};

use super::prealloc::Preallocator;
use super::segment::{self, zero_range, Damage, SegmentMeta, SEGMENT_HEADER_LEN};
use super::table::SegmentTable;
use super::writer::{sync_dir, Log, LogOptions};

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "log segment {path} is corrupt at byte offset {offset}: {why}. Valid records follow \
         it, so this is damage to durable data, not a torn write; refusing to start. Check the \
         disk; then restore this replica from a backup, or (in a cluster) move its data \
         directory away and let it resync from the active"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    #[error("log in {dir} is inconsistent: {why}; refusing to start")]
    Inconsistent { dir: PathBuf, why: String },
}

/// What recovery had to repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    pub offset: u64,
    pub why: String,
}

impl Log {
    /// Opens (or creates) the log in `dir`. `snapshot` is the position of the
    /// latest durable snapshot (zero if none): entries up to it may be gone.
    /// `history` is the epoch history the snapshot recorded.
    pub fn open(
        dir: &Path,
        opts: LogOptions,
        snapshot: Position,
        history: &[(LogIndex, Epoch)],
    ) -> Result<(Log, Option<TornTail>), OpenError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OpenError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let prealloc = Preallocator::start(dir, opts.segment_bytes).map_err(io_err(dir))?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            if let Some(base) = segment::parse_file_name(&entry.file_name().to_string_lossy()) {
                bases.push(base);
            }
        }
        bases.sort();
        let inconsistent = |why: String| OpenError::Inconsistent {
            dir: dir.to_path_buf(),
            why,
        };
        if let Some(&first) = bases.first() {
            if first.0 > snapshot.index.0 + 1 {
                return Err(inconsistent(format!(
                    "the log starts at index {first} but the snapshot ends at {}; entries in between are missing",
                    snapshot.index
                )));
            }
        }

        let mut table = SegmentTable {
            base: snapshot,
            last: snapshot,
            ..Default::default()
        };
        let mut torn = None;
        let mut prev = Position {
            epoch: Epoch::ZERO,
            index: bases.first().map(|b| b.prev()).unwrap_or(snapshot.index),
        };
        for (i, &base) in bases.iter().enumerate() {
            let path = dir.join(segment::file_name(base));
            if base != prev.index.next() {
                return Err(inconsistent(format!(
                    "segment {} starts at index {base} but the previous record is {}",
                    path.display(),
                    prev.index
                )));
            }
            let scan = segment::scan(&path, base, prev).map_err(io_err(&path))?;
            let is_last = i + 1 == bases.len();
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            if let Some(damage) = &scan.damage {
                let later_data = !is_last && later_segments_hold_records(dir, &bases[i + 1..])?;
                if scan.valid_after_damage.is_some() || later_data {
                    return Err(OpenError::Corrupt {
                        path,
                        offset: damage.offset(),
                        why: match damage {
                            Damage::Torn { .. } => "the record there is cut short".into(),
                            Damage::Corrupt { why, .. } => why.clone(),
                        },
                    });
                }
                let why = match damage {
                    Damage::Torn { .. } => "record cut short".to_string(),
                    Damage::Corrupt { why, .. } => why.clone(),
                };
                tracing::warn!(
                    file = %path.display(),
                    offset = damage.offset(),
                    dropped_bytes = scan.data_end.saturating_sub(damage.offset()),
                    reason = %why,
                    "write log ends in a torn record (a write the crash interrupted, never \
                     acknowledged); truncating it"
                );
                torn = Some(TornTail {
                    path: path.clone(),
                    offset: damage.offset(),
                    why,
                });
                // Later segments hold nothing (checked above): drop them.
                for &b in &bases[i + 1..] {
                    let p = dir.join(segment::file_name(b));
                    std::fs::remove_file(&p).map_err(io_err(&p))?;
                }
            }
            let stop_here = scan.damage.is_some();
            let mut end = scan.end;
            if scan.dirty_after_end && scan.damage.is_none() {
                tracing::warn!(
                    file = %path.display(),
                    offset = scan.end,
                    "bytes after the end of the log (an interrupted write); zeroing them"
                );
            }
            if !scan.has_header {
                file.write_all_at_header(base).map_err(io_err(&path))?;
                end = SEGMENT_HEADER_LEN;
            }
            let must_zero = stop_here
                || !scan.has_header
                || scan.dirty_after_end
                || scan.file_len < opts.segment_bytes;
            if (is_last || stop_here) && must_zero {
                let cap = scan.file_len.max(opts.segment_bytes);
                zero_range(&file, end, cap).map_err(io_err(&path))?;
                file.sync_all().map_err(io_err(&path))?;
            }
            let mut meta = SegmentMeta {
                base,
                path: path.clone(),
                file: Arc::new(file),
                offsets: Vec::with_capacity(scan.records.len()),
                end,
            };
            for &(pos, off) in &scan.records {
                meta.offsets.push(off);
                table.note_appended(pos);
                prev = pos;
            }
            table.segments.push(meta);
            if stop_here {
                break;
            }
        }
        if table.last.index < snapshot.index {
            // The log ends before the snapshot: everything it holds is
            // covered. Start over right after the snapshot.
            for seg in table.segments.drain(..) {
                std::fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
            }
            table.epochs.clear();
            table.last = snapshot;
        } else if snapshot.index > LogIndex::ZERO {
            match table.position_of(snapshot.index) {
                Some(p) if p == snapshot => {}
                found => {
                    return Err(inconsistent(format!(
                        "the snapshot is at {snapshot} but the log has {} at that index",
                        found
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "nothing".into())
                    )))
                }
            }
        }
        table.base = snapshot;
        // Epoch runs: the snapshot's history up to it, then what the
        // segments hold after it.
        let mut epochs: Vec<(LogIndex, Epoch)> = history
            .iter()
            .copied()
            .filter(|(first, _)| *first <= snapshot.index)
            .collect();
        for &(first, epoch) in &table.epochs {
            let continues = epochs.last().map(|(_, e)| *e) == Some(epoch);
            if (first > snapshot.index && !continues) || epochs.is_empty() {
                epochs.push((first, epoch));
            }
        }
        table.epochs = epochs;
        if table.segments.is_empty() {
            let log = Log::new_empty(dir, opts, prealloc, table).map_err(io_err(dir))?;
            return Ok((log, torn));
        }
        let tail_meta = table.segments.last().unwrap();
        let tail = tail_meta.file.clone();
        let tail_end = tail_meta.end;
        let tail_capacity = tail
            .metadata()
            .map_err(io_err(&tail_meta.path))?
            .len()
            .max(opts.segment_bytes);
        sync_dir(dir).map_err(io_err(dir))?;
        let log = Log {
            dir: dir.to_path_buf(),
            opts,
            table: Arc::new(RwLock::new(table)),
            tail,
            tail_end,
            tail_capacity,
            prealloc,
            dirty: false,
            failed: None,
        };
        Ok((log, torn))
    }

    /// A log with no segment yet: takes a preallocated file as the first one.
    fn new_empty(
        dir: &Path,
        opts: LogOptions,
        prealloc: Preallocator,
        table: SegmentTable,
    ) -> io::Result<Log> {
        let base = table.last.index.next();
        let (file, tmp) = prealloc.take()?;
        file.write_all_at_header(base)?;
        let path = dir.join(segment::file_name(base));
        std::fs::rename(&tmp, &path)?;
        file.sync_all()?;
        sync_dir(dir)?;
        let file = Arc::new(file);
        let mut table = table;
        table.segments.push(SegmentMeta {
            base,
            path,
            file: file.clone(),
            offsets: Vec::new(),
            end: SEGMENT_HEADER_LEN,
        });
        Ok(Log {
            dir: dir.to_path_buf(),
            tail_capacity: opts.segment_bytes,
            opts,
            table: Arc::new(RwLock::new(table)),
            tail: file,
            tail_end: SEGMENT_HEADER_LEN,
            prealloc,
            dirty: false,
            failed: None,
        })
    }
}

fn later_segments_hold_records(dir: &Path, bases: &[LogIndex]) -> Result<bool, OpenError> {
    for &base in bases {
        let path = dir.join(segment::file_name(base));
        let data = std::fs::read(&path).map_err(|source| OpenError::Io {
            path: path.clone(),
            source,
        })?;
        if data.len() > SEGMENT_HEADER_LEN as usize
            && data[SEGMENT_HEADER_LEN as usize..].iter().any(|&b| b != 0)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

trait WriteHeader {
    fn write_all_at_header(&self, base: LogIndex) -> io::Result<()>;
}

impl WriteHeader for std::fs::File {
    fn write_all_at_header(&self, base: LogIndex) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.write_all_at(&segment::header(base), 0)
    }
}
