//! Starting in front of an upstream (DESIGN.md, "The applied marker"): check
//! that the upstream can be ours alone, read its applied marker, and
//! decide against the log what happens next.
//!
//! | the upstream holds | then |
//! |---|---|
//! | a marker the log holds (or its base) | replay the committed entries after it |
//! | no marker, no data, a log from the start | replay the whole log |
//! | no marker, no data, nothing in the log | a new replica: fill it from the active's upstream |
//! | no marker, no data, a log that starts later | resync from the active's upstream |
//! | no marker, but data | refuse to start, unless `--adopt-upstream-data` for a new cluster |
//! | a marker the log does not hold | refuse to serve it: resync from the active's upstream |

use bytes::Bytes;
use proto_common::{LogIndex, Position};
use redis_protocol::resp2::types::BytesFrame;

use super::config::ProxySettings;
use super::expiry::SHIFT_MS;
use super::machine::{UpstreamAddr, MARKER_KEY};
use super::resp::command;
use super::table::CommandTable;
use super::upstream::{error_text, info_field, text, Conn};
use crate::log::LogReader;

/// What the upstream holds, checked against the log.
pub struct Start {
    /// Applied up to here (the marker).
    pub applied: Position,
    /// Why it must be resynced from the active's upstream before use.
    pub resync: Option<String>,
    /// A new replica (empty log, empty upstream): it may lead an empty
    /// cluster, and fills its upstream from the active's when it follows.
    pub fresh: bool,
    pub table: CommandTable,
}

/// Checks the upstream and decides (see the module docs).
pub async fn check(
    settings: &ProxySettings,
    reader: &LogReader,
    log_base: Position,
) -> Result<Start, String> {
    let upstream = UpstreamAddr::of(settings);
    let addr = &settings.upstream;
    let mut conn = upstream
        .connect()
        .await
        .map_err(|e| format!("{e}; start the upstream there, or point --upstream at it"))?;
    let table = CommandTable::load(&mut conn).await?;
    check_role(&mut conn, addr).await?;
    check_eviction(&mut conn, addr).await?;
    prepare_for_resyncs(&mut conn, addr).await;
    let marker = upstream.read_marker(&mut conn).await.map_err(|e| {
        format!(
            "{e} (is marker_db={} within the upstream's `databases`?)",
            settings.marker_db
        )
    })?;
    let keys = count_keys(&mut conn, settings.marker_db).await?;
    let last = reader.last();
    let empty_log = last.index == LogIndex::ZERO && log_base == Position::ZERO;
    let (applied, resync) = match marker {
        Some(m) if m == log_base || reader.position_of(m.index) == Some(m) => (m, None),
        Some(m) => {
            let here = reader
                .position_of(m.index)
                .map_or("nothing".to_string(), |p| p.to_string());
            let why = format!(
                "the upstream {addr} says it applied up to {m}, but this replica's log holds \
                 {here} at index {} (log from {log_base} to {last}): the upstream has writes the \
                 cluster does not. It is not served; it will be filled from the active's upstream",
                m.index
            );
            (Position::ZERO, Some(why))
        }
        None if keys == 0 && empty_log => (Position::ZERO, None),
        None if keys == 0 && log_base == Position::ZERO => (Position::ZERO, None),
        None if keys == 0 => (
            Position::ZERO,
            Some(format!(
                "the upstream {addr} is empty, and this replica's log starts after {log_base}, \
                 so it cannot be rebuilt from the log alone; it is filled from the active's upstream"
            )),
        ),
        None if settings.adopt_upstream_data => {
            if !empty_log {
                return Err(format!(
                    "--adopt-upstream-data is for a new cluster only, but this replica's log \
                     already holds entries up to {last}; remove the flag"
                ));
            }
            adopt(&mut conn, &upstream, keys).await?;
            (Position::ZERO, None)
        }
        None => {
            return Err(format!(
                "the upstream {addr} holds {keys} keys but no applied marker: it was not written \
                 through understudy, and serving it would make replicas differ. To make this \
                 data the first state of a new cluster, start this replica alone with \
                 --adopt-upstream-data; to join an existing cluster, empty it (FLUSHALL)"
            ))
        }
    };
    if resync.is_none() {
        tracing::info!(upstream = %addr, applied = %applied, keys, "upstream checked");
    }
    let fresh = resync.is_none() && marker.is_none() && keys == 0 && empty_log;
    Ok(Start {
        applied,
        resync,
        fresh,
        table,
    })
}

/// The upstream must be a master: a replica would take writes from
/// someone else. Replicas of it that understudy did not set up are named.
async fn check_role(conn: &mut Conn, addr: &str) -> Result<(), String> {
    let info = conn.call(["INFO", "replication"]).await?;
    let info = text(&info).unwrap_or_default();
    match info_field(&info, "role").as_deref() {
        Some("master") => {}
        Some(role) => {
            return Err(format!(
                "the upstream {addr} is a replica (role:{role}) of {}:{}; understudy must be its \
                 only writer. Run REPLICAOF NO ONE on it, or point --upstream at a master",
                info_field(&info, "master_host").unwrap_or_default(),
                info_field(&info, "master_port").unwrap_or_default()
            ))
        }
        None => {
            return Err(format!(
                "the upstream {addr} did not say its role (INFO replication)"
            ))
        }
    }
    let replicas: u64 = info_field(&info, "connected_slaves")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if replicas > 0 {
        tracing::warn!(upstream = %addr, replicas,
            "the upstream has replicas of its own; understudy replicates through its log, and \
             anything written to those replicas directly is not replicated");
    }
    Ok(())
}

/// Any replica may become the active, whose upstream others then copy
/// (full resync): start such a copy at once instead of waiting
/// `repl-diskless-sync-delay` (5 s by default) for more copies to join.
async fn prepare_for_resyncs(conn: &mut Conn, addr: &str) {
    let reply = conn
        .call(["CONFIG", "SET", "repl-diskless-sync-delay", "0"])
        .await;
    if let Some(e) = reply
        .as_ref()
        .ok()
        .and_then(error_text)
        .map(str::to_string)
        .or(reply.err())
    {
        tracing::warn!(upstream = %addr, error = %e,
            "cannot set repl-diskless-sync-delay 0; full resyncs from this upstream start 5 s late");
    }
}

/// Evicting keys under memory pressure would make upstreams differ.
async fn check_eviction(conn: &mut Conn, addr: &str) -> Result<(), String> {
    let replies = conn
        .pipeline(vec![
            command(["CONFIG", "GET", "maxmemory"]),
            command(["CONFIG", "GET", "maxmemory-policy"]),
        ])
        .await?;
    let value = |f: &BytesFrame| match f {
        BytesFrame::Array(kv) if kv.len() == 2 => text(&kv[1]),
        _ => None,
    };
    if let Some(e) = replies.iter().find_map(error_text) {
        tracing::warn!(upstream = %addr, error = %e,
            "cannot read maxmemory and maxmemory-policy; make sure the upstream never evicts keys");
        return Ok(());
    }
    let maxmemory = value(&replies[0]).unwrap_or_default();
    let policy = value(&replies[1]).unwrap_or_default();
    if maxmemory != "0" && policy != "noeviction" {
        return Err(format!(
            "the upstream {addr} has maxmemory {maxmemory} with maxmemory-policy {policy}: it \
             would evict keys its peers keep, and the replicas would differ. Set \
             maxmemory-policy noeviction (writes are then refused when it is full), or maxmemory 0"
        ));
    }
    Ok(())
}

/// Keys in every database but the marker's, from `INFO keyspace`.
async fn count_keys(conn: &mut Conn, marker_db: u8) -> Result<u64, String> {
    let info = conn.call(["INFO", "keyspace"]).await?;
    let info = text(&info).unwrap_or_default();
    let mut keys = 0;
    for line in info.lines() {
        let Some((db, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(n) = db.strip_prefix("db").and_then(|n| n.parse::<u8>().ok()) else {
            continue;
        };
        if n == marker_db {
            continue;
        }
        keys += info_field(&rest.replace(',', "\n").replace('=', ":"), "keys")
            .and_then(|k| k.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(keys)
}

/// Makes the upstream's data the cluster's first state: every deadline is
/// shifted (so the upstream stops expiring keys by its own clock), and the
/// marker says "nothing of the log applied yet".
async fn adopt(conn: &mut Conn, upstream: &UpstreamAddr, keys: u64) -> Result<(), String> {
    let mut shifted = 0u64;
    for db in 0..16u8 {
        if db == upstream.marker_db {
            continue;
        }
        let reply = conn
            .call([b"SELECT".to_vec(), db.to_string().into_bytes()])
            .await?;
        if error_text(&reply).is_some() {
            break;
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
            let (next, found) = match reply {
                BytesFrame::Array(p) if p.len() == 2 => match (&p[0], &p[1]) {
                    (BytesFrame::BulkString(c), BytesFrame::Array(k)) => (c.to_vec(), k.clone()),
                    _ => return Err("SCAN gave an unexpected reply".into()),
                },
                _ => return Err("SCAN gave an unexpected reply".into()),
            };
            let names: Vec<Bytes> = found
                .into_iter()
                .filter_map(|k| match k {
                    BytesFrame::BulkString(b) => Some(b),
                    _ => None,
                })
                .collect();
            let times = conn
                .pipeline(
                    names
                        .iter()
                        .map(|k| command([Bytes::from_static(b"PEXPIRETIME"), k.clone()]))
                        .collect(),
                )
                .await?;
            let mut updates = Vec::new();
            for (k, t) in names.iter().zip(times) {
                if let BytesFrame::Integer(t) = t {
                    if (0..SHIFT_MS).contains(&t) {
                        updates.push(command([
                            Bytes::from_static(b"PEXPIREAT"),
                            k.clone(),
                            Bytes::from((t + SHIFT_MS).to_string()),
                        ]));
                    }
                }
            }
            shifted += updates.len() as u64;
            if !updates.is_empty() {
                conn.pipeline(updates).await?;
            }
            if next == b"0" {
                break;
            }
            cursor = next;
        }
    }
    conn.pipeline(vec![
        command([
            b"SELECT".to_vec(),
            upstream.marker_db.to_string().into_bytes(),
        ]),
        command([&b"SET"[..], MARKER_KEY.as_bytes(), &b"0.0"[..]]),
    ])
    .await?;
    tracing::warn!(upstream = %upstream.addr, keys, deadlines_shifted = shifted,
        "adopted the upstream's data as the cluster's first state (--adopt-upstream-data); \
         start the standbys only once this replica is the active");
    Ok(())
}
