//! Closed-loop clients that record everything they do in a [`History`].
//!
//! Each client, in a loop until stopped, picks an operation and a replica
//! at random (from its own seeded generator) and waits for the answer, at
//! most [`OP_TIMEOUT`]:
//!
//! - `add`: a put of a key no one else writes (`s/{client}/{n}`), for the
//!   "no acknowledged write lost" check over many keys;
//! - `write`, `read` (`consistency=linearizable`), `cas` (a transaction
//!   comparing the value the client last saw): on two register keys at a
//!   time, replaced by fresh ones every [`OPS_PER_GENERATION`] register
//!   operations so each key's history stays short enough to check;
//! - `read_at`: a get of a key the client wrote, with its session's
//!   `X-Min-Version` (the highest data version any answer gave it).
//!
//! Linearizable reads go to the replica the client last heard named as the
//! active (a standby refuses them), most of the time. Every value written
//! is unique (`{client}.{n}`), so a read names the write it saw.
//!
//! Against replicas in proxy mode the clients speak RESP instead, as a
//! Redis client would: `add` and `write` are `SET`, `read` and `read_at`
//! are `GET` (a standby forwards them to the active, so both are
//! linearizable), and `cas` becomes a `write` (compare-and-set needs
//! `WATCH`, which the proxy refuses). A Redis reply names no version, so
//! the checks on versions see none; `-TRYAGAIN` is a definite refusal and
//! `-UNKNOWN` an unknown outcome, as the proxy documents.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use proto_common::Position;
use rand::rngs::Xoshiro256PlusPlus as StdRng;
use rand::{RngExt, SeedableRng};
use tokio::task::JoinHandle;

use super::history::{History, Kind, Op, Outcome};
use crate::client::resp::{Frame, RespClient};
use crate::client::{key_path, ClientError, KvClient, KvResponse};

/// How long a client waits for one answer.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client pauses after a definite failure before its next
/// operation.
pub const FAIL_PAUSE: Duration = Duration::from_millis(10);

/// Register operations (all clients together) per pair of register keys.
pub const OPS_PER_GENERATION: u64 = 300;

/// Register keys in use at a time.
const REGISTER_SLOTS: u64 = 2;

/// A replica the clients talk to.
#[derive(Clone, Debug)]
pub struct Target {
    pub node: String,
    pub url: String,
    /// Proxy mode: the RESP address (`127.0.0.1:port`) clients use.
    pub resp: Option<String>,
}

/// The running clients.
pub struct Clients {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Clients {
    /// Starts `count` clients against `targets`, seeded from `seed`.
    pub fn start(targets: Vec<Target>, count: usize, seed: u64, history: Arc<History>) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let register_ops = Arc::new(AtomicU64::new(0));
        let targets = Arc::new(targets);
        let tasks = (0..count)
            .map(|i| {
                let client = Client {
                    id: i as u32,
                    rng: StdRng::seed_from_u64(
                        seed ^ 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i as u64 + 1),
                    ),
                    targets: targets.clone(),
                    conns: HashMap::new(),
                    resp_conns: HashMap::new(),
                    history: history.clone(),
                    register_ops: register_ops.clone(),
                    session: None,
                    seen: HashMap::new(),
                    written: Vec::new(),
                    active: None,
                    n: 0,
                };
                tokio::spawn(client.run(stop.clone()))
            })
            .collect();
        Clients { stop, tasks }
    }

    /// Stops every client after its operation in flight, and waits.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// A client a test drives itself: it sends `add`s to one replica it
/// names, when the test asks, and records them in the history like any
/// other client's, so the checkers judge them too. For a test that needs
/// writes to reach one replica at a given moment, which the random
/// clients may or may not send (most of them can be waiting on other
/// replicas just then).
pub struct Writer {
    client: Client,
    target: usize,
}

impl Writer {
    /// A client numbered `id` (not one of the random clients' numbers:
    /// keys are `s/{id}/{n}`) sending to `targets[target]`.
    pub fn new(id: u32, targets: Vec<Target>, target: usize, history: Arc<History>) -> Writer {
        Writer {
            client: Client {
                id,
                rng: StdRng::seed_from_u64(id as u64),
                targets: Arc::new(targets),
                conns: HashMap::new(),
                resp_conns: HashMap::new(),
                history,
                register_ops: Arc::new(AtomicU64::new(0)),
                session: None,
                seen: HashMap::new(),
                written: Vec::new(),
                active: None,
                n: 0,
            },
            target,
        }
    }

    /// One `add` of a fresh key, recorded; returns the operation as
    /// recorded (its outcome, code and version).
    pub async fn add(&mut self) -> Op {
        let request = self.client.add_request();
        self.client.perform(request, self.target).await
    }
}

struct Client {
    id: u32,
    rng: StdRng,
    targets: Arc<Vec<Target>>,
    /// One keep-alive connection per replica, dropped after a failure.
    conns: HashMap<usize, KvClient>,
    /// The same for Redis clients, in proxy mode.
    resp_conns: HashMap<usize, RespClient>,
    history: Arc<History>,
    register_ops: Arc<AtomicU64>,
    /// The highest `X-Data-Version` of any successful answer.
    session: Option<Position>,
    /// The value this client last saw (or wrote) per register key.
    seen: HashMap<String, Option<String>>,
    /// Keys this client had acknowledged, most recent last (a few).
    written: Vec<String>,
    /// The replica last named as the active.
    active: Option<usize>,
    n: u64,
}

/// What the request was, before its answer.
struct Request {
    kind: Kind,
    key: String,
    value: Option<String>,
    expect: Option<Option<String>>,
    min_version: Option<Position>,
}

impl Client {
    async fn run(mut self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            self.one().await;
        }
    }

    async fn one(&mut self) {
        let roll = self.rng.random_range(0..100);
        let request = if roll < 25 || (roll >= 80 && self.written.is_empty()) {
            self.add_request()
        } else if roll < 80 {
            self.n += 1;
            let value = format!("{}.{}", self.id, self.n);
            let key = self.register_key();
            let resp = self.targets[0].resp.is_some();
            let (kind, value, expect) = match roll {
                25..=39 => (Kind::Write, Some(value), None),
                40..=59 => (Kind::Read, None, None),
                _ if resp => (Kind::Write, Some(value), None),
                _ => {
                    let expect = self.seen.get(&key).cloned().unwrap_or(None);
                    (Kind::Cas, Some(value), Some(expect))
                }
            };
            Request {
                kind,
                key,
                value,
                expect,
                min_version: None,
            }
        } else {
            self.n += 1;
            let key = self.written[self.rng.random_range(0..self.written.len())].clone();
            Request {
                kind: Kind::ReadAt,
                key,
                value: None,
                expect: None,
                min_version: self.session,
            }
        };
        let target = match (request.kind, self.active) {
            (Kind::Read, Some(active)) if self.rng.random_range(0..10) < 8 => active,
            _ => self.rng.random_range(0..self.targets.len()),
        };
        let op = self.perform(request, target).await;
        if op.outcome == Outcome::Fail {
            // As a real client would: not a hot loop against a replica
            // that refuses at once (it is down, or not the active).
            tokio::time::sleep(FAIL_PAUSE).await;
        }
    }

    /// An `add` of a key of this client's own.
    fn add_request(&mut self) -> Request {
        self.n += 1;
        Request {
            kind: Kind::Add,
            key: format!("s/{}/{}", self.id, self.n),
            value: Some(format!("{}.{}", self.id, self.n)),
            expect: None,
            min_version: None,
        }
    }

    /// Sends `request` to `target`, judges the answer and records the
    /// operation; returns it as recorded.
    async fn perform(&mut self, request: Request, target: usize) -> Op {
        let invoke_ns = self.history.now_ns();
        let mut op = if self.targets[target].resp.is_some() {
            let answer = self.send_resp(target, &request).await;
            let complete_ns = self.history.now_ns();
            self.judge_resp(request, target, invoke_ns, complete_ns, answer)
        } else {
            let answer = self.send(target, &request).await;
            let complete_ns = self.history.now_ns();
            self.judge(request, target, invoke_ns, complete_ns, answer)
        };
        op.id = self.history.record(op.clone());
        op
    }

    fn register_key(&mut self) -> String {
        let n = self.register_ops.fetch_add(1, Ordering::Relaxed);
        let generation = n / OPS_PER_GENERATION;
        let slot = self.rng.random_range(0..REGISTER_SLOTS);
        format!("r/{generation}/{slot}")
    }

    async fn send(&mut self, target: usize, request: &Request) -> Result<KvResponse, ClientError> {
        let url = self.targets[target].url.clone();
        let conn = match self.conns.get_mut(&target) {
            Some(c) => c,
            None => {
                let c = KvClient::new(&url)?.with_timeout(OP_TIMEOUT);
                self.conns.entry(target).or_insert(c)
            }
        };
        let path = key_path(request.key.as_bytes());
        let result = match request.kind {
            Kind::Add | Kind::Write => {
                let value = request.value.clone().unwrap_or_default();
                conn.request(Method::PUT, &path, &[], value).await
            }
            Kind::Read | Kind::Final => {
                let path = format!("{path}?consistency=linearizable");
                conn.request(Method::GET, &path, &[], "").await
            }
            Kind::ReadAt => match request.min_version {
                Some(v) => {
                    let v = v.to_string();
                    conn.request(Method::GET, &path, &[("x-min-version", &v)], "")
                        .await
                }
                None => conn.request(Method::GET, &path, &[], "").await,
            },
            Kind::Cas => {
                let compare = match request.expect.clone().flatten() {
                    Some(v) => serde_json::json!({"key": request.key, "value": v}),
                    None => serde_json::json!({"key": request.key, "exists": false}),
                };
                let body = serde_json::json!({
                    "compare": [compare],
                    "ops": [{"op": "put", "key": request.key, "value": request.value}],
                });
                conn.txn(&body).await
            }
        };
        if result.is_err() {
            // A late answer must not be read as the next request's.
            self.conns.remove(&target);
        }
        result
    }

    /// The operation as recorded, before its answer is read.
    fn unjudged(&self, request: Request, target: usize, invoke_ns: u64, complete_ns: u64) -> Op {
        Op {
            id: 0,
            client: self.id,
            kind: request.kind,
            key: request.key,
            value: request.value,
            expect: request.expect,
            read: None,
            applied: None,
            invoke_ns,
            complete_ns,
            outcome: Outcome::Unknown,
            code: String::new(),
            node: self.targets[target].node.clone(),
            version: None,
            key_version: None,
            min_version: request.min_version,
        }
    }

    /// Sends the request as a Redis command (`SET` or `GET`).
    async fn send_resp(&mut self, target: usize, request: &Request) -> Result<Frame, RespFailure> {
        let conn = match self.resp_conns.get_mut(&target) {
            Some(c) => c,
            None => {
                let addr = self.targets[target].resp.clone().unwrap_or_default();
                let c = match tokio::time::timeout(OP_TIMEOUT, RespClient::connect(&addr)).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(_)) | Err(_) => return Err(RespFailure::NotSent),
                };
                self.resp_conns.entry(target).or_insert(c)
            }
        };
        let value = request.value.clone().unwrap_or_default();
        let args = match request.kind {
            Kind::Add | Kind::Write | Kind::Cas => vec!["SET", request.key.as_str(), &value],
            Kind::Read | Kind::ReadAt | Kind::Final => vec!["GET", request.key.as_str()],
        };
        let result = match tokio::time::timeout(OP_TIMEOUT, conn.call(&args)).await {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(e)) => Err(RespFailure::Lost(e)),
            Err(_) => Err(RespFailure::Lost("timeout".into())),
        };
        if result.is_err() {
            self.resp_conns.remove(&target);
        }
        result
    }

    /// [`Client::judge`] for a Redis reply.
    fn judge_resp(
        &mut self,
        request: Request,
        target: usize,
        invoke_ns: u64,
        complete_ns: u64,
        answer: Result<Frame, RespFailure>,
    ) -> Op {
        let mut op = self.unjudged(request, target, invoke_ns, complete_ns);
        let frame = match answer {
            Ok(frame) => frame,
            Err(RespFailure::NotSent) => {
                op.code = "resp_not_sent".into();
                op.outcome = Outcome::Fail;
                return op;
            }
            Err(RespFailure::Lost(e)) => {
                op.code = if e == "timeout" {
                    "timeout"
                } else {
                    "resp_lost"
                }
                .into();
                op.outcome = if op.kind.writes() {
                    Outcome::Unknown
                } else {
                    Outcome::Fail
                };
                return op;
            }
        };
        let (outcome, code) = classify_resp(op.kind, &frame);
        op.outcome = outcome;
        op.code = code;
        if outcome != Outcome::Ok {
            return op;
        }
        if op.kind.writes() {
            if op.kind != Kind::Add {
                self.seen.insert(op.key.clone(), op.value.clone());
            }
            self.written.push(op.key.clone());
            if self.written.len() > 8 {
                self.written.remove(0);
            }
        } else {
            op.read = Some(match frame {
                Frame::BulkString(v) => Some(String::from_utf8_lossy(&v).into_owned()),
                _ => None,
            });
        }
        op
    }

    /// The operation as recorded, and what the client learns from it.
    fn judge(
        &mut self,
        request: Request,
        target: usize,
        invoke_ns: u64,
        complete_ns: u64,
        answer: Result<KvResponse, ClientError>,
    ) -> Op {
        let mut op = self.unjudged(request, target, invoke_ns, complete_ns);
        let r = match answer {
            Ok(r) => r,
            Err(e) => {
                op.code = e.kind().to_string();
                op.outcome = if e.never_sent() || !op.kind.writes() {
                    Outcome::Fail
                } else {
                    Outcome::Unknown
                };
                return op;
            }
        };
        if let Some(hint) = r.active_url.clone().or_else(|| r.active_hint()) {
            self.active = self.targets.iter().position(|t| t.url == hint);
        }
        let code = r.error_code();
        op.code = code.clone().unwrap_or_else(|| {
            if r.is_success() {
                "ok".into()
            } else {
                format!("http_{}", r.status)
            }
        });
        op.outcome = classify(op.kind, r.status, code.as_deref());
        if op.outcome != Outcome::Ok {
            return op;
        }
        match op.kind {
            Kind::Add | Kind::Write | Kind::Cas => {
                op.version = r.write_version();
                op.applied = (op.kind == Kind::Cas).then_some(r.status == 200);
                if r.status == 200 {
                    if op.kind != Kind::Add {
                        self.seen.insert(op.key.clone(), op.value.clone());
                    }
                    self.written.push(op.key.clone());
                    if self.written.len() > 8 {
                        self.written.remove(0);
                    }
                }
            }
            Kind::Read | Kind::ReadAt | Kind::Final => {
                op.version = r.data_position();
                if r.status == 200 {
                    op.key_version = r.key_position();
                    op.read = Some(Some(String::from_utf8_lossy(&r.body).into_owned()));
                } else if r.status == 404 {
                    op.read = Some(None);
                }
                if op.kind == Kind::Read {
                    self.seen
                        .insert(op.key.clone(), op.read.clone().unwrap_or(None));
                }
            }
        }
        let answered_at = if op.kind.writes() {
            op.version.or_else(|| r.data_position())
        } else {
            r.data_position()
        };
        if let Some(v) = answered_at {
            if self.session.is_none_or(|s| v > s) {
                self.session = Some(v);
            }
        }
        op
    }
}

/// How a Redis call failed.
enum RespFailure {
    /// Before the command was sent (no connection).
    NotSent,
    /// After it was sent: no reply, or a broken connection.
    Lost(String),
}

/// The outcome of a Redis reply to a `SET` (writes) or a `GET`, and the
/// code recorded: `ok`, or the error's first word (`TRYAGAIN`, ...).
pub fn classify_resp(kind: Kind, frame: &Frame) -> (Outcome, String) {
    match frame {
        Frame::Error(e) => {
            let word = e.split_whitespace().next().unwrap_or("").to_string();
            let outcome = match word.as_str() {
                "TRYAGAIN" => Outcome::Fail,
                "UNKNOWN" => Outcome::Unknown,
                // Any other error is not documented as a refusal: a write
                // may have happened.
                _ if kind.writes() => Outcome::Unknown,
                _ => Outcome::Fail,
            };
            (outcome, word)
        }
        Frame::SimpleString(s) if kind.writes() && s.as_ref() == b"OK" => {
            (Outcome::Ok, "ok".into())
        }
        Frame::BulkString(_) | Frame::Null if !kind.writes() => (Outcome::Ok, "ok".into()),
        other => (
            if kind.writes() {
                Outcome::Unknown
            } else {
                Outcome::Fail
            },
            format!("unexpected reply {other:?}"),
        ),
    }
}

/// The outcome of an answer with `status` and error `code`.
pub fn classify(kind: Kind, status: u16, code: Option<&str>) -> Outcome {
    match (status, code) {
        (200, _) => Outcome::Ok,
        (409, Some("compare_failed")) if kind == Kind::Cas => Outcome::Ok,
        (404, Some("not_found")) if !kind.writes() => Outcome::Ok,
        // Answered, and checked: the version was cut (never committed).
        (409, Some("version_cut")) if kind == Kind::ReadAt => Outcome::Ok,
        (_, Some("outcome_unknown")) => Outcome::Unknown,
        _ => Outcome::Fail,
    }
}
