//! The sync set as the active enforces it (DESIGN.md, "Commit rule and the
//! sync set"): the standbys every write must reach before it is
//! acknowledged, and what to do when there are fewer of them than
//! `sync_standbys` asks for.
//!
//! The arbiter decides the members; the active learns them, with the
//! cluster's `sync_standbys` and `strict`, from its heartbeat replies.
//! Short of members, a non-strict active keeps acknowledging with those it
//! has (degraded, recorded by the arbiter); a strict one commits nothing
//! and refuses new writes until the arbiter has added enough caught-up
//! standbys again.

use proto_common::heartbeat::HeartbeatReply;
use proto_common::NodeId;

/// One version of the sync set and the rule for running short.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncSet {
    /// The standbys whose acknowledgement every write waits for.
    pub members: Vec<NodeId>,
    /// The arbiter's version of this set; a newer one replaces it.
    pub version: u64,
    /// `sync_standbys` (k): how many members a write should reach.
    pub required: usize,
    /// `strict`: with fewer than `required` members, commit nothing.
    pub strict: bool,
}

impl SyncSet {
    /// No members and no rule: a standalone replica, or a test, commits on
    /// its own fsync.
    pub fn local() -> SyncSet {
        SyncSet::default()
    }

    /// The set a heartbeat reply carries.
    pub fn from_reply(reply: &HeartbeatReply) -> SyncSet {
        SyncSet {
            members: reply.sync_set.clone(),
            version: reply.sync_version,
            required: reply.params.sync_standbys as usize,
            strict: reply.params.strict,
        }
    }

    /// Whether strict mode forbids committing anything now.
    pub fn blocks(&self) -> bool {
        self.strict && self.members.len() < self.required
    }

    /// Why writes are refused while [`SyncSet::blocks`], for the client.
    pub fn blocked_reason(&self) -> String {
        format!(
            "strict mode: sync set v{} has {} of sync_standbys={} members, so no write can be \
             acknowledged; writes resume once the arbiter adds a caught-up standby (start or \
             repair one), or set strict=false to accept writes with fewer copies",
            self.version,
            self.members.len(),
            self.required
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(members: &[&str], required: usize, strict: bool) -> SyncSet {
        SyncSet {
            members: members.iter().map(|m| NodeId::new(*m).unwrap()).collect(),
            version: 3,
            required,
            strict,
        }
    }

    #[test]
    fn only_a_strict_set_short_of_members_blocks() {
        assert!(set(&[], 1, true).blocks());
        assert!(set(&["b"], 2, true).blocks());
        assert!(!set(&["b"], 1, true).blocks());
        assert!(!set(&[], 1, false).blocks());
        assert!(!set(&[], 0, true).blocks(), "async mode never blocks");
        assert!(!SyncSet::local().blocks());
        let why = set(&[], 1, true).blocked_reason();
        assert!(
            why.contains("0 of sync_standbys=1") && why.contains("strict=false"),
            "{why}"
        );
    }
}
