//! Running a replica: bind, serve the client API, keep house (snapshots,
//! the commit hint), shut down cleanly.
//!
//! [`run`] takes its listener and shutdown signal from outside, so tests
//! bind port 0 and stop it when they like.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use proto_common::Position;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::api::gate::{self, ConnGate};
use crate::config::Settings;
use crate::handover;
use crate::heartbeat::HeartbeatLoop;
use crate::log::group_commit::LogRequest;
use crate::node::{Node, StartError, StorageError};
use crate::repl::Replication;
use crate::snapshot;

/// Opens the node in `settings.data_dir`, binds its listeners, and serves
/// until `shutdown` resolves: standalone (its own active) without an
/// arbiter; otherwise as a standby taking its role from the arbiter.
pub async fn serve(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    if !settings.fsync {
        tracing::warn!(
            "fsync = never: writes are acknowledged before they reach the disk; a crash or power \
             loss WILL lose acknowledged writes. Use this only for experiments"
        );
    }
    let listen = settings.listen;
    let repl_listen = settings.repl_listen;
    let node = tokio::task::spawn_blocking(move || Node::open(settings))
        .await
        .map_err(StartError::OpenPanicked)??;
    let listener = bind("the client API", listen).await?;
    let repl_listener = match repl_listen {
        Some(addr) => Some(bind("replication", addr).await?),
        None => None,
    };
    let resp_listener = match &node.settings.proxy {
        Some(p) => Some(bind("Redis clients", p.resp_listen).await?),
        None => None,
    };
    let repl = Replication::new(node.clone());
    if node.settings.arbiters.is_empty() {
        node.start_standalone().await?;
        // Proxy mode: its upstream becomes a master and the tap starts.
        if let (Some(core), Ok(guard)) = (&node.proxy, node.roles.writer()) {
            core.begin_lead(node.clone(), guard);
        }
        tracing::info!(
            node = %node.settings.node_id,
            listen = %listen,
            position = %node.commit.durable(),
            "replica serving standalone (its own active)"
        );
    } else {
        tracing::info!(
            node = %node.settings.node_id,
            listen = %listen,
            repl_listen = ?repl_listen,
            arbiters = ?node.settings.arbiters,
            position = %node.commit.durable(),
            "replica starting as a standby; its role comes from the arbiter"
        );
    }
    let handover_node = node.clone();
    let shutdown = async move {
        shutdown.await;
        handover::hand_over(handover_node).await;
    };
    run(listener, repl_listener, resp_listener, node, repl, shutdown).await
}

/// Binds a listener; the error says what it was for.
async fn bind(
    purpose: &'static str,
    addr: std::net::SocketAddr,
) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen {
            purpose,
            addr,
            source,
        })
}

/// Serves the client API (and, if given, the replication listener) for
/// `node` until `shutdown`. Runs the heartbeat loop when the node has
/// arbiters configured.
pub async fn run(
    listener: TcpListener,
    repl_listener: Option<TcpListener>,
    resp_listener: Option<TcpListener>,
    node: Arc<Node>,
    repl: Arc<Replication>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let stop = CancellationToken::new();
    let housekeeping = tokio::spawn(housekeeping(node.clone(), repl.clone()));
    if let Some(l) = repl_listener {
        tokio::spawn(repl.clone().serve(l, stop.clone()));
    }
    if !node.settings.arbiters.is_empty() {
        spawn_heartbeats(repl.clone(), stop.clone())?;
    }
    if let (Some(core), Some(l)) = (node.proxy.clone(), resp_listener) {
        let resp_cpus = core
            .settings
            .resp_cpus
            .as_deref()
            .map_or_else(|| "not pinned".to_string(), proto_common::cpus::format);
        tracing::info!(resp_listen = %core.settings.resp_listen, upstream = %core.settings.upstream,
            %resp_cpus, "proxy mode: serving Redis clients");
        if let Some(feed) = core.take_feed_listener() {
            tokio::spawn(core.feed.clone().serve(
                feed,
                core.machine.clone(),
                core.settings.clone(),
                node.settings.tls.clone(),
                node.data_dir().to_path_buf(),
                stop.clone(),
            ));
        }
        tokio::spawn(core.clone().watch_upstream(node.clone(), stop.clone()));
        tokio::spawn(core.clone().report_upstream(node.clone(), stop.clone()));
        tokio::spawn(core.clone().watch_liveness(node.clone(), stop.clone()));
        crate::proxy::server::spawn_on_own_thread(core, node.clone(), l, stop.clone())
            .map_err(StartError::Proxy)?;
    }
    if let Some(tls) = &node.settings.tls {
        let stop = stop.clone();
        tls.clone().watch(async move { stop.cancelled().await });
    }
    let listener =
        gate::listener(listener, node.settings.tls.clone()).map_err(StartError::ClientListener)?;
    let app = api::router(node.clone()).into_make_service_with_connect_info::<ConnGate>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(StartError::Serve);
    stop.cancel();
    repl.stop();
    housekeeping.abort();
    save_commit_hint(node).await;
    result
}

/// Runs the heartbeat loop on a thread of its own with a single-threaded
/// runtime: a busy client runtime never delays the heartbeat that renews
/// the active's lease (with a 150 ms lease, a heartbeat queued behind client
/// work for a few tens of milliseconds cost writes under load). The lease's
/// watch (`role::lapse::watch_lapses`) runs there too.
fn spawn_heartbeats(repl: Arc<Replication>, stop: CancellationToken) -> Result<(), StartError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| StartError::Spawn {
            what: "heartbeat runtime",
            source,
        })?;
    std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || {
            runtime.block_on(async move {
                let node = &repl.node;
                let commit = node.commit.clone();
                tokio::spawn(crate::role::lapse::watch_lapses(
                    node.roles.clone(),
                    move || commit.lease_lapsed(),
                    stop.clone(),
                ));
                HeartbeatLoop::new(repl).run(stop).await
            })
        })
        .map_err(|source| StartError::Spawn {
            what: "heartbeat thread",
            source,
        })?;
    Ok(())
}

/// Once a second: persist the commit hint, and snapshot (in proxy mode,
/// checkpoint) when enough log has been written since the last one, or
/// when anything has and the schedule says so.
async fn housekeeping(node: Arc<Node>, repl: Arc<Replication>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let at_last = &node.snapshots.log_bytes_at_last;
    at_last.store(node.metrics.log_bytes.get(), Ordering::Relaxed);
    let mut last_time = tokio::time::Instant::now();
    // After a failure, not again before this (an RDB is a fork of the
    // upstream).
    let mut retry_at = last_time;
    loop {
        tick.tick().await;
        save_commit_hint(node.clone()).await;
        measure_disk(&node).await;
        let written = node.metrics.log_bytes.get();
        let since = written - at_last.load(Ordering::Relaxed);
        let due = since >= node.settings.snapshot_every_bytes
            || (since > 0 && last_time.elapsed() >= node.settings.snapshot_every);
        if !due || tokio::time::Instant::now() < retry_at {
            continue;
        }
        let keep_from = repl.followers.min_needed();
        node.snapshots.in_progress.store(true, Ordering::Relaxed);
        let outcome = match node.proxy {
            Some(_) => match crate::proxy::compact::take(&node, keep_from).await {
                Ok(Some(c)) => {
                    tracing::info!(position = %c.position, rdb_bytes = c.rdb_bytes,
                        segments_deleted = c.segments, "checkpoint taken; covered log segments deleted");
                    Ok(())
                }
                Ok(None) => Ok(()),
                // Refilled meanwhile: tried again at the next tick.
                Err(crate::proxy::compact::CompactError::NotInStep) => {
                    node.snapshots.in_progress.store(false, Ordering::Relaxed);
                    continue;
                }
                Err(e) => Err(e.to_string()),
            },
            None => match take_snapshot(&node, keep_from).await {
                Ok(pos) => {
                    tracing::info!(position = %pos, "snapshot written; covered log segments deleted");
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            },
        };
        node.snapshots.in_progress.store(false, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                at_last.store(written, Ordering::Relaxed);
                last_time = tokio::time::Instant::now();
            }
            Err(e) => {
                tracing::error!(error = %e, "snapshot failed; will retry in 10 s");
                retry_at = tokio::time::Instant::now() + Duration::from_secs(10);
            }
        }
    }
}

/// Measures the data directory (`disk_use.rs`) for the metrics and the
/// heartbeat.
async fn measure_disk(node: &Arc<Node>) {
    let dir = node.data_dir().to_path_buf();
    let Ok(disk) = tokio::task::spawn_blocking(move || crate::disk_use::measure(&dir)).await else {
        return;
    };
    let m = &node.metrics;
    m.data_dir_bytes.set(disk.data_dir_bytes as i64);
    m.snapshot_age_seconds
        .set(disk.snapshot_age_secs.map_or(-1, |s| s as i64));
    *node.snapshots.disk.lock() = Some(disk);
}

async fn save_commit_hint(node: Arc<Node>) {
    let applied = node.applied().index;
    if applied <= node.node_state().commit_hint {
        return;
    }
    let result = tokio::task::spawn_blocking(move || {
        node.update_node_state(|s| s.commit_hint = s.commit_hint.max(applied))
    })
    .await;
    if let Ok(Err(e)) = result {
        tracing::error!(error = %e, "cannot persist the commit hint");
    }
}

/// Writes a snapshot of the applied state and deletes the log segments it
/// covers, keeping entries from `keep_from` on (a standby still needs them).
/// Returns the snapshot's position.
pub async fn take_snapshot(
    node: &Arc<Node>,
    keep_from: Option<proto_common::LogIndex>,
) -> Result<Position, StorageError> {
    node.snapshots.in_progress.store(true, Ordering::Relaxed);
    let result = write_snapshot(node, keep_from).await;
    node.snapshots.in_progress.store(false, Ordering::Relaxed);
    result
}

async fn write_snapshot(
    node: &Arc<Node>,
    keep_from: Option<proto_common::LogIndex>,
) -> Result<Position, StorageError> {
    let (map, pos) = {
        let kv = node.kv.read();
        (kv.map().clone(), kv.applied())
    };
    if pos.index <= node.reader.base().index {
        return Ok(pos);
    }
    let dir = node.data_dir().join("snapshots");
    let epochs = node.reader.epochs_upto(pos.index);
    tokio::task::spawn_blocking(move || snapshot::write(&dir, pos, &epochs, &map))
        .await
        .map_err(|source| StorageError::TaskFailed {
            task: "snapshot",
            source,
        })?
        .map_err(|e| StorageError::io(format!("writing snapshot {pos}"), e))?;
    node.metrics.snapshots_written.inc();
    let (tx, rx) = oneshot::channel();
    node.log
        .send(LogRequest::Compact {
            snapshot: pos,
            keep_from,
            done: tx,
        })
        .map_err(|_| StorageError::LogStopped)?;
    rx.await
        .map_err(|_| StorageError::LogStopped)?
        .map_err(|e| StorageError::io("deleting covered log segments", e))?;
    Ok(pos)
}
