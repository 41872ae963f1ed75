//! A real `arbiter` process for end-to-end tests.
//!
//! [`ArbiterConfig`] says how to run it: a cluster name, a free loopback
//! port, a file store in the test's directory, an optional token file, and
//! the timing flags a test wants (tests use short leases so a failover takes
//! a fraction of a second). [`ArbiterProcess`] is the running process: its
//! URL, its `/v1/status` parsed into the arbiter's own [`ClusterStatus`]
//! type (so a field renamed there breaks the build here, not a test at run
//! time), the operator calls, and kill/restart. A restart reuses the port
//! and the store file, as an operator restarting the service would.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arbiter::ClusterStatus;
use hyper::Method;

use super::binaries::arbiter_binary;
use super::dirs::TestDir;
use super::ports::{free_port, loopback_url_with};
use super::process::{describe_exit, ChildGuard, ProcessSpec};
use super::wait::wait_for;
use crate::client::{KvClient, KvResponse};

/// How long [`ArbiterConfig::start`] and [`ArbiterProcess::restart`] wait
/// for `/healthz`.
pub const ARBITER_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound on one request to the arbiter's API.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How to run one arbiter.
#[derive(Clone, Debug)]
pub struct ArbiterConfig {
    /// `--cluster`.
    pub cluster: String,
    /// The API port on 127.0.0.1 (`--listen`).
    pub port: u16,
    /// The state file (`--store file:PATH`).
    pub store_path: PathBuf,
    /// `--token-file`; also the token operator calls send.
    pub token_file: Option<PathBuf>,
    /// `--heartbeat-ms`, when set.
    pub heartbeat_ms: Option<u64>,
    /// `--lease-ms`, when set.
    pub lease_ms: Option<u64>,
    /// `--drift`, when set.
    pub drift: Option<f64>,
    /// `--sync-standbys`, when set.
    pub sync_standbys: Option<u32>,
    /// `--initial-wait-ms`, when set.
    pub initial_wait_ms: Option<u64>,
    /// Flags after the standard ones.
    pub extra_args: Vec<String>,
    /// The executable; `None`: the workspace's (see `binaries`).
    pub program: Option<PathBuf>,
    /// Where the stdout/stderr logs go: the test's directory.
    log_dir: PathBuf,
    /// Serves TLS (given `--tls-*` flags): its URL is `https://`.
    pub https: bool,
}

impl ArbiterConfig {
    /// An arbiter of `cluster` on a free port, storing its state in
    /// `{dir}/arbiter.state.json`; built-in timing unless set.
    pub fn new(dir: &TestDir, cluster: &str) -> ArbiterConfig {
        ArbiterConfig {
            cluster: cluster.to_string(),
            port: free_port(),
            store_path: dir.join("arbiter.state.json"),
            token_file: None,
            heartbeat_ms: None,
            lease_ms: None,
            drift: None,
            sync_standbys: None,
            initial_wait_ms: None,
            extra_args: Vec::new(),
            program: None,
            log_dir: dir.path().to_path_buf(),
            https: false,
        }
    }

    /// Runs this executable instead of the workspace's `arbiter`.
    pub fn program(mut self, path: impl Into<PathBuf>) -> ArbiterConfig {
        self.program = Some(path.into());
        self
    }

    pub fn token_file(mut self, path: impl Into<PathBuf>) -> ArbiterConfig {
        self.token_file = Some(path.into());
        self
    }

    pub fn heartbeat_ms(mut self, ms: u64) -> ArbiterConfig {
        self.heartbeat_ms = Some(ms);
        self
    }

    pub fn lease_ms(mut self, ms: u64) -> ArbiterConfig {
        self.lease_ms = Some(ms);
        self
    }

    pub fn drift(mut self, drift: f64) -> ArbiterConfig {
        self.drift = Some(drift);
        self
    }

    pub fn sync_standbys(mut self, k: u32) -> ArbiterConfig {
        self.sync_standbys = Some(k);
        self
    }

    pub fn initial_wait_ms(mut self, ms: u64) -> ArbiterConfig {
        self.initial_wait_ms = Some(ms);
        self
    }

    /// Adds flags, e.g. `["--max-lag-on-failover", "10"]`.
    pub fn args<I, S>(mut self, args: I) -> ArbiterConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// With TLS: `certs`' certificate for `name`, an `https://` URL, and
    /// the test's clients told how to reach it (with `token`, if any).
    pub fn tls(
        mut self,
        certs: &super::TestCerts,
        name: &str,
        token: Option<String>,
    ) -> ArbiterConfig {
        self.extra_args.extend(certs.serve(name, self.port, token));
        self.https = true;
        self
    }

    /// `http://127.0.0.1:{port}` (`https://` with TLS).
    pub fn url(&self) -> String {
        loopback_url_with(self.port, self.https)
    }

    /// The command line: `arbiter run` with these flags.
    pub fn spec(&self) -> ProcessSpec {
        let program = self.program.clone().unwrap_or_else(arbiter_binary);
        let mut spec = ProcessSpec::new("arbiter", program, &self.log_dir)
            .arg("run")
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--cluster", &self.cluster])
            .arg(format!("--store=file:{}", self.store_path.display()));
        if let Some(path) = &self.token_file {
            spec = spec.arg("--token-file").arg(path);
        }
        let numbers = [
            ("--heartbeat-ms", self.heartbeat_ms.map(|v| v.to_string())),
            ("--lease-ms", self.lease_ms.map(|v| v.to_string())),
            ("--drift", self.drift.map(|v| v.to_string())),
            ("--sync-standbys", self.sync_standbys.map(|v| v.to_string())),
            (
                "--initial-wait-ms",
                self.initial_wait_ms.map(|v| v.to_string()),
            ),
        ];
        for (flag, value) in numbers {
            if let Some(value) = value {
                spec = spec.args([flag, value.as_str()]);
            }
        }
        spec.args(self.extra_args.iter())
            .env("UNDERSTUDY_LOG", "info")
            .env("NO_COLOR", "1")
    }

    /// Starts the process and waits until `/healthz` answers 200.
    pub async fn start(self) -> Result<ArbiterProcess, String> {
        let process = self
            .spec()
            .spawn()
            .map_err(|e| format!("cannot start the arbiter: {e}"))?;
        let mut arbiter = ArbiterProcess {
            config: self,
            process,
        };
        arbiter.wait_healthy(ARBITER_START_TIMEOUT).await?;
        Ok(arbiter)
    }
}

/// A running (or killed) arbiter process; killed on drop.
#[derive(Debug)]
pub struct ArbiterProcess {
    /// How it was started; a restart runs the same.
    config: ArbiterConfig,
    /// The process of the current life.
    process: ChildGuard,
}

impl ArbiterProcess {
    pub fn config(&self) -> &ArbiterConfig {
        &self.config
    }

    /// `http://127.0.0.1:{port}`: the same across restarts.
    pub fn url(&self) -> String {
        self.config.url()
    }

    /// The store file.
    pub fn store_path(&self) -> &Path {
        &self.config.store_path
    }

    /// The cluster token, read from the token file, if one is configured.
    pub fn token(&self) -> Option<String> {
        let path = self.config.token_file.as_ref()?;
        Some(std::fs::read_to_string(path).ok()?.trim().to_string())
    }

    /// The process, for signals and exit statuses.
    pub fn process(&mut self) -> &mut ChildGuard {
        &mut self.process
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Everything the arbiter wrote to stderr, all lives.
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    fn client(&self) -> KvClient {
        KvClient::new(&self.url())
            .expect("a loopback URL is valid")
            .with_timeout(REQUEST_TIMEOUT)
    }

    /// `GET /v1/status`, parsed.
    pub async fn status(&self) -> Result<ClusterStatus, String> {
        let response = self
            .client()
            .request(Method::GET, "/v1/status", &[], "")
            .await
            .map_err(|e| format!("GET {}/v1/status: {e}", self.url()))?;
        if response.status != 200 {
            return Err(format!(
                "GET {}/v1/status answered {}: {}",
                self.url(),
                response.status,
                response.body_text()
            ));
        }
        response.json().map_err(|e| {
            format!(
                "GET {}/v1/status: not a cluster status ({e}): {}",
                self.url(),
                response.body_text()
            )
        })
    }

    /// `POST {path}` with a JSON body and, when given, `Authorization:
    /// {authorization}` sent as is (tests send wrong and malformed ones).
    pub async fn post(
        &self,
        path: &str,
        body: &str,
        authorization: Option<&str>,
    ) -> Result<KvResponse, String> {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(value) = authorization {
            headers.push(("authorization", value));
        }
        self.client()
            .without_credential()
            .request(Method::POST, path, &headers, body.to_string())
            .await
            .map_err(|e| format!("POST {}{path}: {e}", self.url()))
    }

    /// `POST {path}` with the cluster token (if one is configured).
    pub async fn post_authorized(&self, path: &str, body: &str) -> Result<KvResponse, String> {
        let bearer = self.token().map(|t| format!("Bearer {t}"));
        self.post(path, body, bearer.as_deref()).await
    }

    /// `POST /v1/switchover` with the token: to `to`, or the best standby;
    /// an error unless the arbiter accepted it.
    pub async fn switchover(&self, to: Option<&str>) -> Result<KvResponse, String> {
        let body = match to {
            Some(id) => serde_json::json!({ "to": id }).to_string(),
            None => "{}".to_string(),
        };
        let response = self.post_authorized("/v1/switchover", &body).await?;
        if response.status != 200 {
            return Err(format!(
                "switchover refused ({}): {}",
                response.status,
                response.body_text()
            ));
        }
        Ok(response)
    }

    /// `POST /v1/maintenance` with the token; an error unless stored.
    pub async fn set_maintenance(&self, enabled: bool) -> Result<(), String> {
        let body = serde_json::json!({ "enabled": enabled }).to_string();
        let response = self.post_authorized("/v1/maintenance", &body).await?;
        if response.status != 200 {
            return Err(format!(
                "maintenance {enabled} refused ({}): {}",
                response.status,
                response.body_text()
            ));
        }
        Ok(())
    }

    /// SIGKILL, then reaps.
    pub fn kill(&mut self) -> io::Result<()> {
        self.process.kill().map(|_| ())
    }

    /// Starts a new process on the same port and store (killing the current
    /// one first if it still runs) and waits for `/healthz`.
    pub async fn restart(&mut self) -> Result<(), String> {
        self.process
            .restart()
            .map_err(|e| format!("cannot restart the arbiter: {e}"))?;
        self.wait_healthy(ARBITER_START_TIMEOUT).await
    }

    /// Waits until `/healthz` answers 200; fails at once, with the end of
    /// its stderr, if the process exits instead.
    pub async fn wait_healthy(&mut self, within: Duration) -> Result<(), String> {
        let url = self.url();
        let process = &mut self.process;
        let outcome = wait_for(within, &format!("arbiter healthy at {url}"), || {
            let exited = process.try_exit_status().ok().flatten();
            let url = url.clone();
            async move {
                if let Some(status) = exited {
                    return Some(Err(status));
                }
                super::replica::is_healthy(&url).await.then_some(Ok(()))
            }
        })
        .await;
        let tail = || {
            let text = self.stderr();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(format!(
                "the arbiter exited ({}) before serving; its stderr ends:\n{}",
                describe_exit(status),
                tail()
            )),
            Err(timeout) => Err(format!("{timeout}; its stderr ends:\n{}", tail())),
        }
    }
}
