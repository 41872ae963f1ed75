//! The result of one target's run, as a table row for people and a JSON
//! object for scripts.
//!
//! Definitions: `ops` are successful operations in the measured window;
//! `errors` the failed ones (by kind in `errors_by_kind`); `ops/s` is
//! `ops` divided by the time from the start of the window to the completion
//! of the last counted operation; latencies are of successful operations,
//! in milliseconds with microsecond resolution.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;

use super::history::Clock;
use super::stats::ClientStats;

/// Latency percentiles, milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median: the typical operation.
    pub p50: f64,
    /// What one operation in ten exceeds.
    pub p90: f64,
    /// The tail most SLOs are written against.
    pub p99: f64,
    /// The tail that fsync stalls and GC pauses show up in.
    pub p999: f64,
    /// The single slowest operation (exact, not bucketed).
    pub max: f64,
    /// Average, for throughput × latency sanity checks (Little's law).
    pub mean: f64,
}

/// The longest time without an acknowledged write.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WriteGapReport {
    /// Its length in milliseconds (1 ms resolution).
    pub gap_ms: f64,
    /// When it began, seconds after the start of the measured window.
    pub at_s: f64,
    /// When it began, ns since the UNIX epoch (the history file's clock).
    pub at_unix_ns: u64,
}

/// One row: one target measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetReport {
    /// The target as given (`http://...`, several joined by `,` for a
    /// cluster, or `etcd://...`).
    pub target: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Successful operations in the window.
    pub ops: u64,
    /// Failed operations in the window.
    pub errors: u64,
    /// `ops` per second of the window.
    pub ops_per_sec: f64,
    /// Length of the window in seconds (to the last completion).
    pub elapsed_s: f64,
    /// Successful writes.
    pub puts: u64,
    /// Successful reads.
    pub gets: u64,
    /// Reads of missing keys (part of `gets`).
    pub get_misses: u64,
    /// Requests resent by the retry policy.
    pub retries: u64,
    /// Latency of successful operations.
    pub latency_ms: Latency,
    /// Failed operations by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Longest stretch without an acknowledged write in the window.
    pub write_gap: Option<WriteGapReport>,
    /// Why the target could not be measured at all (e.g. etcd unreachable).
    pub setup_error: Option<String>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl TargetReport {
    /// The row for merged stats of a window that began at `window_start`.
    pub fn from_stats(
        target: String,
        clients: usize,
        stats: &ClientStats,
        window_start: Instant,
        clock: &Clock,
    ) -> TargetReport {
        let elapsed = stats
            .last_end
            .map(|end| end.saturating_duration_since(window_start))
            .unwrap_or_default();
        let h = &stats.latency;
        let write_gap = (!elapsed.is_zero()).then(|| {
            let gap = stats.writes.longest_gap(elapsed);
            WriteGapReport {
                gap_ms: gap.length.as_millis() as f64,
                at_s: gap.from.as_secs_f64(),
                at_unix_ns: clock.unix_ns(window_start + gap.from),
            }
        });
        TargetReport {
            target,
            clients,
            ops: stats.ok,
            errors: stats.error_count(),
            ops_per_sec: if elapsed.is_zero() {
                0.0
            } else {
                stats.ok as f64 / elapsed.as_secs_f64()
            },
            elapsed_s: elapsed.as_secs_f64(),
            puts: stats.puts,
            gets: stats.gets,
            get_misses: stats.misses,
            retries: stats.retries,
            latency_ms: Latency {
                p50: ms(h.value_at_quantile(0.5)),
                p90: ms(h.value_at_quantile(0.9)),
                p99: ms(h.value_at_quantile(0.99)),
                p999: ms(h.value_at_quantile(0.999)),
                max: ms(h.max()),
                mean: h.mean().round() / 1000.0,
            },
            errors_by_kind: stats.errors.clone(),
            write_gap,
            setup_error: None,
        }
    }

    /// The row of a target that could not be set up.
    pub fn setup_failed(target: String, clients: usize, error: String) -> TargetReport {
        TargetReport {
            target,
            clients,
            ops: 0,
            errors: 0,
            ops_per_sec: 0.0,
            elapsed_s: 0.0,
            puts: 0,
            gets: 0,
            get_misses: 0,
            retries: 0,
            latency_ms: Latency::default(),
            errors_by_kind: BTreeMap::new(),
            write_gap: None,
            setup_error: Some(error),
        }
    }

    /// One line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }

    /// `kind=n,kind=n`, or `0`.
    fn errors_text(&self) -> String {
        if let Some(error) = &self.setup_error {
            return format!("setup failed: {error}");
        }
        if self.errors_by_kind.is_empty() {
            return "0".into();
        }
        let parts: Vec<String> = self
            .errors_by_kind
            .iter()
            .map(|(kind, n)| format!("{kind}={n}"))
            .collect();
        parts.join(",")
    }
}

/// The table of all rows; with `show_write_gap`, a line under each row
/// with its longest write gap.
pub fn format_table(reports: &[TargetReport], show_write_gap: bool) -> String {
    let width = reports
        .iter()
        .map(|r| r.target.len())
        .max()
        .unwrap_or(0)
        .max("target".len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:>7}  {:>9}  {:>10}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}  errors",
        "target", "clients", "ops", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p999 ms", "max ms",
    );
    for r in reports {
        let l = &r.latency_ms;
        let _ = writeln!(
            out,
            "{:<width$}  {:>7}  {:>9}  {:>10.1}  {:>9.3}  {:>9.3}  {:>9.3}  {:>9.3}  {:>9.3}  {}",
            r.target,
            r.clients,
            r.ops,
            r.ops_per_sec,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            r.errors_text(),
        );
        if let (true, Some(gap)) = (show_write_gap, &r.write_gap) {
            let _ = writeln!(
                out,
                "  write gap: {:.3} ms starting {:.3} s into the window (unix ns {}); retries: {}",
                gap.gap_ms, gap.at_s, gap.at_unix_ns, r.retries
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::backend::Outcome;
    use crate::loadgen::workload::OpKind;
    use std::time::Duration;

    #[test]
    fn rows_show_rates_percentiles_and_errors() {
        let start = Instant::now();
        let mut stats = ClientStats::new(start);
        for i in 1..=1000u64 {
            let ok = Outcome {
                ok: true,
                status: 200,
                attempts: 1,
                ..Outcome::default()
            };
            let end = start + Duration::from_micros(i * 1000);
            stats.record(OpKind::Put, &ok, end - Duration::from_micros(i), end);
        }
        let timeout = Outcome::failed("timeout", "http://a", 1);
        stats.record(
            OpKind::Put,
            &timeout,
            start,
            start + Duration::from_millis(2),
        );

        let report = TargetReport::from_stats("http://a".into(), 4, &stats, start, &Clock::start());
        assert_eq!((report.ops, report.errors), (1000, 1));
        assert!((report.ops_per_sec - 1000.0).abs() < 1e-6);
        assert_eq!(report.latency_ms.p50, 0.5);
        assert_eq!(report.latency_ms.p999, 0.999);
        assert_eq!(report.latency_ms.max, 1.0);
        assert_eq!(report.write_gap.as_ref().unwrap().gap_ms, 1.0);

        let failed = TargetReport::setup_failed("etcd://x:1".into(), 4, "refused".into());
        let table = format_table(&[report.clone(), failed], true);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("target "));
        assert!(
            lines[1].contains("1000.0") && lines[1].ends_with("timeout=1"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("0.500") && lines[1].contains("0.999"));
        assert!(lines[2].starts_with("  write gap: 1.000 ms"));
        assert!(lines[3].ends_with("setup failed: refused"));

        let json: serde_json::Value = serde_json::from_str(&report.to_json_line()).unwrap();
        assert_eq!(json["ops"], 1000);
        assert_eq!(json["errors_by_kind"]["timeout"], 1);
        assert_eq!(json["latency_ms"]["p99"], 0.99);
    }
}
