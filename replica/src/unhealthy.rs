//! `Unhealthy`: why a replica cannot do its job now. Reported in its
//! heartbeats (`healthy: false` with the text as `detail`: the arbiter
//! promotes no unhealthy replica), on `/healthz` and `/v1/status`, and to
//! the clients it refuses.
//!
//! The kind decides what the replica does about it (`heartbeat.rs`: an
//! active whose log failed, or whose upstream cannot be used, steps
//! down); the text inside is a message for a person, as its source wrote
//! it: the log's I/O error, the state machine's `problem()`, proxy mode's
//! reason the upstream cannot be used.

/// Why a replica cannot serve now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    /// The write log failed (an I/O error, an injected fault): it takes no
    /// more writes until the replica is restarted (`log/writer.rs`).
    #[error("{0}")]
    LogFailed(String),
    /// The state machine cannot apply entries (`StateMachine::problem`).
    #[error("{0}")]
    StateMachine(String),
    /// Proxy mode: the upstream cannot be used (it lost the history, or cannot be reached or led).
    #[error("{0}")]
    UpstreamUnusable(String),
}

impl Unhealthy {
    /// Stable machine-readable code; never renamed.
    pub fn code(&self) -> &'static str {
        match self {
            Unhealthy::LogFailed(_) => "log_failed",
            Unhealthy::StateMachine(_) => "state_machine",
            Unhealthy::UpstreamUnusable(_) => "upstream_unusable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_reported_is_the_sources_own() {
        let why = Unhealthy::LogFailed("No space left on device (os error 28)".into());
        assert_eq!(why.to_string(), "No space left on device (os error 28)");
        assert_eq!(why.code(), "log_failed");
    }
}
