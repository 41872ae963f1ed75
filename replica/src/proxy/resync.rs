//! Full resync (DESIGN.md, "The applied marker"): a standby whose upstream
//! is new, lost its data, or holds writes the cluster does not, fills it
//! from the active's upstream with Redis's own replication, then follows
//! the log from the marker that came with the data.
//!
//! 1. `REPLICAOF` the active's upstream (advertised in the handshake) and
//!    wait until the initial sync is done (`master_link_status:up`, no
//!    sync in progress); writes on the active go on meanwhile.
//! 2. `REPLICAOF NO ONE`, then read the marker M. It is consistent with
//!    the data: every entry and its marker were applied in one transaction,
//!    and Redis replicates a transaction whole.
//! 3. The local log's entries after M go to `quarantine/` (never silently
//!    dropped), the log restarts at M, and the state machine continues
//!    from M. The next handshake asks the active for the log after M.

use std::time::{Duration, Instant};

use proto_common::Position;

use super::core::ProxyCore;
use super::upstream::{error_text, info_field, text};
use crate::log::group_commit::LogRequest;
use crate::node::Node;

/// Longest a `REPLICAOF` initial sync may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the sync's progress is read.
const POLL: Duration = Duration::from_millis(50);

/// Fills this replica's upstream from `active_upstream` (`host:port`) and
/// restarts the log at the marker that came with it.
pub async fn full_resync(
    node: &Node,
    core: &ProxyCore,
    active_upstream: &str,
) -> Result<Position, String> {
    let upstream = core.upstream();
    let (host, port) = active_upstream.rsplit_once(':').ok_or_else(|| {
        format!("the active advertised upstream address {active_upstream:?}, which has no port")
    })?;
    tracing::warn!(from = %active_upstream, why = ?core.needs_resync(),
        "full resync: copying the active's upstream with REPLICAOF");
    let started = Instant::now();
    let mut conn = upstream.connect().await?;
    if let Some(pw) = &upstream.password {
        let reply = conn
            .call([
                b"CONFIG".to_vec(),
                b"SET".to_vec(),
                b"masterauth".to_vec(),
                pw.as_bytes().to_vec(),
            ])
            .await?;
        if let Some(e) = error_text(&reply) {
            return Err(format!(
                "cannot set masterauth on {} for the resync: {e}",
                upstream.addr
            ));
        }
    }
    let reply = conn
        .call([
            b"REPLICAOF".to_vec(),
            host.as_bytes().to_vec(),
            port.as_bytes().to_vec(),
        ])
        .await?;
    if let Some(e) = error_text(&reply) {
        return Err(format!(
            "{} refused REPLICAOF {active_upstream}: {e}",
            upstream.addr
        ));
    }
    let synced = wait_for_sync(&mut conn, active_upstream).await;
    // Detach whatever happened: the upstream must never stay a replica.
    let detach = conn.call(["REPLICAOF", "NO", "ONE"]).await;
    synced?;
    if let Some(e) = detach.as_ref().ok().and_then(error_text) {
        return Err(format!("{} refused REPLICAOF NO ONE: {e}", upstream.addr));
    }
    detach?;
    let marker = upstream
        .read_marker(&mut conn)
        .await?
        .unwrap_or(Position::ZERO);
    restart_log_at(node, marker).await?;
    core.resynced();
    tracing::warn!(from = %active_upstream, marker = %marker,
        seconds = started.elapsed().as_secs_f64(), "full resync done; following the log from the marker");
    Ok(marker)
}

async fn wait_for_sync(conn: &mut super::upstream::Conn, from: &str) -> Result<(), String> {
    let deadline = Instant::now() + SYNC_TIMEOUT;
    loop {
        let info = conn.call(["INFO", "replication"]).await?;
        let info = text(&info).unwrap_or_default();
        let up = info_field(&info, "master_link_status").as_deref() == Some("up");
        let syncing = info_field(&info, "master_sync_in_progress").as_deref() == Some("1");
        if up && !syncing {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the initial sync from {from} did not finish within {SYNC_TIMEOUT:?} \
                 (master_link_status:{}, master_sync_in_progress:{})",
                info_field(&info, "master_link_status").unwrap_or_default(),
                info_field(&info, "master_sync_in_progress").unwrap_or_default()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Sets the local log's tail after `marker` aside, restarts the log at
/// `marker`, and continues the state machine from there.
async fn restart_log_at(node: &Node, marker: Position) -> Result<(), String> {
    let last = node.reader.last();
    if last.index > marker.index {
        let from = marker.index.max(node.reader.base().index).next();
        let tail = crate::repl::cut::read_from(node, from)?;
        let dir = node.data_dir().to_path_buf();
        let reason = format!(
            "full resync: the upstream was copied from the active's at {marker}; these entries \
             of the local log came after it"
        );
        let count = tokio::task::spawn_blocking(move || {
            crate::repl::quarantine::store(&dir, &tail, &reason)
        })
        .await
        .map_err(|e| format!("quarantine task failed: {e}"))?
        .map_err(|e| format!("writing quarantine: {e}"))?;
        if count > 0 {
            node.update_node_state(|s| s.quarantined_entries += count)?;
        }
    }
    node.update_node_state(|s| {
        s.log_base = marker;
        s.commit_hint = marker.index;
    })?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    node.log
        .send(LogRequest::Reset {
            base: marker,
            history: Vec::new(),
            done: tx,
        })
        .map_err(|_| "the group-commit thread stopped".to_string())?;
    rx.await
        .map_err(|_| "the group-commit thread stopped".to_string())?
        .map_err(|e| format!("restarting the log at {marker}: {e}"))?;
    node.commit.reset(marker);
    Ok(())
}
