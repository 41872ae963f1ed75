//! The two watchers of a won term: the lease keep-alive and the watch on
//! our own leader key. Either ends the term the moment it knows the term
//! is lost; neither ever extends a term that has ended.
//!
//! - [`keep_alive`] renews the lease every `ttl / 4` and moves the term's
//!   deadline to `s + ttl·(1 − drift)` for each acknowledged keep-alive
//!   sent at `s`. etcd reporting the lease gone (TTL ≤ 0, "lease not
//!   found") ends the term at once. A *broken stream* — a send error, a
//!   closed stream, an error answer: the member it runs on died or lost
//!   its etcd leader — says nothing about the lease, which lives in the
//!   whole etcd cluster: another stream is opened at once (the balanced
//!   channel may pick another member), again and again, and only the
//!   deadline ends the term if none gets an answer in time
//!   ([`Term::ended`]). Safety never rested on ending early: the deadline
//!   is derived from acknowledged keep-alives only.
//! - [`watch_own_key`] watches the leader key from the revision after the
//!   one we created it at: a delete (lease revoked or expired, or an
//!   operator's `etcdctl del`) or a put by anyone else ends the term. A
//!   broken watch is re-established from the last revision seen, so no
//!   event is missed.

use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions};

use super::term::Term;
use crate::clock::Clock;
use crate::core::Millis;
use crate::store::etcd::CALL_TIMEOUT;

/// Keep-alives per TTL: a lease survives three lost or slow ones in a row.
const KEEPALIVES_PER_TTL: u64 = 4;

/// How long the term may be trusted after a keep-alive sent at `sent` was
/// acknowledged with `ttl_s`: `ttl·(1 − drift)` (rounded down).
pub fn valid_until(sent: Millis, ttl_s: u64, drift: f64) -> Millis {
    sent + ((ttl_s * 1000) as f64 * (1.0 - drift)).floor() as u64
}

/// Pause before opening another keep-alive stream after one broke: short
/// against a TTL, long enough not to spin on a member that refuses at once.
const REOPEN_PAUSE: Duration = Duration::from_millis(50);

/// How one keep-alive stream ended.
enum StreamEnd {
    /// The term ended (its deadline passed, or someone ended it).
    TermOver,
    /// etcd says the lease is gone: the term must end now.
    LeaseGone(String),
    /// The stream broke; another one, maybe on another member, may work.
    Broken(String),
}

/// Renews `lease_id` until `term` ends; ends `term` when etcd reports the
/// lease gone, and lets it run out at its deadline when no keep-alive is
/// acknowledged in time (see the module docs). `ttl_s` is the smaller of
/// the requested and the granted TTL.
pub async fn keep_alive(
    client: Client,
    term: Term,
    lease_id: i64,
    ttl_s: u64,
    drift: f64,
    clock: Clock,
) {
    let renewal = Renewal {
        lease_id,
        ttl_s,
        drift,
        clock,
        interval: Duration::from_millis((ttl_s * 1000 / KEEPALIVES_PER_TTL).max(50)),
    };
    let mut last_break = String::new();
    loop {
        match renewal.one_stream(&client, &term).await {
            StreamEnd::TermOver => return,
            StreamEnd::LeaseGone(reason) => return term.end(reason),
            StreamEnd::Broken(why) => {
                // Once per distinct cause: a dead member refuses every
                // reopen the same way.
                if why != last_break {
                    tracing::warn!(
                        term = term.number(),
                        lease = lease_id,
                        left_ms = term.left_ms().unwrap_or(0),
                        "keep-alive stream broke ({why}); opening another until the term's \
                         deadline"
                    );
                    last_break = why;
                }
            }
        }
        tokio::select! {
            biased;
            _ = term.ended() => return,
            _ = tokio::time::sleep(REOPEN_PAUSE) => {}
        }
    }
}

/// What renewing one term's lease needs.
struct Renewal {
    /// The lease behind the leader key.
    lease_id: i64,
    /// See [`keep_alive`].
    ttl_s: u64,
    /// Clock-rate bound: each acknowledged keep-alive is trusted for
    /// `ttl·(1 − drift)` from its send.
    drift: f64,
    /// Deadlines are measured on this clock.
    clock: Clock,
    /// Between keep-alives on one stream.
    interval: Duration,
}

impl Renewal {
    /// Opens one keep-alive stream and renews on it until it breaks, the
    /// lease is gone or the term ends.
    async fn one_stream(&self, client: &Client, term: &Term) -> StreamEnd {
        let lease_id = self.lease_id;
        let mut lease = client.lease_client();
        let sent = self.clock.now();
        // Opening sends a keep-alive and waits for its answer.
        let opened = tokio::select! {
            biased;
            _ = term.ended() => return StreamEnd::TermOver,
            r = tokio::time::timeout(CALL_TIMEOUT, lease.keep_alive(lease_id)) => r,
        };
        let (mut keeper, mut stream) = match opened {
            Ok(Ok(pair)) => pair,
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) if e == "lease not found" => {
                return StreamEnd::LeaseGone(format!("etcd reports lease {lease_id} not found"))
            }
            Ok(Err(e)) => return StreamEnd::Broken(format!("keep-alive failed: {e}")),
            Err(_) => {
                return StreamEnd::Broken(format!("no keep-alive answer within {CALL_TIMEOUT:?}"))
            }
        };
        term.extend(valid_until(sent, self.ttl_s, self.drift));
        loop {
            tokio::select! {
                biased;
                _ = term.ended() => return StreamEnd::TermOver,
                _ = tokio::time::sleep(self.interval) => {}
            }
            let sent = self.clock.now();
            if let Err(e) = keeper.keep_alive().await {
                return StreamEnd::Broken(format!("keep-alive could not be sent: {e}"));
            }
            let answer = tokio::select! {
                biased;
                _ = term.ended() => return StreamEnd::TermOver,
                m = stream.message() => m,
            };
            match answer {
                Ok(Some(resp)) if resp.ttl() > 0 => {
                    let ttl = self.ttl_s.min(resp.ttl() as u64);
                    term.extend(valid_until(sent, ttl, self.drift));
                    tracing::trace!(
                        term = term.number(),
                        lease = lease_id,
                        ttl = resp.ttl(),
                        "lease renewed"
                    );
                }
                Ok(Some(_)) => {
                    return StreamEnd::LeaseGone(format!(
                        "etcd reports lease {lease_id} expired (its TTL ran out before a \
                         keep-alive arrived)"
                    ))
                }
                Ok(None) => return StreamEnd::Broken("etcd closed the keep-alive stream".into()),
                Err(e) => return StreamEnd::Broken(format!("keep-alive failed: {e}")),
            }
        }
    }
}

/// Watches `leader_key`, which our campaign created at `created`, until
/// `term` ends; ends `term` when the key is deleted or rewritten.
pub async fn watch_own_key(client: Client, term: Term, leader_key: String, created: i64) {
    let mut from = created + 1;
    let mut watch = client.watch_client();
    while term.holds() {
        let options = WatchOptions::new().with_start_revision(from);
        let opened = tokio::select! {
            biased;
            _ = term.ended() => return,
            r = tokio::time::timeout(CALL_TIMEOUT, watch.watch(leader_key.clone(), Some(options))) => r,
        };
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(term = term.number(), error = %e, "cannot watch the leader key; retrying");
                pause(&term).await;
                continue;
            }
            Err(_) => {
                pause(&term).await;
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                biased;
                _ = term.ended() => return,
                m = stream.message() => m,
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                // The stream broke (member restarted, lost its leader):
                // watch again from where we were.
                Ok(None) | Err(_) => break,
            };
            if resp.canceled() {
                if resp.compact_revision() > from {
                    // History we have not seen is gone: we cannot tell
                    // whether our key survived it, so we do not lead.
                    return term.end(format!(
                        "the leader key's watch history was compacted (to revision {}) \
                         before it was read",
                        resp.compact_revision()
                    ));
                }
                break;
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                from = from.max(kv.mod_revision() + 1);
                match event.event_type() {
                    EventType::Delete => {
                        return term.end(format!(
                            "the leader key {leader_key} was deleted at revision {} (lease \
                             expired or revoked, or removed by hand)",
                            kv.mod_revision()
                        ))
                    }
                    EventType::Put if kv.create_revision() != created => {
                        return term.end(format!(
                            "the leader key {leader_key} was re-created at revision {} by \
                             another campaign",
                            kv.create_revision()
                        ))
                    }
                    EventType::Put => {}
                }
            }
        }
        pause(&term).await;
    }
}

/// A short pause before re-watching, cut short when the term ends.
async fn pause(term: &Term) {
    tokio::select! {
        biased;
        _ = term.ended() => {}
        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_is_the_ttl_shortened_by_drift() {
        assert_eq!(valid_until(Millis(1000), 2, 0.1), Millis(2800));
        assert_eq!(valid_until(Millis(0), 5, 0.0), Millis(5000));
        assert_eq!(valid_until(Millis(0), 2, 0.5), Millis(1000));
    }
}
