//! A family of commands run against one server, recorded as a transcript
//! of steps (what was done, what came back, normalized where the servers
//! may rightly differ), so runs against understudy and against a
//! redis-server alone compare step by step.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use understudy_tests::client::resp_raw::{RawResp, Value};
use understudy_tests::harness::wait_until;

/// How long a step may wait for something to happen on the server.
const WAIT: Duration = Duration::from_secs(20);

/// One run of a family against one server.
pub struct Run {
    pub addr: String,
    /// Prefix of every key and channel of this run.
    pub p: String,
    /// The prefix as a Lua/library identifier.
    pub q: String,
    /// What was done and what came back, shared with whoever started the
    /// run (it survives a step that panics).
    pub steps: Arc<Mutex<Vec<(String, String)>>>,
}

impl Run {
    pub fn new(addr: &str, prefix: &str) -> Run {
        Run {
            addr: addr.to_string(),
            p: prefix.to_string(),
            q: prefix.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            steps: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A new connection to the server.
    pub async fn conn(&self) -> RawResp {
        RawResp::connect(&self.addr)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", self.addr))
    }

    /// Records a step.
    pub fn note(&mut self, label: impl Into<String>, shown: impl Into<String>) {
        self.steps.lock().push((label.into(), shown.into()));
    }

    /// Sends `args` on `c`, reads the reply, records it as it is.
    pub async fn call(&mut self, c: &mut RawResp, who: &str, args: &[&str]) -> Value {
        let v = self.ask(c, args).await;
        self.note(format!("{who}: {}", args.join(" ")), v.show());
        v
    }

    /// Sends `args` and reads the reply without recording it.
    pub async fn ask(&self, c: &mut RawResp, args: &[&str]) -> Value {
        c.call(args)
            .await
            .unwrap_or_else(|e| panic!("{} {args:?}: {e}", self.addr))
    }

    /// Reads the next frame on `c` (one that was not asked for, or the
    /// reply to something sent before) and records it.
    pub async fn read(&mut self, c: &mut RawResp, label: &str) -> Value {
        let v = c
            .reply()
            .await
            .unwrap_or_else(|e| panic!("{} {label}: {e}", self.addr));
        self.note(label.to_string(), v.show());
        v
    }

    /// Sends `args` without reading (a blocking command).
    pub async fn send(&self, c: &mut RawResp, args: &[&str]) {
        c.send(args)
            .await
            .unwrap_or_else(|e| panic!("{} {args:?}: {e}", self.addr));
    }

    /// Waits until `n` clients are blocked on the server (`INFO clients`;
    /// through understudy, on the active's redis-server, where every
    /// session's own connection is).
    pub async fn wait_blocked(&self, n: u64) {
        let addr = self.addr.clone();
        wait_until(WAIT, &format!("{n} blocked clients on {addr}"), || {
            let addr = addr.clone();
            async move {
                let Ok(mut c) = RawResp::connect(&addr).await else {
                    return false;
                };
                let Ok(v) = c.call(&["INFO", "clients"]).await else {
                    return false;
                };
                v.text()
                    .and_then(|t| {
                        t.lines()
                            .find_map(|l| l.strip_prefix("blocked_clients:"))
                            .and_then(|n| n.trim().parse::<u64>().ok())
                    })
                    .is_some_and(|b| b >= n)
            }
        })
        .await
        .unwrap();
    }
}

/// Runs `family` against `addr` with key prefix `prefix` in a task of its
/// own and returns its transcript; a step that fails (a reply that never
/// comes) ends the run, recorded as its last step.
pub async fn record<F, Fut>(addr: &str, prefix: &str, family: F) -> Vec<(String, String)>
where
    F: FnOnce(Run) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let run = Run::new(addr, prefix);
    let steps = run.steps.clone();
    let outcome = tokio::spawn(family(run)).await;
    let mut steps = steps.lock().clone();
    if let Err(e) = outcome {
        let why = match e.try_into_panic() {
            Ok(p) => p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        steps.push(("the run stopped".into(), why));
    }
    steps
}

/// The differences between two transcripts of one family, one line each.
pub fn differences(
    family: &str,
    via: &str,
    ours: &[(String, String)],
    theirs: &[(String, String)],
) -> Vec<String> {
    let mut diffs = Vec::new();
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        if a != b {
            diffs.push(format!(
                "  step {i} {}: understudy {} / redis {}",
                b.0, a.1, b.1
            ));
        }
    }
    if ours.len() != theirs.len() {
        diffs.push(format!(
            "  {} steps through understudy, {} against redis-server",
            ours.len(),
            theirs.len()
        ));
    }
    if !diffs.is_empty() {
        diffs.insert(0, format!("{family} via the {via}:"));
    }
    diffs
}

/// A reply replaced by its shape: `what` if `ok` holds, else the reply.
pub fn shape(v: &Value, what: &str, ok: impl FnOnce(&Value) -> bool) -> String {
    if ok(v) {
        format!("<{what}>")
    } else {
        v.show()
    }
}

/// An integer that is a time, as `≈expected` when within `tolerance`.
pub fn about(v: &Value, expected: i64, tolerance: i64) -> String {
    match v.int() {
        Some(i) if (i - expected).abs() <= tolerance => format!("≈{expected}"),
        _ => v.show(),
    }
}

/// Whether `v` is a stream entry id (`<ms>-<seq>`).
pub fn is_stream_id(v: &Value) -> bool {
    v.text().is_some_and(|t| {
        t.split_once('-').is_some_and(|(ms, seq)| {
            ms.len() >= 13
                && ms.bytes().all(|b| b.is_ascii_digit())
                && !seq.is_empty()
                && seq.bytes().all(|b| b.is_ascii_digit())
        })
    })
}

/// `v` with every stream id replaced by `<id>`.
pub fn without_ids(v: &Value) -> String {
    fn strip(v: &Value) -> Value {
        match v {
            v if is_stream_id(v) => Value::Simple("<id>".into()),
            Value::Array(items) => Value::Array(items.iter().map(strip).collect()),
            Value::Map(kv) => Value::Map(kv.iter().map(|(k, v)| (strip(k), strip(v))).collect()),
            other => other.clone(),
        }
    }
    strip(v).show()
}

/// A map or flat key/value array with the values of `fields` replaced by
/// their type (per-connection ids and the like).
pub fn masking(v: &Value, fields: &[&str]) -> String {
    let masked = |k: &Value, val: &Value| {
        if k.text().is_some_and(|t| fields.contains(&t.as_str())) {
            Value::Simple(format!("<{}>", kind(val)))
        } else {
            val.clone()
        }
    };
    match v {
        Value::Map(kv) => Value::Map(kv.iter().map(|(k, v)| (k.clone(), masked(k, v))).collect()),
        Value::Array(items) => {
            let mut out = Vec::new();
            for pair in items.chunks(2) {
                out.push(pair[0].clone());
                if let Some(val) = pair.get(1) {
                    out.push(masked(&pair[0], val));
                }
            }
            Value::Array(out)
        }
        other => other.clone(),
    }
    .show()
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Int(_) => "integer",
        Value::Bulk(_) | Value::Simple(_) => "string",
        _ => "other",
    }
}

/// An unordered reply (a set's members) sorted, as text.
pub fn sorted(v: &Value) -> String {
    let mut items: Vec<String> = v
        .items()
        .unwrap_or_default()
        .iter()
        .map(Value::show)
        .collect();
    items.sort();
    format!("{{{}}}", items.join(", "))
}
