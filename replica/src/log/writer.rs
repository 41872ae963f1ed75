//! The log's single writer: append, sync, roll to a new segment, truncate a
//! divergent tail, compact behind a snapshot.
//!
//! Every method is called from one thread (the group-commit thread); readers
//! see changes through the shared [`SegmentTable`]. After any I/O error the
//! log refuses all further writes: a failed `fsync` may have dropped dirty
//! pages, so retrying it could report durability that does not exist.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use proto_common::{Epoch, LogIndex, Position};

use super::prealloc::Preallocator;
use super::segment::{self, zero_range, SegmentMeta, SEGMENT_HEADER_LEN};
use super::table::{LogReader, SegmentTable};

/// How the log is written.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Preallocated size of each segment file.
    pub segment_bytes: u64,
    /// `fdatasync` before acknowledging (`fsync = always`). Off only for
    /// experiments: a crash can then lose acknowledged writes.
    pub fsync: bool,
}

/// The writer's handle on the log.
pub struct Log {
    pub(super) dir: PathBuf,
    pub(super) opts: LogOptions,
    pub(super) table: Arc<RwLock<SegmentTable>>,
    /// The segment being appended to (also the last entry of the table).
    pub(super) tail: Arc<File>,
    /// Where the next record goes in `tail`.
    pub(super) tail_end: u64,
    /// Size the tail was preallocated to; appending past it rolls.
    pub(super) tail_capacity: u64,
    /// Next zero-filled segment, prepared in the background.
    pub(super) prealloc: Preallocator,
    /// Written since the last sync.
    pub(super) dirty: bool,
    /// Set after an I/O error; every later call fails with it.
    pub(super) failed: Option<String>,
}

impl Log {
    pub fn reader(&self) -> LogReader {
        LogReader::new(self.table.clone())
    }

    pub fn last(&self) -> Position {
        self.table.read().last
    }

    pub fn base(&self) -> Position {
        self.table.read().base
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn check_failed(&self) -> io::Result<()> {
        match &self.failed {
            Some(why) => Err(io::Error::other(format!(
                "the write log failed earlier and takes no more writes: {why}"
            ))),
            None => Ok(()),
        }
    }

    fn fail<T>(&mut self, what: &str, err: io::Error) -> io::Result<T> {
        let why = format!("{what} in {}: {err}", self.dir.display());
        tracing::error!(error = %why, "write log failed; refusing further writes");
        self.failed = Some(why);
        Err(err)
    }

    /// Appends encoded records. `entries` lists each record's position and
    /// its offset within `batch`, in order, continuing the log.
    pub fn append(&mut self, batch: &[u8], entries: &[(Position, u32)]) -> io::Result<()> {
        self.check_failed()?;
        let Some(&(first, _)) = entries.first() else {
            return Ok(());
        };
        let tail_has_records = !self.table.read().segments.last().unwrap().is_empty();
        if tail_has_records && self.tail_end + batch.len() as u64 > self.tail_capacity {
            if let Err(e) = self.roll(first.index) {
                return self.fail("rolling to a new segment", e);
            }
        }
        if self.tail_end + batch.len() as u64 > u32::MAX as u64 {
            return self.fail(
                "appending",
                io::Error::other("segment would exceed 4 GiB; lower the batch size"),
            );
        }
        if let Err(e) = self.tail.write_all_at(batch, self.tail_end) {
            return self.fail("writing", e);
        }
        let mut t = self.table.write();
        let seg = t.segments.last_mut().unwrap();
        for &(_, off) in entries {
            seg.offsets.push((self.tail_end + off as u64) as u32);
        }
        seg.end = self.tail_end + batch.len() as u64;
        for &(pos, _) in entries {
            t.note_appended(pos);
        }
        self.tail_end += batch.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Makes everything appended so far durable (a no-op with `fsync = never`).
    pub fn sync(&mut self) -> io::Result<()> {
        self.check_failed()?;
        if self.dirty && self.opts.fsync {
            let data_dir = self.dir.parent().unwrap_or(&self.dir);
            if let Some(e) = crate::failpoint::fsync_error(data_dir) {
                return self.fail("fdatasync", e);
            }
            if let Err(e) = self.tail.sync_data() {
                return self.fail("fdatasync", e);
            }
        }
        self.dirty = false;
        Ok(())
    }

    /// Seals the tail and continues in a fresh preallocated segment whose
    /// first record will have index `next`.
    fn roll(&mut self, next: LogIndex) -> io::Result<()> {
        if self.dirty && self.opts.fsync {
            // The new segment's records must never be durable while the old
            // one's last records are not.
            self.tail.sync_data()?;
        }
        let (file, tmp) = self.prealloc.take()?;
        file.write_all_at(&segment::header(next), 0)?;
        let path = self.dir.join(segment::file_name(next));
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        let file = Arc::new(file);
        self.tail = file.clone();
        self.tail_end = SEGMENT_HEADER_LEN;
        self.tail_capacity = self.opts.segment_bytes;
        self.table.write().segments.push(SegmentMeta {
            base: next,
            path,
            file,
            offsets: Vec::new(),
            end: SEGMENT_HEADER_LEN,
        });
        tracing::debug!(base = %next, "rolled to a new log segment");
        Ok(())
    }

    /// Removes every entry after `index` and returns their raw records, in
    /// order, so the caller can quarantine them. The cut bytes are zeroed on
    /// disk (a stale record must never reappear after a restart).
    pub fn truncate_after(&mut self, index: LogIndex) -> io::Result<Vec<u8>> {
        self.check_failed()?;
        match self.truncate_inner(index) {
            Ok(cut) => Ok(cut),
            Err(e) => self.fail("truncating", e),
        }
    }

    fn truncate_inner(&mut self, index: LogIndex) -> io::Result<Vec<u8>> {
        let mut t = self.table.write();
        if index >= t.last.index {
            return Ok(Vec::new());
        }
        if index < t.base.index {
            return Err(io::Error::other(format!(
                "cannot truncate after index {index}: entries up to {} are compacted into a snapshot",
                t.base.index
            )));
        }
        let cut_from = index.next();
        // The segment holding the first cut entry becomes the tail.
        let keep = t.segments.partition_point(|s| s.base <= cut_from).max(1) - 1;
        let mut cut = Vec::new();
        for seg in &t.segments[keep..] {
            if seg.is_empty() {
                continue;
            }
            let from = cut_from.max(seg.base);
            let (start, end) = seg.byte_range(from, seg.last_index());
            let mut buf = vec![0u8; (end - start) as usize];
            seg.file.read_exact_at(&mut buf, start)?;
            cut.extend_from_slice(&buf);
        }
        for seg in t.segments.drain(keep + 1..) {
            std::fs::remove_file(&seg.path)?;
        }
        let seg = &mut t.segments[keep];
        let slot = (cut_from.0.saturating_sub(seg.base.0)) as usize;
        let new_end = seg.offsets.get(slot).map(|&o| o as u64).unwrap_or(seg.end);
        let capacity = seg.file.metadata()?.len().max(self.opts.segment_bytes);
        zero_range(&seg.file, new_end, capacity)?;
        seg.file.sync_data()?;
        seg.offsets.truncate(slot);
        seg.end = new_end;
        self.tail = seg.file.clone();
        self.tail_end = new_end;
        self.tail_capacity = capacity;
        t.forget_after(index);
        drop(t);
        sync_dir(&self.dir)?;
        self.dirty = false;
        Ok(cut)
    }

    /// Deletes sealed segments whose entries are all covered by a durable
    /// snapshot at `snapshot` and below `keep_from` (entries a standby still
    /// needs stay). Returns how many segments went.
    pub fn compact(
        &mut self,
        snapshot: Position,
        keep_from: Option<LogIndex>,
    ) -> io::Result<usize> {
        self.check_failed()?;
        let upto = match keep_from {
            Some(k) => snapshot.index.min(k.prev()),
            None => snapshot.index,
        };
        let mut t = self.table.write();
        let mut removed = 0;
        while t.segments.len() > 1 {
            let first = &t.segments[0];
            if first.is_empty() || first.last_index() > upto {
                break;
            }
            std::fs::remove_file(&first.path)?;
            t.segments.remove(0);
            removed += 1;
        }
        if removed > 0 {
            // Readable entries now start at the first kept segment.
            let before_first = t.segments[0].base.prev();
            if before_first > t.base.index {
                let epoch = t.epoch_at(before_first).unwrap_or(snapshot.epoch);
                t.base = Position {
                    epoch,
                    index: before_first,
                };
            }
        }
        // Epoch runs are kept whole: they are tiny and divergence checks
        // need them even for compacted history.
        drop(t);
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Drops every entry and restarts the log empty right after `base` (a
    /// snapshot at `base`, with epoch history `history`, was just installed
    /// from the active).
    pub fn reset(&mut self, base: Position, history: Vec<(LogIndex, Epoch)>) -> io::Result<()> {
        self.check_failed()?;
        let old: Vec<PathBuf> = self
            .table
            .read()
            .segments
            .iter()
            .map(|s| s.path.clone())
            .collect();
        {
            let mut t = self.table.write();
            t.segments.clear();
            t.epochs = history;
            t.base = base;
            t.last = base;
        }
        self.dirty = false;
        for path in old {
            std::fs::remove_file(path)?;
        }
        if let Err(e) = self.roll(base.index.next()) {
            return self.fail("starting a fresh segment", e);
        }
        Ok(())
    }
}

/// Makes a rename or delete in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
