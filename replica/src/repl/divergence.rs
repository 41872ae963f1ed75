//! Where a standby's log and the active's part ways, and what to do about it.
//!
//! Log matching: in any epoch only one active wrote, and a standby only ever
//! appends entries that continue what the active sent, so two logs holding
//! an entry at the same `(epoch, index)` are identical up to it (DESIGN.md,
//! "Numbers everybody shares"). The standby describes its log as epoch runs;
//! the longest common prefix ends at the highest index where both logs have
//! the same epoch. Everything the standby holds past that point is a
//! divergent tail: entries no active ever committed, written by an old active
//! that was cut off. They are cut — into quarantine, never deleted.

use proto_common::{Epoch, LogIndex, Position};

/// The outline of a log: what the divergence check needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogShape {
    /// Position just before its first entry (its snapshot).
    pub base: Position,
    /// Its last entry.
    pub last: Position,
    /// `(first index, epoch)` runs, oldest first (may omit old runs).
    pub epochs: Vec<(LogIndex, Epoch)>,
}

impl LogShape {
    /// Epoch of the entry at `index`, when this shape knows it.
    pub fn epoch_at(&self, index: LogIndex) -> Option<Epoch> {
        if index == self.base.index {
            return Some(self.base.epoch);
        }
        if index < self.base.index || index > self.last.index {
            return None;
        }
        let run = self.epochs.partition_point(|(first, _)| *first <= index);
        Some(self.epochs.get(run.checked_sub(1)?)?.1)
    }

    /// Runs as `(first, last, epoch)`, newest first.
    fn runs_newest_first(&self) -> Vec<(LogIndex, LogIndex, Epoch)> {
        let mut out = Vec::with_capacity(self.epochs.len());
        let mut end = self.last.index;
        for &(first, epoch) in self.epochs.iter().rev() {
            if first <= end {
                out.push((first, end, epoch));
            }
            end = first.prev();
        }
        out
    }

    fn range_of(&self, epoch: Epoch) -> Option<(LogIndex, LogIndex)> {
        self.runs_newest_first()
            .into_iter()
            .find(|(_, _, e)| *e == epoch)
            .map(|(first, last, _)| (first, last))
    }
}

/// What the active sends a standby after the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Cut the standby's log after this position first (its divergent tail).
    pub truncate: Option<Position>,
    /// The active's log no longer holds the entries the standby needs:
    /// send a snapshot of the applied state, then entries after it.
    pub snapshot: bool,
    /// The first index to stream (when no snapshot is needed).
    pub from: LogIndex,
}

/// The index where the two logs stop agreeing.
pub fn common_prefix(active: &LogShape, standby: &LogShape) -> LogIndex {
    if active.epoch_at(standby.last.index) == Some(standby.last.epoch) {
        return standby.last.index;
    }
    for (first, last, epoch) in standby.runs_newest_first() {
        if let Some((a_first, a_last)) = active.range_of(epoch) {
            let hi = last.min(a_last);
            if hi >= first.max(a_first) {
                return hi;
            }
        }
    }
    // No run in common. Whatever the standby had snapshotted was committed,
    // and committed entries are the same everywhere.
    let mut j = standby.base.index.min(active.last.index);
    if standby.epoch_at(active.base.index) == Some(active.base.epoch) {
        j = j.max(active.base.index);
    }
    j
}

/// Decides truncation, snapshot and the first index to send.
pub fn plan(active: &LogShape, standby: &LogShape) -> Plan {
    let j = common_prefix(active, standby);
    let truncate = (standby.last.index > j).then(|| Position {
        epoch: standby.epoch_at(j).unwrap_or(standby.base.epoch),
        index: j,
    });
    Plan {
        truncate,
        snapshot: j < active.base.index,
        from: j.next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(base: (u64, u64), last: (u64, u64), runs: &[(u64, u64)]) -> LogShape {
        LogShape {
            base: Position::new(base.0, base.1),
            last: Position::new(last.0, last.1),
            epochs: runs.iter().map(|&(i, e)| (LogIndex(i), Epoch(e))).collect(),
        }
    }

    #[test]
    fn scenarios() {
        struct Case {
            name: &'static str,
            active: LogShape,
            standby: LogShape,
            want: Plan,
        }
        let cases = [
            Case {
                name: "empty standby joins",
                active: shape((0, 0), (1, 50), &[(1, 1)]),
                standby: shape((0, 0), (0, 0), &[]),
                want: Plan {
                    truncate: None,
                    snapshot: false,
                    from: LogIndex(1),
                },
            },
            Case {
                name: "standby behind in the same epoch",
                active: shape((0, 0), (2, 50), &[(1, 1), (10, 2)]),
                standby: shape((0, 0), (2, 30), &[(1, 1), (10, 2)]),
                want: Plan {
                    truncate: None,
                    snapshot: false,
                    from: LogIndex(31),
                },
            },
            Case {
                name: "resurrected old active with a divergent tail",
                // Old active wrote (1,9),(1,10) nobody got; new active opened
                // epoch 2 at index 9.
                active: shape((0, 0), (2, 12), &[(1, 1), (9, 2)]),
                standby: shape((0, 0), (1, 10), &[(1, 1)]),
                want: Plan {
                    truncate: Some(Position::new(1, 8)),
                    snapshot: false,
                    from: LogIndex(9),
                },
            },
            Case {
                name: "standby ahead of the active in an old epoch only",
                active: shape((0, 0), (3, 9), &[(1, 1), (9, 3)]),
                standby: shape((0, 0), (2, 12), &[(1, 1), (6, 2)]),
                want: Plan {
                    truncate: Some(Position::new(1, 5)),
                    snapshot: false,
                    from: LogIndex(6),
                },
            },
            Case {
                name: "far behind a compacted active: snapshot",
                active: shape((1, 1000), (1, 1200), &[(1, 1)]),
                standby: shape((0, 0), (1, 10), &[(1, 1)]),
                want: Plan {
                    truncate: None,
                    snapshot: true,
                    from: LogIndex(11),
                },
            },
            Case {
                name: "divergent and behind a compaction (epoch history kept)",
                active: shape((2, 1000), (2, 1200), &[(1, 1), (9, 2)]),
                standby: shape((0, 0), (1, 10), &[(1, 1)]),
                want: Plan {
                    truncate: Some(Position::new(1, 8)),
                    snapshot: true,
                    from: LogIndex(9),
                },
            },
            Case {
                name: "no shared history known: cut to the standby's snapshot",
                active: shape((2, 1000), (2, 1200), &[(9, 2)]),
                standby: shape((0, 0), (1, 10), &[(1, 1)]),
                want: Plan {
                    truncate: Some(Position::new(0, 0)),
                    snapshot: true,
                    from: LogIndex(1),
                },
            },
            Case {
                name: "identical logs",
                active: shape((0, 0), (4, 7), &[(1, 1), (5, 4)]),
                standby: shape((0, 0), (4, 7), &[(1, 1), (5, 4)]),
                want: Plan {
                    truncate: None,
                    snapshot: false,
                    from: LogIndex(8),
                },
            },
        ];
        for c in cases {
            assert_eq!(plan(&c.active, &c.standby), c.want, "{}", c.name);
        }
    }

    #[test]
    fn epoch_at_uses_runs_and_base() {
        let s = shape((1, 4), (3, 20), &[(1, 1), (10, 3)]);
        assert_eq!(s.epoch_at(LogIndex(4)), Some(Epoch(1)));
        assert_eq!(s.epoch_at(LogIndex(3)), None);
        assert_eq!(s.epoch_at(LogIndex(9)), Some(Epoch(1)));
        assert_eq!(s.epoch_at(LogIndex(10)), Some(Epoch(3)));
        assert_eq!(s.epoch_at(LogIndex(21)), None);
    }
}
