//! `repl-bench --phase redis`: proxy mode measured with `redis-benchmark`
//! (Debian's redis-tools, a tool nobody here wrote), side by side in one
//! run with a redis-server alone that fsyncs every write
//! (`appendfsync always`) on the same disk.
//!
//! understudy: two redis-servers without persistence, each fronted by a
//! replica, `sync_standbys = 1`, the arbiter's own timing; every `SET` is
//! fsynced in the log on the active and on the standby before it is
//! acknowledged. Measured against the active's RESP port, each target in
//! turn, `--rounds` times, the order reversed every other round:
//! `redis-benchmark -t set,get -c <clients> -d <value size> -r 100000`, the
//! same pipelined (`-P 16`), the write mix `-t incr,lpush,hset,zadd`, an
//! `EVALSHA` of a read-modify-write script (`INCRBY` of a random key, the
//! script loaded first with `SCRIPT LOAD`), and `-t set -c 1`. A second such cluster runs with the placement the
//! README recommends: each replica's RESP thread and its redis-server's
//! main thread pinned to one CPU (`--resp-cpus`, `server_cpulist`), a's
//! pair on the first CPU and b's on the next; redis-benchmark and the
//! redis-server alone are not pinned. A third cluster's sessions reach
//! their redis-server over its Unix socket (`--upstream-socket`).

use std::process::Stdio;

use serde::Serialize;

use super::config::Config;
use crate::harness::{ProxyCluster, RedisServer, TestDir};

/// One redis-benchmark line.
#[derive(Clone, Debug, Serialize)]
pub struct RedisRow {
    pub target: String,
    pub test: String,
    pub clients: usize,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The exact command that printed it.
    pub command: String,
}

/// Runs the phase (see the module docs).
pub async fn run(config: &Config, dir: &TestDir) -> Result<Vec<RedisRow>, String> {
    let (_cluster, port) = start_cluster(config, dir, Placement::Default).await?;
    let pinned_dir = TestDir::new("repl-bench-redis-pinned")
        .map_err(|e| format!("cannot make a directory for the pinned cluster: {e}"))?;
    let (_pinned, pinned_port) = start_cluster(config, &pinned_dir, Placement::Pinned).await?;
    let socket_dir = TestDir::new("repl-bench-redis-socket")
        .map_err(|e| format!("cannot make a directory for the socket cluster: {e}"))?;
    let (_socket, socket_port) = start_cluster(config, &socket_dir, Placement::Socket).await?;
    let alone = RedisServer::start_with(
        dir,
        "alone",
        &["--appendonly", "yes", "--appendfsync", "always"],
    )
    .await?;
    let targets = [
        ("understudy (active + sync standby)", port),
        ("understudy, RESP thread pinned", pinned_port),
        ("understudy, sessions on a Unix socket", socket_port),
        ("redis-server alone, appendfsync always", alone.port),
    ];
    let mut rows = Vec::new();
    for round in 0..config.rounds {
        let order: Vec<_> = if round % 2 == 0 {
            targets.to_vec()
        } else {
            targets.iter().rev().copied().collect()
        };
        for (name, port) in order {
            let requests = config.redis_requests.to_string();
            let single = (config.redis_requests / 10).max(1000).to_string();
            let clients = config.clients.to_string();
            let size = config.value_size.to_string();
            let port = port.to_string();
            let base = |c: &str, n: &str, more: &[&str]| -> Vec<String> {
                [
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-n",
                    n,
                    "-c",
                    c,
                    "-d",
                    &size,
                    "-r",
                    "100000",
                    "--csv",
                ]
                .iter()
                .chain(more)
                .map(|s| s.to_string())
                .collect()
            };
            let sha = load_script(&port).await?;
            for args in [
                base(&clients, &requests, &["-t", "set,get"]),
                base(&clients, &requests, &["-t", "set,get", "-P", "16"]),
                base(&clients, &requests, &["-t", "incr,lpush,hset,zadd"]),
                base(
                    &clients,
                    &requests,
                    &["evalsha", &sha, "1", "counter:__rand_int__", "1"],
                ),
                base("1", &single, &["-t", "set"]),
            ] {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                rows.extend(benchmark(name, &args).await?);
            }
        }
    }
    Ok(rows)
}

/// How a benchmarked cluster is laid out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    Default,
    /// RESP threads and redis-servers pinned, pair by pair.
    Pinned,
    /// Sessions on the redis-servers' Unix sockets.
    Socket,
}

/// A proxy cluster of a and b with a sync standby, laid out as `placement`
/// says, and its active's RESP port.
async fn start_cluster(
    config: &Config,
    dir: &TestDir,
    placement: Placement,
) -> Result<(ProxyCluster, u16), String> {
    let build = |b: crate::harness::ClusterBuilder| {
        b.bin_dir(&config.bin_dir)
            .builtin_timing()
            .sync_standbys(1)
            .segment_bytes(64 << 20)
    };
    let cluster = match placement {
        Placement::Socket => ProxyCluster::start_on_sockets(dir, &["a", "b"], build).await?,
        _ => {
            ProxyCluster::start_with(dir, &["a", "b"], placement == Placement::Pinned, build)
                .await?
        }
    };
    let (active, _) = cluster
        .cluster
        .wait_active_with_sync_standby(std::time::Duration::from_secs(30))
        .await?;
    let port = cluster.resp[&active.id];
    Ok((cluster, port))
}

/// The read-modify-write script the `EVALSHA` workload runs.
const SCRIPT: &str = "return redis.call('INCRBY', KEYS[1], ARGV[1])";

/// Loads [`SCRIPT`] on the server at `port` (`redis-cli SCRIPT LOAD`);
/// returns its SHA1.
async fn load_script(port: &str) -> Result<String, String> {
    let out = tokio::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", port, "SCRIPT", "LOAD", SCRIPT])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run redis-cli (is redis-tools installed?): {e}"))?;
    let sha = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if sha.len() != 40 {
        return Err(format!(
            "SCRIPT LOAD on port {port} answered {sha:?} {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(sha)
}

async fn benchmark(target: &str, args: &[&str]) -> Result<Vec<RedisRow>, String> {
    let command = format!("redis-benchmark {}", args.join(" "));
    eprintln!("{target}: {command}");
    let out = tokio::process::Command::new("redis-benchmark")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run redis-benchmark (is redis-tools installed?): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{command} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let clients: usize = args
        .windows(2)
        .find(|w| w[0] == "-c")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(0);
    let pipeline = args
        .windows(2)
        .find(|w| w[0] == "-P")
        .map_or(String::new(), |w| format!(" -P {}", w[1]));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = Vec::new();
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    for line in text.lines().skip(1) {
        let f: Vec<String> = line
            .split(',')
            .map(|s| s.trim_matches('"').to_string())
            .collect();
        if f.len() < 8 {
            continue;
        }
        let num = |i: usize| {
            f[i].parse::<f64>()
                .map_err(|_| format!("bad number in {line:?}"))
        };
        rows.push(RedisRow {
            target: target.to_string(),
            test: format!(
                "{}{pipeline}",
                f[0].split_whitespace().next().unwrap_or_default()
            ),
            clients,
            requests_per_sec: num(1)?,
            p50_ms: num(4)?,
            p99_ms: num(6)?,
            command: command.clone(),
        });
    }
    if rows.is_empty() {
        return Err(format!("{command} printed no results: {text}"));
    }
    Ok(rows)
}

/// The rows as a table.
pub fn format(rows: &[RedisRow]) -> String {
    let mut out = format!(
        "{:<40} {:>13} {:>8} {:>12} {:>8} {:>8}\n",
        "target", "test", "clients", "requests/s", "p50 ms", "p99 ms"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<40} {:>13} {:>8} {:>12.0} {:>8.3} {:>8.3}\n",
            r.target, r.test, r.clients, r.requests_per_sec, r.p50_ms, r.p99_ms
        ));
    }
    out
}
