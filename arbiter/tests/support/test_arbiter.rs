//! `TestArbiter`: an arbiter running in the test's process over a real file
//! store in the test's own temp dir, on a port-0 listener, so tests run in
//! parallel; stopped through `run`'s shutdown future.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use arbiter::cli::client::RawResponse;
use arbiter::cli::ArbiterClient;
use arbiter::config::Options;
use bytes::Bytes;
use hyper::Method;
use proto_common::auth::Token;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The token the tests' arbiters require.
pub const TOKEN: &str = "test-token-0123456789abcdef";
/// The cluster name the tests' arbiters serve.
pub const CLUSTER: &str = "t";

/// An arbiter running in this process.
pub struct TestArbiter {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Sends the right token.
    pub client: ArbiterClient,
    /// The state file.
    pub state_path: PathBuf,
    /// Resolves `run`'s shutdown future.
    stop: Option<oneshot::Sender<()>>,
    /// `run` itself.
    task: Option<JoinHandle<Result<(), String>>>,
}

/// Fast timing so formation and grants happen within milliseconds.
pub fn fast_options() -> Options {
    Options {
        heartbeat_ms: Some(20),
        lease_ms: Some(100),
        initial_wait_ms: Some(0),
        remove_after_ms: Some(60_000),
        ..Options::default()
    }
}

impl TestArbiter {
    /// Starts an arbiter over `dir/state.json` with `options` (store,
    /// cluster and token are filled in).
    pub async fn start(dir: &std::path::Path, options: Options) -> TestArbiter {
        let state_path = dir.join("state.json");
        let settings = Options {
            store: Some(format!("file:{}", state_path.display())),
            cluster: Some(CLUSTER.into()),
            token: Some(TOKEN.into()),
            ..options
        }
        .resolve()
        .expect("test settings resolve");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(arbiter::server::run(listener, settings, async move {
            let _ = stopped.await;
        }));
        let client = ArbiterClient::new(&url, Some(Token::new(TOKEN).unwrap())).unwrap();
        let arbiter = TestArbiter {
            url,
            client,
            state_path,
            stop: Some(stop),
            task: Some(task),
        };
        arbiter.wait_healthy().await;
        arbiter
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.raw(Method::GET, "/healthz", None, false).await {
                Ok(r) if r.status == 200 => return,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => panic!("arbiter at {} never became healthy: {other:?}", self.url),
            }
        }
    }

    /// Any request; `auth` sends the token.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        auth: bool,
    ) -> Result<RawResponse, arbiter::cli::CliError> {
        let body = body.map(|b| Bytes::from(b.to_string()));
        self.client.send(method, path, body, auth).await
    }

    /// A client with another token (or none).
    pub fn client_with(&self, token: Option<&str>) -> ArbiterClient {
        ArbiterClient::new(&self.url, token.map(|t| Token::new(t).unwrap())).unwrap()
    }

    /// `GET /v1/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        self.client.get_json("/v1/status").await.unwrap()
    }

    /// Stops the arbiter and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), String> {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("run did not return after shutdown")
            .expect("run panicked")
    }
}

impl Drop for TestArbiter {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
