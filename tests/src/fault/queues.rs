//! (g) **queues** (proxy mode): what the pushes and blocking pops of the
//! queue workload, and the queues' contents after the faults, must show.
//!
//! Every item is pushed once (`{client}.{n}`), so an item names its push.
//! An item popped by an answered pop, or left in a queue at the end, must
//! have been pushed (not refused: `TRYAGAIN`), to that queue, and not
//! after the pop was answered; no item is popped twice, or popped and
//! still there. Every acknowledged push is, at the end, either popped by
//! an answered pop or still in its queue, except at most as many as there
//! were pops of unknown outcome: each may have taken one item, and its
//! client never learned which.

use std::collections::{BTreeMap, HashMap};

use super::checks::Findings;
use super::history::{Kind, Op, Outcome};

/// Each queue's items at the end, head first (`LRANGE key 0 -1`).
pub type FinalLists = BTreeMap<String, Vec<String>>;

/// (g)
pub fn check_queues(ops: &[Op], lists: &FinalLists, findings: &mut Findings) {
    let mut pushes: HashMap<&str, &Op> = HashMap::new();
    for op in ops.iter().filter(|o| o.kind == Kind::Push) {
        if let Some(item) = op.value.as_deref() {
            pushes.insert(item, op);
        }
    }
    let mut popped: HashMap<&str, &Op> = HashMap::new();
    let mut unknown_pops = Vec::new();
    for op in ops.iter().filter(|o| o.kind == Kind::Pop) {
        match (op.outcome, &op.read) {
            (Outcome::Unknown, _) => unknown_pops.push(op.id),
            (Outcome::Ok, Some(Some(item))) => {
                findings.popped_items += 1;
                if let Some(first) = popped.insert(item, op) {
                    findings.anomaly(
                        "queue",
                        format!("{item} was popped twice (#{} and #{})", first.id, op.id),
                        vec![first.id, op.id],
                    );
                }
                check_pushed(&pushes, item, &op.key, Some(op), findings);
            }
            (Outcome::Ok, _) => findings.empty_pops += 1,
            (Outcome::Fail, _) => {}
        }
    }
    findings.unknown_pops = unknown_pops.len();
    let mut left: HashMap<&str, &str> = HashMap::new();
    for (queue, items) in lists {
        for item in items {
            findings.items_left += 1;
            if let Some(other) = left.insert(item, queue) {
                findings.anomaly(
                    "queue",
                    format!("{item} is in {other} and in {queue} at the end"),
                    pushes
                        .get(item.as_str())
                        .map(|p| p.id)
                        .into_iter()
                        .collect(),
                );
            }
            if let Some(pop) = popped.get(item.as_str()) {
                findings.anomaly(
                    "queue",
                    format!(
                        "{item} was popped (#{}) but is still in {queue} at the end",
                        pop.id
                    ),
                    pushes
                        .get(item.as_str())
                        .map(|p| p.id)
                        .into_iter()
                        .chain([pop.id])
                        .collect(),
                );
            }
            check_pushed(&pushes, item, queue, None, findings);
        }
    }
    let mut missing: Vec<&Op> = pushes
        .iter()
        .filter(|(item, op)| {
            op.outcome == Outcome::Ok && !popped.contains_key(*item) && !left.contains_key(*item)
        })
        .map(|(_, op)| *op)
        .collect();
    missing.sort_by_key(|o| o.id);
    findings.acked_pushes = pushes.values().filter(|o| o.outcome == Outcome::Ok).count();
    findings.pushes_unaccounted = missing.len();
    if missing.len() > unknown_pops.len() {
        let shown: Vec<String> = missing
            .iter()
            .take(10)
            .map(|o| {
                format!(
                    "#{} {} to {}",
                    o.id,
                    o.value.as_deref().unwrap_or(""),
                    o.key
                )
            })
            .collect();
        findings.anomaly(
            "queue",
            format!(
                "{} acknowledged pushes are neither popped by an answered pop nor in their \
                 queue at the end, and only {} pops had an unknown outcome (each may have \
                 taken one): {}{}",
                missing.len(),
                unknown_pops.len(),
                shown.join(", "),
                if missing.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            ),
            missing.iter().map(|o| o.id).chain(unknown_pops).collect(),
        );
    }
}

/// An item popped from, or left in, `queue` must have been pushed there
/// (and not refused), and not after the pop (`pop`) was answered.
fn check_pushed(
    pushes: &HashMap<&str, &Op>,
    item: &str,
    queue: &str,
    pop: Option<&Op>,
    findings: &mut Findings,
) {
    let (what, pop_ids) = match pop {
        Some(pop) => (format!("popped from {queue} (#{})", pop.id), vec![pop.id]),
        None => (format!("in {queue} at the end"), vec![]),
    };
    let Some(push) = pushes.get(item) else {
        findings.anomaly(
            "queue",
            format!("{item} was {what} but no client pushed it"),
            pop_ids,
        );
        return;
    };
    let ids: Vec<usize> = [push.id].into_iter().chain(pop_ids).collect();
    if push.outcome == Outcome::Fail {
        findings.anomaly(
            "queue",
            format!(
                "{item} was {what} but its push was answered as failed ({})",
                push.code
            ),
            ids,
        );
    } else if push.key != queue {
        findings.anomaly(
            "queue",
            format!("{item} was {what} but was pushed to {}", push.key),
            ids,
        );
    } else if pop.is_some_and(|p| p.complete_ns < push.invoke_ns) {
        findings.anomaly(
            "queue",
            format!("{item} was {what}, answered before its push was sent"),
            ids,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::history::Op;

    /// A history under construction: operations one after another, 10 ns
    /// apart, each taking 5 ns.
    #[derive(Default)]
    struct Script {
        ops: Vec<Op>,
    }

    impl Script {
        fn op(&mut self, kind: Kind, key: &str, outcome: Outcome) -> &mut Op {
            let id = self.ops.len();
            let op = Op::made_up(id, kind, key, outcome, 10 * id as u64);
            self.ops.push(op);
            self.ops.last_mut().expect("just pushed")
        }

        fn push(&mut self, queue: &str, item: &str, outcome: Outcome) -> usize {
            let op = self.op(Kind::Push, queue, outcome);
            op.value = Some(item.into());
            op.id
        }

        fn pop(&mut self, queue: &str, item: Option<&str>, outcome: Outcome) -> usize {
            let op = self.op(Kind::Pop, queue, outcome);
            if outcome == Outcome::Ok {
                op.read = Some(item.map(String::from));
            }
            op.id
        }

        fn check(&self, lists: &[(&str, &[&str])]) -> Findings {
            let lists = lists
                .iter()
                .map(|(q, items)| (q.to_string(), items.iter().map(|i| i.to_string()).collect()))
                .collect();
            let mut findings = Findings::default();
            check_queues(&self.ops, &lists, &mut findings);
            findings
        }
    }

    fn reported(findings: &Findings, words: &str, ops: &[usize]) -> bool {
        findings.anomalies.iter().any(|a| {
            a.check == "queue" && a.what.contains(words) && ops.iter().all(|id| a.ops.contains(id))
        })
    }

    #[test]
    fn a_clean_history_has_no_anomaly() {
        let mut s = Script::default();
        s.push("q/0", "0.1", Outcome::Ok);
        s.push("q/1", "0.2", Outcome::Ok);
        s.push("q/1", "0.3", Outcome::Unknown);
        s.push("q/1", "0.4", Outcome::Fail);
        s.pop("q/0", Some("0.1"), Outcome::Ok);
        s.pop("q/0 q/1 q/2", None, Outcome::Ok);
        let f = s.check(&[("q/1", &["0.2", "0.3"])]);
        assert!(f.anomalies.is_empty(), "{:?}", f.anomalies);
        assert_eq!((f.acked_pushes, f.popped_items, f.items_left), (2, 1, 2));
        assert_eq!((f.empty_pops, f.pushes_unaccounted), (1, 0));
    }

    #[test]
    fn a_lost_push_is_reported() {
        let mut s = Script::default();
        let lost = s.push("q/0", "0.1", Outcome::Ok);
        s.push("q/0", "0.2", Outcome::Ok);
        s.pop("q/0", Some("0.2"), Outcome::Ok);
        let f = s.check(&[]);
        assert!(reported(&f, "neither popped", &[lost]), "{:?}", f.anomalies);
        assert_eq!(f.pushes_unaccounted, 1);
    }

    #[test]
    fn a_pop_of_unknown_outcome_may_have_taken_one_item_not_two() {
        let mut s = Script::default();
        s.push("q/0", "0.1", Outcome::Ok);
        let unknown = s.pop("q/0 q/1 q/2", None, Outcome::Unknown);
        let f = s.check(&[]);
        assert!(f.anomalies.is_empty(), "{:?}", f.anomalies);
        let second = s.push("q/2", "0.3", Outcome::Ok);
        let f = s.check(&[]);
        assert!(
            reported(&f, "only 1 pops", &[second, unknown]),
            "{:?}",
            f.anomalies
        );
    }

    #[test]
    fn a_double_pop_is_reported() {
        let mut s = Script::default();
        s.push("q/0", "0.1", Outcome::Ok);
        let first = s.pop("q/0", Some("0.1"), Outcome::Ok);
        let second = s.pop("q/0", Some("0.1"), Outcome::Ok);
        let f = s.check(&[]);
        assert!(
            reported(&f, "popped twice", &[first, second]),
            "{:?}",
            f.anomalies
        );
    }

    #[test]
    fn an_item_popped_and_still_queued_is_reported() {
        let mut s = Script::default();
        let push = s.push("q/0", "0.1", Outcome::Ok);
        let pop = s.pop("q/0", Some("0.1"), Outcome::Ok);
        let f = s.check(&[("q/0", &["0.1"])]);
        assert!(
            reported(&f, "still in q/0", &[push, pop]),
            "{:?}",
            f.anomalies
        );
    }

    #[test]
    fn a_phantom_pop_is_reported() {
        let mut s = Script::default();
        let phantom = s.pop("q/1", Some("7.7"), Outcome::Ok);
        let refused = s.push("q/1", "0.2", Outcome::Fail);
        let of_refused = s.pop("q/1", Some("0.2"), Outcome::Ok);
        let f = s.check(&[("q/2", &["9.9"])]);
        assert!(
            reported(&f, "no client pushed it", &[phantom]),
            "{:?}",
            f.anomalies
        );
        assert!(
            reported(&f, "answered as failed", &[refused, of_refused]),
            "{:?}",
            f.anomalies
        );
        assert!(
            reported(&f, "9.9 was in q/2 at the end but no client", &[]),
            "{:?}",
            f.anomalies
        );
    }

    #[test]
    fn an_item_from_another_queue_or_popped_before_its_push_is_reported() {
        let mut s = Script::default();
        let early = s.pop("q/0", Some("0.2"), Outcome::Ok);
        let push = s.push("q/0", "0.2", Outcome::Ok);
        let elsewhere = s.push("q/1", "0.3", Outcome::Ok);
        let pop = s.pop("q/2", Some("0.3"), Outcome::Ok);
        let f = s.check(&[]);
        assert!(
            reported(&f, "before its push was sent", &[push, early]),
            "{:?}",
            f.anomalies
        );
        assert!(
            reported(&f, "was pushed to q/1", &[elsewhere, pop]),
            "{:?}",
            f.anomalies
        );
    }
}
