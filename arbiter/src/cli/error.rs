//! `CliError`: why an operator command (`arbiter status`, `switchover`,
//! `maintenance`, `params`) failed, with a stable code and a message that names the
//! arbiter URL and what to check.

use proto_common::ErrorBody;

/// Why a call to the arbiter failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The `--arbiter` value is not a usable URL.
    #[error("--arbiter {url:?} is not usable: {detail}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        detail: String,
    },

    /// No connection (refused, no route, DNS).
    #[error(
        "cannot reach the arbiter at {url}: {detail}; is it running? check --arbiter or \
         UNDERSTUDY_ARBITER"
    )]
    Unreachable {
        /// The URL called.
        url: String,
        /// The underlying error chain.
        detail: String,
    },

    /// Connected, but no answer in time.
    #[error("the arbiter at {url} did not answer within {secs} s; it may be overloaded or hung")]
    Timeout {
        /// The URL called.
        url: String,
        /// The time limit.
        secs: u64,
    },

    /// The arbiter answered with an error body.
    #[error("the arbiter refused ({status} {}): {}", .body.error, .body.message)]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Its JSON error.
        body: ErrorBody,
    },

    /// The answer was not what this command expects (wrong URL? version skew?).
    #[error("unexpected answer from {url}: {detail}; is --arbiter an understudy arbiter?")]
    BadResponse {
        /// The URL called.
        url: String,
        /// What was wrong.
        detail: String,
    },

    /// The token could not be loaded.
    #[error("{0}")]
    Token(String),

    /// The command's arguments are unusable (e.g. `arbiter params lease=5`).
    #[error("{0}")]
    BadArgs(String),
    /// The arbiter accepted the operation, and it then did not happen
    /// (e.g. a switchover cancelled because the target fell behind).
    #[error("{0}")]
    Failed(String),
    /// `--wait` ran out before the operation ended one way or the other.
    #[error("{what} did not end within {secs} s; it may still: follow it with arbiter status")]
    WaitTimedOut {
        /// What was waited for.
        what: String,
        /// The time limit.
        secs: u64,
    },
}

impl CliError {
    /// Stable machine-readable code; never renamed.
    pub fn code(&self) -> &'static str {
        match self {
            CliError::BadUrl { .. } => "bad_url",
            CliError::Unreachable { .. } => "unreachable",
            CliError::Timeout { .. } => "timeout",
            CliError::Refused { .. } => "refused",
            CliError::BadResponse { .. } => "bad_response",
            CliError::Token(_) => "bad_token",
            CliError::BadArgs(_) => "bad_args",
            CliError::Failed(_) => "failed",
            CliError::WaitTimedOut { .. } => "wait_timed_out",
        }
    }

    /// The process exit status for scripts: 1 the arbiter refused or the
    /// operation failed, 2 the command line or token is unusable, 3 the
    /// arbiter could not be reached or answered nonsense, 4 `--wait` ran
    /// out before the outcome was known.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused { .. } | CliError::Failed(_) => 1,
            CliError::BadUrl { .. } | CliError::BadArgs(_) | CliError::Token(_) => 2,
            CliError::Unreachable { .. }
            | CliError::Timeout { .. }
            | CliError::BadResponse { .. } => 3,
            CliError::WaitTimedOut { .. } => 4,
        }
    }

    /// Whether trying again later may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            CliError::Unreachable { .. } | CliError::Timeout { .. } => true,
            CliError::Refused { body, .. } => body.retryable,
            _ => false,
        }
    }
}
