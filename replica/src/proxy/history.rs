//! The committed history of the stream, as a replica's log holds it: under
//! which replication ids the stream ran, from which offsets, which log entry
//! holds which bytes, and how far it is committed.
//!
//! It answers the one question Redis's PSYNC asks (`psync2`'s rule, as in
//! `masterTryPartialResynchronization`): may a replica at `(id, offset)`
//! continue from our history? It may if `id` named our stream at `offset`
//! (an id stays valid up to the offset where the next one began) and the
//! bytes after `offset` are in our log. A replica *ahead* of what is
//! committed holds effects the cluster has not committed (a former
//! active's upstream): it may only continue once they are, or be refilled.

use proto_common::LogIndex;

use super::entry::{ReplId, StreamEntry};

/// One replication id's stretch of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lineage {
    pub replid: ReplId,
    /// The offset it begins at.
    pub start: u64,
    /// The log entry that began it.
    pub index: LogIndex,
}

/// What a checkpoint keeps of the history up to its log entry (the
/// entries before it may be deleted): the replication ids begun so far
/// and where the stream stands after that entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    /// The last log entry the checkpoint covers.
    pub index: LogIndex,
    /// The stream offset after it.
    pub end: u64,
    pub lineages: Vec<Lineage>,
}

/// Where a chunk lives in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Located {
    index: LogIndex,
    /// The offset before its first byte.
    from: u64,
}

/// What a replica at some `(id, offset)` may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Continuation {
    /// Continue: stream from `offset + 1`, which is in entry `index`;
    /// answer `+CONTINUE current`.
    From { index: LogIndex, current: ReplId },
    /// Its offset is in our history but not yet committed: ask again later.
    NotYetCommitted,
    /// It cannot continue: a full resync (RDB, then the stream).
    FullResync(String),
}

/// The committed stream history.
#[derive(Debug, Default)]
pub struct History {
    lineages: Vec<Lineage>,
    chunks: Vec<Located>,
    /// Offset after the last committed entry.
    committed: u64,
}

impl History {
    /// The history of a log whose entries up to `base` were deleted under
    /// the checkpoint `seed` (at `base` or after it: the entries between
    /// are still in the log and noted again).
    pub fn seeded(seed: &Seed, base: LogIndex) -> History {
        History {
            lineages: seed
                .lineages
                .iter()
                .filter(|l| l.index <= base)
                .cloned()
                .collect(),
            chunks: Vec::new(),
            committed: if base == seed.index { seed.end } else { 0 },
        }
    }

    /// The checkpoint of an RDB at `(replid, offset)`: the entries wholly
    /// before the bytes after `offset`, if that position is on the
    /// committed history (else the RDB holds effects the cluster never
    /// committed, or is not of this stream).
    pub fn seed_for(&self, replid: &ReplId, offset: u64) -> Option<Seed> {
        let Continuation::From { index, .. } = self.continuation(Some(replid), offset) else {
            return None;
        };
        let covered = index.prev();
        Some(Seed {
            index: covered,
            end: self.offset_after(covered),
            lineages: self
                .lineages
                .iter()
                .filter(|l| l.index <= covered)
                .cloned()
                .collect(),
        })
    }

    /// The stream offset right after log entry `index` (a committed one).
    fn offset_after(&self, index: LogIndex) -> u64 {
        let chunk = self.chunks.iter().find(|c| c.index > index).map(|c| c.from);
        let begun = self
            .lineages
            .iter()
            .find(|l| l.index > index)
            .map(|l| l.start);
        match (chunk, begun) {
            (Some(c), Some(b)) => c.min(b),
            (Some(o), None) | (None, Some(o)) => o,
            (None, None) => self.committed,
        }
    }

    /// Forgets where the entries up to `index` are (they were deleted).
    pub fn forget_upto(&mut self, index: LogIndex) {
        let keep = self.chunks.partition_point(|c| c.index <= index);
        self.chunks.drain(..keep);
    }

    /// Records a committed entry at `index`.
    pub fn note(&mut self, index: LogIndex, entry: &StreamEntry) {
        match entry {
            StreamEntry::Chunk { from, .. } => self.chunks.push(Located { index, from: *from }),
            StreamEntry::Begin { replid, offset, .. } => self.lineages.push(Lineage {
                replid: replid.clone(),
                start: *offset,
                index,
            }),
            StreamEntry::Rdb { .. } => return,
        }
        self.committed = entry.end();
    }

    /// The current replication id and the committed offset, once the
    /// stream has begun.
    pub fn current(&self) -> Option<(&ReplId, u64)> {
        self.lineages.last().map(|l| (&l.replid, self.committed))
    }

    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Forgets entries after `index` (a rewind of committed entries in
    /// async mode; see `repl::cut`). Returns whether anything was dropped.
    pub fn truncate_after(&mut self, index: LogIndex, ends_at: u64) {
        self.chunks.retain(|c| c.index <= index);
        self.lineages.retain(|l| l.start <= ends_at);
        self.committed = ends_at;
    }

    /// The first entry whose bytes come after `offset` (`None` past the
    /// committed end).
    pub fn entry_after(&self, offset: u64) -> Option<LogIndex> {
        // The last chunk that starts at or before `offset`, or the first.
        let at = self.chunks.partition_point(|c| c.from <= offset);
        let i = at.saturating_sub(1);
        self.chunks
            .get(i)
            .filter(|c| c.from <= offset || i == 0)
            .map(|c| c.index)
            .filter(|_| offset < self.committed)
    }

    /// Whether a replica at `(replid, offset)` may continue from here.
    pub fn continuation(&self, replid: Option<&ReplId>, offset: u64) -> Continuation {
        let Some((current, _)) = self.current() else {
            return Continuation::FullResync("the stream has not begun yet".into());
        };
        let Some(replid) = replid else {
            return Continuation::FullResync("the replica asked for a full resync".into());
        };
        // The stretches where `replid` named the stream: each is valid up
        // to the start of the next. Also before its own start: a replica
        // told an id by `+CONTINUE` while behind takes it at once for the
        // offset it is at (psync2), so holding an id says nothing about
        // where its stretch began; only an offset past the stretch's end
        // can hold effects the history does not have.
        let valid = self.lineages.iter().enumerate().any(|(i, l)| {
            let until = self.lineages.get(i + 1).map_or(u64::MAX, |n| n.start);
            l.replid == *replid && offset <= until
        });
        if !valid {
            return Continuation::FullResync(format!(
                "replication id {replid} at offset {offset} is not in this cluster's history"
            ));
        }
        let first = self.chunks.first().map_or(self.committed, |c| c.from);
        if offset < first {
            return Continuation::FullResync(format!(
                "offset {offset} is before the oldest stream bytes in the log ({first})"
            ));
        }
        if offset > self.committed {
            return Continuation::NotYetCommitted;
        }
        match self.entry_after(offset) {
            Some(index) => Continuation::From {
                index,
                current: current.clone(),
            },
            // Exactly at the committed end: continue with what comes next.
            None => Continuation::From {
                index: self
                    .chunks
                    .last()
                    .map_or(LogIndex::ZERO, |c| c.index)
                    .next(),
                current: current.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::entry::BeginKind;
    use bytes::Bytes;

    fn id(c: char) -> ReplId {
        ReplId::parse(&c.to_string().repeat(40)).unwrap()
    }

    fn chunk(from: u64, len: usize) -> StreamEntry {
        StreamEntry::Chunk {
            from,
            bytes: Bytes::from(vec![b'x'; len]),
        }
    }

    fn begin(c: char, offset: u64, kind: BeginKind) -> StreamEntry {
        StreamEntry::Begin {
            kind,
            replid: id(c),
            offset,
        }
    }

    /// Formation under `a` at 100; chunks to 130; promotion to `b` at 130;
    /// chunks to 150.
    fn history() -> History {
        let mut h = History::default();
        let entries = [
            begin('a', 100, BeginKind::Formation),
            chunk(100, 10),
            chunk(110, 20),
            begin('b', 130, BeginKind::Promotion),
            chunk(130, 20),
        ];
        for (i, e) in entries.iter().enumerate() {
            h.note(LogIndex(i as u64 + 2), e);
        }
        h
    }

    #[test]
    fn replicas_on_our_history_continue_from_the_right_entry() {
        let h = history();
        assert_eq!(h.current(), Some((&id('b'), 150)));
        let from = |r: char, o: u64| h.continuation(Some(&id(r)), o);
        let at = |i: u64| Continuation::From {
            index: LogIndex(i),
            current: id('b'),
        };
        assert_eq!(from('a', 100), at(3));
        assert_eq!(from('a', 115), at(4));
        // `a` is valid up to the promotion's offset, then only `b`.
        assert_eq!(from('a', 130), at(6));
        assert!(matches!(from('a', 131), Continuation::FullResync(_)));
        assert_eq!(from('b', 140), at(6));
        // Told `b` by a `+CONTINUE` while still before the promotion.
        assert_eq!(from('b', 115), at(4));
        assert_eq!(from('b', 150), at(7), "at the end: the next entry");
    }

    #[test]
    fn strangers_and_replicas_ahead_are_refilled_or_wait() {
        let h = history();
        assert!(matches!(
            h.continuation(Some(&id('c')), 120),
            Continuation::FullResync(_)
        ));
        assert!(matches!(
            h.continuation(None, 0),
            Continuation::FullResync(_)
        ));
        assert_eq!(
            h.continuation(Some(&id('b')), 151),
            Continuation::NotYetCommitted
        );
        assert!(matches!(
            h.continuation(Some(&id('a')), 50),
            Continuation::FullResync(_)
        ));
        assert!(matches!(
            History::default().continuation(Some(&id('a')), 0),
            Continuation::FullResync(_)
        ));
    }

    #[test]
    fn a_checkpoint_keeps_what_the_deleted_entries_said() {
        let h = history();
        // An RDB at 115 (inside the chunk at index 4): entries 2-3 are
        // wholly before it; the stream after entry 3 is at 110.
        let seed = h.seed_for(&id('a'), 115).unwrap();
        assert_eq!((seed.index, seed.end), (LogIndex(3), 110));
        assert_eq!(seed.lineages.len(), 1);
        // At the promotion's offset, under either id: the promotion's
        // `Begin` (index 5) is kept in the log.
        let seed = h.seed_for(&id('b'), 130).unwrap();
        assert_eq!((seed.index, seed.end), (LogIndex(5), 130));
        assert_eq!(seed.lineages.len(), 2);
        // Not on the history, or not committed: no checkpoint.
        assert_eq!(h.seed_for(&id('c'), 120), None);
        assert_eq!(h.seed_for(&id('b'), 151), None);

        // Rebuilt from the seed and the entries after it: the same answers.
        let mut r = History::seeded(&seed, LogIndex(5));
        assert_eq!(r.current(), Some((&id('b'), 130)));
        r.note(LogIndex(6), &chunk(130, 20));
        assert_eq!(r.current(), Some((&id('b'), 150)));
        assert_eq!(
            r.continuation(Some(&id('a')), 130),
            Continuation::From {
                index: LogIndex(6),
                current: id('b')
            }
        );
        assert!(matches!(
            r.continuation(Some(&id('a')), 115),
            Continuation::FullResync(why) if why.contains("before the oldest")
        ));
        // A log cut before the seed (whole segments go): the entries after
        // the cut are noted again, the seed's later lineages are not doubled.
        let mut r = History::seeded(&seed, LogIndex(3));
        for (i, e) in [
            chunk(110, 20),
            begin('b', 130, BeginKind::Promotion),
            chunk(130, 20),
        ]
        .iter()
        .enumerate()
        {
            r.note(LogIndex(i as u64 + 4), e);
        }
        assert_eq!(r.lineages, h.lineages);
        let mut forgot = history();
        forgot.forget_upto(LogIndex(3));
        assert!(matches!(
            forgot.continuation(Some(&id('a')), 100),
            Continuation::FullResync(_)
        ));
        assert_eq!(
            forgot.seed_for(&id('a'), 115).map(|s| s.index),
            Some(LogIndex(3))
        );
    }
}
