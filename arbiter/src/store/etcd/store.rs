//! `EtcdStore`: the cluster state in etcd, replaced only by a transaction
//! that is both a compare-and-swap and a leadership check.
//!
//! # One write, one transaction
//!
//! ```text
//! txn if   mod_revision(/<c>/state)            == R   -- the version we expect
//!      and create_revision(/<c>/arbiter/leader) == C   -- our campaign's key …
//!      and lease(/<c>/arbiter/leader)           == L   -- … under our lease
//!     then put /<c>/state = new
//!     else get /<c>/state, get /<c>/arbiter/leader
//! ```
//!
//! `R` is the etcd `mod_revision` at which the expected `ClusterState`
//! version was stored (remembered from the last load or write, else read
//! first). `(C, L)` is the [`Fence`] of the term this store was handed: a
//! leader key is created exactly once per campaign, so its
//! `create_revision` names one term, and the key vanishes with the lease.
//! Once this arbiter's lease has expired or been revoked, or another arbiter
//! holds the key, the comparison fails and the write is refused with
//! [`StoreError::NotLeader`] naming the current leader — a deposed arbiter
//! cannot write, whatever it believes (DESIGN.md, "Arbiter high
//! availability"). The `else` branch returns what is stored, so a conflict
//! costs no second round trip.
//!
//! A store without a fence (a follower's, for status reads) loads but never
//! writes. Durability is etcd's: a transaction is acknowledged once a quorum
//! has it in its write-ahead log.

use std::sync::{Arc, Mutex};

use etcd_client::{Client, Compare, CompareOp, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::connection::{self, call};
use super::keys::{ClusterKeys, LeaderRecord};
use crate::store::cas::{check_version_rule, CasOutcome, StateStore, StoreFuture};
use crate::store::{ClusterState, StoreError};

/// What ties a write to one term of leadership: the leader key as this
/// arbiter's campaign created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The etcd lease the leader key is attached to (kept alive by the term).
    pub lease_id: i64,
    /// The revision at which the campaign created the leader key; unique
    /// to this term, since the key is only ever created, never rewritten.
    pub create_revision: i64,
}

/// The version of the stored state and the etcd revision it was stored at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    /// `ClusterState::version`.
    version: u64,
    /// Its etcd `mod_revision`.
    mod_revision: i64,
}

/// The shared, etcd-backed [`StateStore`] of one cluster.
#[derive(Clone)]
pub struct EtcdStore {
    /// The etcd connection (cheap to clone: one balanced channel).
    client: Client,
    /// This cluster's keys.
    keys: ClusterKeys,
    /// `etcd://h1:2379,…`, for messages.
    described: String,
    /// The term writes are fenced by; `None`: read-only (a follower).
    fence: Option<Fence>,
    /// The state as last seen, so a CAS need not read before writing. Only
    /// a hint: the transaction compares the real `mod_revision`.
    seen: Arc<Mutex<Option<Seen>>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("store", &self.describe())
            .field("fence", &self.fence)
            .finish()
    }
}

impl EtcdStore {
    /// A read-only store of `cluster` at `endpoints` (`host:port` each),
    /// in TLS with `tls`.
    pub async fn connect(
        endpoints: &[String],
        cluster: &str,
        tls: Option<&proto_common::tls::TlsFiles>,
    ) -> Result<EtcdStore, StoreError> {
        let client = connection::connect(endpoints, tls).await?;
        Ok(EtcdStore::new(client, endpoints, cluster))
    }

    /// A read-only store of `cluster` over an existing connection.
    pub fn new(client: Client, endpoints: &[String], cluster: &str) -> EtcdStore {
        EtcdStore {
            client,
            keys: ClusterKeys::new(cluster),
            described: connection::describe(endpoints),
            fence: None,
            seen: Arc::new(Mutex::new(None)),
        }
    }

    /// The same store, writing only while `fence`'s term holds the leader
    /// key. Shares the connection.
    pub fn fenced(&self, fence: Fence) -> EtcdStore {
        EtcdStore {
            fence: Some(fence),
            ..self.clone()
        }
    }

    /// The connection, for the election of the same cluster.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// This cluster's keys.
    pub fn keys(&self) -> &ClusterKeys {
        &self.keys
    }

    /// `etcd://h1:2379,…`.
    pub fn endpoints(&self) -> &str {
        &self.described
    }

    /// The fence writes are made under, if any.
    pub fn fence(&self) -> Option<Fence> {
        self.fence
    }

    /// Who holds the leader key now, if anyone (a linearizable read).
    pub async fn leader(&self) -> Result<Option<LeaderRecord>, StoreError> {
        let resp = call(&self.described, "read the leader key", || {
            let (mut kv, key) = (self.client.kv_client(), self.keys.leader());
            async move { kv.get(key, None).await }
        })
        .await?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| LeaderRecord::parse(kv.value())))
    }

    async fn load_state(&self) -> Result<Option<ClusterState>, StoreError> {
        let resp = call(&self.described, "load the cluster state", || {
            let (mut kv, key) = (self.client.kv_client(), self.keys.state());
            async move { kv.get(key, None).await }
        })
        .await?;
        self.adopt(resp.kvs().first())
    }

    /// Parses the state key (absent: `None`) and remembers where it was seen.
    fn adopt(&self, kv: Option<&KeyValue>) -> Result<Option<ClusterState>, StoreError> {
        let Some(kv) = kv else {
            *self.seen() = None;
            return Ok(None);
        };
        let state = self.parse(kv.value())?;
        *self.seen() = Some(Seen {
            version: state.version,
            mod_revision: kv.mod_revision(),
        });
        Ok(Some(state))
    }

    fn parse(&self, bytes: &[u8]) -> Result<ClusterState, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            location: format!("{} key {}", self.described, self.keys.state()),
            detail,
        };
        let state: ClusterState = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("not a cluster state: {e}")))?;
        if state.version == 0 {
            return Err(corrupt(
                "version is 0, but every stored state has version ≥ 1".into(),
            ));
        }
        state.validate().map_err(corrupt)?;
        Ok(state)
    }

    async fn cas(
        &self,
        expected: Option<u64>,
        new: &ClusterState,
    ) -> Result<CasOutcome, StoreError> {
        check_version_rule(expected, new)?;
        let Some(fence) = self.fence else {
            let leader = self.leader().await.ok().flatten().map(|l| l.url);
            return Err(StoreError::NotLeader { leader });
        };
        let bytes = serde_json::to_vec(new).map_err(|e| StoreError::Corrupt {
            location: self.describe(),
            detail: format!("cannot encode the new state: {e}"),
        })?;
        // The first attempt may use a stale hint; the second uses what the
        // failed transaction read back, so a conflict is reported only when
        // the stored version really differs.
        let mut revision = None;
        for _ in 0..2 {
            let mod_revision = match (expected, revision) {
                (None, _) => 0, // an absent key has mod_revision 0
                (Some(_), Some(r)) => r,
                (Some(v), None) => match self.hint(v) {
                    Some(r) => r,
                    None => {
                        let current = self.load_state().await?;
                        if current.as_ref().map(|s| s.version) != expected {
                            return Ok(CasOutcome::Conflict(current));
                        }
                        self.hint(v).unwrap_or(0)
                    }
                },
            };
            match self.txn(fence, mod_revision, &bytes, new.version).await? {
                Attempt::Written => return Ok(CasOutcome::Written),
                Attempt::Stored(current, at) => {
                    if current.as_ref().map(|s| s.version) != expected {
                        return Ok(CasOutcome::Conflict(current));
                    }
                    revision = Some(at);
                }
            }
        }
        // Written between our two attempts by someone holding our fence —
        // only ourselves: report what is there.
        Ok(CasOutcome::Conflict(self.load_state().await?))
    }

    /// One fenced transaction (see the module docs).
    async fn txn(
        &self,
        fence: Fence,
        mod_revision: i64,
        bytes: &[u8],
        version: u64,
    ) -> Result<Attempt, StoreError> {
        let (state_key, leader_key) = (self.keys.state(), self.keys.leader());
        let txn = Txn::new()
            .when([
                Compare::mod_revision(state_key.clone(), CompareOp::Equal, mod_revision),
                Compare::create_revision(
                    leader_key.clone(),
                    CompareOp::Equal,
                    fence.create_revision,
                ),
                Compare::lease(leader_key.clone(), CompareOp::Equal, fence.lease_id),
            ])
            .and_then([TxnOp::put(state_key.clone(), bytes, None::<PutOptions>)])
            .or_else([TxnOp::get(state_key, None), TxnOp::get(leader_key, None)]);
        let resp = call(&self.described, "write the cluster state", || {
            let (mut kv, txn) = (self.client.kv_client(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await?;
        if resp.succeeded() {
            let revision = resp.header().map_or(0, |h| h.revision());
            *self.seen() = Some(Seen {
                version,
                mod_revision: revision,
            });
            return Ok(Attempt::Written);
        }
        let mut gets = resp.op_responses().into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        });
        let (Some(state), Some(leader)) = (gets.next(), gets.next()) else {
            return Err(connection::unavailable(
                &self.described,
                "write the cluster state",
                "the failed transaction returned no reads",
            ));
        };
        let holder = leader.kvs().first();
        let ours = holder.is_some_and(|kv| {
            kv.create_revision() == fence.create_revision && kv.lease() == fence.lease_id
        });
        if !ours {
            let leader = holder
                .and_then(|kv| LeaderRecord::parse(kv.value()))
                .map(|l| l.url);
            tracing::warn!(
                lease = fence.lease_id,
                create_revision = fence.create_revision,
                leader = %leader.as_deref().unwrap_or("none"),
                "state write refused: this arbiter's term is over"
            );
            return Err(StoreError::NotLeader { leader });
        }
        let kv = state.kvs().first();
        let at = kv.map_or(0, |kv| kv.mod_revision());
        Ok(Attempt::Stored(self.adopt(kv)?, at))
    }

    fn hint(&self, version: u64) -> Option<i64> {
        self.seen()
            .filter(|s| s.version == version)
            .map(|s| s.mod_revision)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Option<Seen>> {
        // Assignments are whole, so a poisoned lock still holds a value.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How one fenced transaction ended.
#[allow(clippy::large_enum_variant)] // one per write; boxing would only add noise
enum Attempt {
    /// The new state is stored.
    Written,
    /// The state key's revision differed; this is what is stored, and at
    /// which `mod_revision` (0: absent).
    Stored(Option<ClusterState>, i64),
}

impl StateStore for EtcdStore {
    fn load(&self) -> StoreFuture<'_, Option<ClusterState>> {
        Box::pin(self.load_state())
    }

    fn compare_and_swap<'a>(
        &'a self,
        expected: Option<u64>,
        new: &'a ClusterState,
    ) -> StoreFuture<'a, CasOutcome> {
        Box::pin(self.cas(expected, new))
    }

    fn describe(&self) -> String {
        format!("{} key {}", self.described, self.keys.state())
    }
}
