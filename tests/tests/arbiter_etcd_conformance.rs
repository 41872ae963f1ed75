//! The `StateStore` conformance suite (`arbiter::store::conformance`, the
//! same checks the memory and file stores pass in their unit tests) run
//! against the file store and against the etcd store on a real
//! single-member etcd started by the harness.
//!
//! Every fresh etcd store is a new cluster name (its own `/<cluster>/`
//! keys) whose writes are fenced by a real election term: the suite thus
//! also exercises the leader-key comparison of every write. "Reopening"
//! steps the term down (revoking its lease) and campaigns again on a new
//! connection, as a restarted arbiter would.

mod arbiter_etcd_support;

use std::time::Duration;

use arbiter::election::Term;
use arbiter::store::conformance::{self, Harness};
use arbiter::store::etcd::EtcdStore;
use arbiter::FileStore;
use arbiter_etcd_support::{endpoints, InProcess};
use understudy_tests::harness::{EtcdCluster, TestDir};

/// Makes etcd stores, each holding a term of its own cluster.
struct EtcdHarness {
    /// The etcd members' `host:port`s.
    endpoints: Vec<String>,
    /// Makes cluster names unique.
    next: u32,
    /// The candidates whose terms fence the stores handed out (kept so
    /// their keep-alives run), by cluster name.
    held: Vec<(String, InProcess, Term)>,
}

impl EtcdHarness {
    async fn lead(&mut self, cluster: &str) -> EtcdStore {
        let url = format!("http://conformance.invalid/{cluster}");
        let mut candidate = InProcess::new(&self.endpoints, cluster, &url, 5).await;
        let (term, store) = candidate.lead(Duration::from_secs(15)).await;
        self.held.push((cluster.to_string(), candidate, term));
        store
    }
}

impl Harness for EtcdHarness {
    type Store = EtcdStore;

    async fn fresh(&mut self) -> EtcdStore {
        self.next += 1;
        let cluster = format!("conformance-{}", self.next);
        self.lead(&cluster).await
    }

    async fn reopen(&mut self, store: EtcdStore) -> EtcdStore {
        let prefix = store.keys().prefix().to_string();
        let cluster = prefix.trim_matches('/').to_string();
        drop(store);
        let at = self
            .held
            .iter()
            .position(|(c, _, _)| *c == cluster)
            .expect("the store's term is held");
        let (_, candidate, term) = self.held.remove(at);
        candidate
            .elector
            .step_down(&term, "reopening the store")
            .await;
        self.lead(&cluster).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_store_passes_the_conformance_suite() {
    let dir = TestDir::new("arbiter-etcd-conformance").expect("test dir");
    let etcd = EtcdCluster::start(1, dir.path())
        .await
        .expect("etcd starts");
    let mut harness = EtcdHarness {
        endpoints: endpoints(&etcd),
        next: 0,
        held: Vec::new(),
    };
    conformance::run_all(&mut harness).await;
}

/// Each fresh file store gets its own file in one temp dir.
struct FileHarness {
    /// Owns the directory for the test's duration.
    dir: TestDir,
    /// Makes file names unique.
    next: u32,
}

impl Harness for FileHarness {
    type Store = FileStore;

    async fn fresh(&mut self) -> FileStore {
        self.next += 1;
        FileStore::open(self.dir.join(format!("state{}.json", self.next))).expect("file store")
    }

    async fn reopen(&mut self, store: FileStore) -> FileStore {
        let path = store.path().to_path_buf();
        drop(store);
        FileStore::open(path).expect("file store reopens")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_store_passes_the_conformance_suite() {
    let mut harness = FileHarness {
        dir: TestDir::new("arbiter-file-conformance").expect("test dir"),
        next: 0,
    };
    conformance::run_all(&mut harness).await;
}
