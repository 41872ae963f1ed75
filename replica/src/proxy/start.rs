//! Starting in front of an upstream: checks that the upstream can be this
//! replica's alone, reads what the proxy needs from it (its command table,
//! `proto-max-bulk-len`), rebuilds the stream machine from the log, binds
//! the feed, and makes the upstream a replica of it (every replica starts
//! as a standby).
//!
//! | the upstream is | then |
//! |---|---|
//! | a master | taken: an active's upstream before a restart, or a new one |
//! | a replica whose `masterauth` is this replica's feed secret | taken: it followed this replica before a restart |
//! | a replica of anything else | refused: something else writes it |
//! | holding keys, with no history in the log | refused unless `--adopt-upstream-data` (a new cluster's first state) |

use std::path::Path;
use std::sync::Arc;

use redis_protocol::resp2::types::BytesFrame;
use tokio::io::AsyncWriteExt;

use super::config::ProxySettings;
use super::core::ProxyCore;
pub use super::error::ProxyStartError;
use super::feed::Feed;
use super::stream::StreamMachine;
use super::table::CommandTable;
use super::upstream::{error_text, info_field, text, Conn, UpstreamError};
use crate::log::LogReader;
use crate::state_machine::Answerer;

/// The file holding the secret the upstream authenticates to the feed with.
const FEED_SECRET: &str = "feed-secret";

/// Opens proxy mode for a node whose log is read by `reader`, committed up
/// to `committed`.
pub async fn open(
    settings: ProxySettings,
    reader: LogReader,
    committed: proto_common::LogIndex,
    data_dir: &Path,
    answerer: Answerer,
    seed: Option<super::history::Seed>,
) -> Result<Arc<ProxyCore>, ProxyStartError> {
    // A replica that was part of a cluster has entries in its log, even
    // if its commit hint is older than the history's beginning.
    let empty_log = reader.last().index == proto_common::LogIndex::ZERO;
    let machine = Arc::new(StreamMachine::open(
        reader,
        committed,
        answerer,
        data_dir.join("rdb"),
        seed,
    )?);
    let addr = settings.upstream.clone();
    let mut conn = Conn::connect(&addr, settings.upstream_password.as_deref(), None)
        .await
        .map_err(ProxyStartError::Unreachable)?;
    let table = CommandTable::load(&mut conn).await?;
    let max_bulk = config_number(&mut conn, "proto-max-bulk-len")
        .await
        .unwrap_or(512 << 20);
    // One command of the stream is one log entry at the most, and one
    // entry must fit a replication frame: as large as the upstream takes
    // a command (an argument up to proto-max-bulk-len, a query up to
    // client-query-buffer-limit).
    let query_limit = config_number(&mut conn, "client-query-buffer-limit")
        .await
        .unwrap_or(1 << 30);
    let largest_command = max_bulk.max(query_limit);
    check_version(&mut conn, &addr).await?;
    if let Some(path) = &settings.upstream_socket {
        check_socket(
            &mut conn,
            &addr,
            path,
            settings.upstream_password.as_deref(),
        )
        .await?;
    }
    let secret = feed_secret(data_dir)?;
    check_role(&mut conn, &addr, &secret).await?;
    let keys = count_keys(&mut conn).await?;
    match machine.current() {
        None if empty_log && keys > 0 && !settings.adopt_upstream_data => {
            return Err(ProxyStartError::UnknownData { addr, keys })
        }
        _ if settings.adopt_upstream_data && !empty_log => {
            return Err(ProxyStartError::AdoptWithHistory)
        }
        _ => {}
    }
    prepare_for_resyncs(&mut conn, &addr).await;
    let (feed, feed_listener) = Feed::bind(secret)
        .await
        .map_err(ProxyStartError::FeedPort)?;
    let core = Arc::new(ProxyCore::new(
        settings,
        table,
        max_bulk,
        largest_command,
        machine,
        feed,
    ));
    core.set_feed_listener(feed_listener);
    core.follow().await?;
    tracing::info!(upstream = %addr, keys, max_bulk, history = ?core.machine.current(),
        "upstream checked; it follows this replica's feed until this replica leads");
    Ok(core)
}

/// The feed's secret, made once and kept in the data directory, so an
/// upstream that followed this replica before a restart is known as its.
fn feed_secret(dir: &Path) -> Result<String, ProxyStartError> {
    let path = dir.join(FEED_SECRET);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => Ok(s.trim().to_string()),
        Ok(_) | Err(_) => {
            let secret = hex::encode(proto_common::auth::new_nonce());
            let tmp = dir.join(format!("{FEED_SECRET}.tmp"));
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                f.write_all(secret.as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                std::fs::File::open(dir)?.sync_all()
            };
            write().map_err(|source| ProxyStartError::FeedSecret { path, source })?;
            Ok(secret)
        }
    }
}

/// Redis 7 or later: `REPLCONF rdb-only`, `CLIENT` per connection and the
/// replication semantics relied on here.
async fn check_version(conn: &mut Conn, addr: &str) -> Result<(), ProxyStartError> {
    let info = conn.call(["INFO", "server"]).await?;
    let info = text(&info).unwrap_or_default();
    let version = info_field(&info, "redis_version").unwrap_or_default();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        return Err(ProxyStartError::TooOld {
            addr: addr.to_string(),
            version,
        });
    }
    Ok(())
}

/// The Unix socket reaches the same redis-server as `addr` (the same
/// `run_id`): sessions on one server and the tap on another would answer
/// clients with effects never logged.
async fn check_socket(
    conn: &mut Conn,
    addr: &str,
    path: &Path,
    password: Option<&str>,
) -> Result<(), ProxyStartError> {
    let socket_error = |why: String| ProxyStartError::Socket {
        path: path.to_path_buf(),
        why,
    };
    let info = conn.call(["INFO", "server"]).await?;
    let tcp_id = info_field(&text(&info).unwrap_or_default(), "run_id").unwrap_or_default();
    let target = super::upstream::SessionTarget::Unix(path.to_path_buf());
    let mut stream = super::upstream::session_connection(&target, password)
        .await
        .map_err(|e| socket_error(e.to_string()))?;
    let io = |e: std::io::Error| socket_error(e.to_string());
    stream
        .write_all(&super::request::Request::new(["INFO", "server"]).raw)
        .await
        .map_err(io)?;
    let mut buf = bytes::BytesMut::new();
    let reply = super::upstream::read_reply(&mut stream, &mut buf)
        .await
        .map_err(|e| match e {
            super::upstream::ReplyError::Io(e) => io(e),
            super::upstream::ReplyError::Malformed(why) => socket_error(why),
            super::upstream::ReplyError::Closed => socket_error("the connection closed".into()),
        })?;
    let socket_id = info_field(&String::from_utf8_lossy(&reply), "run_id").unwrap_or_default();
    if socket_id.is_empty() || socket_id != tcp_id {
        return Err(ProxyStartError::OtherServer {
            path: path.to_path_buf(),
            addr: addr.to_string(),
        });
    }
    Ok(())
}

/// A master, or a replica of this replica's feed; nothing else writes it.
async fn check_role(conn: &mut Conn, addr: &str, secret: &str) -> Result<(), ProxyStartError> {
    let info = conn.call(["INFO", "replication"]).await?;
    let info = text(&info).unwrap_or_default();
    match info_field(&info, "role").as_deref() {
        Some("master") => Ok(()),
        Some(_) => {
            let reply = conn.call(["CONFIG", "GET", "masterauth"]).await?;
            let ours = match &reply {
                BytesFrame::Array(kv) if kv.len() == 2 => text(&kv[1]).as_deref() == Some(secret),
                _ => false,
            };
            if ours {
                return Ok(());
            }
            Err(ProxyStartError::FollowsAnother {
                addr: addr.to_string(),
                master: format!(
                    "{}:{}",
                    info_field(&info, "master_host").unwrap_or_default(),
                    info_field(&info, "master_port").unwrap_or_default()
                ),
            })
        }
        None => Err(ProxyStartError::NoRole {
            addr: addr.to_string(),
        }),
    }
}

/// A standby's full resync fetches an RDB from the active's upstream: it
/// starts at once instead of waiting `repl-diskless-sync-delay` (5 s by
/// default) for more replicas to join.
pub(super) async fn prepare_for_resyncs(conn: &mut Conn, addr: &str) {
    let reply = conn
        .call(["CONFIG", "SET", "repl-diskless-sync-delay", "0"])
        .await;
    if let Some(e) = match &reply {
        Ok(frame) => error_text(frame).map(str::to_string),
        Err(e) => Some(e.to_string()),
    } {
        tracing::warn!(upstream = %addr, error = %e,
            "cannot set repl-diskless-sync-delay 0; full resyncs from this upstream start 5 s late");
    }
}

async fn config_number(conn: &mut Conn, key: &str) -> Option<u64> {
    match conn
        .call(["CONFIG".to_string(), "GET".into(), key.to_string()])
        .await
        .ok()?
    {
        BytesFrame::Array(kv) if kv.len() == 2 => text(&kv[1])?.parse().ok(),
        _ => None,
    }
}

/// Keys in every database, from `INFO keyspace`.
async fn count_keys(conn: &mut Conn) -> Result<u64, UpstreamError> {
    let info = conn.call(["INFO", "keyspace"]).await?;
    let info = text(&info).unwrap_or_default();
    let mut keys = 0;
    for line in info.lines() {
        let Some((db, rest)) = line.split_once(':') else {
            continue;
        };
        if !db.starts_with("db") {
            continue;
        }
        keys += info_field(&rest.replace(',', "\n").replace('=', ":"), "keys")
            .and_then(|k| k.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(keys)
}
