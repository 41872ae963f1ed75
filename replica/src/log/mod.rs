//! The write log: append-only, checksummed, segmented, group-committed.
//!
//! - [`segment`]: the file format of one segment and how it is scanned.
//! - [`prealloc`]: zero-filled segment files prepared in the background.
//! - [`table`]: the in-memory table of segments and the concurrent reader.
//! - [`writer`]: the single writer (append, sync, roll, truncate, compact).
//! - [`recovery`]: opening the log after a crash (torn tail vs corruption).
//! - [`group_commit`]: the thread that batches concurrent writes into one fsync.
//! - [`cursor`]: reading records one at a time from an index on.

pub mod cursor;
pub mod group_commit;
pub mod prealloc;
pub mod recovery;
pub mod segment;
pub mod table;
pub mod writer;

pub use recovery::{OpenError, TornTail};
pub use table::{LogReader, ReadOutcome};
pub use writer::{Log, LogOptions};
