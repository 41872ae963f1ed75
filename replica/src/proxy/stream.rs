//! The upstream's replication stream as a [`StateMachine`]: applying a
//! committed entry makes it part of the committed history (`history.rs`)
//! and moves the committed offset that releases replies on the active
//! (`gate.rs`) and bounds what a standby feeds its own upstream
//! (`feed.rs`). Nothing is written to an upstream here: the active's
//! upstream produced the stream, a standby's is fed by the feed.

use parking_lot::Mutex;
use proto_common::{LogIndex, Position};
use tokio::sync::watch;

use super::entry::{ReplId, StreamEntry};
use super::history::{Continuation, History, Seed};
use crate::command::{Command, DecodeError};
use crate::log::cursor::{Cursor, Next};
use crate::log::LogReader;
use crate::pending::PendingEntry;
use crate::state_machine::{Answerer, StateMachine};

/// The stream behind the log.
pub struct StreamMachine {
    history: Mutex<History>,
    applied: watch::Sender<Position>,
    /// The committed stream offset (replies wait for it).
    committed: watch::Sender<u64>,
    reader: LogReader,
    answerer: Answerer,
    /// Why the upstream cannot be used now, if it cannot.
    problem: Mutex<Option<String>>,
    /// Where a logged RDB is kept as a snapshot (`rdb.rs`).
    rdb_dir: std::path::PathBuf,
    /// The history the newest checkpoint kept (`checkpoint.rs`): what the
    /// log's deleted entries had said.
    seed: Mutex<Option<Seed>>,
}

/// Why the log's stream history cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("reading the log: {0}")]
    Read(#[from] std::io::Error),
    #[error("log entry {position} cannot be decoded: {source}")]
    Undecodable {
        position: Position,
        source: DecodeError,
    },
    #[error(
        "log entry {0} is not a proxy-mode entry: every replica of a cluster must be started \
         alike (all with --upstream, or none)"
    )]
    NotProxyMode(Position),
    #[error(
        "the log's entries up to {0} were deleted, but no checkpoint covers them (the \
         checkpoint/ directory of the data directory lost its newest file)"
    )]
    Compacted(LogIndex),
}

impl StreamMachine {
    /// Rebuilds the history from the newest checkpoint's `seed` and the
    /// log's entries after it up to `committed`.
    pub fn open(
        reader: LogReader,
        committed: LogIndex,
        answerer: Answerer,
        rdb_dir: std::path::PathBuf,
        seed: Option<Seed>,
    ) -> Result<StreamMachine, HistoryError> {
        let (history, applied) = rebuild(&reader, committed, seed.as_ref())?;
        let offset = history.committed();
        Ok(StreamMachine {
            history: Mutex::new(history),
            applied: watch::channel(applied).0,
            committed: watch::channel(offset).0,
            reader,
            answerer,
            problem: Mutex::new(None),
            rdb_dir,
            seed: Mutex::new(seed),
        })
    }

    /// What a checkpoint of an RDB at `(replid, offset)` keeps of the
    /// history, if that position is on the committed history.
    pub fn seed_for(&self, replid: &ReplId, offset: u64) -> Option<Seed> {
        self.history.lock().seed_for(replid, offset)
    }

    /// A checkpoint at `seed` is durable: the log's entries up to it may be
    /// deleted from now on.
    pub fn set_seed(&self, seed: Seed) {
        *self.seed.lock() = Some(seed);
    }

    /// The log's entries up to `base` are deleted.
    pub fn forget_upto(&self, base: LogIndex) {
        self.history.lock().forget_upto(base);
    }

    /// Follows the committed stream offset.
    pub fn committed_offset(&self) -> watch::Receiver<u64> {
        self.committed.subscribe()
    }

    /// The current replication id and committed offset, once the stream
    /// has begun.
    pub fn current(&self) -> Option<(ReplId, u64)> {
        self.history
            .lock()
            .current()
            .map(|(id, offset)| (id.clone(), offset))
    }

    /// Whether a replica at `(replid, offset)` may continue from here.
    pub fn continuation(&self, replid: Option<&ReplId>, offset: u64) -> Continuation {
        self.history.lock().continuation(replid, offset)
    }

    /// Where the stream the log holds ends, committed or not: an upstream
    /// beyond it ran effects the cluster never logged.
    pub fn logged_end(&self) -> Result<u64, HistoryError> {
        let mut end = self.history.lock().committed();
        let mut cursor = Cursor::new(self.reader.clone(), self.applied().index.next());
        loop {
            match cursor.read_next()? {
                Next::Record(position, payload) => match Command::decode(&payload) {
                    Ok(Command::Stream(s)) => end = end.max(s.end()),
                    Ok(_) => {}
                    Err(source) => return Err(HistoryError::Undecodable { position, source }),
                },
                Next::End | Next::Compacted => return Ok(end),
            }
        }
    }

    /// The log, for the feed.
    pub fn reader(&self) -> &LogReader {
        &self.reader
    }

    pub fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock() = problem;
    }
}

impl StreamMachine {
    /// Keeps a committed, logged RDB as this replica's snapshot, on a
    /// thread of its own (`apply` must not block on the disk).
    fn keep(&self, replid: ReplId, offset: u64, bytes: bytes::Bytes) {
        let dir = self.rdb_dir.clone();
        let spawned = std::thread::Builder::new()
            .name("keep-rdb".into())
            .spawn(move || {
                if let Err(e) = super::rdb::keep_blocking(&dir, &replid, offset, &bytes) {
                    tracing::warn!(error = %e, offset, "cannot keep the logged RDB as a snapshot");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the thread that keeps the logged RDB");
        }
    }
}

impl StateMachine for StreamMachine {
    fn apply(&self, entries: Vec<PendingEntry>) {
        let Some(last) = entries.last().map(|e| e.position) else {
            return;
        };
        let mut answers = Vec::new();
        let offset = {
            let mut history = self.history.lock();
            for e in entries {
                if let Command::Stream(s) = &e.command {
                    history.note(e.position.index, s);
                    if let StreamEntry::Rdb {
                        replid,
                        offset,
                        bytes,
                    } = s
                    {
                        self.keep(replid.clone(), *offset, bytes.clone());
                    }
                }
                if let Some(r) = e.responder {
                    answers.push((r, e.position, crate::state::Outcome::Written, e.received));
                }
            }
            history.committed()
        };
        self.applied.send_replace(last);
        self.committed.send_if_modified(|c| {
            let moved = *c != offset;
            *c = offset;
            moved
        });
        self.answerer.answer(answers);
    }

    fn applied(&self) -> Position {
        *self.applied.borrow()
    }

    fn watch_applied(&self) -> watch::Receiver<Position> {
        self.applied.subscribe()
    }

    fn reset(&self, applied: Position) {
        let seed = self.seed.lock().clone();
        match rebuild(&self.reader, applied.index, seed.as_ref()) {
            Ok((history, at)) => {
                let offset = history.committed();
                *self.history.lock() = history;
                self.applied.send_replace(at);
                self.committed.send_replace(offset);
            }
            Err(why) => self.set_problem(Some(why.to_string())),
        }
    }

    fn problem(&self) -> Option<String> {
        self.problem.lock().clone()
    }
}

/// The history of the log's stream entries up to `upto` (after the
/// checkpoint `seed`, if the log was compacted), and the position of the
/// last entry read.
fn rebuild(
    reader: &LogReader,
    upto: LogIndex,
    seed: Option<&Seed>,
) -> Result<(History, Position), HistoryError> {
    let mut at = reader.base();
    let mut history = match seed {
        _ if at.index == LogIndex::ZERO => History::default(),
        Some(seed) if seed.index >= at.index => History::seeded(seed, at.index),
        _ => return Err(HistoryError::Compacted(at.index)),
    };
    let mut cursor = Cursor::new(reader.clone(), reader.base().index.next());
    while cursor.index() <= upto {
        match cursor.read_next()? {
            Next::Record(position, payload) => {
                let command = Command::decode(&payload)
                    .map_err(|source| HistoryError::Undecodable { position, source })?;
                if let Command::Stream(s) = &command {
                    history.note(position.index, s);
                } else if !matches!(command, Command::Noop) {
                    return Err(HistoryError::NotProxyMode(position));
                }
                at = position;
            }
            Next::End => break,
            Next::Compacted => return Err(HistoryError::Compacted(cursor.index())),
        }
    }
    Ok((history, at))
}
