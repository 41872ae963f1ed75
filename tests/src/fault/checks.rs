//! The checkers: what the history and the cluster's final state must show.
//!
//! - (a) **set**: every acknowledged `add` is in the final data with its
//!   value; no definitely failed one is; no key is there that no one wrote.
//! - (b) **registers**: each register key's writes, linearizable reads and
//!   compare-and-sets, plus its final value, are linearizable.
//! - (c) **sessions**: a read sent with `X-Min-Version` is answered at that
//!   version or later, sees the client's own acknowledged write of that
//!   key, and is never told the version was cut (sync mode).
//! - (d) **epochs**: no write is acknowledged under an epoch older than one
//!   under which a write was acknowledged before it was sent; no two
//!   acknowledged writes share a position.
//! - (e) **one active**: once the faults stop, exactly one replica says it
//!   is active, and it is the one the arbiter names.
//! - (f) **quarantine**: no acknowledged write's position is among the
//!   entries the replicas cut and set aside.
//! - (g) **queues** (proxy mode, `queues.rs`): no item popped twice or
//!   never pushed; every acknowledged push popped or still queued at the
//!   end, but for as many as there were pops of unknown outcome.
//!
//! Each anomaly names the operations involved; [`around`] prints the
//! smallest history around them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use proto_common::Position;
use serde::Serialize;

use super::history::{Kind, Op, Outcome};
use super::linearizable::{self, Event, RegOp, Verdict};
use super::queues::{check_queues, FinalLists};

/// Steps the linearizability search may take per key before giving up.
const MAX_STEPS: u64 = 2_000_000;

/// One thing that must not happen, and did.
#[derive(Clone, Debug, Serialize)]
pub struct Anomaly {
    /// Which checker: `set`, `register`, `session`, `epoch`, `queue`,
    /// `one_active`, `quarantine`, `recovery`, `unexpected_code`.
    pub check: &'static str,
    pub what: String,
    /// The operations involved (ids in the history).
    pub ops: Vec<usize>,
}

/// Everything the checkers found, and what they looked at.
#[derive(Debug, Default, Serialize)]
pub struct Findings {
    pub anomalies: Vec<Anomaly>,
    /// Acknowledged adds, and how many of them the final data holds.
    pub acked_adds: usize,
    pub present_adds: usize,
    /// Adds of unknown outcome that turned out applied / not applied.
    pub unknown_adds_applied: usize,
    pub unknown_adds_absent: usize,
    /// Register keys checked, and keys whose search gave up (no verdict).
    pub register_keys: usize,
    pub register_gave_up: usize,
    /// Acknowledged pushes; items answered pops took; pops answered with
    /// none; pops of unknown outcome; items left in the queues at the end;
    /// acknowledged pushes neither popped nor left (at most `unknown_pops`).
    pub acked_pushes: usize,
    pub popped_items: usize,
    pub empty_pops: usize,
    pub unknown_pops: usize,
    pub items_left: usize,
    pub pushes_unaccounted: usize,
    /// Entries the replicas moved to quarantine.
    pub quarantined_entries: usize,
    /// Whether checkers (a) to (d) and (g) ran: not when there was no final
    /// state to hold the history against (the cluster did not recover).
    pub history_checked: bool,
}

impl Findings {
    pub(super) fn anomaly(&mut self, check: &'static str, what: String, ops: Vec<usize>) {
        self.anomalies.push(Anomaly { check, what, ops });
    }
}

/// The final data: every key and value the active serves after the run.
pub type FinalData = BTreeMap<String, String>;

/// Runs checkers (a) to (d) and (g) on `ops`, the final data `last` and
/// the queues' final contents `lists`.
pub fn check_history(
    ops: &[Op],
    last: &FinalData,
    lists: &FinalLists,
    sync_mode: bool,
    end_ns: u64,
) -> Findings {
    let mut findings = Findings {
        history_checked: true,
        ..Findings::default()
    };
    check_set(ops, last, &mut findings);
    check_registers(ops, last, end_ns, &mut findings);
    check_sessions(ops, sync_mode, &mut findings);
    check_epochs(ops, &mut findings);
    check_queues(ops, lists, &mut findings);
    check_codes(ops, &mut findings);
    findings
}

/// (a)
fn check_set(ops: &[Op], last: &FinalData, findings: &mut Findings) {
    let mut written = HashSet::new();
    for op in ops.iter().filter(|o| o.kind == Kind::Add) {
        written.insert(op.key.as_str());
        let value = op.value.as_deref().unwrap_or_default();
        let present = last.get(&op.key);
        match op.outcome {
            Outcome::Ok => {
                findings.acked_adds += 1;
                match present {
                    Some(v) if v == value => findings.present_adds += 1,
                    Some(v) => findings.anomaly(
                        "set",
                        format!(
                            "acknowledged write of {} = {value} holds {v} at the end",
                            op.key
                        ),
                        vec![op.id],
                    ),
                    None => findings.anomaly(
                        "set",
                        format!(
                            "acknowledged write of {} (version {}) is missing at the end",
                            op.key,
                            op.version.map(|v| v.to_string()).unwrap_or_default()
                        ),
                        vec![op.id],
                    ),
                }
            }
            Outcome::Fail if present.is_some() => findings.anomaly(
                "set",
                format!(
                    "write of {} was answered as failed ({}) but is present at the end",
                    op.key, op.code
                ),
                vec![op.id],
            ),
            Outcome::Fail => {}
            Outcome::Unknown if present.is_some() => findings.unknown_adds_applied += 1,
            Outcome::Unknown => findings.unknown_adds_absent += 1,
        }
    }
    for key in last.keys().filter(|k| k.starts_with("s/")) {
        if !written.contains(key.as_str()) {
            findings.anomaly(
                "set",
                format!("{key} is present but no client wrote it"),
                vec![],
            );
        }
    }
}

/// (b)
fn check_registers(ops: &[Op], last: &FinalData, end_ns: u64, findings: &mut Findings) {
    let mut by_key: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
    for op in ops {
        let reg = match (op.kind, op.outcome) {
            (Kind::Write | Kind::Read | Kind::Cas, Outcome::Fail) => continue,
            (Kind::Read, Outcome::Unknown) => continue,
            (Kind::Write, _) => RegOp::Write(op.value.clone().unwrap_or_default()),
            (Kind::Read, Outcome::Ok) => match &op.read {
                Some(v) => RegOp::Read(v.clone()),
                None => continue,
            },
            (Kind::Cas, outcome) => RegOp::Cas {
                expect: op.expect.clone().flatten(),
                new: op.value.clone().unwrap_or_default(),
                applied: if outcome == Outcome::Ok {
                    op.applied
                } else {
                    None
                },
            },
            _ => continue,
        };
        let ret = (op.outcome == Outcome::Ok).then_some(op.complete_ns);
        by_key.entry(op.key.as_str()).or_default().push(Event {
            op: reg,
            call: op.invoke_ns,
            ret,
            id: op.id,
        });
    }
    for (key, mut events) in by_key {
        findings.register_keys += 1;
        // The final value, read after every operation ended.
        events.push(Event {
            op: RegOp::Read(last.get(key).cloned()),
            call: end_ns,
            ret: Some(end_ns + 1),
            id: usize::MAX,
        });
        match linearizable::check(&events, MAX_STEPS) {
            Verdict::Linearizable => {}
            Verdict::GaveUp { .. } => findings.register_gave_up += 1,
            Verdict::Violation { stuck, prefix } => {
                let mut involved: Vec<usize> = events
                    .iter()
                    .map(|e| e.id)
                    .filter(|id| *id != usize::MAX)
                    .collect();
                involved.sort_unstable();
                let stuck_what = if stuck == usize::MAX {
                    format!("the final value {:?}", last.get(key))
                } else {
                    format!("operation #{stuck}")
                };
                findings.anomaly(
                    "register",
                    format!(
                        "{key}: no order of its {} operations explains {stuck_what} \
                         (deepest attempt linearized {:?})",
                        events.len() - 1,
                        prefix
                    ),
                    involved,
                );
            }
        }
    }
}

/// (c)
fn check_sessions(ops: &[Op], sync_mode: bool, findings: &mut Findings) {
    // Each client's acknowledged adds, by key, with completion time.
    let mut own: HashMap<(u32, &str), &Op> = HashMap::new();
    for op in ops {
        if op.kind == Kind::Add && op.outcome == Outcome::Ok {
            own.insert((op.client, op.key.as_str()), op);
        }
    }
    for op in ops {
        if op.kind != Kind::ReadAt || op.outcome != Outcome::Ok {
            continue;
        }
        if op.code == "version_cut" {
            if sync_mode {
                findings.anomaly(
                    "session",
                    format!(
                        "read of {} at X-Min-Version {:?} was told that version was cut",
                        op.key, op.min_version
                    ),
                    vec![op.id],
                );
            }
            continue;
        }
        if let (Some(min), Some(at)) = (op.min_version, op.version) {
            if at < min {
                findings.anomaly(
                    "session",
                    format!(
                        "read of {} with X-Min-Version {min} was answered at version {at}",
                        op.key
                    ),
                    vec![op.id],
                );
            }
        }
        let Some(write) = own.get(&(op.client, op.key.as_str())) else {
            continue;
        };
        if write.complete_ns >= op.invoke_ns {
            continue;
        }
        let seen = op.read.clone().flatten();
        if seen.as_deref() != write.value.as_deref() {
            findings.anomaly(
                "session",
                format!(
                    "read of {} after the client's own acknowledged write ({:?}) saw {seen:?}",
                    op.key, write.value
                ),
                vec![write.id, op.id],
            );
        }
    }
}

/// (d)
fn check_epochs(ops: &[Op], findings: &mut Findings) {
    let mut acked: Vec<(&Op, Position)> = ops
        .iter()
        .filter(|o| o.changed_data())
        .filter_map(|o| o.version.map(|v| (o, v)))
        .collect();
    let mut positions: HashMap<Position, usize> = HashMap::new();
    for (op, v) in &acked {
        if let Some(other) = positions.insert(*v, op.id) {
            findings.anomaly(
                "epoch",
                format!("two acknowledged writes at the same position {v}"),
                vec![other, op.id],
            );
        }
    }
    // Sweep in invoke order, with the highest epoch of writes acknowledged
    // before each invoke.
    let mut by_complete = acked.clone();
    by_complete.sort_by_key(|(o, _)| o.complete_ns);
    acked.sort_by_key(|(o, _)| o.invoke_ns);
    let mut next = 0;
    let mut newest: Option<(&Op, Position)> = None;
    for (op, v) in &acked {
        while next < by_complete.len() && by_complete[next].0.complete_ns < op.invoke_ns {
            let (done, dv) = by_complete[next];
            if newest.is_none_or(|(_, nv)| dv.epoch > nv.epoch) {
                newest = Some((done, dv));
            }
            next += 1;
        }
        if let Some((earlier, ev)) = newest {
            if v.epoch < ev.epoch {
                findings.anomaly(
                    "epoch",
                    format!(
                        "write acknowledged at {v} (epoch {}) although a write had been \
                         acknowledged at {ev} (epoch {}) before it was sent",
                        v.epoch, ev.epoch
                    ),
                    vec![earlier.id, op.id],
                );
            }
        }
    }
}

/// Codes the server must never answer under faults.
fn check_codes(ops: &[Op], findings: &mut Findings) {
    for op in ops {
        if op.code == "internal" || op.code.starts_with("http_5") && op.code != "http_503" {
            findings.anomaly(
                "unexpected_code",
                format!("{} of {} answered {}", op.kind.name(), op.key, op.code),
                vec![op.id],
            );
        }
    }
}

/// (f) Positions cut and set aside under `data_dir`'s `quarantine/`, and
/// the acknowledged writes among them.
pub fn check_quarantine(data_dir: &Path, ops: &[Op], findings: &mut Findings) {
    let index = data_dir.join("quarantine").join("index.jsonl");
    let Ok(text) = std::fs::read_to_string(&index) else {
        return;
    };
    let acked: HashMap<Position, usize> = ops
        .iter()
        .filter(|o| o.kind.writes() && o.outcome == Outcome::Ok)
        .filter_map(|o| o.version.map(|v| (v, o.id)))
        .collect();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            findings.anomaly(
                "quarantine",
                format!("{}: unreadable line {line:?}", index.display()),
                vec![],
            );
            continue;
        };
        let parse =
            |v: &serde_json::Value| -> Option<Position> { serde_json::from_value(v.clone()).ok() };
        if let (Some(first), Some(last)) = (parse(&v["first"]), parse(&v["last"])) {
            findings.quarantined_entries += v["count"].as_u64().unwrap_or(0) as usize;
            for (pos, id) in &acked {
                if (first.index..=last.index).contains(&pos.index)
                    && (first.epoch..=last.epoch).contains(&pos.epoch)
                {
                    findings.anomaly(
                        "quarantine",
                        format!(
                            "acknowledged write at {pos} was cut ({}..{} in {})",
                            first,
                            last,
                            index.display()
                        ),
                        vec![*id],
                    );
                }
            }
        } else if let Some(cut_after) = parse(&v["cut_after"]) {
            // A snapshot set aside whole: its entries after the cut.
            for (pos, id) in &acked {
                if pos.index > cut_after.index && pos.epoch <= cut_after.epoch {
                    findings.anomaly(
                        "quarantine",
                        format!("acknowledged write at {pos} is in a snapshot set aside after {cut_after}"),
                        vec![*id],
                    );
                }
            }
        }
    }
}

/// The operations around an anomaly: those involved, and every operation
/// on the same keys that overlaps them in time, in time order.
pub fn around(ops: &[Op], anomaly: &Anomaly, limit: usize) -> Vec<String> {
    let involved: Vec<&Op> = anomaly.ops.iter().filter_map(|id| ops.get(*id)).collect();
    let Some(from) = involved.iter().map(|o| o.invoke_ns).min() else {
        return Vec::new();
    };
    let to = involved.iter().map(|o| o.complete_ns).max().unwrap_or(from);
    let keys: HashSet<&str> = involved.iter().map(|o| o.key.as_str()).collect();
    let mut near: Vec<&Op> = ops
        .iter()
        .filter(|o| {
            anomaly.ops.contains(&o.id)
                || (keys.contains(o.key.as_str()) && o.complete_ns >= from && o.invoke_ns <= to)
        })
        .collect();
    near.sort_by_key(|o| o.invoke_ns);
    let t0 = near.first().map(|o| o.invoke_ns).unwrap_or(0);
    near.iter().take(limit).map(|o| o.describe(t0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::history::Form;

    /// One register key's made-up history: an acknowledged write of `0.1`,
    /// then one compare-and-set from `cas`, alone; the final value `last`.
    fn cas_history(cas: impl FnOnce(&mut Op), last: &str) -> Findings {
        let mut write = Op::made_up(0, Kind::Write, "r/0/0", Outcome::Ok, 0);
        write.value = Some("0.1".into());
        let mut op = Op::made_up(1, Kind::Cas, "r/0/0", Outcome::Ok, 10);
        op.expect = Some(Some("0.1".into()));
        op.value = Some("1.1".into());
        cas(&mut op);
        let data = FinalData::from([("r/0/0".to_string(), last.to_string())]);
        check_history(&[write, op], &data, &FinalLists::new(), true, 100)
    }

    fn register_anomaly(findings: &Findings) -> bool {
        findings
            .anomalies
            .iter()
            .any(|a| a.check == "register" && a.ops.contains(&1))
    }

    #[test]
    fn compare_and_sets_that_did_what_they_said_pass() {
        for form in [None, Some(Form::Eval), Some(Form::Watch)] {
            let applied = cas_history(
                |op| {
                    op.form = form;
                    op.applied = Some(true);
                },
                "1.1",
            );
            assert!(applied.anomalies.is_empty(), "{:?}", applied.anomalies);
            let not_applied = cas_history(
                |op| {
                    op.form = form;
                    op.expect = Some(None);
                    op.applied = Some(false);
                },
                "0.1",
            );
            assert!(
                not_applied.anomalies.is_empty(),
                "{:?}",
                not_applied.anomalies
            );
        }
    }

    #[test]
    fn a_script_that_says_not_applied_although_its_compare_held_is_reported() {
        let findings = cas_history(
            |op| {
                op.form = Some(Form::Eval);
                op.applied = Some(false);
            },
            "0.1",
        );
        assert!(register_anomaly(&findings), "{:?}", findings.anomalies);
    }

    #[test]
    fn a_transaction_that_applied_over_another_value_is_reported() {
        let findings = cas_history(
            |op| {
                op.form = Some(Form::Watch);
                op.expect = Some(Some("9.9".into()));
                op.applied = Some(true);
            },
            "1.1",
        );
        assert!(register_anomaly(&findings), "{:?}", findings.anomalies);
    }

    #[test]
    fn a_compare_and_set_said_applied_whose_value_is_gone_is_reported() {
        // Applied, and nothing else wrote: the final value must be its own.
        let findings = cas_history(|op| op.applied = Some(true), "0.1");
        assert!(
            findings.anomalies.iter().any(|a| a.check == "register"),
            "{:?}",
            findings.anomalies
        );
    }

    #[test]
    fn the_queue_checker_runs_with_the_others() {
        let mut push = Op::made_up(0, Kind::Push, "q/0", Outcome::Ok, 0);
        push.value = Some("0.1".into());
        let data = FinalData::from([("s/0/0".to_string(), "x".to_string())]);
        let findings = check_history(&[push], &data, &FinalLists::new(), true, 100);
        assert!(
            findings
                .anomalies
                .iter()
                .any(|a| a.check == "queue" && a.ops == [0]),
            "{:?}",
            findings.anomalies
        );
    }
}
