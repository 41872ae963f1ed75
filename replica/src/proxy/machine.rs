//! The upstream as a [`StateMachine`] (DESIGN.md, "Visibility follows
//! commit"): committed entries are applied to the local upstream, in log
//! order, by one apply loop per replica, as one transaction per batch:
//!
//! ```text
//! MULTI
//!   SELECT <marker db>  GET <marker>            -- must name what we applied last
//!   SELECT <db>  DEL <key>                      -- each due expiry still due
//!   SELECT <db>  <command>  PEXPIRETIME <key>…  -- each command, then its keys' deadlines
//!   SELECT <marker db>  SET <marker> <E.I>      -- the last entry of the batch
//! EXEC
//! ```
//!
//! The marker makes recovery exact (an entry and its marker land together
//! or not at all) and lets the loop see an upstream that lost its data or
//! was written by someone else: the `GET` no longer names what the loop
//! applied last. The loop then stops applying and reports the problem; the
//! replica's health says so, and a full resync (or a local replay) fixes
//! it. A batch whose reply was lost is recognised by the marker too, and
//! is not applied twice.
//!
//! An entry with expiries starts a transaction of its own: whether a key's
//! deadline is "still d" is decided on the deadline index as the entries
//! before it left it, which every replica has alike.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use proto_common::Position;
use redis_protocol::resp2::types::BytesFrame;
use tokio::sync::{mpsc, watch};

use super::expiry::{unshift_reply, DeadlineIndex};
use super::resp::{self, command};
use super::upstream::{error_text, Conn};
use crate::command::{Command, RespEntry};
use crate::log::{LogReader, ReadOutcome};
use crate::pending::{PendingEntry, Responder, WriteError};
use crate::state::Outcome;
use crate::state_machine::{Answerer, StateMachine};

/// The key holding the applied marker, in the marker database.
pub const MARKER_KEY: &str = "understudy:applied";
/// Most entries in one transaction.
const MAX_BATCH: usize = 1024;
/// Pause between attempts while the upstream cannot be used.
const RETRY: Duration = Duration::from_millis(200);
/// How often an idle apply loop checks that the upstream still holds what
/// it applied (it may have been flushed, or restarted empty).
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// How to reach the upstream.
#[derive(Clone, Debug)]
pub struct UpstreamAddr {
    pub addr: String,
    pub password: Option<String>,
    pub marker_db: u8,
}

impl UpstreamAddr {
    /// The upstream of these settings.
    pub fn of(settings: &super::ProxySettings) -> UpstreamAddr {
        UpstreamAddr {
            addr: settings.upstream.clone(),
            password: settings.upstream_password.clone(),
            marker_db: settings.marker_db,
        }
    }

    pub async fn connect(&self) -> Result<Conn, String> {
        Conn::connect(&self.addr, self.password.as_deref(), None).await
    }

    /// Reads the applied marker: `None` when there is none.
    pub async fn read_marker(&self, conn: &mut Conn) -> Result<Option<Position>, String> {
        let replies = conn
            .pipeline(vec![
                command([b"SELECT".to_vec(), self.marker_db.to_string().into_bytes()]),
                command([&b"GET"[..], MARKER_KEY.as_bytes()]),
            ])
            .await?;
        parse_marker(&replies[1])
    }
}

fn parse_marker(frame: &BytesFrame) -> Result<Option<Position>, String> {
    match frame {
        BytesFrame::Null => Ok(None),
        BytesFrame::BulkString(b) => {
            let text = String::from_utf8_lossy(b);
            // "0.0": adopted data, nothing of the log applied yet.
            text.parse::<Position>()
                .map(|p| (p != Position::ZERO).then_some(p))
                .map_err(|_| {
                    format!("the applied marker {MARKER_KEY} holds {text:?}, not a position")
                })
        }
        other => Err(format!("reading the applied marker gave {other:?}")),
    }
}

/// What sessions share with the apply loop.
pub struct Shared {
    /// Real deadlines, as of the last applied entry.
    pub index: Mutex<DeadlineIndex>,
    /// Why the upstream cannot be used now, if it cannot.
    pub problem: Mutex<Option<String>>,
    /// Why the upstream is not where the log left it, if it is not: only a
    /// full resync (a `reset`) clears this.
    pub diverged: Mutex<Option<String>>,
    /// Bumped by every `reset`: the apply loop rebuilds its index.
    generation: std::sync::atomic::AtomicU64,
    applied: watch::Sender<Position>,
}

impl Shared {
    fn set_problem(&self, why: Option<String>) {
        let mut p = self.problem.lock();
        if *p != why {
            match &why {
                Some(w) => tracing::error!(problem = %w, "the upstream cannot be used"),
                None => tracing::info!("the upstream is usable again"),
            }
            *p = why;
        }
    }
}

enum Work {
    Apply(Vec<PendingEntry>),
    /// Replay committed entries from the log, `(from, to]` by index.
    Replay(LogReader, Position, proto_common::LogIndex),
    Reset(Position),
}

/// The upstream behind the log.
pub struct UpstreamMachine {
    tx: mpsc::UnboundedSender<Work>,
    pub shared: Arc<Shared>,
}

impl UpstreamMachine {
    /// Starts the apply loop on the current runtime; `applied` is what the
    /// upstream's marker says (checked by the caller against the log).
    pub fn start(upstream: UpstreamAddr, applied: Position, answerer: Answerer) -> UpstreamMachine {
        let (tx, rx) = mpsc::unbounded_channel();
        let (applied_tx, _) = watch::channel(applied);
        let shared = Arc::new(Shared {
            index: Mutex::new(DeadlineIndex::default()),
            problem: Mutex::new(None),
            diverged: Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
            applied: applied_tx,
        });
        let apply_loop = ApplyLoop {
            upstream,
            shared: shared.clone(),
            conn: None,
            answerer,
            rx,
            generation: 0,
        };
        tokio::spawn(apply_loop.run());
        UpstreamMachine { tx, shared }
    }

    /// Applies the committed entries after `from` up to index `to` from the
    /// log, before anything applied later (recovery).
    pub fn replay(&self, reader: LogReader, from: Position, to: proto_common::LogIndex) {
        let _ = self.tx.send(Work::Replay(reader, from, to));
    }

    /// Why the upstream cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        self.shared.problem.lock().clone()
    }

    /// The last applied position.
    pub fn shared_applied(&self) -> Position {
        *self.shared.applied.borrow()
    }
}

impl StateMachine for UpstreamMachine {
    fn apply(&self, entries: Vec<PendingEntry>) {
        if !entries.is_empty() {
            let _ = self.tx.send(Work::Apply(entries));
        }
    }

    fn applied(&self) -> Position {
        *self.shared.applied.borrow()
    }

    fn watch_applied(&self) -> watch::Receiver<Position> {
        self.shared.applied.subscribe()
    }

    fn reset(&self, applied: Position) {
        self.shared.applied.send_replace(applied);
        *self.shared.diverged.lock() = None;
        self.shared
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = self.tx.send(Work::Reset(applied));
    }

    fn problem(&self) -> Option<String> {
        UpstreamMachine::problem(self)
    }
}

struct ApplyLoop {
    upstream: UpstreamAddr,
    shared: Arc<Shared>,
    conn: Option<Conn>,
    answerer: Answerer,
    rx: mpsc::UnboundedReceiver<Work>,
    /// The `Shared::generation` the index was built for.
    generation: u64,
}

/// One transaction's entries and who waits for them.
struct Group {
    entries: Vec<PendingEntry>,
}

impl ApplyLoop {
    async fn run(mut self) {
        let mut backlog: VecDeque<Work> = VecDeque::new();
        let mut idle_check = tokio::time::interval(IDLE_CHECK);
        idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let work = match backlog.pop_front() {
                Some(w) => w,
                None => tokio::select! {
                    w = self.rx.recv() => match w {
                        Some(w) => w,
                        None => return,
                    },
                    _ = idle_check.tick() => {
                        self.check_idle_upstream().await;
                        continue;
                    }
                },
            };
            match work {
                Work::Reset(p) => {
                    tracing::info!(applied = %p, "the upstream was replaced; applying from here on");
                    self.catch_up_with_reset().await;
                }
                Work::Replay(reader, from, to) => self.replay(reader, from, to).await,
                Work::Apply(mut entries) => {
                    // Take whatever else is waiting.
                    while entries.len() < MAX_BATCH {
                        match self.rx.try_recv() {
                            Ok(Work::Apply(more)) => entries.extend(more),
                            Ok(other) => {
                                backlog.push_back(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.apply_entries(entries).await;
                }
            }
        }
    }

    async fn replay(&mut self, reader: LogReader, from: Position, to: proto_common::LogIndex) {
        let started = Instant::now();
        let mut next = from.index.next();
        let mut count = 0u64;
        while next <= to {
            let bytes = match reader.read(next, 4 << 20) {
                Ok(ReadOutcome::Entries { bytes, .. }) => bytes,
                Ok(other) => {
                    self.shared.set_problem(Some(format!(
                        "replaying the log into the upstream: entry {next} gave {other:?}"
                    )));
                    return;
                }
                Err(e) => {
                    self.shared
                        .set_problem(Some(format!("replaying the log into the upstream: {e}")));
                    return;
                }
            };
            let mut entries = Vec::new();
            let mut off = 0;
            while off < bytes.len() {
                let proto_common::record::Decoded::Record(r) =
                    proto_common::record::decode(&bytes[off..])
                else {
                    break;
                };
                if r.position.index > to {
                    break;
                }
                let payload =
                    bytes.slice(off + proto_common::record::HEADER_LEN..off + r.encoded_len());
                match Command::decode(&payload) {
                    Ok(command) => entries.push(PendingEntry {
                        position: r.position,
                        command,
                        responder: None,
                        received: None,
                    }),
                    Err(e) => {
                        self.shared.set_problem(Some(format!(
                            "log entry {} cannot be decoded: {e}",
                            r.position
                        )));
                        return;
                    }
                }
                next = r.position.index.next();
                off += r.encoded_len();
            }
            count += entries.len() as u64;
            while !entries.is_empty() {
                let rest = entries.split_off(entries.len().min(MAX_BATCH));
                self.apply_entries(std::mem::replace(&mut entries, rest))
                    .await;
            }
        }
        if count > 0 {
            tracing::info!(
                entries = count,
                seconds = started.elapsed().as_secs_f64(),
                "replayed the log into the upstream"
            );
        }
    }

    /// Applies entries (skipping any already applied), one transaction per
    /// group, retrying until the upstream takes them.
    async fn apply_entries(&mut self, entries: Vec<PendingEntry>) {
        let applied = *self.shared.applied.borrow();
        let mut group: Vec<PendingEntry> = Vec::new();
        for e in entries {
            if e.position.index <= applied.index {
                if let Some(r) = e.responder {
                    let _ = r.send(Err(WriteError::Indeterminate(
                        "this write was already in the upstream (a full resync brought it); read it back".into(),
                    )));
                }
                continue;
            }
            let expires = matches!(&e.command, Command::Resp(r) if !r.expire.is_empty());
            if expires && !group.is_empty() {
                self.apply_group(Group {
                    entries: std::mem::take(&mut group),
                })
                .await;
            }
            group.push(e);
        }
        if !group.is_empty() {
            self.apply_group(Group { entries: group }).await;
        }
    }

    /// Between entries: is the upstream still where we left it? A marker
    /// that moved means it lost its data or was written by someone else.
    async fn check_idle_upstream(&mut self) {
        self.catch_up_with_reset().await;
        if self.shared.diverged.lock().is_some() {
            return;
        }
        let applied = *self.shared.applied.borrow();
        let upstream = self.upstream.clone();
        let checked = match self.conn().await {
            Ok(conn) => upstream.read_marker(conn).await.map_err(Failure::Transient),
            Err(f) => Err(f),
        };
        match checked {
            Ok(marker) if marker == (applied != Position::ZERO).then_some(applied) => {
                self.shared.set_problem(None);
            }
            Ok(marker) => {
                let why = lost(&upstream.addr, applied, marker);
                *self.shared.diverged.lock() = Some(why.clone());
                self.shared.set_problem(Some(why));
            }
            Err(Failure::Diverged(why)) => {
                *self.shared.diverged.lock() = Some(why.clone());
                self.shared.set_problem(Some(why));
            }
            Err(Failure::Transient(why)) => {
                self.conn = None;
                self.shared.set_problem(Some(why));
            }
            Err(Failure::AlreadyApplied) => {}
        }
    }

    /// After a `reset`: a new connection, and the index rebuilt from the
    /// upstream that came with it.
    async fn catch_up_with_reset(&mut self) {
        let now = self
            .shared
            .generation
            .load(std::sync::atomic::Ordering::SeqCst);
        if now != self.generation {
            self.generation = now;
            self.conn = None;
            self.rebuild_index().await;
            self.shared.set_problem(None);
        }
    }

    async fn apply_group(&mut self, mut group: Group) {
        loop {
            // A reset (full resync) meanwhile brought some of these entries.
            self.catch_up_with_reset().await;
            let applied = *self.shared.applied.borrow();
            if group
                .entries
                .iter()
                .any(|e| e.position.index <= applied.index)
            {
                let (done, rest): (Vec<_>, Vec<_>) = group
                    .entries
                    .into_iter()
                    .partition(|e| e.position.index <= applied.index);
                for e in done {
                    if let Some(r) = e.responder {
                        let _ = r.send(Err(WriteError::Indeterminate(
                            "the upstream was replaced by a full resync before this write's reply \
                             was read; read it back"
                                .into(),
                        )));
                    }
                }
                if rest.is_empty() {
                    return;
                }
                group.entries = rest;
            }
            match self.try_apply(&group).await {
                Ok(outcomes) => {
                    self.shared.set_problem(None);
                    self.finish(group, outcomes);
                    return;
                }
                Err(Failure::Transient(why)) => {
                    self.conn = None;
                    self.shared.set_problem(Some(why));
                }
                Err(Failure::AlreadyApplied) => {
                    // The batch landed but its reply was lost.
                    let outcomes = group.entries.iter().map(|_| None).collect();
                    self.rebuild_index().await;
                    self.finish(group, outcomes);
                    return;
                }
                Err(Failure::Diverged(why)) => {
                    self.conn = None;
                    *self.shared.diverged.lock() = Some(why.clone());
                    self.shared.set_problem(Some(why));
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Answers the group's clients and moves `applied` past it.
    fn finish(&self, group: Group, outcomes: Vec<Option<Bytes>>) {
        let last = group.entries.last().expect("a group has entries").position;
        self.shared.applied.send_replace(last);
        let mut answers: Vec<(Responder, Position, Outcome, Option<Instant>)> = Vec::new();
        let mut unknown = Vec::new();
        for (e, outcome) in group.entries.into_iter().zip(outcomes) {
            let Some(r) = e.responder else { continue };
            match outcome {
                Some(bytes) => answers.push((r, e.position, Outcome::Reply(bytes), e.received)),
                None => unknown.push(r),
            }
        }
        self.answerer.answer(answers);
        for r in unknown {
            let _ = r.send(Err(WriteError::Indeterminate(
                "this write was applied but the upstream's reply was lost; read it back".into(),
            )));
        }
    }

    async fn conn(&mut self) -> Result<&mut Conn, Failure> {
        if self.conn.is_none() {
            let mut conn = self.upstream.connect().await.map_err(Failure::Transient)?;
            // A new connection: is the upstream where we left it?
            let marker = self
                .upstream
                .read_marker(&mut conn)
                .await
                .map_err(Failure::Transient)?;
            let applied = *self.shared.applied.borrow();
            let expected = (applied != Position::ZERO).then_some(applied);
            if marker != expected {
                return Err(Failure::Diverged(lost(
                    &self.upstream.addr,
                    applied,
                    marker,
                )));
            }
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected"))
    }

    async fn try_apply(&mut self, group: &Group) -> Result<Vec<Option<Bytes>>, Failure> {
        let applied = *self.shared.applied.borrow();
        let last = group.entries.last().expect("a group has entries").position;
        let marker_db = self.upstream.marker_db.to_string();
        // Which expiries still hold, decided on the index as it is now.
        let mut frames = vec![
            command(["MULTI"]),
            command([b"SELECT".to_vec(), marker_db.clone().into_bytes()]),
            command([&b"GET"[..], MARKER_KEY.as_bytes()]),
        ];
        let mut plan: Vec<Step> = Vec::new();
        {
            let index = self.shared.index.lock();
            for e in &group.entries {
                match &e.command {
                    Command::Resp(r) => {
                        for x in &r.expire {
                            if index.get(x.db, &x.key) == Some(x.deadline_ms) {
                                frames.push(command([
                                    b"SELECT".to_vec(),
                                    x.db.to_string().into_bytes(),
                                ]));
                                frames.push(command([Bytes::from_static(b"DEL"), x.key.clone()]));
                                plan.push(Step::Expired(x.db, x.key.clone()));
                            }
                        }
                        for c in &r.cmds {
                            frames
                                .push(command([b"SELECT".to_vec(), c.db.to_string().into_bytes()]));
                            frames.push(command(c.argv.iter().cloned()));
                            for k in &c.keys {
                                frames
                                    .push(command([Bytes::from_static(b"PEXPIRETIME"), k.clone()]));
                            }
                            plan.push(Step::Command {
                                db: c.db,
                                name: String::from_utf8_lossy(&c.argv[0]).to_lowercase(),
                                keys: c.keys.clone(),
                            });
                        }
                    }
                    Command::Noop => {}
                    other => {
                        return Err(Failure::Diverged(format!(
                            "log entry {} is not a proxy-mode entry ({other:?}): every replica of \
                             a cluster must be started alike (all with --upstream, or none)",
                            e.position
                        )))
                    }
                }
                plan.push(Step::EndOfEntry);
            }
        }
        frames.push(command([b"SELECT".to_vec(), marker_db.into_bytes()]));
        frames.push(command([
            Bytes::from_static(b"SET"),
            Bytes::from_static(MARKER_KEY.as_bytes()),
            Bytes::from(last.to_string()),
        ]));
        frames.push(command(["EXEC"]));
        let n = frames.len();
        let upstream = self.upstream.addr.clone();
        let conn = self.conn().await?;
        let replies = conn.pipeline(frames).await.map_err(Failure::Transient)?;
        // Everything but EXEC's reply is +OK / +QUEUED, or a queueing error.
        if let Some(e) = replies[..n - 1].iter().find_map(error_text) {
            return Err(Failure::Transient(format!(
                "{upstream} refused a command of entries up to {last} while queueing it ({e}); \
                 nothing was applied. Committed entries must be applied, so this replica retries \
                 until the upstream takes them (out of memory? see its maxmemory)"
            )));
        }
        let BytesFrame::Array(results) = &replies[n - 1] else {
            return Err(Failure::Transient(format!(
                "{upstream} answered EXEC with {:?}",
                replies[n - 1]
            )));
        };
        // [SELECT, GET marker, ...steps..., SELECT, SET]
        let was = parse_marker(&results[1]).map_err(Failure::Diverged)?;
        let expected = (applied != Position::ZERO).then_some(applied);
        if was != expected {
            if was == Some(last) {
                return Err(Failure::AlreadyApplied);
            }
            return Err(Failure::Diverged(lost(&upstream, applied, was)));
        }
        let mut at = 2;
        let mut outcomes = Vec::with_capacity(group.entries.len());
        let mut replies_of_entry: Vec<BytesFrame> = Vec::new();
        let mut index = self.shared.index.lock();
        let mut entry_i = 0;
        for step in plan {
            match step {
                Step::Expired(db, key) => {
                    at += 2;
                    index.set(db, key, None);
                }
                Step::Command { db, name, keys } => {
                    let reply = results[at + 1].clone();
                    at += 2;
                    for k in keys {
                        if let BytesFrame::Integer(t) = &results[at] {
                            index.observe(db, k, *t);
                        }
                        at += 1;
                    }
                    match name.as_str() {
                        "flushall" => index.clear(),
                        "flushdb" => index.clear_db(db),
                        _ => {}
                    }
                    replies_of_entry.push(unshift_reply(&name, reply));
                }
                Step::EndOfEntry => {
                    let e = &group.entries[entry_i];
                    entry_i += 1;
                    let multi = matches!(&e.command, Command::Resp(RespEntry { multi: true, .. }));
                    let frame = if multi {
                        BytesFrame::Array(std::mem::take(&mut replies_of_entry))
                    } else {
                        replies_of_entry.pop().unwrap_or_else(resp::ok)
                    };
                    replies_of_entry.clear();
                    outcomes.push(Some(resp::encode(&frame)));
                }
            }
        }
        Ok(outcomes)
    }

    /// Rebuilds the deadline index from the upstream itself (after a resync
    /// or a lost reply): every key with a deadline, in every database.
    async fn rebuild_index(&mut self) {
        let result = async {
            let mut conn = self.upstream.connect().await?;
            let mut index = DeadlineIndex::default();
            for db in 0..16u8 {
                if db == self.upstream.marker_db {
                    continue;
                }
                let reply = conn
                    .call([b"SELECT".to_vec(), db.to_string().into_bytes()])
                    .await?;
                if error_text(&reply).is_some() {
                    break; // fewer databases configured
                }
                let mut cursor = b"0".to_vec();
                loop {
                    let reply = conn
                        .call([
                            b"SCAN".to_vec(),
                            cursor.clone(),
                            b"COUNT".to_vec(),
                            b"1000".to_vec(),
                        ])
                        .await?;
                    let BytesFrame::Array(parts) = reply else {
                        return Err("SCAN gave no array".to_string());
                    };
                    let (next, keys) = match parts.as_slice() {
                        [BytesFrame::BulkString(c), BytesFrame::Array(keys)] => {
                            (c.to_vec(), keys.clone())
                        }
                        _ => return Err("SCAN gave an unexpected reply".to_string()),
                    };
                    let frames: Vec<BytesFrame> = keys
                        .iter()
                        .filter_map(|k| match k {
                            BytesFrame::BulkString(k) => {
                                Some(command([Bytes::from_static(b"PEXPIRETIME"), k.clone()]))
                            }
                            _ => None,
                        })
                        .collect();
                    let times = conn.pipeline(frames).await?;
                    for (k, t) in keys.iter().zip(times) {
                        if let (BytesFrame::BulkString(k), BytesFrame::Integer(t)) = (k, t) {
                            index.observe(db, k.clone(), t);
                        }
                    }
                    if next == b"0" {
                        break;
                    }
                    cursor = next;
                }
            }
            Ok::<_, String>(index)
        }
        .await;
        match result {
            Ok(index) => *self.shared.index.lock() = index,
            Err(e) => self
                .shared
                .set_problem(Some(format!("rebuilding the deadline index: {e}"))),
        }
    }
}

/// One piece of a transaction's plan, to read its replies back.
enum Step {
    Expired(u8, Bytes),
    Command {
        db: u8,
        name: String,
        keys: Vec<Bytes>,
    },
    EndOfEntry,
}

enum Failure {
    /// The upstream is unreachable or refused; retry.
    Transient(String),
    /// The marker shows the batch already applied.
    AlreadyApplied,
    /// The upstream is not where the log left it.
    Diverged(String),
}

fn lost(addr: &str, applied: Position, marker: Option<Position>) -> String {
    format!(
        "the upstream {addr} is not where this replica left it: its applied marker is {}, but \
         this replica applied up to {applied}. It lost its data (restarted without persistence? \
         flushed?) or something else wrote it; nothing more is applied until it is resynced",
        marker.map_or("missing".to_string(), |m| m.to_string())
    )
}
