//! `ClusterKeys`: where one cluster's data lives in a shared etcd.
//!
//! Every key sits under `/<cluster>/` — the cluster name is checked at
//! start-up to be plain letters, digits, `-`, `_` and `.` (no `/`), and the
//! prefix ends in `/`, so cluster `a` never sees a key of cluster `ab`:
//!
//! | key | value | written by |
//! |---|---|---|
//! | `/<cluster>/state` | the `ClusterState` JSON | the leader, by fenced CAS |
//! | `/<cluster>/arbiter/leader` | [`LeaderRecord`] JSON (id, URL) | a campaign, attached to its lease |

use serde::{Deserialize, Serialize};

/// The etcd keys of one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterKeys {
    /// `/<cluster>/`, with both slashes.
    prefix: String,
}

impl ClusterKeys {
    /// The keys of `cluster` (already validated by `config::check_cluster_name`).
    pub fn new(cluster: &str) -> ClusterKeys {
        debug_assert!(
            !cluster.is_empty() && !cluster.contains('/'),
            "cluster names never contain '/': {cluster:?}"
        );
        ClusterKeys {
            prefix: format!("/{cluster}/"),
        }
    }

    /// `/<cluster>/`: every key of the cluster starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `/<cluster>/state`: the cluster state document.
    pub fn state(&self) -> String {
        format!("{}state", self.prefix)
    }

    /// `/<cluster>/arbiter/leader`: who leads, held under the leader's lease.
    pub fn leader(&self) -> String {
        format!("{}arbiter/leader", self.prefix)
    }
}

/// The value of the leader key: who leads, and where replicas and
/// operators reach it (followers redirect there).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// The arbiter's id (`--arbiter-id`), for logs and status.
    pub id: String,
    /// The arbiter's advertised URL; the target of followers' 307s.
    pub url: String,
    /// Wall-clock time it won the campaign, for people only.
    #[serde(default)]
    pub since_unix_ms: u64,
}

impl LeaderRecord {
    /// The JSON stored in the leader key.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a leader record always serializes")
    }

    /// Reads a leader key's value; `None` when it is not a record (written
    /// by hand or by something else): the leader is then unknown, not
    /// guessed.
    pub fn parse(bytes: &[u8]) -> Option<LeaderRecord> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_records_round_trip_and_garbage_is_unknown() {
        let r = LeaderRecord {
            id: "arb-1".into(),
            url: "http://10.0.0.1:7700".into(),
            since_unix_ms: 5,
        };
        assert_eq!(LeaderRecord::parse(&r.to_bytes()), Some(r));
        assert_eq!(LeaderRecord::parse(b"not json"), None);
    }

    #[test]
    fn keys_live_under_the_cluster_prefix() {
        let k = ClusterKeys::new("prod-1");
        assert_eq!(k.prefix(), "/prod-1/");
        assert_eq!(k.state(), "/prod-1/state");
        assert_eq!(k.leader(), "/prod-1/arbiter/leader");
    }

    #[test]
    fn a_cluster_never_sees_a_longer_named_one() {
        let a = ClusterKeys::new("a");
        let ab = ClusterKeys::new("ab");
        assert!(!ab.state().starts_with(a.prefix()));
        assert!(!ab.leader().starts_with(a.prefix()));
    }
}
