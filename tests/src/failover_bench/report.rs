//! What `failover-bench` found: one row per round and the summary, as text
//! for people and JSON for scripts.
//!
//! Per round, three times, all from the event (the kill, or the switchover
//! request) on one clock:
//! - `gap_ms`: the client-observed write gap, the longest time without any
//!   acknowledged write from the last ack before the event to the first ack
//!   in the new epoch (across all clients);
//! - `recovery_ms`: from the event to that first new-epoch ack;
//! - `decision_ms`: from the event to the arbiter's decision naming the new
//!   active (its decision log, wall clock, ms resolution): what is left of
//!   `recovery_ms` after it is the promotion itself and the clients finding
//!   the new active.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// One kill or switchover.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoundReport {
    /// 1-based.
    pub round: usize,
    /// The active before.
    pub from: String,
    /// The active after.
    pub to: String,
    /// Epoch before.
    pub old_epoch: u64,
    /// Epoch after.
    pub new_epoch: u64,
    /// The client-observed write gap, ms; `None` if it could not be
    /// measured (no ack before the event, or none after in a new epoch).
    pub gap_ms: Option<f64>,
    /// Event to the first ack of the new epoch, ms.
    pub recovery_ms: Option<f64>,
    /// Event to the arbiter's decision, ms.
    pub decision_ms: Option<f64>,
    /// The arbiter's reason for naming the new active.
    pub decision: Option<String>,
}

/// Percentiles of a list of milliseconds (nearest rank).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Values summarized.
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub max: f64,
    pub min: f64,
}

impl Summary {
    /// Summarizes `values` (any order).
    pub fn of(values: &[f64]) -> Summary {
        if values.is_empty() {
            return Summary::default();
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank =
            |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        Summary {
            count: sorted.len(),
            p50: rank(0.5),
            p90: rank(0.9),
            max: sorted[sorted.len() - 1],
            min: sorted[0],
        }
    }
}

/// The whole run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    /// `kill` or `switchover`.
    pub mode: String,
    /// Writers.
    pub clients: usize,
    /// Timing in force (read back from the arbiter).
    pub heartbeat_ms: u64,
    pub lease_ms: u64,
    pub drift: f64,
    /// Every round.
    pub rounds: Vec<RoundReport>,
    /// Of `gap_ms`.
    pub gap: Summary,
    /// Of `recovery_ms`.
    pub recovery: Summary,
    /// Of `decision_ms`.
    pub decision: Summary,
    /// Acknowledged writes in the whole run.
    pub acked_writes: u64,
    /// Operations that ended in an error (after retries), by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Whether every acknowledged write was found on both replicas.
    pub verified: bool,
    /// The verification, in words.
    pub verification: String,
    /// Where the cluster's logs are, if kept.
    pub dir: Option<String>,
}

impl BenchReport {
    /// One line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report serializes")
    }

    /// The text report.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "failover-bench: mode {}, {} rounds, {} clients, heartbeat {} ms, lease {} ms, drift {}",
            self.mode,
            self.rounds.len(),
            self.clients,
            self.heartbeat_ms,
            self.lease_ms,
            self.drift
        );
        let _ = writeln!(
            out,
            "{:>5}  {:>8}  {:>11}  {:>10}  {:>13}  {:>13}",
            "round", "from->to", "epochs", "gap ms", "recovery ms", "decision ms"
        );
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        for r in &self.rounds {
            let _ = writeln!(
                out,
                "{:>5}  {:>8}  {:>11}  {:>10}  {:>13}  {:>13}",
                r.round,
                format!("{}->{}", r.from, r.to),
                format!("{}->{}", r.old_epoch, r.new_epoch),
                ms(r.gap_ms),
                ms(r.recovery_ms),
                ms(r.decision_ms)
            );
        }
        for (name, s) in [
            ("write gap", &self.gap),
            ("event to first new ack", &self.recovery),
            ("event to arbiter decision", &self.decision),
        ] {
            if s.count == 0 {
                continue;
            }
            let _ = writeln!(
                out,
                "{name}: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms, min {:.1} ms ({} rounds)",
                s.p50, s.p90, s.max, s.min, s.count
            );
        }
        let _ = writeln!(
            out,
            "acknowledged writes: {}; errors after retries: {:?}",
            self.acked_writes, self.errors_by_kind
        );
        let _ = writeln!(
            out,
            "verification: {} ({})",
            if self.verified {
                "every acknowledged write is present"
            } else {
                "FAILED"
            },
            self.verification
        );
        if let Some(dir) = &self.dir {
            let _ = writeln!(out, "logs and data kept in {dir}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).rev().collect();
        let s = Summary::of(&values);
        assert_eq!(
            (s.count, s.p50, s.p90, s.max, s.min),
            (20, 10.0, 18.0, 20.0, 1.0)
        );
        assert_eq!(Summary::of(&[7.0]).p90, 7.0);
        assert_eq!(Summary::of(&[]).count, 0);
    }
}
