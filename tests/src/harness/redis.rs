//! Real `redis-server` processes for proxy-mode tests (Debian's package,
//! which `deploy/test.sh` installs): a free loopback port, a directory of
//! its own, no persistence (the log is the durable copy, as in
//! production), killed on drop. A restart comes back on the same port and
//! empty — what an upstream without persistence does.

use std::time::Duration;

use std::path::Path;

use super::ports::free_port;
use super::process::{ChildGuard, ProcessSpec};
use super::wait::wait_for;
use crate::client::resp::RespClient;

/// How long a redis-server may take to answer PING after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One redis-server.
pub struct RedisServer {
    pub name: String,
    pub port: u16,
    /// Its `--dir` (a full resync leaves the copied `dump.rdb` here).
    data: std::path::PathBuf,
    spec: ProcessSpec,
    guard: ChildGuard,
}

impl RedisServer {
    /// Starts `redis-server` named `name` on a free port; waits for PING.
    pub async fn start(dir: impl AsRef<Path>, name: &str) -> Result<RedisServer, String> {
        RedisServer::start_with(dir, name, &["--appendonly", "no"]).await
    }

    /// [`RedisServer::start`] with other persistence flags (e.g. an
    /// append-only file fsynced on every write, for comparisons).
    pub async fn start_with(
        dir: impl AsRef<Path>,
        name: &str,
        persistence: &[&str],
    ) -> Result<RedisServer, String> {
        let dir = dir.as_ref();
        let port = free_port();
        let data = dir.join(format!("{name}.redis"));
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        let spec = ProcessSpec::new(name, "redis-server", dir)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--protected-mode", "no"])
            .args(persistence)
            .arg("--dir")
            .arg(&data);
        let guard = spec
            .spawn()
            .map_err(|e| format!("cannot start redis-server (is it installed?): {e}"))?;
        let server = RedisServer {
            name: name.to_string(),
            port,
            data: data.clone(),
            spec,
            guard,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&self) -> Result<(), String> {
        let addr = self.addr();
        wait_for(
            START_TIMEOUT,
            &format!("redis-server {} to answer", self.name),
            || {
                let addr = addr.clone();
                async move {
                    let mut c = RespClient::connect(&addr).await.ok()?;
                    c.call(&["PING"]).await.ok()
                }
            },
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:port`, for `--upstream`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// Kills it and starts it again on the same port, empty: its directory
    /// is emptied first (a replica's copy from a full resync would
    /// otherwise be loaded again), as on a machine that lost its disk.
    pub async fn restart_empty(&mut self) -> Result<(), String> {
        self.guard.kill().map_err(|e| e.to_string())?;
        for entry in std::fs::read_dir(&self.data).map_err(|e| e.to_string())? {
            let path = entry.map_err(|e| e.to_string())?.path();
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        self.guard = self.spec.spawn().map_err(|e| e.to_string())?;
        self.wait_ready().await
    }

    /// A client connected to it directly.
    pub async fn client(&self) -> Result<RespClient, String> {
        RespClient::connect(&self.addr()).await
    }

    /// Everything it logged so far, all lives (redis-server logs to its
    /// standard output: replication events such as "Master accepted a
    /// Partial Resynchronization" or "Full resync from master").
    pub fn log(&self) -> String {
        self.guard.stdout()
    }

    /// Its process, for signals.
    pub fn process(&mut self) -> &mut ChildGuard {
        &mut self.guard
    }
}
