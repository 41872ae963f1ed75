//! The log's table of segments, shared between the single writer and any
//! number of readers (replication senders catching a standby up, recovery
//! replay, the divergence check).
//!
//! Readers hold the lock only long enough to find a byte range and clone
//! the segment's `Arc<File>`; the `pread` happens outside it. A segment
//! deleted by compaction stays readable through that `Arc` until the read ends.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use proto_common::{Epoch, LogIndex, Position};

use super::segment::SegmentMeta;

/// Segments in log order plus what is needed to answer "which epoch wrote
/// index i" without touching the disk.
#[derive(Debug, Default)]
pub struct SegmentTable {
    pub segments: Vec<SegmentMeta>,
    /// `(first index, epoch)` of each run of entries sharing an epoch.
    pub epochs: Vec<(LogIndex, Epoch)>,
    /// Position just before the first readable entry: the snapshot's position
    /// (or zero). Entries at or below it are compacted, served by snapshot.
    pub base: Position,
    /// Position of the last entry written (not necessarily durable yet).
    pub last: Position,
}

impl SegmentTable {
    /// `(epoch, index)` of the entry at `index`, or `None` when it is
    /// compacted away (below `base`) or not written yet.
    pub fn position_of(&self, index: LogIndex) -> Option<Position> {
        if index == self.base.index {
            return Some(self.base);
        }
        if index < self.base.index || index > self.last.index {
            return None;
        }
        let run = self.epochs.partition_point(|(first, _)| *first <= index);
        let epoch = self.epochs.get(run.checked_sub(1)?)?.1;
        Some(Position { epoch, index })
    }

    /// Epoch of the entry at `index` from the epoch history, also for
    /// entries before `base`.
    pub fn epoch_at(&self, index: LogIndex) -> Option<Epoch> {
        if index > self.last.index {
            return None;
        }
        let run = self.epochs.partition_point(|(first, _)| *first <= index);
        Some(self.epochs.get(run.checked_sub(1)?)?.1)
    }

    /// Records that entries up to `pos` exist, extending the epoch runs.
    pub fn note_appended(&mut self, pos: Position) {
        if self.epochs.last().map(|(_, e)| *e) != Some(pos.epoch) {
            self.epochs.push((pos.index, pos.epoch));
        }
        self.last = pos;
    }

    /// Drops epoch runs that start after `index` (after a truncation).
    pub fn forget_after(&mut self, index: LogIndex) {
        while self.epochs.last().is_some_and(|(first, _)| *first > index) {
            self.epochs.pop();
        }
        self.last = self.position_of(index).unwrap_or(self.base);
    }

    fn segment_holding(&self, index: LogIndex) -> Option<&SegmentMeta> {
        let i = self.segments.partition_point(|s| s.base <= index);
        let seg = self.segments.get(i.checked_sub(1)?)?;
        (!seg.is_empty() && index <= seg.last_index()).then_some(seg)
    }
}

/// What a read of the log returned.
#[derive(Debug)]
pub enum ReadOutcome {
    /// Whole records, contiguous, starting at the requested index.
    Entries {
        bytes: Bytes,
        first: Position,
        last: Position,
        count: u64,
    },
    /// The requested index is compacted: send a snapshot first.
    Compacted,
    /// Nothing written at that index yet.
    UpToDate,
}

/// A cheap, cloneable read handle on the log.
#[derive(Clone, Debug)]
pub struct LogReader {
    table: Arc<RwLock<SegmentTable>>,
}

impl LogReader {
    pub fn new(table: Arc<RwLock<SegmentTable>>) -> LogReader {
        LogReader { table }
    }

    pub fn last(&self) -> Position {
        self.table.read().last
    }

    pub fn base(&self) -> Position {
        self.table.read().base
    }

    pub fn position_of(&self, index: LogIndex) -> Option<Position> {
        self.table.read().position_of(index)
    }

    /// Epoch of the entry at `index`, from the epoch history (also for
    /// compacted entries), or `None` past the end or before any history.
    pub fn epoch_at(&self, index: LogIndex) -> Option<Epoch> {
        let t = self.table.read();
        if index == t.base.index {
            return Some(t.base.epoch);
        }
        t.epoch_at(index)
    }

    /// The log's outline: base, last, and every epoch run (oldest first).
    pub fn shape(&self) -> (Position, Position, Vec<(LogIndex, Epoch)>) {
        let t = self.table.read();
        (t.base, t.last, t.epochs.clone())
    }

    /// Epoch runs that start at or before `index`.
    pub fn epochs_upto(&self, index: LogIndex) -> Vec<(LogIndex, Epoch)> {
        let t = self.table.read();
        t.epochs
            .iter()
            .copied()
            .filter(|(f, _)| *f <= index)
            .collect()
    }

    /// Reads whole records starting at `from`, about `max_bytes` of them (at
    /// least one), never crossing a segment boundary.
    pub fn read(&self, from: LogIndex, max_bytes: usize) -> io::Result<ReadOutcome> {
        let (file, start, end, first, last, count) = {
            let t = self.table.read();
            if from <= t.base.index {
                return Ok(ReadOutcome::Compacted);
            }
            if from > t.last.index {
                return Ok(ReadOutcome::UpToDate);
            }
            let Some(seg) = t.segment_holding(from) else {
                return Err(io::Error::other(format!(
                    "log index {from} is within the log but in no segment"
                )));
            };
            let first_off = seg.offsets[(from.0 - seg.base.0) as usize] as u64;
            // Last record whose end stays within the budget (at least one).
            let limit = first_off + max_bytes as u64;
            let from_slot = (from.0 - seg.base.0) as usize;
            let mut to_slot = seg.offsets.len() - 1;
            if seg.end > limit {
                // offsets[j] is where record j starts = where j-1 ends.
                let fit = seg.offsets[from_slot + 1..].partition_point(|&o| o as u64 <= limit);
                to_slot = (from_slot + fit).saturating_sub(1).max(from_slot);
            }
            let to = LogIndex(seg.base.0 + to_slot as u64);
            let (start, end) = seg.byte_range(from, to);
            let first = t.position_of(from).expect("index within bounds");
            let last = t.position_of(to).expect("index within bounds");
            (seg.file.clone(), start, end, first, last, to.0 - from.0 + 1)
        };
        let mut buf = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut buf, start)?;
        Ok(ReadOutcome::Entries {
            bytes: Bytes::from(buf),
            first,
            last,
            count,
        })
    }
}
