//! Is one key's history linearizable as a register with compare-and-set?
//!
//! The search is Wing and Gong's, with Lowe's memoization, as Porcupine
//! does it: walk the call and return events in time order; at a call, try
//! to linearize that operation now (its effect on the register must give
//! the answer the client saw); at a return whose operation is not yet
//! linearized, undo the last choice and try the next. A configuration
//! (which operations are linearized, the register's value) seen before is
//! not explored again, which keeps real histories tractable.
//!
//! **Unknown outcomes.** An operation whose client got no answer (or an
//! `outcome_unknown` one) may have taken effect at any moment after its
//! call, or never: its return is placed after every other event, and its
//! step accepts either result (a compare-and-set applies if its compare
//! holds where it is placed). Placing it last is the same as "never".
//! Operations that definitely failed (refused before being written) are
//! left out by the caller: if one took effect after all, some read will
//! show a value no linearization can explain.

use std::collections::HashSet;

/// The register's value; `None` is a missing key.
pub type Value = Option<String>;

/// What one operation did, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegOp {
    /// A put of a value (its result carries nothing to check).
    Write(String),
    /// A linearizable read that returned this value.
    Read(Value),
    /// Put `new` if the value is `expect`; `applied` is what the client
    /// was told (`None`: not known).
    Cas {
        expect: Value,
        new: String,
        applied: Option<bool>,
    },
}

/// One operation of the history.
#[derive(Clone, Debug)]
pub struct Event {
    pub op: RegOp,
    /// When the client sent it.
    pub call: u64,
    /// When the client had its answer; `None` when the outcome is unknown.
    pub ret: Option<u64>,
    /// The caller's own number for it (reported back on a violation).
    pub id: usize,
}

/// The verdict on one key's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the answers. `stuck` is the operation (caller's
    /// id) whose answer could not be placed in the deepest attempt, and
    /// `prefix` the ids that attempt had linearized, in order.
    Violation {
        stuck: usize,
        prefix: Vec<usize>,
    },
    /// The search was abandoned after this many steps (too many
    /// concurrent operations of unknown outcome): no verdict.
    GaveUp {
        steps: u64,
    },
}

/// The effect of `op` on `state`, if its answer is possible there.
fn step(state: &Value, op: &RegOp) -> Option<Value> {
    match op {
        RegOp::Write(v) => Some(Some(v.clone())),
        RegOp::Read(seen) => (seen == state).then(|| state.clone()),
        RegOp::Cas {
            expect,
            new,
            applied,
        } => {
            let holds = state == expect;
            match applied {
                Some(told) if *told != holds => None,
                _ if holds => Some(Some(new.clone())),
                _ => Some(state.clone()),
            }
        }
    }
}

/// One entry of the doubly linked event list.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// Index into the events.
    op: usize,
    is_call: bool,
    /// For a call: the node of its return.
    partner: usize,
    prev: usize,
    next: usize,
}

/// Index of the list's head sentinel.
const HEAD: usize = 0;
/// "No node".
const NIL: usize = usize::MAX;

struct List {
    nodes: Vec<Node>,
}

impl List {
    /// Calls and returns in time order (a call before a return at the same
    /// instant, so operations that touch are taken as concurrent: the
    /// permissive reading, never a false alarm).
    fn new(events: &[Event]) -> List {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(events.len() * 2);
        for (i, e) in events.iter().enumerate() {
            order.push((e.call, false, i));
            order.push((e.ret.unwrap_or(u64::MAX), true, i));
        }
        order.sort();
        let mut nodes = vec![Node {
            op: NIL,
            is_call: false,
            partner: NIL,
            prev: NIL,
            next: NIL,
        }];
        let mut call_node = vec![NIL; events.len()];
        for (at, (_, is_ret, op)) in order.iter().enumerate() {
            let idx = at + 1;
            nodes.push(Node {
                op: *op,
                is_call: !is_ret,
                partner: NIL,
                prev: idx - 1,
                next: if at + 1 < order.len() { idx + 1 } else { NIL },
            });
            if *is_ret {
                nodes[call_node[*op]].partner = idx;
            } else {
                call_node[*op] = idx;
            }
        }
        nodes[HEAD].next = if order.is_empty() { NIL } else { 1 };
        List { nodes }
    }

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        let ret = self.nodes[call].partner;
        for n in [call, ret] {
            let Node { prev, next, .. } = self.nodes[n];
            self.nodes[prev].next = next;
            if next != NIL {
                self.nodes[next].prev = prev;
            }
        }
    }

    /// Puts them back (the reverse of the last `lift`).
    fn unlift(&mut self, call: usize) {
        let ret = self.nodes[call].partner;
        for n in [ret, call] {
            let Node { prev, next, .. } = self.nodes[n];
            self.nodes[prev].next = n;
            if next != NIL {
                self.nodes[next].prev = n;
            }
        }
    }
}

/// Checks one key's history from the empty register, giving up after
/// `max_steps` steps of the search.
pub fn check(events: &[Event], max_steps: u64) -> Verdict {
    let mut list = List::new(events);
    let words = events.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, Value)> = HashSet::new();
    let mut state: Value = None;
    // (call node, state before it)
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let mut deepest: (usize, usize, Vec<usize>) = (0, NIL, Vec::new());
    let mut entry = list.nodes[HEAD].next;
    let mut steps = 0u64;
    while list.nodes[HEAD].next != NIL {
        steps += 1;
        if steps > max_steps {
            return Verdict::GaveUp { steps };
        }
        let node = list.nodes[entry];
        if node.is_call {
            let op = node.op;
            if let Some(next) = step(&state, &events[op].op) {
                let mut with = linearized.clone();
                with[op / 64] |= 1 << (op % 64);
                if seen.insert((with.clone(), next.clone())) {
                    stack.push((entry, state));
                    state = next;
                    linearized = with;
                    list.lift(entry);
                    entry = list.nodes[HEAD].next;
                    continue;
                }
            }
            entry = node.next;
        } else {
            // The return of an operation not linearized yet: this branch
            // cannot be completed.
            if stack.len() >= deepest.0 {
                let prefix = stack.iter().map(|(n, _)| events[list.nodes[*n].op].id);
                deepest = (stack.len(), events[node.op].id, prefix.collect());
            }
            let Some((call, before)) = stack.pop() else {
                return Verdict::Violation {
                    stuck: deepest.1,
                    prefix: deepest.2,
                };
            };
            let op = list.nodes[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = before;
            list.unlift(call);
            entry = list.nodes[call].next;
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: usize, op: RegOp, call: u64, ret: Option<u64>) -> Event {
        Event { op, call, ret, id }
    }
    fn w(v: &str) -> RegOp {
        RegOp::Write(v.to_string())
    }
    fn r(v: Option<&str>) -> RegOp {
        RegOp::Read(v.map(str::to_string))
    }
    fn cas(expect: Option<&str>, new: &str, applied: Option<bool>) -> RegOp {
        RegOp::Cas {
            expect: expect.map(str::to_string),
            new: new.to_string(),
            applied,
        }
    }
    const LIMIT: u64 = 1_000_000;

    #[test]
    fn sequential_writes_and_reads_are_linearizable() {
        let h = [
            ev(0, r(None), 0, Some(1)),
            ev(1, w("a"), 2, Some(3)),
            ev(2, r(Some("a")), 4, Some(5)),
            ev(3, cas(Some("a"), "b", Some(true)), 6, Some(7)),
            ev(4, cas(Some("a"), "c", Some(false)), 8, Some(9)),
            ev(5, r(Some("b")), 10, Some(11)),
        ];
        assert_eq!(check(&h, LIMIT), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_rejected() {
        // The write of b finished before the read began, which saw a.
        let h = [
            ev(0, w("a"), 0, Some(1)),
            ev(1, w("b"), 2, Some(3)),
            ev(2, r(Some("a")), 4, Some(5)),
        ];
        assert_eq!(
            check(&h, LIMIT),
            Verdict::Violation {
                stuck: 2,
                prefix: vec![0, 1]
            }
        );
    }

    #[test]
    fn concurrent_operations_may_be_ordered_either_way() {
        // The read overlaps the write of b: a or b are both fine.
        let base = [ev(0, w("a"), 0, Some(1)), ev(1, w("b"), 2, Some(6))];
        for seen in ["a", "b"] {
            let mut h = base.to_vec();
            h.push(ev(2, r(Some(seen)), 3, Some(5)));
            assert_eq!(check(&h, LIMIT), Verdict::Linearizable, "read {seen}");
        }
    }

    #[test]
    fn reads_that_go_back_in_time_are_rejected() {
        // Two reads during a write of b: the later one may not go back.
        let h = [
            ev(0, w("a"), 0, Some(1)),
            ev(1, w("b"), 2, Some(10)),
            ev(2, r(Some("b")), 3, Some(4)),
            ev(3, r(Some("a")), 5, Some(6)),
        ];
        assert!(matches!(check(&h, LIMIT), Verdict::Violation { .. }));
    }

    #[test]
    fn a_value_nobody_wrote_is_rejected() {
        let h = [ev(0, w("a"), 0, Some(1)), ev(1, r(Some("z")), 2, Some(3))];
        assert!(matches!(
            check(&h, LIMIT),
            Verdict::Violation { stuck: 1, .. }
        ));
    }

    #[test]
    fn an_unknown_write_may_have_happened_or_not() {
        for seen in [None, Some("a")] {
            let h = [
                ev(0, w("a"), 0, None),
                ev(1, r(seen), 5, Some(6)),
                ev(2, r(seen), 7, Some(8)),
            ];
            assert_eq!(check(&h, LIMIT), Verdict::Linearizable, "read {seen:?}");
        }
    }

    #[test]
    fn an_unknown_write_cannot_be_seen_then_unseen() {
        let h = [
            ev(0, w("a"), 0, None),
            ev(1, r(Some("a")), 5, Some(6)),
            ev(2, r(None), 7, Some(8)),
        ];
        assert!(matches!(check(&h, LIMIT), Verdict::Violation { .. }));
    }

    #[test]
    fn an_unknown_cas_applies_only_where_its_compare_holds() {
        let base = [
            ev(0, w("a"), 0, Some(1)),
            ev(1, cas(Some("x"), "b", None), 2, None),
        ];
        // Its compare never held: b cannot appear.
        let mut h = base.to_vec();
        h.push(ev(2, r(Some("b")), 5, Some(6)));
        assert!(matches!(check(&h, LIMIT), Verdict::Violation { .. }));
        // With a compare that held, it may have applied.
        let h = [
            ev(0, w("a"), 0, Some(1)),
            ev(1, cas(Some("a"), "b", None), 2, None),
            ev(2, r(Some("b")), 5, Some(6)),
        ];
        assert_eq!(check(&h, LIMIT), Verdict::Linearizable);
    }

    #[test]
    fn a_cas_told_it_failed_must_have_seen_another_value() {
        let h = [
            ev(0, w("a"), 0, Some(1)),
            ev(1, cas(Some("a"), "b", Some(false)), 2, Some(3)),
        ];
        assert!(matches!(
            check(&h, LIMIT),
            Verdict::Violation { stuck: 1, .. }
        ));
    }

    #[test]
    fn a_lost_acknowledged_write_is_rejected() {
        // Acknowledged, then gone: the final read sees the value before it.
        let h = [
            ev(0, w("a"), 0, Some(1)),
            ev(1, w("b"), 2, Some(3)),
            ev(2, r(Some("a")), 100, Some(101)),
        ];
        assert!(matches!(
            check(&h, LIMIT),
            Verdict::Violation { stuck: 2, .. }
        ));
    }

    #[test]
    fn many_concurrent_clients_are_checked_quickly() {
        // 400 operations, each overlapping the next eleven, some of
        // unknown outcome: the memoized search must finish well inside
        // the step limit.
        let mut h = Vec::new();
        let mut value: Option<String> = None;
        for i in 0..400usize {
            let t = i as u64;
            if i % 50 == 7 {
                // Unknown, and its compare never holds: a no-op.
                h.push(ev(i, cas(Some("never"), "x", None), t, None));
                continue;
            }
            let op = match i % 4 {
                0 | 1 => w(&format!("v{i}")),
                2 => RegOp::Read(value.clone()),
                _ => RegOp::Cas {
                    expect: value.clone(),
                    new: format!("c{i}"),
                    applied: Some(true),
                },
            };
            match &op {
                RegOp::Write(v) | RegOp::Cas { new: v, .. } => value = Some(v.clone()),
                RegOp::Read(_) => {}
            }
            h.push(ev(i, op, t, Some(t + 12)));
        }
        assert_eq!(check(&h, LIMIT), Verdict::Linearizable);
    }
}
