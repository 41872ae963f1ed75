//! `Office`: what this arbiter process is right now, as the HTTP routes see
//! it — leading (a `Shell` decides) or following (requests go elsewhere).
//!
//! The server loop (`tenure`, `elected`) publishes the office through a
//! `watch` channel; every request reads it once, at its start. A request
//! that started under a term that then ends is still safe: the shell checks
//! its term after building each reply, and the store fences every write.
//!
//! A [`Follower`] answers replicas and operators with a 307 to the leader
//! (`Location` + the `leader` field), or a retryable 503 while no leader is
//! known — including while this very arbiter has won but not yet taken
//! office (redirecting to itself would only make a replica spin). Its
//! `GET /v1/status` is the stored state, read from the store on each call.

use std::sync::Arc;

use tokio::sync::watch;

use super::api_error::ApiError;
use super::shell::Shell;
use crate::clock::Clock;
use crate::status::ClusterStatus;
use crate::store::etcd::LeaderRecord;
use crate::store::StateStore;
use proto_common::ErrorCode;

/// What this process is now.
#[derive(Clone)]
pub enum Office {
    /// This arbiter leads; the shell decides.
    Leading(Arc<Shell>),
    /// Another arbiter leads, or nobody does yet.
    Following(Arc<Follower>),
    /// Not deciding and not following: a single (file-store) arbiter that
    /// is shutting down.
    Closed,
}

impl Office {
    /// The answer to a request for `path` when this office cannot serve it
    /// (`None`: leading, go ahead).
    pub fn refusal(&self, path: &str) -> Option<ApiError> {
        match self {
            Office::Leading(_) => None,
            Office::Following(f) => Some(f.refusal(path)),
            Office::Closed => Some(ApiError::new(
                ErrorCode::ShuttingDown,
                "this arbiter is shutting down and makes no more decisions; retry at the next \
                 arbiter",
            )),
        }
    }

    /// The leader's URL as far as this office knows (`None` when leading
    /// or unknown).
    pub fn leader_url(&self) -> Option<String> {
        match self {
            Office::Following(f) => f.leader_url(),
            _ => None,
        }
    }
}

/// A non-leading arbiter's view: the store to read and who leads.
pub struct Follower {
    /// Read-only access to the cluster state (status only).
    store: Arc<dyn StateStore>,
    /// The leader as the election last saw it.
    leader: watch::Receiver<Option<LeaderRecord>>,
    /// Our own advertised URL: a leader record naming it means we are
    /// taking office, not that someone else leads.
    own_url: String,
    /// Wall-clock time for the status snapshot.
    clock: Clock,
}

impl Follower {
    /// A follower reading `store` and learning the leader from `leader`.
    pub fn new(
        store: Arc<dyn StateStore>,
        leader: watch::Receiver<Option<LeaderRecord>>,
        own_url: String,
        clock: Clock,
    ) -> Follower {
        Follower {
            store,
            leader,
            own_url,
            clock,
        }
    }

    /// The leader's URL, if it is known and is not this arbiter.
    pub fn leader_url(&self) -> Option<String> {
        self.leader
            .borrow()
            .as_ref()
            .map(|l| l.url.trim_end_matches('/').to_string())
            .filter(|url| *url != self.own_url.trim_end_matches('/'))
    }

    /// The answer to a request for `path` that only the leader may serve.
    pub fn refusal(&self, path: &str) -> ApiError {
        let why = if self.leader.borrow().is_some() && self.leader_url().is_none() {
            "it has just won the election and is taking office"
        } else {
            "it follows"
        };
        ApiError::not_leader(self.leader_url().as_deref(), path, why)
    }

    /// The stored state as a status snapshot, naming the leader.
    pub async fn status(&self) -> Result<ClusterStatus, ApiError> {
        let state = self.store.load().await.map_err(|e| {
            ApiError::new(
                e.error_code(),
                format!("this arbiter does not lead and cannot read the stored state: {e}"),
            )
        })?;
        let Some(state) = state else {
            return Err(ApiError::new(
                ErrorCode::NotLeader,
                format!(
                    "no cluster state is stored in {} yet; the leader creates it when it takes \
                     office",
                    self.store.describe()
                ),
            ));
        };
        let mut status = ClusterStatus::from_stored(&state, self.clock.unix_ms());
        status.leader = self.leader.borrow().as_ref().map(|l| l.url.clone());
        status.is_leader = false;
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ClusterState, MemoryStore};
    use proto_common::params::ClusterParams;

    fn record(url: &str) -> Option<LeaderRecord> {
        Some(LeaderRecord {
            id: "x".into(),
            url: url.into(),
            since_unix_ms: 0,
        })
    }

    #[tokio::test]
    async fn a_follower_redirects_to_others_and_reads_the_store() {
        let mut state = ClusterState::new("c", ClusterParams::default());
        state.version = 4;
        let store = Arc::new(MemoryStore::with_state(state));
        let (tx, rx) = watch::channel(None);
        let me = "http://127.0.0.1:1";
        let f = Follower::new(store, rx, me.into(), Clock::start());
        assert_eq!(f.refusal("/v1/heartbeat").status().as_u16(), 503);

        tx.send_replace(record("http://127.0.0.1:2/"));
        let e = f.refusal("/v1/heartbeat");
        assert_eq!(e.status().as_u16(), 307);
        assert_eq!(
            e.location.as_deref(),
            Some("http://127.0.0.1:2/v1/heartbeat")
        );

        tx.send_replace(record(me));
        let e = f.refusal("/v1/heartbeat");
        assert_eq!(e.status().as_u16(), 503, "never a redirect to itself");
        assert!(
            e.body.message.contains("taking office"),
            "{}",
            e.body.message
        );

        tx.send_replace(record("http://127.0.0.1:2"));
        let status = f.status().await.unwrap();
        assert_eq!(status.state_version, 4);
        assert!(!status.is_leader);
        assert_eq!(status.leader.as_deref(), Some("http://127.0.0.1:2"));
    }
}
