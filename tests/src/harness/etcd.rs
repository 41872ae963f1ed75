//! Local etcd clusters on loopback: 1 member for a benchmark baseline, 3
//! for the arbiter's etcd store and its failure tests.
//!
//! Every member gets its own client and peer port and a data dir under the
//! test's directory; members run as [`ChildGuard`]s, so a test can kill,
//! pause or restart one (a restarted member finds its data dir and rejoins;
//! the `--initial-cluster` flags are then ignored by etcd). The binary is
//! `$ETCD_BIN`, else `/usr/bin/etcd`, else `etcd` on the `PATH`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::Method;

use super::ports::{free_ports, loopback_url};
use super::process::{ChildGuard, ProcessSpec};
use super::wait::{wait_until, WaitTimeout};
use crate::client::KvClient;

/// The etcd executable to run.
pub fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ETCD_BIN") {
        return PathBuf::from(path);
    }
    let system = Path::new("/usr/bin/etcd");
    if system.exists() {
        return system.to_path_buf();
    }
    PathBuf::from("etcd")
}

/// One member of a local etcd cluster.
#[derive(Debug)]
pub struct EtcdMember {
    /// The member name (`etcd-0`, ...), also the name of its log files.
    pub name: String,
    /// Where clients connect.
    pub client_port: u16,
    /// Where the other members connect.
    pub peer_port: u16,
    /// The running process; kill, pause or restart it to inject faults.
    pub process: ChildGuard,
}

impl EtcdMember {
    /// `http://127.0.0.1:{client_port}`.
    pub fn client_url(&self) -> String {
        loopback_url(self.client_port)
    }

    /// Whether the member answers `/health` with `"health":"true"` (it has a
    /// leader and serves requests).
    pub async fn is_healthy(&self) -> bool {
        let Ok(client) = KvClient::new(&self.client_url()) else {
            return false;
        };
        let mut client = client.with_timeout(Duration::from_secs(1));
        match client.request(Method::GET, "/health", &[], "").await {
            Ok(r) => {
                r.status == 200
                    && r.body_text()
                        .replace(' ', "")
                        .contains("\"health\":\"true\"")
            }
            Err(_) => false,
        }
    }
}

/// A running local etcd cluster; all members are killed on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    /// The members, in the order of `--initial-cluster`.
    pub members: Vec<EtcdMember>,
}

impl EtcdCluster {
    /// Starts `size` members with data dirs and logs under `dir` and waits
    /// until every member is healthy (at most 30 s).
    pub async fn start(size: usize, dir: &Path) -> io::Result<EtcdCluster> {
        EtcdCluster::start_with_args(size, dir, &[]).await
    }

    /// Like [`EtcdCluster::start`], with extra flags for every member (e.g.
    /// `--heartbeat-interval=50`).
    pub async fn start_with_args(
        size: usize,
        dir: &Path,
        extra: &[&str],
    ) -> io::Result<EtcdCluster> {
        assert!(size >= 1, "an etcd cluster needs at least one member");
        let ports = free_ports(2 * size);
        let names: Vec<String> = (0..size).map(|i| format!("etcd-{i}")).collect();
        let initial_cluster = names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name}={}", loopback_url(ports[2 * i + 1])))
            .collect::<Vec<_>>()
            .join(",");
        // Unique per cluster so members of two tests can never join each other.
        let token = format!("understudy-{}-{}", std::process::id(), ports[0]);
        let mut members = Vec::with_capacity(size);
        for (i, name) in names.into_iter().enumerate() {
            let (client_port, peer_port) = (ports[2 * i], ports[2 * i + 1]);
            let data_dir = dir.join(format!("{name}.data"));
            let spec = ProcessSpec::new(&name, etcd_binary(), dir)
                .arg(format!("--name={name}"))
                .arg(format!("--data-dir={}", data_dir.display()))
                .arg(format!(
                    "--listen-client-urls={}",
                    loopback_url(client_port)
                ))
                .arg(format!(
                    "--advertise-client-urls={}",
                    loopback_url(client_port)
                ))
                .arg(format!("--listen-peer-urls={}", loopback_url(peer_port)))
                .arg(format!(
                    "--initial-advertise-peer-urls={}",
                    loopback_url(peer_port)
                ))
                .arg(format!("--initial-cluster={initial_cluster}"))
                .arg(format!("--initial-cluster-token={token}"))
                .arg("--initial-cluster-state=new")
                .arg("--logger=zap")
                .args(extra.iter().copied());
            members.push(EtcdMember {
                name,
                client_port,
                peer_port,
                process: spec.spawn()?,
            });
        }
        let cluster = EtcdCluster { members };
        cluster
            .wait_healthy(Duration::from_secs(30))
            .await
            .map_err(io::Error::other)?;
        Ok(cluster)
    }

    /// Waits until every running member reports healthy.
    pub async fn wait_healthy(&self, within: Duration) -> Result<(), WaitTimeout> {
        wait_until(within, "etcd members healthy", || async {
            for member in &self.members {
                if !member.is_healthy().await {
                    return false;
                }
            }
            true
        })
        .await
    }

    /// Client URLs, `http://127.0.0.1:{port}` per member.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(EtcdMember::client_url).collect()
    }

    /// `127.0.0.1:p1,127.0.0.1:p2,...`.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `etcd://127.0.0.1:p1,...`: the form `loadgen --target` and the
    /// arbiter's `--store` take.
    pub fn etcd_url(&self) -> String {
        format!("etcd://{}", self.endpoints())
    }
}
