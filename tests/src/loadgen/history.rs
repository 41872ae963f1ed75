//! The per-operation history (`--history FILE`) and the clock its times
//! come from.
//!
//! One JSON object per line, one line per operation (retries included in
//! the same line), in the order operations completed:
//!
//! ```text
//! {"target":"http://127.0.0.1:7001,http://127.0.0.1:7002","client":3,"seq":17,
//!  "op":"put","key":"k000000000004711","value_id":"c3-o17",
//!  "checksum":"5d6f0c1e2a3b4c5d","start_ns":1730000000123456789,
//!  "end_ns":1730000000124456789,"status":200,"error":null,
//!  "version":"2.1742","key_version":null,"url":"http://127.0.0.1:7001",
//!  "attempts":1,"counted":true}
//! ```
//!
//! - `value_id`/`checksum`: for a put, the value sent; for a get, the value
//!   read (`value_id` is null if it was not written by loadgen, both are
//!   null when nothing was read).
//! - `start_ns`/`end_ns`: nanoseconds since the UNIX epoch, taken from a
//!   monotonic clock anchored to the wall clock once at start ([`Clock`]), so
//!   times never jump backwards within a run and can still be lined up
//!   with the logs of other processes on the same machine. `start_ns` is
//!   just before the first attempt is sent, `end_ns` just after the final
//!   answer was read.
//! - `status`: HTTP status of the final answer (etcd: 200 ok, 404 get of a
//!   missing key), 0 when there was none (connection error, timeout).
//! - `error`: null on success, else the error kind as counted in the
//!   report (`connect_refused`, `timeout`, `not_writable`, `http_500`, ...).
//!   An operation with an error and status 0 may or may not have taken effect.
//! - `version`: `X-Data-Version` of the final answer (etcd: `term.revision`);
//!   `key_version`: `X-Key-Version` of a get (etcd: `mod_revision`).
//! - `url`: which replica gave the final answer (after retries and
//!   redirects); for etcd, `etcd-member:{id in hex}`.
//! - `attempts`: how many requests the operation took (1 without retries).
//! - `counted`: false for operations during warm-up.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Turns `Instant`s into nanoseconds since the UNIX epoch, consistently.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// The monotonic reading taken together with `origin_unix_ns`.
    origin: Instant,
    /// The wall clock at `origin`, in ns since the UNIX epoch.
    origin_unix_ns: u64,
}

impl Clock {
    /// Anchors the clock now.
    pub fn start() -> Clock {
        let origin = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            origin,
            origin_unix_ns: u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// `at` in ns since the UNIX epoch (as of this clock's anchoring).
    pub fn unix_ns(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin).as_nanos();
        self.origin_unix_ns + u64::try_from(since).unwrap_or(u64::MAX / 2)
    }
}

/// One line of the history file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryRecord {
    /// The report row this operation belongs to.
    pub target: String,
    /// Client number, 0-based.
    pub client: u32,
    /// The client's op number (see `workload`).
    pub seq: u64,
    /// `put` or `get`.
    pub op: &'static str,
    /// The key.
    pub key: String,
    /// `c{client}-o{seq}` of the value written or read.
    pub value_id: Option<String>,
    /// FNV-1a of the value written or read, 16 hex digits.
    pub checksum: Option<String>,
    /// Just before the first attempt was sent, ns since the UNIX epoch.
    pub start_ns: u64,
    /// Just after the final answer was read.
    pub end_ns: u64,
    /// HTTP status of the final answer; 0 if none.
    pub status: u16,
    /// Error kind; `None` on success.
    pub error: Option<String>,
    /// `X-Data-Version` of the final answer.
    pub version: Option<String>,
    /// `X-Key-Version` of a get.
    pub key_version: Option<String>,
    /// Who gave the final answer.
    pub url: String,
    /// Requests sent for this operation.
    pub attempts: u32,
    /// Whether the operation was in the measured window.
    pub counted: bool,
}

/// Sends records to a background writer, so clients never wait for disk.
#[derive(Debug)]
pub struct HistoryWriter {
    /// Cloned into every client; the writer ends when all are dropped.
    sender: mpsc::UnboundedSender<HistoryRecord>,
    /// The thread that writes lines and reports the first I/O error.
    task: JoinHandle<io::Result<u64>>,
}

impl HistoryWriter {
    /// Creates (truncates) `path` and starts the writer.
    pub fn create(path: &Path) -> io::Result<HistoryWriter> {
        let file = File::create(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create history file {}: {e}", path.display()),
            )
        })?;
        let (sender, mut receiver) = mpsc::unbounded_channel::<HistoryRecord>();
        let task = tokio::task::spawn_blocking(move || {
            let mut out = BufWriter::new(file);
            let mut lines = 0;
            while let Some(record) = receiver.blocking_recv() {
                serde_json::to_writer(&mut out, &record)?;
                out.write_all(b"\n")?;
                lines += 1;
            }
            out.flush()?;
            Ok(lines)
        });
        Ok(HistoryWriter { sender, task })
    }

    /// A handle for one client.
    pub fn sender(&self) -> mpsc::UnboundedSender<HistoryRecord> {
        self.sender.clone()
    }

    /// Waits until every record sent so far is on disk; returns the number
    /// of lines written. Call after all clients have finished.
    pub async fn finish(self) -> io::Result<u64> {
        drop(self.sender);
        self.task.await.map_err(io::Error::other)?
    }
}

/// Formats a checksum as in the history file.
pub fn checksum_hex(checksum: u64) -> String {
    format!("{checksum:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record() -> HistoryRecord {
        HistoryRecord {
            target: "http://127.0.0.1:7001".into(),
            client: 3,
            seq: 17,
            op: "put",
            key: "k0042".into(),
            value_id: Some("c3-o17".into()),
            checksum: Some(checksum_hex(0xabc)),
            start_ns: 10,
            end_ns: 25,
            status: 503,
            error: Some("not_writable".into()),
            version: Some("2.9".into()),
            key_version: None,
            url: "http://127.0.0.1:7002".into(),
            attempts: 2,
            counted: true,
        }
    }

    #[test]
    fn line_format_is_stable() {
        let line = serde_json::to_string(&record()).unwrap();
        assert_eq!(
            line,
            r#"{"target":"http://127.0.0.1:7001","client":3,"seq":17,"op":"put","key":"k0042","value_id":"c3-o17","checksum":"0000000000000abc","start_ns":10,"end_ns":25,"status":503,"error":"not_writable","version":"2.9","key_version":null,"url":"http://127.0.0.1:7002","attempts":2,"counted":true}"#
        );
    }

    #[test]
    fn clock_is_monotonic_and_near_the_wall_clock() {
        let clock = Clock::start();
        let now = Instant::now();
        let a = clock.unix_ns(now);
        let b = clock.unix_ns(now + Duration::from_millis(5));
        assert_eq!(b - a, 5_000_000);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert!(wall.abs_diff(a) < 1_000_000_000);
    }

    #[tokio::test]
    async fn writer_writes_one_line_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let writer = HistoryWriter::create(&path).unwrap();
        let sender = writer.sender();
        sender.send(record()).unwrap();
        sender.send(record()).unwrap();
        drop(sender);
        assert_eq!(writer.finish().await.unwrap(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with("\n"));
    }
}
