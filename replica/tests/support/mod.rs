//! In-process replicas for replication tests: each on port 0 with its own
//! temporary data directory, roles driven through the library (the way the
//! heartbeat loop drives them), stopped when dropped.

#![allow(dead_code)] // each test file uses a different part

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto_common::heartbeat::ActiveInfo;
use proto_common::{Epoch, NodeId, Position};
use replica::command::Command;
use replica::commit::WriteResult;
use replica::config::Options;
use replica::node::Node;
use replica::repl::Replication;
use replica::sync_set::SyncSet;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A lease no test outlives.
pub const NEVER_ENDING: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A running in-process replica.
pub struct TestNode {
    pub id: NodeId,
    pub node: Arc<Node>,
    pub repl: Arc<Replication>,
    pub repl_addr: String,
    pub client_url: String,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), replica::node::StartError>>>,
}

impl TestNode {
    /// Starts a replica named `name`; `tweak` adjusts its options.
    pub async fn start(name: &str, tweak: impl FnOnce(&mut Options)) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        TestNode::start_in(name, dir, tweak).await
    }

    /// Starts a replica on an existing data directory.
    pub async fn start_in(
        name: &str,
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut Options),
    ) -> TestNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let repl_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client_url = format!("http://{}", listener.local_addr().unwrap());
        let repl_addr = repl_listener.local_addr().unwrap().to_string();
        let mut opts = Options {
            node_id: Some(name.into()),
            data_dir: Some(dir.path().to_path_buf()),
            listen: Some(listener.local_addr().unwrap().to_string()),
            repl_listen: Some(repl_addr.clone()),
            segment_bytes: Some(1 << 20),
            ..Default::default()
        };
        tweak(&mut opts);
        let settings = opts.resolve().unwrap();
        let node = tokio::task::spawn_blocking(move || Node::open(settings))
            .await
            .unwrap()
            .unwrap();
        let repl = Replication::new(node.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(replica::server::run(
            listener,
            Some(repl_listener),
            None,
            node.clone(),
            repl.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        TestNode {
            id: NodeId::new(name).unwrap(),
            node,
            repl,
            repl_addr,
            client_url,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn info(&self) -> ActiveInfo {
        ActiveInfo {
            node_id: self.id.clone(),
            client_url: self.client_url.clone(),
            repl_addr: self.repl_addr.clone(),
        }
    }

    /// Makes this node the active in `epoch` with a never-ending lease.
    pub async fn make_active(&self, epoch: u64, sync: &[&TestNode]) -> Position {
        let members: Vec<NodeId> = sync.iter().map(|n| n.id.clone()).collect();
        let sync = SyncSet {
            required: members.len(),
            members,
            version: 1,
            strict: false,
        };
        self.repl
            .grant(Epoch(epoch), sync, NEVER_ENDING)
            .await
            .unwrap()
    }

    pub async fn follow(&self, active: &TestNode, epoch: u64) {
        self.repl.follow(active.info(), Epoch(epoch)).await.unwrap();
    }

    pub async fn put(&self, key: &str, value: &str) -> WriteResult {
        put_on(&self.node, key, value).await
    }

    /// Every key, value and version this node has applied.
    pub fn dump(&self) -> Vec<(Bytes, Bytes, Position)> {
        let kv = self.node.kv.read();
        kv.map()
            .iter()
            .map(|(k, e)| (k.clone(), e.value.clone(), e.version))
            .collect()
    }

    pub fn applied(&self) -> Position {
        self.node.applied()
    }

    /// Stops the node and hands back its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown().await;
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.repl.stop();
    }
}

/// Polls `cond` every few ms until it holds or `within` passes.
pub async fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Writes `key` on `node` as a client of its API would: under the role's
/// writer guard.
pub async fn put_on(node: &Node, key: &str, value: &str) -> WriteResult {
    let guard = node
        .roles
        .writer()
        .map_err(|e| replica::commit::WriteError::NotWritable(e.to_string()))?;
    node.write(
        &guard,
        Command::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        },
    )
    .await
}

/// [`put_on`] in a task of its own.
pub fn spawn_put(node: &Arc<Node>, key: &str, value: &str) -> tokio::task::JoinHandle<WriteResult> {
    let (node, key, value) = (node.clone(), key.to_string(), value.to_string());
    tokio::spawn(async move { put_on(&node, &key, &value).await })
}
