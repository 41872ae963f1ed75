//! A cluster in proxy mode: a redis-server per replica, and the replicas
//! fronting them (`--upstream`, `--resp-listen`), with the usual arbiter.
//! The active's redis-server is a master; each standby's is a Redis
//! replica of its own replica process (the feed). Data is compared on the
//! redis-servers themselves, read directly: every database, with each
//! key's type, value and absolute expiry deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use super::cluster::{ActiveNode, Cluster};
use super::cluster_builder::ClusterBuilder;
use super::dirs::TestDir;
use super::ports::free_port;
use super::redis::RedisServer;
use super::replica::ReplicaProcess;
use super::wait::{wait_for, wait_until};
use crate::client::resp::{show, Frame, RespClient};
use crate::client::resp_raw::{RawResp, Value};

/// Replicas fronting their own redis-servers.
pub struct ProxyCluster {
    pub cluster: Cluster,
    /// Each replica's upstream, by node id.
    pub redis: BTreeMap<String, RedisServer>,
    /// Each replica's RESP port, by node id.
    pub resp: BTreeMap<String, u16>,
}

impl ProxyCluster {
    /// Starts a redis-server per id, then the cluster as `build` shapes it
    /// (`Cluster::builder()` with these replicas), each replica fronting
    /// its own.
    pub async fn start(
        dir: &TestDir,
        ids: &[&str],
        build: impl FnOnce(ClusterBuilder) -> ClusterBuilder,
    ) -> Result<ProxyCluster, String> {
        ProxyCluster::start_with(dir, ids, false, build).await
    }

    /// [`ProxyCluster::start`], or with `pinned` each replica's RESP
    /// thread and its redis-server's main thread on one CPU
    /// (`--resp-cpus`, `server_cpulist`), the n-th pair on the n-th allowed
    /// CPU (round robin): the placement the README recommends.
    pub async fn start_with(
        dir: &TestDir,
        ids: &[&str],
        pinned: bool,
        build: impl FnOnce(ClusterBuilder) -> ClusterBuilder,
    ) -> Result<ProxyCluster, String> {
        ProxyCluster::start_full(dir, ids, pinned, false, &[], build).await
    }

    /// The usual pair: replicas `a` and `b` with `sync_standbys = 1`, once
    /// one is active with the other a confirmed sync standby (the active,
    /// and the standby's id).
    pub async fn start_with_sync_standby(
        dir: &TestDir,
        within: Duration,
    ) -> Result<(ProxyCluster, ActiveNode, String), String> {
        ProxyCluster::start_pair(dir, within, |b| b).await
    }

    /// [`ProxyCluster::start_with_sync_standby`], the cluster further
    /// shaped by `build` (a lease, heartbeats, replica flags).
    pub async fn start_pair(
        dir: &TestDir,
        within: Duration,
        build: impl FnOnce(ClusterBuilder) -> ClusterBuilder,
    ) -> Result<(ProxyCluster, ActiveNode, String), String> {
        let cluster = ProxyCluster::start(dir, &["a", "b"], |b| build(b.sync_standbys(1))).await?;
        let (active, standby) = cluster
            .cluster
            .wait_active_with_sync_standby(within)
            .await?;
        Ok((cluster, active, standby))
    }

    /// [`ProxyCluster::start`], each redis-server also given `redis_args`.
    pub async fn start_with_redis_args(
        dir: &TestDir,
        ids: &[&str],
        redis_args: &[&str],
        build: impl FnOnce(ClusterBuilder) -> ClusterBuilder,
    ) -> Result<ProxyCluster, String> {
        ProxyCluster::start_full(dir, ids, false, false, redis_args, build).await
    }

    /// [`ProxyCluster::start`], each redis-server also on a Unix socket
    /// that its replica's sessions use (`--upstream-socket`).
    pub async fn start_on_sockets(
        dir: &TestDir,
        ids: &[&str],
        build: impl FnOnce(ClusterBuilder) -> ClusterBuilder,
    ) -> Result<ProxyCluster, String> {
        ProxyCluster::start_full(dir, ids, false, true, &[], build).await
    }

    async fn start_full(
        dir: &TestDir,
        ids: &[&str],
        pinned: bool,
        sockets: bool,
        extra_redis_args: &[&str],
        build: impl FnOnce(ClusterBuilder) -> ClusterBuilder,
    ) -> Result<ProxyCluster, String> {
        let cpus = if pinned {
            proto_common::cpus::allowed()?
        } else {
            Vec::new()
        };
        let mut redis = BTreeMap::new();
        let mut resp = BTreeMap::new();
        let mut builder = build(Cluster::builder().replicas(ids.iter().copied()));
        for (i, id) in ids.iter().enumerate() {
            let cpu = (!cpus.is_empty()).then(|| cpus[i % cpus.len()].to_string());
            // DEBUG from loopback, as Redis's own tests run it: what
            // understudy lets through reaches Redis.
            let mut redis_args: Vec<String> =
                ["--appendonly", "no", "--enable-debug-command", "local"]
                    .map(String::from)
                    .to_vec();
            redis_args.extend(extra_redis_args.iter().map(|a| a.to_string()));
            let mut node_args = Vec::new();
            if sockets {
                let socket = dir.path().join(format!("{id}-redis.sock"));
                let socket = socket.display().to_string();
                redis_args.extend(["--unixsocket".into(), socket.clone()]);
                redis_args.extend(["--unixsocketperm".into(), "700".into()]);
                node_args.extend(["--upstream-socket".to_string(), socket]);
            }
            if let Some(cpu) = &cpu {
                redis_args.extend(["--server_cpulist".to_string(), cpu.clone()]);
                node_args.extend(["--resp-cpus".to_string(), cpu.clone()]);
            }
            let name = format!("{id}-redis");
            let redis_args: Vec<&str> = redis_args.iter().map(String::as_str).collect();
            let server = RedisServer::start_with(dir, &name, &redis_args).await?;
            let port = free_port();
            node_args.extend([
                "--upstream".to_string(),
                server.url(),
                "--resp-listen".to_string(),
                format!("127.0.0.1:{port}"),
            ]);
            builder = builder.node_args(id, node_args);
            redis.insert(id.to_string(), server);
            resp.insert(id.to_string(), port);
        }
        let cluster = builder.start(dir).await?;
        Ok(ProxyCluster {
            cluster,
            redis,
            resp,
        })
    }

    /// `127.0.0.1:port` of replica `id`'s RESP listener.
    pub fn resp_addr(&self, id: &str) -> String {
        format!("127.0.0.1:{}", self.resp[id])
    }

    /// A Redis client of replica `id`.
    pub async fn client(&self, id: &str) -> Result<RespClient, String> {
        RespClient::connect(&self.resp_addr(id)).await
    }

    /// A connection to replica `id`'s RESP port that keeps the bytes.
    pub async fn raw(&self, id: &str) -> Result<RawResp, String> {
        RawResp::connect(&self.resp_addr(id)).await
    }

    /// Every key of `id`'s upstream (see [`dump`]).
    pub async fn upstream_dump(&self, id: &str) -> Result<BTreeMap<String, String>, String> {
        dump(&self.redis[id].addr()).await
    }

    /// `INFO <section>` of `id`'s upstream, read directly.
    pub async fn upstream_info(&self, id: &str, section: &str) -> Result<String, String> {
        info(&self.redis[id].addr(), section).await
    }

    /// The commit hint replica `id` last persisted (see
    /// [`persisted_commit_hint`]).
    pub fn persisted_commit_hint(&self, id: &str) -> Result<u64, String> {
        persisted_commit_hint(self.cluster.replica(id))
    }

    /// Waits until replica `id` has persisted a commit hint up to what it
    /// has applied now (see [`wait_commit_hint_saved`]).
    pub async fn wait_commit_hint_saved(&self, id: &str, within: Duration) -> Result<(), String> {
        wait_commit_hint_saved(self.cluster.replica(id), within).await
    }

    /// Waits until `standby`'s upstream has applied the replication stream
    /// of `active`'s upstream up to where it is now (both number the stream
    /// alike: the standby's upstream is fed the active's stream).
    pub async fn wait_upstream_caught_up(
        &self,
        standby: &str,
        active: &str,
        within: Duration,
    ) -> Result<u64, String> {
        let target = repl_offset(&self.redis[active].addr()).await?;
        let addr = self.redis[standby].addr();
        let last = std::sync::Arc::new(parking_lot::Mutex::new(None));
        wait_for(
            within,
            &format!("{standby}'s upstream at the stream offset {target}"),
            || {
                let (addr, last) = (addr.clone(), last.clone());
                async move {
                    let at = repl_offset(&addr).await.ok()?;
                    *last.lock() = Some(at);
                    (at >= target).then_some(at)
                }
            },
        )
        .await
        .map_err(|e| format!("{e}; it is at {:?}", last.lock()))
    }

    /// Waits until the upstreams of `a` and `b` hold the same data.
    pub async fn wait_same_upstream_data(
        &self,
        a: &str,
        b: &str,
        within: Duration,
    ) -> Result<BTreeMap<String, String>, String> {
        let (aa, ba) = (self.redis[a].addr(), self.redis[b].addr());
        let last = std::sync::Arc::new(parking_lot::Mutex::new((BTreeMap::new(), BTreeMap::new())));
        let result = wait_for(
            within,
            &format!("{a} and {b} to hold the same data"),
            || {
                let (aa, ba, last) = (aa.clone(), ba.clone(), last.clone());
                async move {
                    let x = dump(&aa).await.ok()?;
                    let y = dump(&ba).await.ok()?;
                    if x == y {
                        return Some(x);
                    }
                    *last.lock() = (x, y);
                    None
                }
            },
        )
        .await;
        result.map_err(|e| {
            let last = last.lock();
            let only_a: Vec<_> = last.0.keys().filter(|k| !last.1.contains_key(*k)).take(5).collect();
            let only_b: Vec<_> = last.1.keys().filter(|k| !last.0.contains_key(*k)).take(5).collect();
            let differ: Vec<_> = last
                .0
                .iter()
                .filter(|(k, v)| last.1.get(*k).is_some_and(|w| w != *v))
                .take(5)
                .collect();
            format!(
                "{e}: {a} has {} keys, {b} has {}; only on {a}: {only_a:?}; only on {b}: {only_b:?}; different: {differ:?}",
                last.0.len(),
                last.1.len()
            )
        })
    }
}

/// The commit hint `replica` last persisted (`node-state.json`): after a
/// restart, its history of the stream is rebuilt up to there.
pub fn persisted_commit_hint(replica: &ReplicaProcess) -> Result<u64, String> {
    let path = replica.data_dir().join("node-state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let state: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    state["commit_hint"]
        .as_u64()
        .ok_or_else(|| format!("{}: no commit_hint: {text}", path.display()))
}

/// Waits until `replica` has persisted a commit hint up to what it has
/// applied now (it does so once a second): a restart then knows the
/// stream's history so far.
pub async fn wait_commit_hint_saved(
    replica: &ReplicaProcess,
    within: Duration,
) -> Result<(), String> {
    let applied = super::replica_status(&replica.url()).await?.applied.index.0;
    wait_for(
        within,
        &format!(
            "{} to persist a commit hint of {applied}",
            replica.config().node_id
        ),
        || async move { (persisted_commit_hint(replica).ok()? >= applied).then_some(()) },
    )
    .await
    .map_err(|e| e.to_string())
}

/// Every key of the server at `addr`, read directly, in a form that
/// compares across servers: `key` in database 0, `db<n>/key` in the
/// others; `type:value` (set members and hash fields sorted), then
/// ` @<ms>` with its absolute expiry deadline (`PEXPIRETIME`) if it has one.
pub async fn dump(addr: &str) -> Result<BTreeMap<String, String>, String> {
    let mut c = RespClient::connect(addr).await?;
    let mut out = BTreeMap::new();
    for db in databases(&info(addr, "keyspace").await?) {
        c.call(&["SELECT", &db.to_string()]).await?;
        let keys = match c.call(&["KEYS", "*"]).await? {
            Frame::Array(k) => k,
            other => return Err(format!("KEYS gave {}", show(&other))),
        };
        for k in keys {
            let Frame::BulkString(key) = k else { continue };
            let Some(text) = describe(&mut c, &key).await? else {
                continue;
            };
            let name = String::from_utf8_lossy(&key).into_owned();
            let name = if db == 0 {
                name
            } else {
                format!("db{db}/{name}")
            };
            out.insert(name, text);
        }
    }
    Ok(out)
}

/// One key's type, value and deadline (see [`dump`]); `None` if it is gone.
async fn describe(c: &mut RespClient, key: &[u8]) -> Result<Option<String>, String> {
    let t = show(&c.call(&[&b"TYPE"[..], key]).await?);
    let value = match t.as_str() {
        "none" => return Ok(None),
        "string" => c.call(&[&b"GET"[..], key]).await?,
        "list" => c.call(&[&b"LRANGE"[..], key, b"0", b"-1"]).await?,
        "hash" => c.call(&[&b"HGETALL"[..], key]).await?,
        "set" => c.call(&[&b"SMEMBERS"[..], key]).await?,
        "zset" => {
            c.call(&[&b"ZRANGE"[..], key, b"0", b"-1", b"WITHSCORES"])
                .await?
        }
        "stream" => c.call(&[&b"XRANGE"[..], key, b"-", b"+"]).await?,
        _ => c.call(&[&b"DUMP"[..], key]).await?,
    };
    let mut text = show(&value);
    if matches!(t.as_str(), "set" | "hash") {
        if let Frame::Array(items) = &value {
            let mut parts: Vec<String> = if t == "hash" {
                items
                    .chunks(2)
                    .map(|p| format!("{}={}", show(&p[0]), p.get(1).map(show).unwrap_or_default()))
                    .collect()
            } else {
                items.iter().map(show).collect()
            };
            parts.sort();
            text = parts.join(",");
        }
    }
    let deadline = match c.call(&[&b"PEXPIRETIME"[..], key]).await? {
        Frame::Integer(ms) if ms > 0 => format!(" @{ms}"),
        _ => String::new(),
    };
    Ok(Some(format!("{t}:{text}{deadline}")))
}

/// Waits until `GET key` on the server at `addr`, read directly, answers
/// `value`.
pub async fn wait_value(
    addr: &str,
    key: &str,
    value: &str,
    within: Duration,
) -> Result<(), String> {
    wait_until(
        within,
        &format!("{key} to be {value:?} on {addr}"),
        || async move {
            let Ok(mut c) = RawResp::connect(addr).await else {
                return false;
            };
            c.call(&["GET", key]).await.ok() == Some(Value::Bulk(value.as_bytes().to_vec()))
        },
    )
    .await
    .map_err(|e| e.to_string())
}

/// `INFO <section>` of the server at `addr`.
pub async fn info(addr: &str, section: &str) -> Result<String, String> {
    let mut c = RespClient::connect(addr).await?;
    match c.call(&["INFO", section]).await? {
        Frame::BulkString(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        other => Err(format!("INFO {section} gave {}", show(&other))),
    }
}

/// The value of `field` in an `INFO` text.
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

/// `calls` of `cmdstat_<name>` in an `INFO commandstats` text (0 if the
/// command never ran).
pub fn command_calls(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// The databases `INFO keyspace` lists (those holding keys).
fn databases(keyspace: &str) -> Vec<u32> {
    keyspace
        .lines()
        .filter_map(|l| l.strip_prefix("db")?.split(':').next()?.parse().ok())
        .collect()
}

/// How far the server at `addr` has applied its replication stream: a
/// master's `master_repl_offset`, a replica's `slave_repl_offset`.
pub async fn repl_offset(addr: &str) -> Result<u64, String> {
    let text = info(addr, "replication").await?;
    let field = match info_field(&text, "role").as_deref() {
        Some("slave") => "slave_repl_offset",
        _ => "master_repl_offset",
    };
    info_field(&text, field)
        .and_then(|o| o.parse().ok())
        .ok_or_else(|| format!("{addr} gave no {field}: {text}"))
}
