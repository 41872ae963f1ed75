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
//! Redis client would (`resp_ops.rs`): `add` and `write` are `SET`, `read`
//! and `read_at` are `GET` (a standby forwards them to the active, so both
//! are linearizable), and `cas` is, alternately, the `EVAL` of a
//! compare-and-set script and a `WATCH`/`MULTI`/`EXEC` transaction. A
//! fifth of their operations are a queue workload instead: `push` (`RPUSH`
//! of a unique item to one of a few queue keys) and `pop` (`BLPOP` of
//! them, 1 s timeout), half each, but a pop only while fewer than a
//! quarter of the clients wait in one. A Redis reply names
//! no version, so the checks on versions see none; `-TRYAGAIN` is a
//! definite refusal and `-UNKNOWN` an unknown outcome, as the proxy
//! documents.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use proto_common::Position;
use rand::rngs::Xoshiro256PlusPlus as StdRng;
use rand::{RngExt, SeedableRng};
use tokio::task::JoinHandle;

use super::history::{Form, History, Kind, Op, Outcome};
use super::resp_ops::{self, Answer, RespRequest, QUEUES};
use crate::client::resp::RespClient;
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

/// Proxy mode: the share of operations (percent) that are pushes and pops.
const QUEUE_PERCENT: u32 = 20;

/// Proxy mode: at most one client in this many waits in a pop at a time;
/// a client that would be one more does something else. Without a bound, every
/// client ends up waiting out its pop on empty queues now and then (each
/// pop that finds them empty takes a client out until a push), and the
/// run has second-long stretches without a write that no fault caused.
const CLIENTS_PER_POP: usize = 4;

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
        let pops = Arc::new(PopSlots {
            waiting: AtomicUsize::new(0),
            max: (count / CLIENTS_PER_POP).max(1),
        });
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
                    pops: pops.clone(),
                    session: None,
                    seen: HashMap::new(),
                    written: Vec::new(),
                    active: None,
                    n: 0,
                    cas_by_script: i % 2 == 0,
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
                pops: Arc::new(PopSlots {
                    waiting: AtomicUsize::new(0),
                    max: 1,
                }),
                session: None,
                seen: HashMap::new(),
                written: Vec::new(),
                active: None,
                n: 0,
                cas_by_script: true,
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
    /// Proxy mode: the clients' pops in flight, shared.
    pops: Arc<PopSlots>,
    /// The highest `X-Data-Version` of any successful answer.
    session: Option<Position>,
    /// The value this client last saw (or wrote) per register key.
    seen: HashMap<String, Option<String>>,
    /// Keys this client had acknowledged, most recent last (a few).
    written: Vec<String>,
    /// The replica last named as the active.
    active: Option<usize>,
    n: u64,
    /// Proxy mode: whether the next compare-and-set is a script (else a
    /// `WATCH` transaction); they alternate.
    cas_by_script: bool,
}

/// How many clients wait in a pop, and how many may.
struct PopSlots {
    waiting: AtomicUsize,
    max: usize,
}

impl PopSlots {
    /// Takes a slot, if one is free; give it back with [`PopSlots::free`].
    fn take(&self) -> bool {
        self.waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    fn free(&self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the request was, before its answer.
struct Request {
    kind: Kind,
    /// The key; a pop's queues, space-separated, in the order asked.
    key: String,
    value: Option<String>,
    expect: Option<Option<String>>,
    min_version: Option<Position>,
    form: Option<Form>,
}

impl Client {
    async fn run(mut self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            self.one().await;
        }
    }

    async fn one(&mut self) {
        let resp = self.targets[0].resp.is_some();
        let queue = resp && self.rng.random_range(0..100) < QUEUE_PERCENT;
        let request = match queue.then(|| self.queue_request()).flatten() {
            Some(request) => request,
            None => self.kv_request(resp),
        };
        let target = match (request.kind, self.active) {
            (Kind::Read, Some(active)) if self.rng.random_range(0..10) < 8 => active,
            _ => self.rng.random_range(0..self.targets.len()),
        };
        let op = self.perform(request, target).await;
        if op.kind == Kind::Pop {
            self.pops.free();
        }
        if op.outcome == Outcome::Fail {
            // As a real client would: not a hot loop against a replica
            // that refuses at once (it is down, or not the active).
            tokio::time::sleep(FAIL_PAUSE).await;
        }
    }

    /// An operation of the key-value workload: `add`, a register
    /// operation, or `read_at`.
    fn kv_request(&mut self, resp: bool) -> Request {
        let roll = self.rng.random_range(0..100);
        if roll < 25 || (roll >= 80 && self.written.is_empty()) {
            self.add_request()
        } else if roll < 80 {
            self.n += 1;
            let value = format!("{}.{}", self.id, self.n);
            let key = self.register_key();
            let (kind, value, expect) = match roll {
                25..=39 => (Kind::Write, Some(value), None),
                40..=59 => (Kind::Read, None, None),
                _ => {
                    let expect = self.seen.get(&key).cloned().unwrap_or(None);
                    (Kind::Cas, Some(value), Some(expect))
                }
            };
            let form = (kind == Kind::Cas && resp).then(|| {
                let form = if self.cas_by_script {
                    Form::Eval
                } else {
                    Form::Watch
                };
                self.cas_by_script = !self.cas_by_script;
                form
            });
            Request {
                kind,
                key,
                value,
                expect,
                min_version: None,
                form,
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
                form: None,
            }
        }
    }

    /// Proxy mode: a push of a unique item to one queue, or a pop of all
    /// of them (starting from a random one, so none is always first); no
    /// pop while too many clients wait in one already ([`CLIENTS_PER_POP`]).
    fn queue_request(&mut self) -> Option<Request> {
        let push = self.rng.random_range(0..2) == 0;
        if !push && !self.pops.take() {
            return None;
        }
        self.n += 1;
        let first = self.rng.random_range(0..QUEUES.len());
        let (kind, key, value) = if push {
            let item = format!("{}.{}", self.id, self.n);
            (Kind::Push, QUEUES[first].to_string(), Some(item))
        } else {
            let keys: Vec<&str> = (0..QUEUES.len())
                .map(|i| QUEUES[(first + i) % QUEUES.len()])
                .collect();
            (Kind::Pop, keys.join(" "), None)
        };
        Some(Request {
            kind,
            key,
            value,
            expect: None,
            min_version: None,
            form: None,
        })
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
            form: None,
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
            Kind::Push | Kind::Pop => {
                return Err(ClientError::InvalidRequest(
                    "queue operations are proxy mode's".into(),
                ))
            }
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
            form: request.form,
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

    /// Sends the request as a Redis client ([`resp_ops`]).
    async fn send_resp(&mut self, target: usize, request: &Request) -> Answer {
        let conn = match self.resp_conns.get_mut(&target) {
            Some(c) => c,
            None => {
                let addr = self.targets[target].resp.clone().unwrap_or_default();
                let c = match tokio::time::timeout(OP_TIMEOUT, RespClient::connect(&addr)).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(_)) | Err(_) => return Answer::not_sent(),
                };
                self.resp_conns.entry(target).or_insert(c)
            }
        };
        let expect = request.expect.as_ref().and_then(|e| e.as_deref());
        let resp_request = RespRequest {
            kind: request.kind,
            form: request.form,
            keys: request.key.split(' ').collect(),
            value: request.value.as_deref().unwrap_or_default(),
            expect,
        };
        let answer = resp_ops::perform(conn, &resp_request, OP_TIMEOUT).await;
        if !answer.reusable {
            // A late answer must not be read as the next request's, and
            // the proxy closes a session after TRYAGAIN or UNKNOWN.
            self.resp_conns.remove(&target);
        }
        answer
    }

    /// [`Client::judge`] for a Redis client's answer.
    fn judge_resp(
        &mut self,
        request: Request,
        target: usize,
        invoke_ns: u64,
        complete_ns: u64,
        answer: Answer,
    ) -> Op {
        let mut op = self.unjudged(request, target, invoke_ns, complete_ns);
        op.outcome = answer.outcome;
        op.code = answer.code;
        op.read = answer.read;
        op.applied = answer.applied;
        if let Some(queue) = answer.popped_from {
            op.key = queue;
        }
        if op.kind == Kind::Cas {
            // A WATCH transaction's GET: what the register held.
            if let Some(read) = &op.read {
                self.seen.insert(op.key.clone(), read.clone());
            }
        }
        if op.outcome != Outcome::Ok {
            return op;
        }
        match op.kind {
            Kind::Add | Kind::Write | Kind::Cas if op.applied != Some(false) => {
                if op.kind != Kind::Add {
                    self.seen.insert(op.key.clone(), op.value.clone());
                }
                self.written.push(op.key.clone());
                if self.written.len() > 8 {
                    self.written.remove(0);
                }
            }
            Kind::Read => {
                self.seen
                    .insert(op.key.clone(), op.read.clone().unwrap_or(None));
            }
            _ => {}
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
            // Not sent over HTTP (send refuses them).
            Kind::Push | Kind::Pop => {}
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
