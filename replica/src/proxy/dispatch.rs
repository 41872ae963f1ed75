//! What happens to a client's command (DESIGN.md, "Logging client
//! commands", "Sessions and refusals"):
//!
//! - **refused** with `-ERR` naming the command, why, and what to do
//!   instead: scripts and functions, `WATCH`, blocking commands, pub/sub,
//!   administrative commands, random writes, commands that move keys
//!   between databases or servers;
//! - **written** (the upstream's table says `write`): on the active, made
//!   deterministic, logged with any expiry now due on its keys, committed,
//!   applied everywhere, and answered with the upstream's own reply; on a
//!   standby, forwarded to the active;
//! - **read**: on the active, from the local upstream (which holds
//!   committed data only) under the lease, after committing any expiry due
//!   on its keys; on a standby, forwarded to the active, or served by the
//!   standby's own upstream with `standby_reads = local`.
//!
//! A client's `MULTI … EXEC` is logged as one entry when it writes, and
//! run as one upstream transaction when it only reads.

use bytes::Bytes;
use proto_common::auth::Grant;
use redis_protocol::resp2::types::BytesFrame;

use super::client::Session;
use super::config::StandbyReads;
use super::core::ProxyCore;
use super::expiry::{now_ms, unshift_reply};
use super::resp::{error, Reply};
use super::rewrite;
use super::table::{CommandTable, Lookup};
use super::upstream::Conn;
use crate::api::forward::ACTIVE_CHANGED_GRACE;
use crate::command::{Command, Expire, RespCmd, RespEntry};
use crate::commit::WriteError;
use crate::role::ActiveGuard;
use crate::state::Outcome;

/// Most due expiries committed in one entry.
const MAX_EXPIRE_BATCH: usize = 1000;

/// How a command is handled.
#[derive(Debug)]
pub enum Kind {
    /// Answered by the session itself (lowercase name).
    Local(String),
    Read,
    Write,
    /// Not allowed inside `MULTI` (its `no_multi` flag).
    NoMulti,
    Refused(String),
}

/// Commands the session answers itself.
const LOCAL: [&str; 13] = [
    "auth", "hello", "ping", "select", "quit", "reset", "multi", "exec", "discard", "info", "role",
    "watch", "unwatch",
];

/// Classifies `argv` (see the module docs).
pub fn classify(core: &ProxyCore, argv: &[Bytes]) -> Kind {
    let name = String::from_utf8_lossy(&argv[0]).to_lowercase();
    if LOCAL.contains(&name.as_str()) {
        if name == "watch" || name == "unwatch" {
            return Kind::Refused(
                "ERR WATCH is not supported by understudy: optimistic locking would need every \
                 replica to see the same interleaving of reads; group the writes in MULTI/EXEC, \
                 which is applied atomically everywhere"
                    .into(),
            );
        }
        return Kind::Local(name);
    }
    let info = match core.table.lookup(argv) {
        Lookup::Found(info) => info,
        Lookup::Invalid(e) => return Kind::Refused(e),
    };
    let refused = |why: &str| {
        Kind::Refused(format!(
            "ERR {} is not supported by understudy: {why}",
            name.to_uppercase()
        ))
    };
    match name.as_str() {
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "script" | "fcall" | "fcall_ro"
        | "function" => {
            return refused(
                "a script's writes are known only once it runs, so they cannot be logged and \
                 replicated deterministically; send the commands themselves, grouped in \
                 MULTI/EXEC",
            )
        }
        "move" | "swapdb" | "migrate" => {
            return refused(
                "it moves keys between databases or servers, which the replicas' expiry \
                 tracking does not follow; copy the value with DUMP and RESTORE in the target \
                 database instead",
            )
        }
        "copy" if argv.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"DB")) => {
            return refused("COPY with DB copies between databases; copy within one database, or use DUMP and RESTORE")
        }
        "wait" | "waitaof" => {
            return refused(
                "understudy acknowledges a write only once its sync standbys hold it durably, so \
                 there is nothing to wait for",
            )
        }
        _ => {}
    }
    if info.flags.blocking {
        return refused(
            "it blocks the connection waiting for data; poll with the non-blocking form instead \
             (e.g. LPOP for BLPOP)",
        );
    }
    if info.flags.pubsub {
        return refused(
            "publish/subscribe messages are not replicated; use the upstream server directly for \
             pub/sub",
        );
    }
    if info.flags.admin {
        return refused(
            "administrative commands would change or bypass the upstream that understudy \
             controls; run it on the upstream server itself (never one that writes data)",
        );
    }
    if info.flags.no_multi {
        return Kind::NoMulti;
    }
    if info.flags.write {
        Kind::Write
    } else {
        Kind::Read
    }
}

/// A database number a client may use: not the marker's.
pub fn database(arg: &Bytes, marker_db: u8) -> Result<u8, String> {
    let n: i64 = std::str::from_utf8(arg)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or("ERR value is not an integer or out of range")?;
    if !(0..=15).contains(&n) {
        return Err("ERR DB index is out of range".into());
    }
    if n == marker_db as i64 {
        return Err(format!(
            "ERR database {n} is reserved by understudy for its applied marker (marker_db); use \
             another database"
        ));
    }
    Ok(n as u8)
}

/// One command outside `MULTI`.
pub async fn command(s: &mut Session, argv: Vec<Bytes>) -> Reply {
    let kind = classify(&s.core, &argv);
    match kind {
        Kind::Refused(why) => error(why).into(),
        Kind::Local(_) => error("ERR this command cannot be sent here").into(),
        Kind::NoMulti | Kind::Read => read(s, vec![argv], false).await,
        Kind::Write if s.grant < Some(Grant::ReadWrite) => read_only_refusal(),
        Kind::Write => write(s, vec![argv], false).await,
    }
}

fn read_only_refusal() -> Reply {
    error(
        "NOPERM this connection authenticated with the read-only client token, which allows \
         reads only; AUTH with the read-write client token to write",
    )
    .into()
}

/// `EXEC` of a queued block.
pub async fn exec(s: &mut Session, queued: Vec<Vec<Bytes>>) -> Reply {
    if queued.is_empty() {
        return BytesFrame::Array(vec![]).into();
    }
    let writes = queued
        .iter()
        .any(|argv| matches!(classify(&s.core, argv), Kind::Write));
    if writes && s.grant < Some(Grant::ReadWrite) {
        read_only_refusal()
    } else if writes {
        write(s, queued, true).await
    } else {
        read(s, queued, true).await
    }
}

/// Whether this replica answers as the active now: `Ok(Some(guard))` on
/// the active (the role's reader guard, and an upstream it can use),
/// `Ok(None)` on a standby, or the refusal a client gets (`TRYAGAIN`).
fn as_active(s: &Session) -> Result<Option<ActiveGuard>, Reply> {
    match s.node.roles.reader(s.node.applied()) {
        Ok(guard) => match s.core.machine.problem() {
            Some(p) => Err(error(format!(
                "TRYAGAIN this replica's upstream cannot be used: {p}"
            ))
            .into()),
            None => Ok(Some(guard)),
        },
        Err(e) if e.is_standby() => Ok(None),
        Err(e) => Err(error(format!("TRYAGAIN {e}")).into()),
    }
}

async fn read(s: &mut Session, cmds: Vec<Vec<Bytes>>, multi: bool) -> Reply {
    let guard = match as_active(s) {
        Ok(Some(guard)) => guard,
        Ok(None) => {
            return match s.core.settings.standby_reads {
                StandbyReads::Local => local(s, cmds, multi).await,
                StandbyReads::Forward => forward(s, cmds, multi, false).await,
            }
        }
        Err(refused) => return refused,
    };
    // Expiries due on the keys read are committed first: a reader never
    // sees a key its deadline has passed.
    let mut due = Vec::new();
    let mut db = s.db;
    for argv in &cmds {
        if argv[0].eq_ignore_ascii_case(b"SELECT") {
            if let Some(n) = argv
                .get(1)
                .and_then(|a| database(a, s.core.settings.marker_db).ok())
            {
                db = n;
            }
            continue;
        }
        let keyspace = ["keys", "scan", "dbsize", "randomkey"]
            .iter()
            .any(|k| argv[0].eq_ignore_ascii_case(k.as_bytes()));
        if keyspace {
            due.extend(all_due(s));
        } else {
            match keys_of(s, argv).await {
                Ok(keys) => due.extend(due_among(s, db, &keys)),
                Err(e) => return error(e).into(),
            }
        }
    }
    if !due.is_empty() {
        if let Err(e) = commit_expiries(s, &guard, due).await {
            return e;
        }
    }
    let reply = local(s, cmds, multi).await;
    // Served under the lease only if the lease still holds once the
    // upstream has answered (a pause in between could have let another
    // active take writes).
    match guard.check() {
        Ok(()) => reply,
        Err(e) => error(format!("TRYAGAIN {e}")).into(),
    }
}

/// Runs reads on the local upstream (through the shared connection).
async fn local(s: &mut Session, cmds: Vec<Vec<Bytes>>, multi: bool) -> Reply {
    let db = s.db;
    let marker_db = s.core.settings.marker_db;
    // SELECTs inside a block move the client's database with it.
    let final_db = cmds
        .iter()
        .rev()
        .filter(|a| a[0].eq_ignore_ascii_case(b"SELECT"))
        .find_map(|a| a.get(1).and_then(|n| database(n, marker_db).ok()))
        .unwrap_or(db);
    let names: Vec<String> = cmds
        .iter()
        .map(|a| String::from_utf8_lossy(&a[0]).to_lowercase())
        .collect();
    let mut frames = Vec::with_capacity(cmds.len() + 2);
    if multi {
        frames.push(super::resp::command(["MULTI"]));
    }
    frames.extend(cmds.into_iter().map(super::resp::command));
    if multi {
        frames.push(super::resp::command(["EXEC"]));
    }
    let replies = match s.core.reads().call(db, frames).await {
        Ok(r) => r,
        Err(e) => return error(format!("TRYAGAIN the local upstream failed: {e}")).into(),
    };
    if !multi {
        let reply = replies.into_iter().next().unwrap_or(BytesFrame::Null);
        return unshift_reply(&names[0], reply).into();
    }
    s.db = final_db;
    match replies.into_iter().last().unwrap_or(BytesFrame::Null) {
        BytesFrame::Array(items) => BytesFrame::Array(
            items
                .into_iter()
                .zip(&names)
                .map(|(r, n)| unshift_reply(n, r))
                .collect(),
        )
        .into(),
        other => other.into(),
    }
}

/// The keys `argv` touches: the table's fixed positions, or the upstream's
/// `COMMAND GETKEYS` for commands whose keys move.
async fn keys_of(s: &mut Session, argv: &[Bytes]) -> Result<Vec<Bytes>, String> {
    let info = match s.core.table.lookup(argv) {
        Lookup::Found(i) => i,
        Lookup::Invalid(e) => return Err(e),
    };
    if !info.flags.movablekeys {
        return Ok(CommandTable::fixed_keys(info, argv));
    }
    let mut args = vec![
        Bytes::from_static(b"COMMAND"),
        Bytes::from_static(b"GETKEYS"),
    ];
    args.extend(argv.iter().cloned());
    let reply = s
        .core
        .reads()
        .call(s.db, vec![super::resp::command(args)])
        .await
        .map_err(|e| format!("TRYAGAIN {e}"))?;
    match reply.into_iter().next().unwrap_or(BytesFrame::Null) {
        BytesFrame::Array(keys) => Ok(keys
            .into_iter()
            .filter_map(|k| match k {
                BytesFrame::BulkString(b) => Some(b),
                _ => None,
            })
            .collect()),
        // "The command has no key arguments" and the like.
        _ => Ok(Vec::new()),
    }
}

fn due_among(s: &Session, db: u8, keys: &[Bytes]) -> Vec<Expire> {
    let now = now_ms();
    let index = s.core.machine.shared.index.lock();
    keys.iter()
        .filter_map(|k| {
            index.get(db, k).filter(|d| *d <= now).map(|d| Expire {
                db,
                key: k.clone(),
                deadline_ms: d,
            })
        })
        .collect()
}

fn all_due(s: &Session) -> Vec<Expire> {
    let index = s.core.machine.shared.index.lock();
    index
        .due(now_ms(), MAX_EXPIRE_BATCH)
        .into_iter()
        .map(|(db, key, deadline_ms)| Expire {
            db,
            key,
            deadline_ms,
        })
        .collect()
}

/// Logs and waits for an entry of expiries only.
async fn commit_expiries(
    s: &Session,
    guard: &ActiveGuard,
    expire: Vec<Expire>,
) -> Result<(), Reply> {
    let entry = RespEntry {
        multi: false,
        expire,
        cmds: Vec::new(),
    };
    match s.node.write(guard, Command::Resp(entry)).await {
        Ok(_) => Ok(()),
        Err(e) => Err(write_error(e)),
    }
}

async fn write(s: &mut Session, cmds: Vec<Vec<Bytes>>, multi: bool) -> Reply {
    let guard = match as_active(s) {
        Ok(Some(guard)) => guard,
        Ok(None) => return forward(s, cmds, multi, true).await,
        Err(refused) => return refused,
    };
    let now = now_ms();
    let mut entry = RespEntry {
        multi,
        expire: Vec::new(),
        cmds: Vec::with_capacity(cmds.len()),
    };
    let mut db = s.db;
    for argv in cmds {
        if argv[0].eq_ignore_ascii_case(b"SELECT") {
            if let Some(n) = argv
                .get(1)
                .and_then(|a| database(a, s.core.settings.marker_db).ok())
            {
                db = n;
            }
            entry.cmds.push(RespCmd {
                db,
                argv,
                keys: Vec::new(),
            });
            continue;
        }
        let argv = match rewrite::deterministic(&argv, now) {
            Ok(Some(new)) => new,
            Ok(None) => argv,
            Err(why) => return error(why).into(),
        };
        let keys = match keys_of(s, &argv).await {
            Ok(k) => k,
            Err(e) => return error(e).into(),
        };
        let keyspace = ["keys", "scan", "dbsize", "randomkey", "flushdb", "flushall"]
            .contains(&String::from_utf8_lossy(&argv[0]).to_lowercase().as_str());
        if keyspace {
            entry.expire.extend(all_due(s));
        } else {
            entry.expire.extend(due_among(s, db, &keys));
        }
        entry.cmds.push(RespCmd { db, argv, keys });
    }
    if multi {
        s.db = db;
    }
    // The guard is checked again once the write is committed, right
    // before the answer (`Node::write`).
    match s.node.write(&guard, Command::Resp(entry)).await {
        Ok(ack) => match ack.outcome {
            Outcome::Reply(bytes) => Reply::Encoded(bytes),
            Outcome::Mismatch(why) => error(format!("ERR {why}")).into(),
            other => error(format!("ERR unexpected outcome {other:?}")).into(),
        },
        Err(e) => write_error(e),
    }
}

/// A write that was not acknowledged, as a Redis error. Refused before it
/// was written: `TRYAGAIN` (safe to retry); possibly written: `UNKNOWN`
/// (read it back before retrying).
fn write_error(e: WriteError) -> Reply {
    match e {
        WriteError::NotWritable(m) | WriteError::NoSyncStandby(m) | WriteError::Overloaded(m) => {
            error(format!("TRYAGAIN {m}")).into()
        }
        WriteError::Indeterminate(m) => error(format!("UNKNOWN outcome unknown: {m}")).into(),
        WriteError::Storage(m) => error(format!("ERR {m}")).into(),
    }
}

/// Sends commands to the active (a standby), keeping the client's database.
///
/// When the arbiter names another active meanwhile, the old one may be cut
/// off or frozen and never answer: a connection still being made is
/// abandoned at once (nothing was sent), and a sent command gets
/// [`ACTIVE_CHANGED_GRACE`] more (a handing-over active answers within
/// it) before the client is told, rather than after the whole timeout.
async fn forward(s: &mut Session, cmds: Vec<Vec<Bytes>>, multi: bool, writes: bool) -> Reply {
    let role = s.node.role();
    let active_changed = s.node.roles.active_moved(role.active_url());
    tokio::pin!(active_changed);
    let Some(addr) = s.core.active_resp() else {
        let why = role
            .not_writable()
            .unwrap_or_else(|| "this replica is not the active".into());
        return error(format!(
            "TRYAGAIN {why}; no active is known right now — retry shortly"
        ))
        .into();
    };
    if s.forward.as_ref().is_some_and(|(a, _, _)| *a != addr) {
        s.forward = None;
    }
    if s.forward.is_none() {
        let password = s
            .node
            .settings
            .token
            .as_ref()
            .map(|t| t.secret().to_string())
            .or_else(|| s.core.settings.client_password.clone());
        let connected = tokio::select! {
            c = Conn::connect(&addr, password.as_deref(), s.node.settings.tls.as_deref()) => c,
            _ = &mut active_changed => Err("another active was named meanwhile".into()),
        };
        match connected {
            Ok(c) => s.forward = Some((addr.clone(), c, 0)),
            Err(e) => {
                return error(format!(
                    "TRYAGAIN the active at {addr} cannot be reached ({e}); the command was not \
                     sent — retry"
                ))
                .into()
            }
        }
    }
    let db = s.db;
    let (_, conn, selected) = s.forward.as_mut().expect("connected");
    let mut frames = Vec::new();
    if *selected != db {
        frames.push(super::resp::command([
            b"SELECT".to_vec(),
            db.to_string().into_bytes(),
        ]));
    }
    let skip = frames.len();
    if multi {
        frames.push(super::resp::command(["MULTI"]));
    }
    frames.extend(cmds.into_iter().map(super::resp::command));
    if multi {
        frames.push(super::resp::command(["EXEC"]));
    }
    let answer = {
        let sent = conn.pipeline(frames);
        tokio::pin!(sent);
        tokio::select! {
            answer = &mut sent => answer,
            _ = &mut active_changed => {
                match tokio::time::timeout(ACTIVE_CHANGED_GRACE, &mut sent).await {
                    Ok(answer) => answer,
                    Err(_) => Err(format!(
                        "another active was named and this one did not answer within \
                         {ACTIVE_CHANGED_GRACE:?} more"
                    )),
                }
            }
        }
    };
    match answer {
        Ok(replies) => {
            *selected = db;
            let reply = if multi {
                replies.last().cloned()
            } else {
                replies.get(skip).cloned()
            };
            reply.unwrap_or(BytesFrame::Null).into()
        }
        Err(e) => {
            s.forward = None;
            if writes {
                error(format!(
                    "UNKNOWN outcome unknown: forwarding to the active at {addr} failed after \
                     the command was sent ({e}); read it back before retrying"
                ))
                .into()
            } else {
                error(format!(
                    "TRYAGAIN forwarding to the active at {addr} failed ({e}); retry"
                ))
                .into()
            }
        }
    }
}
