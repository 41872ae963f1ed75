//! `repl-bench --phase redis`: proxy mode measured with `redis-benchmark`
//! (Debian's redis-tools, a tool nobody here wrote), side by side in one
//! run with a redis-server alone that fsyncs every write
//! (`appendfsync always`) on the same disk.
//!
//! understudy: two redis-servers without persistence, each fronted by a
//! replica, `sync_standbys = 1`, the arbiter's own timing; every `SET` is
//! fsynced in the log on the active and on the standby before it is
//! acknowledged. Measured against the active's RESP port, workload by
//! workload, each workload on every target one after another (so a ratio
//! compares runs a minute or two apart, not a whole round), the order of
//! the targets reversed every other time, `--rounds` times:
//! `redis-benchmark -t set,get -c <clients> -d <value size> -r 100000`, the
//! same pipelined (`-P 16`), the write mix `-t incr,lpush,hset,zadd`, an
//! `EVALSHA` of a read-modify-write script (`INCRBY` of a random key, the
//! script loaded first with `SCRIPT LOAD`), and `-t set -c 1`. A second such cluster runs with the placement the
//! README recommends: each replica's RESP thread and its redis-server's
//! main thread pinned to one CPU (`--resp-cpus`, `server_cpulist`), a's
//! pair on the first CPU and b's on the next; redis-benchmark and the
//! redis-server alone are not pinned. A third cluster's sessions reach
//! their redis-server over its Unix socket (`--upstream-socket`). The
//! report ends with each understudy target's ratios to the redis-server
//! alone of the same round.

use std::process::Stdio;

use serde::Serialize;

use super::config::Config;
use crate::harness::{ProxyCluster, RedisServer, TestDir};

/// One redis-benchmark line.
#[derive(Clone, Debug, Serialize)]
pub struct RedisRow {
    /// Which of `--rounds` (from 1).
    pub round: usize,
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
        (ALONE, alone.port),
    ];
    let mut scripts = Vec::new();
    for (_, port) in targets {
        scripts.push(load_script(&port.to_string()).await?);
    }
    let mut rows = Vec::new();
    let mut turn = 0;
    for round in 1..=config.rounds {
        for workload in Workload::ALL {
            // The targets of one workload run one after another, so that
            // each ratio compares runs minutes apart at most; the order
            // turns every time, so no target always goes first.
            let mut order: Vec<usize> = (0..targets.len()).collect();
            if turn % 2 == 1 {
                order.reverse();
            }
            turn += 1;
            for i in order {
                let (name, port) = targets[i];
                let args = workload.args(config, port, &scripts[i]);
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                rows.extend(benchmark(round, name, &args).await?);
            }
        }
    }
    Ok(rows)
}

/// The redis-server alone's target name: the one the others are compared
/// with.
const ALONE: &str = "redis-server alone, appendfsync always";

/// What one `redis-benchmark` run measures.
#[derive(Clone, Copy)]
enum Workload {
    SetGet,
    SetGetPipelined,
    WriteMix,
    EvalSha,
    OneClient,
}

impl Workload {
    const ALL: [Workload; 5] = [
        Workload::SetGet,
        Workload::SetGetPipelined,
        Workload::WriteMix,
        Workload::EvalSha,
        Workload::OneClient,
    ];

    /// redis-benchmark's arguments against `port` (`sha`: the script
    /// loaded there).
    fn args(self, config: &Config, port: u16, sha: &str) -> Vec<String> {
        let requests = config.redis_requests.to_string();
        let single = (config.redis_requests / 10).max(1000).to_string();
        let clients = config.clients.to_string();
        let (c, n, more): (&str, &str, Vec<&str>) = match self {
            Workload::SetGet => (&clients, &requests, vec!["-t", "set,get"]),
            Workload::SetGetPipelined => (&clients, &requests, vec!["-t", "set,get", "-P", "16"]),
            Workload::WriteMix => (&clients, &requests, vec!["-t", "incr,lpush,hset,zadd"]),
            Workload::EvalSha => (
                &clients,
                &requests,
                vec!["evalsha", sha, "1", "counter:__rand_int__", "1"],
            ),
            Workload::OneClient => ("1", &single, vec!["-t", "set"]),
        };
        let size = config.value_size.to_string();
        let port = port.to_string();
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
        .into_iter()
        .chain(more)
        .map(str::to_string)
        .collect()
    }
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

async fn benchmark(round: usize, target: &str, args: &[&str]) -> Result<Vec<RedisRow>, String> {
    let command = format!("redis-benchmark {}", args.join(" "));
    eprintln!("round {round}, {target}: {command}");
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
            round,
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

/// The rows as a table, then each understudy target against the
/// redis-server alone of the same round: requests/s over requests/s, and
/// for one client its SET p50 over the p50 alone (lower is better there).
pub fn format(rows: &[RedisRow]) -> String {
    let mut out = format!(
        "{:>5} {:<40} {:>13} {:>8} {:>12} {:>8} {:>8}\n",
        "round", "target", "test", "clients", "requests/s", "p50 ms", "p99 ms"
    );
    for r in rows {
        out.push_str(&format!(
            "{:>5} {:<40} {:>13} {:>8} {:>12.0} {:>8.3} {:>8.3}\n",
            r.round, r.target, r.test, r.clients, r.requests_per_sec, r.p50_ms, r.p99_ms
        ));
    }
    const TESTS: [&str; 9] = [
        "SET",
        "GET",
        "SET -P 16",
        "GET -P 16",
        "INCR",
        "LPUSH",
        "HSET",
        "ZADD",
        "evalsha",
    ];
    out.push_str(&format!(
        "\nagainst the redis-server alone in the same round (requests/s; 1c: one client's SET \
         p50)\n{:>5} {:<40}",
        "round", "target"
    ));
    for t in TESTS.iter().chain(&["1c p50"]) {
        out.push_str(&format!(" {t:>9}"));
    }
    out.push('\n');
    let find = |round: usize, target: &str, test: &str, one: bool| {
        rows.iter().find(|r| {
            r.round == round && r.target == target && r.test == test && (r.clients == 1) == one
        })
    };
    let mut targets: Vec<(usize, &str)> = Vec::new();
    for r in rows {
        if r.target != ALONE && !targets.contains(&(r.round, r.target.as_str())) {
            targets.push((r.round, &r.target));
        }
    }
    for (round, target) in targets {
        out.push_str(&format!("{round:>5} {target:<40}"));
        let ratio = |test: &str, one: bool| {
            let ours = find(round, target, test, one)?;
            let alone = find(round, ALONE, test, one)?;
            Some(if one {
                ours.p50_ms / alone.p50_ms
            } else {
                ours.requests_per_sec / alone.requests_per_sec
            })
        };
        for (test, one) in TESTS.iter().map(|t| (*t, false)).chain([("SET", true)]) {
            match ratio(test, one) {
                Some(x) => out.push_str(&format!(" {:>8.2}x", x)),
                None => out.push_str(&format!(" {:>9}", "-")),
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(round: usize, target: &str, test: &str, clients: usize, rps: f64, p50: f64) -> RedisRow {
        RedisRow {
            round,
            target: target.into(),
            test: test.into(),
            clients,
            requests_per_sec: rps,
            p50_ms: p50,
            p99_ms: 2.0 * p50,
            command: String::new(),
        }
    }

    #[test]
    fn ratios_compare_each_target_with_the_redis_server_alone_of_its_round() {
        let ours = "understudy (active + sync standby)";
        let rows = vec![
            row(1, ours, "SET", 64, 30_000.0, 2.0),
            row(1, ALONE, "SET", 64, 60_000.0, 1.0),
            row(1, ours, "SET", 1, 2_000.0, 0.5),
            row(1, ALONE, "SET", 1, 5_000.0, 0.2),
            row(2, ALONE, "SET", 64, 40_000.0, 1.0),
            row(2, ours, "SET", 64, 30_000.0, 2.0),
        ];
        let text = format(&rows);
        let ratios: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("against"))
            .skip(2)
            .collect();
        assert_eq!(ratios.len(), 2, "{text}");
        let cells = |l: &str| -> Vec<String> {
            l.split_whitespace()
                .filter(|w| w.ends_with('x') || *w == "-")
                .map(str::to_string)
                .collect()
        };
        // Round 1: SET 0.50x, the other tests absent, one client 2.50x.
        let first = cells(ratios[0]);
        assert!(ratios[0].trim_start().starts_with('1'), "{text}");
        assert_eq!(first[0], "0.50x", "{text}");
        assert_eq!(first[1..9], vec!["-"; 8], "{text}");
        assert_eq!(first[9], "2.50x", "{text}");
        // Round 2 against round 2's redis-server, not round 1's.
        assert_eq!(cells(ratios[1])[0], "0.75x", "{text}");
    }
}
