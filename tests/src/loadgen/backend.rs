//! The seam between the load loop and a system under test.
//!
//! A [`Backend`] is one client's connection to one target. The runner owns
//! timing (it reads the clock just before calling [`Backend::execute`] and
//! just after it returns), counting and history; a backend only sends the
//! operation, retries if its policy says so, and describes the final answer
//! as an [`Outcome`]. Two implementations: `http_target` (understudy
//! replicas) and `etcd_target` (etcd through etcd-client), so both systems
//! are measured by the same loop.

use std::future::Future;
use std::time::Instant;

use bytes::Bytes;

use super::workload::Op;

/// The final answer to one operation, after any retries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The write was acknowledged, or the read was answered (found or not).
    pub ok: bool,
    /// HTTP status of the final answer (etcd: 200, or 404 for a missing
    /// key); 0 when there was no answer.
    pub status: u16,
    /// The error kind when not `ok`, as counted in the report.
    pub error: Option<String>,
    /// The data version of the final answer (`E.I`; etcd `term.revision`).
    pub data_version: Option<String>,
    /// The read key's version (`X-Key-Version`; etcd `mod_revision`).
    pub key_version: Option<String>,
    /// The value a read returned; `None` for writes and missing keys.
    pub read_value: Option<Bytes>,
    /// Who gave the final answer (base URL, or etcd member).
    pub answered_by: String,
    /// Requests sent, retries included.
    pub attempts: u32,
}

impl Outcome {
    /// A failure of the given kind, with no answer.
    pub fn failed(
        kind: impl Into<String>,
        answered_by: impl Into<String>,
        attempts: u32,
    ) -> Outcome {
        Outcome {
            ok: false,
            error: Some(kind.into()),
            answered_by: answered_by.into(),
            attempts,
            ..Outcome::default()
        }
    }

    /// A read that found no key: a normal answer, not an error.
    pub fn is_miss(&self) -> bool {
        self.ok && self.status == 404
    }
}

/// One client's connection to one target.
///
/// Implementations must not panic on any answer, and must return by
/// `give_up_at` (plus one request timeout) whatever the target does.
pub trait Backend: Send + 'static {
    /// Sends `op`; with a retry policy, retries until an answer that is not
    /// retryable or until `give_up_at`.
    fn execute(&mut self, op: &Op, give_up_at: Instant) -> impl Future<Output = Outcome> + Send;
}
