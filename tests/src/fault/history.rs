//! What every client did and was told: one [`Op`] per operation, with its
//! call and return times, its outcome, and the versions it carried.
//!
//! Times are nanoseconds since the UNIX epoch from one monotonic clock
//! anchored once ([`crate::loadgen::history::Clock`]), so they order the
//! operations of all clients and line up with the faults and the logs.

use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use proto_common::Position;
use serde::Serialize;

use crate::loadgen::history::Clock;

/// What an operation was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A put of a key written only this once (the set workload).
    Add,
    /// A put of a register key.
    Write,
    /// A `consistency=linearizable` get of a register key.
    Read,
    /// A transaction: if the register holds `expect`, put `value`.
    Cas,
    /// A get of a key this client wrote, with `X-Min-Version` (its session).
    ReadAt,
    /// The final read of every key, after the faults (linearizable).
    Final,
    /// Proxy mode: an `RPUSH` of a unique item to a queue key.
    Push,
    /// Proxy mode: a `BLPOP` of the queue keys with a short timeout.
    Pop,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Add,
        Kind::Write,
        Kind::Read,
        Kind::Cas,
        Kind::ReadAt,
        Kind::Final,
        Kind::Push,
        Kind::Pop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Add => "add",
            Kind::Write => "write",
            Kind::Read => "read",
            Kind::Cas => "cas",
            Kind::ReadAt => "read_at",
            Kind::Final => "final_read",
            Kind::Push => "push",
            Kind::Pop => "pop",
        }
    }

    /// Whether it may change the data (a pop removes an item).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Kind::Add | Kind::Write | Kind::Cas | Kind::Push | Kind::Pop
        )
    }
}

/// How a Redis client ran a compare-and-set (proxy mode); the HTTP
/// clients send one transaction and record none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// `EVAL` of a Lua script that compares and sets.
    Eval,
    /// `WATCH`, `GET`, compared by the client, then `MULTI`/`SET`/`EXEC`.
    Watch,
}

impl Form {
    pub fn name(self) -> &'static str {
        match self {
            Form::Eval => "eval",
            Form::Watch => "watch",
        }
    }
}

/// What the client knows of the operation's effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered: done (a write acknowledged; a read answered; a compare
    /// that failed is a definite "not applied").
    Ok,
    /// Certainly not done: refused before it was written, or never sent.
    Fail,
    /// Maybe done: no answer, or `outcome_unknown`.
    Unknown,
}

/// One operation.
#[derive(Clone, Debug, Serialize)]
pub struct Op {
    /// Its number in the history (the order operations were recorded).
    pub id: usize,
    pub client: u32,
    pub kind: Kind,
    /// The key; a pop's is the queue it took its item from, or the queues
    /// it asked for (space-separated) when it took none.
    pub key: String,
    /// The value a write sent (a push's item).
    pub value: Option<String>,
    /// A compare-and-set's expected value (`Some(None)`: must be missing).
    pub expect: Option<Option<String>>,
    /// What a read returned (`Some(None)`: the key was missing); the item
    /// a pop took (`Some(None)`: none before its timeout); the value the
    /// `GET` of a `WATCH` compare-and-set saw.
    pub read: Option<Option<String>>,
    /// A compare-and-set's answer: applied (200, `1`, an `EXEC` that ran)
    /// or not (409 compare failed, `0`, a compare that failed at the
    /// client, an `EXEC` answered null).
    pub applied: Option<bool>,
    /// How a Redis client ran a compare-and-set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form: Option<Form>,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub outcome: Outcome,
    /// `ok`, the error code of the answer, or the transport failure.
    pub code: String,
    /// The node the request was sent to.
    pub node: String,
    /// A write's own position; a read's `X-Data-Version`.
    pub version: Option<Position>,
    /// A read's `X-Key-Version`.
    pub key_version: Option<Position>,
    /// The `X-Min-Version` a `read_at` sent.
    pub min_version: Option<Position>,
}

impl Op {
    /// The kind, with the form of a Redis compare-and-set (`cas/eval`).
    pub fn label(&self) -> String {
        match self.form {
            Some(form) => format!("{}/{}", self.kind.name(), form.name()),
            None => self.kind.name().to_string(),
        }
    }

    /// Whether it was acknowledged as having changed the data: a write
    /// answered ok, not a compare-and-set that did not apply, not a pop
    /// that took nothing.
    pub fn changed_data(&self) -> bool {
        self.kind.writes()
            && self.outcome == Outcome::Ok
            && self.applied != Some(false)
            && !(self.kind == Kind::Pop && self.read == Some(None))
    }

    /// A made-up operation for the checkers' tests: `id`, called at `t` ns
    /// and answered 5 ns later, on node `r1`.
    #[cfg(test)]
    pub(crate) fn made_up(id: usize, kind: Kind, key: &str, outcome: Outcome, t: u64) -> Op {
        Op {
            id,
            client: 0,
            kind,
            key: key.into(),
            value: None,
            expect: None,
            read: None,
            applied: None,
            form: None,
            invoke_ns: t,
            complete_ns: t + 5,
            outcome,
            code: if outcome == Outcome::Ok { "ok" } else { "x" }.into(),
            node: "r1".into(),
            version: None,
            key_version: None,
            min_version: None,
        }
    }

    /// One line for a report: who, what, when, and what came back.
    pub fn describe(&self, t0: u64) -> String {
        let ms = |ns: u64| (ns.saturating_sub(t0)) as f64 / 1e6;
        let mut s = format!(
            "#{} c{} {} {} @{} [{:.1}..{:.1} ms] {:?} {}",
            self.id,
            self.client,
            self.label(),
            self.key,
            self.node,
            ms(self.invoke_ns),
            ms(self.complete_ns),
            self.outcome,
            self.code
        );
        if let Some(e) = &self.expect {
            s += &format!(" expect={e:?}");
        }
        if let Some(v) = &self.value {
            s += &format!(" value={v}");
        }
        if let Some(r) = &self.read {
            s += &format!(" read={r:?}");
        }
        if let Some(a) = self.applied {
            s += &format!(" applied={a}");
        }
        if let Some(v) = self.version {
            s += &format!(" version={v}");
        }
        if let Some(v) = self.key_version {
            s += &format!(" key_version={v}");
        }
        if let Some(v) = self.min_version {
            s += &format!(" min_version={v}");
        }
        s
    }
}

/// The history of a run, appended to by every client.
pub struct History {
    clock: Clock,
    ops: Mutex<Vec<Op>>,
}

impl History {
    pub fn new() -> History {
        History {
            clock: Clock::start(),
            ops: Mutex::new(Vec::new()),
        }
    }

    /// Now, on the history's clock.
    pub fn now_ns(&self) -> u64 {
        self.clock.unix_ns(Instant::now())
    }

    /// Records `op`, numbering it; returns its number.
    pub fn record(&self, mut op: Op) -> usize {
        let mut ops = self.ops.lock().expect("history lock");
        let id = ops.len();
        op.id = id;
        ops.push(op);
        id
    }

    /// How many operations so far satisfy `pred` (without copying them).
    pub fn count(&self, pred: impl Fn(&Op) -> bool) -> usize {
        self.ops
            .lock()
            .expect("history lock")
            .iter()
            .filter(|o| pred(o))
            .count()
    }

    /// Every operation so far, in the order recorded.
    pub fn snapshot(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock").clone()
    }

    /// Writes every operation as one JSON line.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut out = BufWriter::new(std::fs::File::create(path)?);
        for op in self.ops.lock().expect("history lock").iter() {
            serde_json::to_writer(&mut out, op)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}
