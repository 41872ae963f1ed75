//! Helpers of the arbiter-over-etcd tests (`arbiter_etcd_*.rs`).
//!
//! - [`EtcdArbiter`]: a real `arbiter run --store etcd://…` process on a
//!   free loopback port, with its status and an API client.
//! - [`InProcess`]: an in-process elector of one cluster (campaign, the
//!   won term and its fenced store), for tests that need to hold a term in
//!   their hands.
//! - [`single_leader`]: waits until exactly one of a group of arbiters
//!   leads and every other one names it.

#![allow(dead_code)] // each test file uses a different part

use std::time::Duration;

use arbiter::cli::client::RawResponse;
use arbiter::cli::ArbiterClient;
use arbiter::clock::Clock;
use arbiter::election::{Candidate, Elector, Term};
use arbiter::status::ClusterStatus;
use arbiter::store::etcd::EtcdStore;
use hyper::Method;
use tokio::sync::watch;
use understudy_tests::harness::{
    arbiter_binary, free_port, wait_for, ChildGuard, ProcessSpec, TestDir,
};

/// etcd lease TTL the tests' arbiters run with (the default).
pub const TTL_S: u64 = 2;

/// A real arbiter process sharing an etcd store.
pub struct EtcdArbiter {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The process; kill it to test failover.
    pub process: ChildGuard,
    /// A client for its API (no token: loopback).
    pub client: ArbiterClient,
}

impl EtcdArbiter {
    /// Starts `arbiter run` as `name` for `cluster` over `etcd_url`
    /// (`etcd://…`), with fast replica timing and `extra` flags (a
    /// `--leader-ttl-s` among them replaces [`TTL_S`]).
    pub fn spawn(
        dir: &TestDir,
        name: &str,
        cluster: &str,
        etcd_url: &str,
        extra: &[&str],
    ) -> EtcdArbiter {
        EtcdArbiter::spawn_with_env(dir, name, cluster, etcd_url, extra, &[])
    }

    /// [`EtcdArbiter::spawn`] with extra environment variables (e.g.
    /// `UNDERSTUDY_FAILPOINT`).
    pub fn spawn_with_env(
        dir: &TestDir,
        name: &str,
        cluster: &str,
        etcd_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> EtcdArbiter {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let spec = ProcessSpec::new(name, arbiter_binary(), dir.path())
            .arg("run")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--cluster", cluster])
            .args(["--store", etcd_url])
            .args(["--arbiter-id", name])
            .args(extra.iter().copied())
            .env("UNDERSTUDY_LOG", "info")
            .env("NO_COLOR", "1");
        // `extra` may set its own TTL.
        let spec = if extra.contains(&"--leader-ttl-s") {
            spec
        } else {
            spec.args(["--leader-ttl-s", &TTL_S.to_string()])
        };
        let process = env
            .iter()
            .fold(spec, |spec, (key, value)| spec.env(key, value))
            .spawn()
            .expect("arbiter starts");
        let client = ArbiterClient::new(&url, None).expect("a valid URL");
        EtcdArbiter {
            url,
            process,
            client,
        }
    }

    /// `GET /v1/status`, or `None` while it does not answer one (starting,
    /// killed, no state stored yet).
    pub async fn status(&self) -> Option<ClusterStatus> {
        let raw = self
            .client
            .send(Method::GET, "/v1/status", None, false)
            .await
            .ok()?;
        if raw.status != 200 {
            return None;
        }
        serde_json::from_slice(&raw.body).ok()
    }

    /// Whether it answers its status as the leader.
    pub async fn is_leader(&self) -> bool {
        self.status().await.is_some_and(|s| s.is_leader)
    }

    /// `POST path` with a JSON `body`, answered as it comes (no redirect
    /// following).
    pub async fn post(&self, path: &str, body: &str) -> RawResponse {
        self.client
            .send(
                Method::POST,
                path,
                Some(bytes::Bytes::from(body.to_string())),
                true,
            )
            .await
            .unwrap_or_else(|e| panic!("POST {path} to {}: {e}", self.url))
    }
}

/// Waits until exactly one of `arbiters` reports `is_leader` and every
/// other one answers with that leader's URL; returns its index.
pub async fn single_leader(arbiters: &[&EtcdArbiter], within: Duration) -> usize {
    wait_for(
        within,
        "exactly one arbiter leading, named by all",
        || async {
            let mut statuses = Vec::new();
            for a in arbiters {
                statuses.push(a.status().await?);
            }
            let leaders: Vec<usize> = (0..statuses.len())
                .filter(|i| statuses[*i].is_leader)
                .collect();
            let [leader] = leaders[..] else { return None };
            let url = &arbiters[leader].url;
            statuses
                .iter()
                .all(|s| s.leader.as_deref() == Some(url.as_str()))
                .then_some(leader)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// An in-process candidate of one cluster: its read-only store and its
/// elector, and — once won — its term and fenced store.
pub struct InProcess {
    /// The cluster's store, read-only.
    pub store: EtcdStore,
    /// The elector campaigning for this candidate.
    pub elector: Elector,
    /// Never signalled: the test stops campaigns by dropping them.
    stop: watch::Receiver<bool>,
    /// Keeps `stop` open.
    _stop_tx: watch::Sender<bool>,
}

impl InProcess {
    /// A candidate `url` for `cluster` at `endpoints` with lease `ttl_s`.
    pub async fn new(endpoints: &[String], cluster: &str, url: &str, ttl_s: u64) -> InProcess {
        let store = EtcdStore::connect(endpoints, cluster, None)
            .await
            .expect("etcd connection");
        let candidate = Candidate {
            id: url.trim_start_matches("http://").to_string(),
            url: url.to_string(),
            ttl_s,
            drift: 0.1,
        };
        let elector = Elector::new(&store, candidate, Clock::start());
        let (stop_tx, stop) = watch::channel(false);
        InProcess {
            store,
            elector,
            stop,
            _stop_tx: stop_tx,
        }
    }

    /// Campaigns until it leads (at most `within`); returns the term and
    /// the store fenced by it.
    pub async fn lead(&mut self, within: Duration) -> (Term, EtcdStore) {
        let term = tokio::time::timeout(within, self.elector.campaign(&mut self.stop))
            .await
            .expect("won the election in time")
            .expect("not stopped");
        let fence = term.fence().expect("an elected term has a fence");
        (term, self.store.fenced(fence))
    }
}

/// etcd endpoints (`127.0.0.1:PORT`) of a harness cluster.
pub fn endpoints(etcd: &understudy_tests::harness::EtcdCluster) -> Vec<String> {
    etcd.endpoints().split(',').map(str::to_string).collect()
}
