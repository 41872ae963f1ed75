//! What one client counts during the measured window, and how the counts of
//! all clients add up.
//!
//! Each client owns a [`ClientStats`] and is the only one to touch it; the
//! runner merges them when the clients are done, so recording an operation
//! takes no lock. Latency is recorded for successful operations only: a
//! refused connection returns in microseconds and would make a dead target
//! look fast. Failed operations are counted by kind instead.
//!
//! [`WriteTimeline`] answers "what was the longest time without a single
//! acknowledged write?" across all clients, e.g. during a failover. Each
//! client marks the millisecond in which each of its writes completed (a
//! bitmap: bounded memory however long the run), the runner ORs the
//! bitmaps, and the longest gap is the longest distance between two marks.
//! The start and the end of the measured window count as marks, so a
//! cluster that stops taking writes and never recovers shows the outage up
//! to the end. Resolution: 1 ms.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::backend::Outcome;
use super::histogram::Histogram;
use super::workload::OpKind;

/// Which milliseconds of the window saw at least one acknowledged write.
#[derive(Clone, Debug)]
pub struct WriteTimeline {
    /// Millisecond 0 of the bitmap: the start of the measured window.
    origin: Instant,
    /// Bit `i` set: a write completed in `[origin + i ms, origin + i+1 ms)`.
    bits: Vec<u64>,
}

/// The longest stretch without an acknowledged write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteGap {
    /// Its length (1 ms resolution).
    pub length: Duration,
    /// When it began, as an offset from the start of the measured window.
    pub from: Duration,
}

impl WriteTimeline {
    pub fn new(origin: Instant) -> WriteTimeline {
        WriteTimeline {
            origin,
            bits: Vec::new(),
        }
    }

    /// Marks a write acknowledged at `at`; writes before `origin` are ignored.
    pub fn mark(&mut self, at: Instant) {
        let Some(since) = at.checked_duration_since(self.origin) else {
            return;
        };
        let ms = since.as_millis() as usize;
        let word = ms / 64;
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        self.bits[word] |= 1 << (ms % 64);
    }

    /// Adds the marks of `other` (same origin).
    pub fn merge(&mut self, other: &WriteTimeline) {
        debug_assert_eq!(self.origin, other.origin, "timelines of one window");
        if other.bits.len() > self.bits.len() {
            self.bits.resize(other.bits.len(), 0);
        }
        for (mine, theirs) in self.bits.iter_mut().zip(&other.bits) {
            *mine |= theirs;
        }
    }

    /// The longest gap between marks within `[origin, window_end]`.
    pub fn longest_gap(&self, window_end: Duration) -> WriteGap {
        let end_ms = window_end.as_millis() as u64;
        let mut previous = 0u64;
        let mut best = WriteGap {
            length: Duration::ZERO,
            from: Duration::ZERO,
        };
        let mut consider = |from: u64, to: u64| {
            if to > from && Duration::from_millis(to - from) > best.length {
                best = WriteGap {
                    length: Duration::from_millis(to - from),
                    from: Duration::from_millis(from),
                };
            }
        };
        for (i, &word) in self.bits.iter().enumerate() {
            let mut rest = word;
            while rest != 0 {
                let ms = i as u64 * 64 + u64::from(rest.trailing_zeros());
                rest &= rest - 1;
                if ms > end_ms {
                    break;
                }
                consider(previous, ms);
                previous = ms;
            }
        }
        consider(previous, end_ms);
        best
    }
}

/// Counts of one client, or of all clients after merging.
#[derive(Clone, Debug)]
pub struct ClientStats {
    /// Latency of successful operations, µs.
    pub latency: Histogram,
    /// Successful operations.
    pub ok: u64,
    /// Successful writes.
    pub puts: u64,
    /// Successful reads (found or not).
    pub gets: u64,
    /// Reads of a key that did not exist (a normal answer).
    pub misses: u64,
    /// Failed operations by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Requests beyond the first, over all operations.
    pub retries: u64,
    /// When writes were acknowledged.
    pub writes: WriteTimeline,
    /// When the last counted operation completed.
    pub last_end: Option<Instant>,
}

impl ClientStats {
    /// Empty counts for a window starting at `window_start`.
    pub fn new(window_start: Instant) -> ClientStats {
        ClientStats {
            latency: Histogram::new(),
            ok: 0,
            puts: 0,
            gets: 0,
            misses: 0,
            errors: BTreeMap::new(),
            retries: 0,
            writes: WriteTimeline::new(window_start),
            last_end: None,
        }
    }

    /// Counts one operation of the measured window.
    pub fn record(&mut self, kind: OpKind, outcome: &Outcome, start: Instant, end: Instant) {
        self.retries += u64::from(outcome.attempts.saturating_sub(1));
        self.last_end = Some(self.last_end.map_or(end, |last| last.max(end)));
        if !outcome.ok {
            let error = outcome.error.as_deref().unwrap_or("unknown");
            *self.errors.entry(error.to_string()).or_default() += 1;
            return;
        }
        self.ok += 1;
        self.latency.record((end - start).as_micros() as u64);
        match kind {
            OpKind::Put => {
                self.puts += 1;
                self.writes.mark(end);
            }
            OpKind::Get => {
                self.gets += 1;
                self.misses += u64::from(outcome.is_miss());
            }
        }
    }

    /// Failed operations, all kinds.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds another client's counts.
    pub fn merge(&mut self, other: &ClientStats) {
        self.latency.merge(&other.latency);
        self.ok += other.ok;
        self.puts += other.puts;
        self.gets += other.gets;
        self.misses += other.misses;
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        self.retries += other.retries;
        self.writes.merge(&other.writes);
        self.last_end = match (self.last_end, other.last_end) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_longest_gap_spans_clients_and_window_edges() {
        let origin = Instant::now();
        let mut a = WriteTimeline::new(origin);
        let mut b = WriteTimeline::new(origin);
        for t in [5, 10, 20, 1500] {
            a.mark(origin + ms(t));
        }
        for t in [30, 40, 1200] {
            b.mark(origin + ms(t) + Duration::from_micros(300));
        }
        a.merge(&b);
        // Marks at 5 10 20 30 40 1200 1500: the gap is 40 → 1200.
        let gap = a.longest_gap(ms(1600));
        assert_eq!(
            gap,
            WriteGap {
                length: ms(1160),
                from: ms(40)
            }
        );
        // Writes that never resume: the gap runs to the end of the window.
        assert_eq!(
            a.longest_gap(ms(5000)),
            WriteGap {
                length: ms(3500),
                from: ms(1500)
            }
        );
        // No writes at all: the whole window.
        let none = WriteTimeline::new(origin);
        assert_eq!(
            none.longest_gap(ms(700)),
            WriteGap {
                length: ms(700),
                from: ms(0)
            }
        );
    }

    #[test]
    fn only_successes_are_timed_and_failures_counted_by_kind() {
        let start = Instant::now();
        let mut s = ClientStats::new(start);
        let ok = Outcome {
            ok: true,
            status: 200,
            attempts: 3,
            ..Outcome::default()
        };
        s.record(OpKind::Put, &ok, start, start + Duration::from_micros(1500));
        let miss = Outcome {
            ok: true,
            status: 404,
            attempts: 1,
            ..Outcome::default()
        };
        s.record(
            OpKind::Get,
            &miss,
            start,
            start + Duration::from_micros(500),
        );
        let refused = Outcome::failed("connect_refused", "http://x", 1);
        s.record(
            OpKind::Put,
            &refused,
            start,
            start + Duration::from_micros(20),
        );

        let mut total = ClientStats::new(start);
        total.merge(&s);
        total.merge(&s);
        assert_eq!(
            (total.ok, total.puts, total.gets, total.misses),
            (4, 2, 2, 2)
        );
        assert_eq!(total.error_count(), 2);
        assert_eq!(total.errors["connect_refused"], 2);
        assert_eq!(total.retries, 4);
        assert_eq!(total.latency.count(), 4);
        assert_eq!(total.latency.max(), 1500);
        assert_eq!(total.latency.min(), 500);
    }
}
