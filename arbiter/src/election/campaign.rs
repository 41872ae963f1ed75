//! `Elector`: campaigning for `/<cluster>/arbiter/leader` and handing back
//! a [`Term`] when this arbiter wins.
//!
//! One campaign round:
//!
//! 1. grant a fresh lease of `ttl_s` (note the time `s` first);
//! 2. `txn if create_revision(leader) == 0 then put leader = me (lease)
//!    else get leader` — create-if-absent, so of any number of arbiters
//!    exactly one wins, and the key names the winner's id and URL;
//! 3. won: the term's fence is `(lease, revision of the txn)`, its first
//!    deadline `s + ttl·(1 − drift)`; start the keep-alive and the watch on
//!    our own key ([`super::keepalive`]);
//! 4. lost: revoke the unused lease, publish the holder (followers redirect
//!    to it), and watch the key from the revision read until it is deleted —
//!    then campaign again at once. That watch is what makes failover take
//!    "lease TTL + a little", not "TTL + a polling period".
//!
//! Errors (etcd down, no quorum) are retried with a backoff capped at 1 s
//! and logged once per distinct cause.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use tokio::sync::watch;

use super::keepalive::{self, valid_until};
use super::term::Term;
use crate::clock::Clock;
use crate::store::etcd::connection::call;
use crate::store::etcd::{ClusterKeys, EtcdStore, Fence, LeaderRecord, CALL_TIMEOUT};
use crate::store::StoreError;

/// Longest pause between failed campaign attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Pause between attempts to revoke a term's lease.
const REVOKE_PAUSE: Duration = Duration::from_millis(50);

/// Who this arbiter is in the election, and the lease it campaigns with.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// `--arbiter-id`, written to the leader key.
    pub id: String,
    /// The advertised URL, written to the leader key.
    pub url: String,
    /// Lease TTL in whole seconds (etcd's unit): how long the key outlives
    /// a leader that stopped renewing it (e.g. `kill -9`).
    pub ttl_s: u64,
    /// Bound on the clock-rate difference between this host and etcd's:
    /// the term's deadline is `ttl·(1 − drift)` after a keep-alive's send.
    pub drift: f64,
}

/// How one campaign round ended.
enum Round {
    /// We created the leader key.
    Won(Term),
    /// Someone holds it (as read at `revision`).
    Held {
        /// Its record, if it parses.
        holder: Option<LeaderRecord>,
        /// The revision the read was made at; watch from the next one.
        revision: i64,
    },
}

/// Campaigns for one cluster's leader key.
pub struct Elector {
    /// The etcd connection (shared with the cluster's store).
    client: Client,
    /// This cluster's keys.
    keys: ClusterKeys,
    /// `etcd://…`, for messages.
    described: String,
    /// Who we are.
    candidate: Candidate,
    /// Deadlines are measured on this clock.
    clock: Clock,
    /// The leader as last seen (ourselves while we lead); followers read it
    /// to redirect.
    leader_tx: watch::Sender<Option<LeaderRecord>>,
    /// Terms won so far, to number them.
    terms_won: u64,
}

impl Elector {
    /// An elector for the cluster of `store`, over its connection.
    pub fn new(store: &EtcdStore, candidate: Candidate, clock: Clock) -> Elector {
        let (leader_tx, _) = watch::channel(None);
        Elector {
            client: store.client().clone(),
            keys: store.keys().clone(),
            described: store.endpoints().to_string(),
            candidate,
            clock,
            leader_tx,
            terms_won: 0,
        }
    }

    /// The leader as this elector last saw it.
    pub fn leader(&self) -> watch::Receiver<Option<LeaderRecord>> {
        self.leader_tx.subscribe()
    }

    /// Campaigns until this arbiter leads (`Some(term)`) or `stop` turns
    /// true (`None`).
    pub async fn campaign(&mut self, stop: &mut watch::Receiver<bool>) -> Option<Term> {
        let mut backoff = Duration::from_millis(50);
        let mut last_error = String::new();
        loop {
            if *stop.borrow_and_update() {
                return None;
            }
            match self.round().await {
                Ok(Round::Won(term)) => return Some(term),
                Ok(Round::Held { holder, revision }) => {
                    backoff = Duration::from_millis(50);
                    last_error.clear();
                    self.publish(holder);
                    self.wait_for_vacancy(revision, stop).await;
                }
                Err(e) => {
                    let text = e.to_string();
                    if text != last_error {
                        tracing::warn!(code = e.code(), "cannot campaign for leadership: {e}");
                        last_error = text;
                    }
                    tokio::select! {
                        biased;
                        _ = stop.changed() => {}
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Ends `term` and revokes its lease, deleting the leader key so another
    /// arbiter can lead at once (shutdown, a term that could not take
    /// office or lost etcd). The term is ended *before* the revoke: no
    /// grant can be sent under it once the key is gone.
    pub async fn step_down(&self, term: &Term, reason: &str) {
        term.end(reason);
        self.publish(None);
        if let Some(fence) = term.fence() {
            self.revoke_retrying(fence.lease_id).await;
        }
    }

    async fn round(&mut self) -> Result<Round, StoreError> {
        let leader_key = self.keys.leader();
        let sent = self.clock.now();
        let requested_s = self.candidate.ttl_s as i64;
        let grant = call(&self.described, "grant a lease", || {
            let mut lease = self.client.lease_client();
            async move { lease.grant(requested_s, None).await }
        })
        .await?;
        let lease_id = grant.id();
        if grant.ttl() > self.candidate.ttl_s as i64 {
            tracing::warn!(
                requested_s = self.candidate.ttl_s,
                granted_s = grant.ttl(),
                "etcd granted a longer leader lease than asked (its minimum is 1.5 × its \
                 election timeout): after a leader dies, failover takes up to the granted TTL"
            );
        }
        // The shorter of the two is the safe one for our deadline.
        let ttl_s = self.candidate.ttl_s.min(grant.ttl().max(1) as u64);
        let record = LeaderRecord {
            id: self.candidate.id.clone(),
            url: self.candidate.url.clone(),
            since_unix_ms: self.clock.unix_ms(),
        };
        let txn = Txn::new()
            .when([Compare::create_revision(
                leader_key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                leader_key.clone(),
                record.to_bytes(),
                Some(PutOptions::new().with_lease(lease_id)),
            )])
            .or_else([TxnOp::get(leader_key.clone(), None)]);
        let attempt = || {
            let (mut kv, txn) = (self.client.kv_client(), txn.clone());
            async move { kv.txn(txn).await }
        };
        let resp = match call(&self.described, "campaign", attempt).await {
            Ok(resp) => resp,
            Err(e) => {
                // The put may have landed: revoking the lease removes it.
                self.revoke(lease_id).await;
                return Err(e);
            }
        };
        let revision = resp.header().map_or(0, |h| h.revision());
        if !resp.succeeded() {
            self.revoke(lease_id).await;
            let holder = resp.op_responses().into_iter().find_map(|r| match r {
                etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            });
            return Ok(Round::Held {
                holder: holder.and_then(|v| LeaderRecord::parse(&v)),
                revision,
            });
        }
        self.terms_won += 1;
        let fence = Fence {
            lease_id,
            create_revision: revision,
        };
        let term = Term::elected(
            self.terms_won,
            fence,
            self.clock,
            valid_until(sent, ttl_s, self.candidate.drift),
        );
        tokio::spawn(keepalive::keep_alive(
            self.client.clone(),
            term.clone(),
            lease_id,
            ttl_s,
            self.candidate.drift,
            self.clock,
        ));
        tokio::spawn(keepalive::watch_own_key(
            self.client.clone(),
            term.clone(),
            leader_key,
            revision,
        ));
        tracing::info!(
            term = term.number(),
            id = %record.id,
            url = %record.url,
            lease = lease_id,
            revision,
            ttl_s,
            "won the arbiter election"
        );
        self.publish(Some(record));
        Ok(Round::Won(term))
    }

    /// Watches the leader key from `revision + 1` until it is deleted (or
    /// the watch breaks, or `stop`), publishing every new holder.
    async fn wait_for_vacancy(&self, revision: i64, stop: &mut watch::Receiver<bool>) {
        let mut watch = self.client.watch_client();
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let opened = tokio::select! {
            biased;
            _ = stop.changed() => return,
            r = tokio::time::timeout(CALL_TIMEOUT, watch.watch(self.keys.leader(), Some(options))) => r,
        };
        let Ok(Ok(mut stream)) = opened else {
            // The next round reads the key again; pause so a broken etcd is
            // not hammered.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        };
        loop {
            let message = tokio::select! {
                biased;
                _ = stop.changed() => return,
                m = stream.message() => m,
            };
            let Ok(Some(resp)) = message else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            };
            if resp.canceled() {
                return;
            }
            for event in resp.events() {
                match event.event_type() {
                    EventType::Delete => {
                        tracing::info!(
                            key = %self.keys.leader(),
                            "the leader key was deleted: campaigning"
                        );
                        self.publish(None);
                        return;
                    }
                    EventType::Put => {
                        let holder = event.kv().and_then(|kv| LeaderRecord::parse(kv.value()));
                        self.publish(holder);
                    }
                }
            }
        }
    }

    fn publish(&self, holder: Option<LeaderRecord>) {
        self.leader_tx.send_if_modified(|seen| {
            if *seen == holder {
                return false;
            }
            if let Some(h) = &holder {
                tracing::info!(leader = %h.id, url = %h.url, "arbiter leader");
            }
            *seen = holder;
            true
        });
    }

    /// Revokes a term's lease, retrying a failed call (the member it went
    /// to died, or etcd is electing a leader) for up to [`CALL_TIMEOUT`]:
    /// until the lease goes, the leader key it holds keeps every arbiter
    /// out for up to a TTL. Then gives up; the lease expires by itself.
    async fn revoke_retrying(&self, lease_id: i64) {
        let give_up = tokio::time::Instant::now() + CALL_TIMEOUT;
        let mut lease = self.client.lease_client();
        loop {
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            let error = match tokio::time::timeout(left, lease.revoke(lease_id)).await {
                Ok(Ok(_)) => return,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer in time".to_string(),
            };
            if error.contains("lease not found") {
                return; // expired already
            }
            if tokio::time::Instant::now() + REVOKE_PAUSE >= give_up {
                tracing::debug!(lease = lease_id, error = %error, "lease not revoked; it will expire");
                return;
            }
            tokio::time::sleep(REVOKE_PAUSE).await;
        }
    }

    /// Best effort: an unreachable etcd lets the lease expire by itself.
    async fn revoke(&self, lease_id: i64) {
        let attempt = || {
            let mut lease = self.client.lease_client();
            async move { lease.revoke(lease_id).await }
        };
        if let Err(e) = call(&self.described, "revoke a lease", attempt).await {
            tracing::debug!(lease = lease_id, error = %e, "lease not revoked; it will expire");
        }
    }
}
