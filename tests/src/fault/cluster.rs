//! The cluster the fault suite runs against: three replicas and either one
//! arbiter on a file store or two arbiters on a three-member etcd, all real
//! processes on loopback; in proxy mode each replica fronts a redis-server
//! of its own and clients speak RESP.
//!
//! Each replica and arbiter runs as a user of its own (so the firewall can
//! tell their packets apart), from a copy of its binary in the run's
//! directory (the build directory may not be readable by those users), on
//! a data directory that user owns. etcd runs as the test's user: it is
//! killed, never partitioned.

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use arbiter::cli::ArbiterClient;
use arbiter::status::ClusterStatus;
use hyper::Method;

use crate::harness::ports::loopback_url;
use crate::harness::redis::RedisServer;
use crate::harness::{
    arbiter_binary, free_port, replica_binary, replica_status, ChildGuard, EtcdCluster,
    ProcessSpec, ReplicaSelfStatus,
};

/// Heartbeat interval and lease of the suite's cluster: the timing a
/// production cluster would use for fast failover.
pub const HEARTBEAT_MS: u64 = 100;
pub const LEASE_MS: u64 = 1000;

/// etcd's timing: what the README recommends with the default arbiter term.
pub const ETCD_FLAGS: &[&str] = &["--heartbeat-interval=50", "--election-timeout=500"];

/// The replicas' names.
pub const REPLICAS: [&str; 3] = ["r1", "r2", "r3"];

/// Where the arbiters keep the cluster's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One arbiter, a state file.
    File,
    /// Two arbiters electing a leader on a three-member etcd.
    Etcd,
}

impl Topology {
    pub fn name(self) -> &'static str {
        match self {
            Topology::File => "file",
            Topology::Etcd => "etcd",
        }
    }

    pub fn parse(s: &str) -> Result<Topology, String> {
        match s {
            "file" => Ok(Topology::File),
            "etcd" => Ok(Topology::Etcd),
            other => Err(format!("unknown topology {other:?}: use file or etcd")),
        }
    }
}

/// How to build the cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub topology: Topology,
    /// `--sync-standbys` (0: asynchronous replication).
    pub sync_standbys: u32,
    /// Each replica's data directory on a tmpfs of this many MiB (so a
    /// test can fill it up); on the run directory's disk when `None`.
    pub disk_mib: Option<u64>,
    /// The replicas' `--segment-bytes`, when set.
    pub segment_bytes: Option<u64>,
    /// The replicas' `--snapshot-every-bytes`, when set (small: the log is
    /// compacted, and standbys are sent snapshots, while faults happen).
    pub snapshot_every_bytes: Option<u64>,
    /// Proxy mode: each replica fronts a redis-server (`--upstream`) and
    /// serves Redis clients (`--resp-listen`).
    pub proxy: bool,
    /// Clock-rate skew: the first replica's clocks (monotonic, boot time,
    /// wall) run at this rate (e.g. 0.93: 7 % slow), through Debian's
    /// libfaketime, for its whole life and across its restarts.
    pub clock_rate: Option<f64>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            topology: Topology::File,
            sync_standbys: 1,
            disk_mib: None,
            segment_bytes: None,
            snapshot_every_bytes: None,
            proxy: false,
            clock_rate: None,
        }
    }
}

/// One replica or arbiter process.
pub struct Member {
    pub name: String,
    pub uid: u32,
    /// The ports it listens on (client API first).
    pub ports: Vec<u16>,
    pub url: String,
    pub data_dir: PathBuf,
    /// Whether `data_dir` is a tmpfs of its own (unmounted on drop).
    pub mounted: bool,
    pub process: ChildGuard,
    /// Proxy mode: the RESP port, and the redis-server it fronts. That
    /// runs as the test's user, outside the faults: a replica killed or cut
    /// off keeps its upstream, and its connection to it stays open through
    /// partitions, as on one host.
    pub resp: Option<(u16, RedisServer)>,
}

/// The running cluster; every process is killed when it is dropped.
pub struct FaultCluster {
    pub topology: Topology,
    pub etcd: Option<EtcdCluster>,
    pub arbiters: Vec<Member>,
    pub replicas: Vec<Member>,
}

impl FaultCluster {
    /// Starts etcd (when used), the arbiters and the replicas under `dir`
    /// (which it makes readable to the processes' users).
    pub async fn start(dir: &Path, options: &ClusterOptions) -> Result<FaultCluster, String> {
        let err = |what: &str, e: std::io::Error| format!("{what}: {e}");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| err("cannot open the run directory to its users", e))?;
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).map_err(|e| err("cannot make bin/", e))?;
        let replica_program = copy_binary(&replica_binary(), &bin)?;
        let arbiter_program = copy_binary(&arbiter_binary(), &bin)?;
        let uids = user_ids();

        let etcd = match options.topology {
            Topology::File => None,
            // Timed as the README asks for a LAN (an etcd election must
            // fit in the arbiter's term; with etcd's defaults one can not).
            Topology::Etcd => Some(
                EtcdCluster::start_with_args(3, dir, ETCD_FLAGS)
                    .await
                    .map_err(|e| err("etcd did not start", e))?,
            ),
        };
        let arbiter_count = match options.topology {
            Topology::File => 1,
            Topology::Etcd => 2,
        };
        let mut arbiters = Vec::new();
        for (i, uid) in uids.iter().copied().enumerate().take(arbiter_count) {
            let name = format!("arbiter-{}", i + 1);
            let port = free_port();
            let data_dir = owned_dir(dir, &name, uid)?;
            let store = match &etcd {
                Some(etcd) => etcd.etcd_url(),
                None => format!("file:{}", data_dir.join("state.json").display()),
            };
            let mut spec = ProcessSpec::new(&name, &arbiter_program, dir)
                .arg("run")
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--cluster", "fault"])
                .args(["--store", &store])
                .args(["--heartbeat-ms", &HEARTBEAT_MS.to_string()])
                .args(["--lease-ms", &LEASE_MS.to_string()])
                .args(["--sync-standbys", &options.sync_standbys.to_string()])
                .args(["--initial-wait-ms", "500"])
                .current_dir(&data_dir)
                .env("UNDERSTUDY_LOG", "info")
                .env("NO_COLOR", "1")
                .user(uid, uid);
            if etcd.is_some() {
                spec = spec
                    .args(["--arbiter-id", &name])
                    .args(["--leader-ttl-s", "2"]);
            }
            let process = spec
                .spawn()
                .map_err(|e| err(&format!("{name} did not start"), e))?;
            arbiters.push(Member {
                name,
                uid,
                ports: vec![port],
                url: loopback_url(port),
                data_dir,
                mounted: false,
                process,
                resp: None,
            });
        }
        let arbiter_urls = arbiters
            .iter()
            .map(|a| a.url.clone())
            .collect::<Vec<_>>()
            .join(",");

        let mut replicas = Vec::new();
        for (i, name) in REPLICAS.iter().enumerate() {
            let uid = uids[2 + i];
            let (port, repl_port) = (free_port(), free_port());
            let data_dir = owned_dir(dir, &format!("{name}.data"), uid)?;
            if let Some(mib) = options.disk_mib {
                mount_tmpfs(&data_dir, mib, uid)?;
            }
            let mut spec = ProcessSpec::new(name, &replica_program, dir)
                .arg("run")
                .args(["--node-id", name])
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--repl-listen", &format!("127.0.0.1:{repl_port}")])
                .args(["--arbiter", &arbiter_urls])
                .args(["--cluster", "fault"])
                .current_dir(&data_dir)
                .env("UNDERSTUDY_LOG", "info")
                .env("NO_COLOR", "1")
                .user(uid, uid);
            if let Some(bytes) = options.segment_bytes {
                spec = spec.args(["--segment-bytes", &bytes.to_string()]);
            }
            if let Some(bytes) = options.snapshot_every_bytes {
                spec = spec.args(["--snapshot-every-bytes", &bytes.to_string()]);
            }
            if let (Some(rate), 0) = (options.clock_rate, i) {
                spec = spec
                    .env("LD_PRELOAD", faketime_library()?)
                    .env("FAKETIME", format!("+0 x{rate}"));
            }
            let mut ports = vec![port, repl_port];
            let resp = match options.proxy {
                false => None,
                true => {
                    let upstream = RedisServer::start(dir, &format!("{name}-redis")).await?;
                    let resp_port = free_port();
                    spec = spec
                        .args(["--upstream", &upstream.url()])
                        .args(["--resp-listen", &format!("127.0.0.1:{resp_port}")]);
                    ports.push(resp_port);
                    Some((resp_port, upstream))
                }
            };
            let process = spec
                .spawn()
                .map_err(|e| err(&format!("replica {name} did not start"), e))?;
            replicas.push(Member {
                name: name.to_string(),
                uid,
                ports,
                url: loopback_url(port),
                data_dir,
                mounted: options.disk_mib.is_some(),
                process,
                resp,
            });
        }
        Ok(FaultCluster {
            topology: options.topology,
            etcd,
            arbiters,
            replicas,
        })
    }

    /// Every user the cluster's processes run as.
    pub fn uids(&self) -> Vec<u32> {
        self.arbiters
            .iter()
            .chain(&self.replicas)
            .map(|m| m.uid)
            .collect()
    }

    pub fn replica(&self, name: &str) -> Option<&Member> {
        self.replicas.iter().find(|m| m.name == name)
    }

    pub fn replica_mut(&mut self, name: &str) -> Option<&mut Member> {
        self.replicas.iter_mut().find(|m| m.name == name)
    }

    /// The status of the arbiter that leads (the only one on a file store).
    pub async fn leader_status(&self) -> Option<(usize, ClusterStatus)> {
        for (i, arbiter) in self.arbiters.iter().enumerate() {
            if let Some(status) = arbiter_status(&arbiter.url).await {
                if status.is_leader {
                    return Some((i, status));
                }
            }
        }
        None
    }

    /// Each replica's own status (`None`: no answer).
    pub async fn replica_statuses(&self) -> Vec<(String, Option<ReplicaSelfStatus>)> {
        let mut out = Vec::new();
        for r in &self.replicas {
            out.push((r.name.clone(), replica_status(&r.url).await.ok()));
        }
        out
    }

    /// The etcd member that leads, by its own status.
    pub async fn etcd_leader(&self) -> Option<usize> {
        let etcd = self.etcd.as_ref()?;
        for (i, member) in etcd.members.iter().enumerate() {
            let Ok(client) = crate::client::KvClient::new(&member.client_url()) else {
                continue;
            };
            let mut client = client.with_timeout(Duration::from_secs(1));
            let Ok(r) = client
                .request(Method::POST, "/v3/maintenance/status", &[], "{}")
                .await
            else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) else {
                continue;
            };
            let own = v["header"]["member_id"].as_str();
            if own.is_some() && own == v["leader"].as_str() {
                return Some(i);
            }
        }
        None
    }
}

impl Drop for FaultCluster {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            if r.mounted {
                let _ = r.process.kill();
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&r.data_dir)
                    .status();
            }
        }
    }
}

/// Debian's libfaketime (package `libfaketime`), the multi-threaded build.
pub fn faketime_library() -> Result<String, String> {
    let path = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
    if Path::new(path).exists() {
        Ok(path.to_string())
    } else {
        Err(format!(
            "{path} is missing: clock skew needs libfaketime (apt-get install -y libfaketime)"
        ))
    }
}

/// Mounts a tmpfs of `mib` MiB owned by `uid` on `dir`.
fn mount_tmpfs(dir: &Path, mib: u64, uid: u32) -> Result<(), String> {
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs"])
        .arg("-o")
        .arg(format!("size={mib}m,uid={uid},gid={uid},mode=0755"))
        .arg("tmpfs")
        .arg(dir)
        .status()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !status.success() {
        return Err(format!(
            "mounting a {mib} MiB tmpfs on {} failed ({status}); the test must run as root",
            dir.display()
        ));
    }
    Ok(())
}

/// Fills the file system holding `dir` with a ballast file until it is
/// full; returns the file (remove it to free the space).
pub fn fill_disk(dir: &Path) -> Result<PathBuf, String> {
    use std::io::Write;
    let path = dir.join("ballast");
    let mut file =
        std::fs::File::create(&path).map_err(|e| format!("cannot make the ballast: {e}"))?;
    let chunk = vec![0u8; 1 << 20];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(format!("filling {}: {e}", dir.display())),
        }
    }
    // Whatever fit of a last partial write is in; the disk is full.
    let _ = file.flush();
    Ok(path)
}

/// An arbiter's `/v1/status`, when it answers.
pub async fn arbiter_status(url: &str) -> Option<ClusterStatus> {
    let client = ArbiterClient::new(url, None).ok()?;
    let raw = tokio::time::timeout(
        Duration::from_secs(2),
        client.send(Method::GET, "/v1/status", None, false),
    )
    .await
    .ok()?
    .ok()?;
    if raw.status != 200 {
        return None;
    }
    serde_json::from_slice(&raw.body).ok()
}

/// Users for the arbiters (two) and the replicas (three), unlikely to be
/// anyone's: a block of eight per test process above 40000.
pub fn user_ids() -> Vec<u32> {
    let base = 40_000 + (std::process::id() % 3000) * 8;
    (0..5).map(|i| base + i).collect()
}

/// `{dir}/{name}`, made and given to `uid`.
fn owned_dir(dir: &Path, name: &str, uid: u32) -> Result<PathBuf, String> {
    let path = dir.join(name);
    std::fs::create_dir_all(&path).map_err(|e| format!("cannot make {}: {e}", path.display()))?;
    chown(&path, Some(uid), Some(uid))
        .map_err(|e| format!("cannot give {} to uid {uid}: {e}", path.display()))?;
    Ok(path)
}

/// Copies an executable into `bin`, readable and runnable by anyone.
fn copy_binary(from: &Path, bin: &Path) -> Result<PathBuf, String> {
    let name = from
        .file_name()
        .ok_or_else(|| format!("{} names no file", from.display()))?;
    let to = bin.join(name);
    std::fs::copy(from, &to)
        .map_err(|e| format!("cannot copy {} into the run: {e}", from.display()))?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot make {} runnable: {e}", to.display()))?;
    Ok(to)
}
