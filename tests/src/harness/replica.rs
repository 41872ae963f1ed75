//! A real `replica` process for end-to-end tests.
//!
//! [`ReplicaConfig`] says how to run it: a node id, a data dir (by default
//! `{test dir}/{node id}.data`), a free loopback port, and extra flags; it
//! uses 1 MiB log segments so tests that crash and restart replicas many
//! times keep their disk use small. [`ReplicaProcess`] is the running
//! process: a [`ChildGuard`] (killed on drop, stderr kept in
//! `{test dir}/{node id}.stderr.log`), its client URL, and the crash and
//! restart operations tests inject. A restart reuses the port and the data
//! dir, so clients keep their URL. A benchmark may run other executables
//! and segment sizes ([`ReplicaConfig::program`], `segment_bytes`).

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use hyper::Method;

use super::binaries::replica_binary;
use super::dirs::TestDir;
use super::ports::{free_port, loopback_url_with};
use super::process::{describe_exit, ChildGuard, ProcessSpec};
use super::wait::wait_for;
use crate::client::KvClient;

/// Segment size tests run with: small, so a test's disk use stays small.
pub const TEST_SEGMENT_BYTES: u64 = 1 << 20;

/// How long [`ReplicaConfig::start`] and [`ReplicaProcess::restart`] wait
/// for `/healthz`. Generous: recovery replays the whole log.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The line [`ProcessSpec::spawn`] writes to the stderr log at every start.
const START_MARKER: &str = "=== harness: starting ";

/// How to run one replica.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// `--node-id`; also the name of its log files.
    pub node_id: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// The client API port on 127.0.0.1 (`--listen`).
    pub port: u16,
    /// Flags after the standard ones, e.g. `--max-key-bytes 64`.
    pub extra_args: Vec<String>,
    /// Extra environment variables, e.g. a failpoint.
    pub env: Vec<(String, String)>,
    /// `--segment-bytes`; [`TEST_SEGMENT_BYTES`] unless set.
    pub segment_bytes: u64,
    /// The executable; `None`: the workspace's (see `binaries`).
    pub program: Option<PathBuf>,
    /// Where the stdout/stderr logs go: the test's directory.
    log_dir: PathBuf,
    /// Serves TLS (given `--tls-*` flags): its URL is `https://`.
    pub https: bool,
    /// The name of the log files; the node id unless set otherwise.
    log_name: String,
}

impl ReplicaConfig {
    /// Node `node_id` with data in `{dir}/{node_id}.data` on a free port.
    pub fn new(dir: &TestDir, node_id: &str) -> ReplicaConfig {
        ReplicaConfig {
            node_id: node_id.to_string(),
            data_dir: dir.join(format!("{node_id}.data")),
            port: free_port(),
            extra_args: Vec::new(),
            env: Vec::new(),
            segment_bytes: TEST_SEGMENT_BYTES,
            program: None,
            log_dir: dir.path().to_path_buf(),
            https: false,
            log_name: node_id.to_string(),
        }
    }

    /// Uses `data_dir` instead of the default.
    pub fn data_dir(mut self, data_dir: impl Into<PathBuf>) -> ReplicaConfig {
        self.data_dir = data_dir.into();
        self
    }

    /// Names the log files `{name}.stderr.log` etc. (two processes of one
    /// node id in a test need different names).
    pub fn log_name(mut self, name: &str) -> ReplicaConfig {
        self.log_name = name.to_string();
        self
    }

    /// Adds flags, e.g. `["--max-key-bytes", "64"]`.
    pub fn args<I, S>(mut self, args: I) -> ReplicaConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> ReplicaConfig {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs this executable instead of the workspace's `replica`.
    pub fn program(mut self, path: impl Into<PathBuf>) -> ReplicaConfig {
        self.program = Some(path.into());
        self
    }

    /// Log segments of this size instead of [`TEST_SEGMENT_BYTES`].
    pub fn segment_bytes(mut self, bytes: u64) -> ReplicaConfig {
        self.segment_bytes = bytes;
        self
    }

    /// With TLS: `certs`' certificate for `name`, an `https://` URL, and
    /// the test's clients told how to reach it (with `token`, if any).
    pub fn tls(
        mut self,
        certs: &super::TestCerts,
        name: &str,
        token: Option<String>,
    ) -> ReplicaConfig {
        self.extra_args.extend(certs.serve(name, self.port, token));
        self.https = true;
        self
    }

    /// `http://127.0.0.1:{port}` (`https://` with TLS).
    pub fn url(&self) -> String {
        loopback_url_with(self.port, self.https)
    }

    /// The command line: `replica run` with this node's flags.
    pub fn spec(&self) -> ProcessSpec {
        let program = self.program.clone().unwrap_or_else(replica_binary);
        let spec = ProcessSpec::new(&self.log_name, program, &self.log_dir)
            .arg("run")
            .args(["--node-id", &self.node_id])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--segment-bytes", &self.segment_bytes.to_string()])
            .args(self.extra_args.iter())
            // Logs are read by tests; keep them plain and complete.
            .env("UNDERSTUDY_LOG", "info")
            .env("NO_COLOR", "1");
        self.env
            .iter()
            .fold(spec, |spec, (k, v)| spec.env(k.as_str(), v.as_str()))
    }

    /// Starts the process without waiting for it to serve (for tests of a
    /// replica that must refuse to start).
    pub fn spawn(self) -> io::Result<ReplicaProcess> {
        let process = self.spec().spawn()?;
        Ok(ReplicaProcess {
            config: self,
            process,
        })
    }

    /// Starts the process and waits until `/healthz` answers 200.
    pub async fn start(self) -> Result<ReplicaProcess, String> {
        let mut replica = self
            .spawn()
            .map_err(|e| format!("cannot start replica: {e}"))?;
        replica.wait_healthy(START_TIMEOUT).await?;
        Ok(replica)
    }
}

/// A running (or crashed) replica process; killed on drop.
#[derive(Debug)]
pub struct ReplicaProcess {
    /// How it was started; a restart runs the same.
    config: ReplicaConfig,
    /// The process of the current life.
    process: ChildGuard,
}

impl ReplicaProcess {
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// `http://127.0.0.1:{port}`: the same across restarts.
    pub fn url(&self) -> String {
        self.config.url()
    }

    pub fn port(&self) -> u16 {
        self.config.port
    }

    /// Its `--repl-listen` address, when it has one.
    pub fn repl_addr(&self) -> Option<String> {
        let args = &self.config.extra_args;
        args.iter()
            .position(|a| a == "--repl-listen")
            .and_then(|i| args.get(i + 1).cloned())
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// A new client (its own connection) for this replica.
    pub fn client(&self) -> KvClient {
        KvClient::new(&self.url()).expect("a loopback URL is valid")
    }

    /// The process, for signals and exit statuses.
    pub fn process(&mut self) -> &mut ChildGuard {
        &mut self.process
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The file its stderr goes to, all lives.
    pub fn stderr_path(&self) -> PathBuf {
        self.process.stderr_path()
    }

    /// Everything the replica wrote to stderr, all lives.
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    /// What the current life wrote to stderr (since the last start).
    pub fn stderr_of_this_life(&self) -> String {
        let all = self.process.stderr();
        match all.rfind(START_MARKER) {
            Some(at) => all[at..].to_string(),
            None => all,
        }
    }

    /// SIGKILL (a crash: nothing is flushed, no shutdown code runs).
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        self.process.kill()
    }

    /// SIGTERM, then waits up to `within` for the exit; an error if the
    /// process is still running then.
    pub async fn terminate(&mut self, within: Duration) -> Result<ExitStatus, String> {
        self.process
            .sigterm()
            .map_err(|e| format!("SIGTERM to {}: {e}", self.config.node_id))?;
        self.wait_for_exit(within).await
    }

    /// Waits up to `within` for the process to exit by itself.
    pub async fn wait_for_exit(&mut self, within: Duration) -> Result<ExitStatus, String> {
        match self.process.wait_for_exit(within).await {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err(format!(
                "replica {} still running after {within:?}",
                self.config.node_id
            )),
            Err(e) => Err(format!("waiting for replica {}: {e}", self.config.node_id)),
        }
    }

    /// Starts a new process on the same data dir and port (killing the
    /// current one first if it still runs), without waiting for it.
    pub fn respawn(&mut self) -> io::Result<()> {
        self.process.restart()
    }

    /// [`ReplicaProcess::respawn`], then waits for `/healthz`.
    pub async fn restart(&mut self) -> Result<(), String> {
        self.respawn()
            .map_err(|e| format!("cannot restart replica {}: {e}", self.config.node_id))?;
        self.wait_healthy(START_TIMEOUT).await
    }

    /// Waits until `/healthz` answers 200; fails at once, with the end of
    /// its stderr, if the process exits instead.
    pub async fn wait_healthy(&mut self, within: Duration) -> Result<(), String> {
        let url = self.url();
        let what = format!("replica {} healthy at {url}", self.config.node_id);
        let process = &mut self.process;
        let outcome = wait_for(within, &what, || {
            let exited = process.try_exit_status().ok().flatten();
            let url = url.clone();
            async move {
                if let Some(status) = exited {
                    return Some(Err(status));
                }
                is_healthy(&url).await.then_some(Ok(()))
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(format!(
                "replica {} exited ({}) before serving; its stderr ends:\n{}",
                self.config.node_id,
                describe_exit(status),
                tail(&self.stderr_of_this_life(), 20)
            )),
            Err(timeout) => Err(format!(
                "{timeout}; its stderr ends:\n{}",
                tail(&self.stderr_of_this_life(), 20)
            )),
        }
    }
}

/// Whether `GET {url}/healthz` answers 200 within a second.
pub async fn is_healthy(url: &str) -> bool {
    let Ok(client) = KvClient::new(url) else {
        return false;
    };
    let mut client = client.with_timeout(Duration::from_secs(1));
    matches!(
        client.request(Method::GET, "/healthz", &[], "").await,
        Ok(r) if r.status == 200
    )
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
