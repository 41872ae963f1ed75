//! `StoreError`: how a state store says it could not do what was asked.
//!
//! A conflicting compare-and-swap is *not* an error (it is
//! [`super::CasOutcome::Conflict`], ordinary control flow). Errors are the
//! cases where the caller does not know the store's contents any better than
//! before: I/O failed, the data is unreadable, another process owns the
//! store, or this arbiter has been deposed. Each variant has a stable
//! [`StoreError::code`] for logs and metrics and maps to a wire
//! [`ErrorCode`].

use std::path::PathBuf;

use proto_common::ErrorCode;

/// Why a state store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operating system refused a file operation.
    #[error(
        "state store {path}: {op} failed: {source}; check that the directory exists, \
         is writable by this user and that the disk is not full"
    )]
    Io {
        /// File or directory the operation was on.
        path: PathBuf,
        /// What was being done ("write temp file", "rename", "fsync directory", …).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The stored state cannot be read back. Never answered by starting
    /// empty: an empty state forgets the epoch, and a forgotten epoch lets
    /// two replicas be active.
    #[error(
        "state store {location} is corrupt: {detail}. The arbiter will not start over it; \
         restore it from a backup, or move it aside only if every replica of this \
         cluster is wiped as well (a new state restarts epochs at 1)"
    )]
    Corrupt {
        /// Where the state lives (file path, etcd key).
        location: String,
        /// What is wrong, e.g. the JSON error with line and column.
        detail: String,
    },

    /// Another process holds the store's exclusive lock.
    #[error(
        "state store {path} is in use by another arbiter (lock {lock} is held{holder}); \
         stop that arbiter, or give this one its own --store path"
    )]
    Locked {
        /// The state file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// ", by pid N" when the lock file names its holder, else empty.
        holder: String,
    },

    /// This arbiter is no longer the leader; a deposed arbiter cannot write
    /// (etcd store: the write's transaction compares the leader key).
    #[error("this arbiter is not the leader{}; it must stop deciding and follow the leader", .leader.as_ref().map(|l| format!(" (leader: {l})")).unwrap_or_default())]
    NotLeader {
        /// The current leader's URL, when known.
        leader: Option<String>,
    },

    /// The caller broke the version rule of `compare_and_swap` (a bug).
    #[error(
        "compare_and_swap expecting version {expected:?} was given a state with version {got}; \
         it must carry version {want} (expected + 1, or 1 when creating)"
    )]
    BadVersion {
        /// The version the caller expected to replace.
        expected: Option<u64>,
        /// The version the new state carried.
        got: u64,
        /// The version it should have carried.
        want: u64,
    },

    /// The store cannot be reached right now (network, quorum lost).
    #[error("state store unavailable: {detail}; retrying")]
    Unavailable {
        /// What failed, for the operator.
        detail: String,
    },
}

impl StoreError {
    /// Stable machine-readable code (logs, metrics); never renamed.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Io { .. } => "store_io",
            StoreError::Corrupt { .. } => "store_corrupt",
            StoreError::Locked { .. } => "store_locked",
            StoreError::NotLeader { .. } => "not_leader",
            StoreError::BadVersion { .. } => "store_bad_version",
            StoreError::Unavailable { .. } => "store_unavailable",
        }
    }

    /// The code this error crosses the wire with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            StoreError::NotLeader { .. } => ErrorCode::NotLeader,
            StoreError::BadVersion { .. } => ErrorCode::Internal,
            StoreError::Io { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Locked { .. }
            | StoreError::Unavailable { .. } => ErrorCode::Storage,
        }
    }

    /// Whether the same call may succeed later without anyone intervening.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Io { .. } | StoreError::Unavailable { .. } | StoreError::NotLeader { .. }
        )
    }

    /// Helper for `map_err` on I/O results.
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        op: &'static str,
    ) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, op, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_value_and_the_fix() {
        let e = StoreError::Corrupt {
            location: "/var/lib/arb/state.json".into(),
            detail: "line 3 column 7: expected value".into(),
        };
        let m = e.to_string();
        assert!(
            m.contains("/var/lib/arb/state.json") && m.contains("line 3"),
            "{m}"
        );
        assert!(m.contains("restore it from a backup"), "{m}");
        assert_eq!(e.code(), "store_corrupt");
        assert_eq!(e.error_code(), ErrorCode::Storage);
        assert!(!e.is_retryable());

        let e = StoreError::NotLeader {
            leader: Some("http://10.0.0.2:7100".into()),
        };
        assert!(e.to_string().contains("http://10.0.0.2:7100"));
        assert_eq!(e.error_code(), ErrorCode::NotLeader);
        assert!(e.is_retryable());

        let e = StoreError::BadVersion {
            expected: Some(4),
            got: 4,
            want: 5,
        };
        assert!(e.to_string().contains("version 5"), "{e}");
    }
}
