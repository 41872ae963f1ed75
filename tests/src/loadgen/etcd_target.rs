//! The same puts and gets against etcd, through the `etcd-client` crate, so
//! understudy's numbers have a baseline measured by the same loop.
//!
//! Each loadgen client opens its own `etcd_client::Client` (its own gRPC
//! channel, i.e. its own HTTP/2 connection), matching the one connection
//! per client of the HTTP backend. etcd-client balances over the given
//! endpoints and follows the leader itself, so there is no retry policy
//! here: an error is the outcome.
//!
//! Mapping to the HTTP vocabulary of reports and histories: a successful
//! put or a found key is status 200, a missing key 404, an error status 0
//! with kind `grpc_{code}` (`grpc_unavailable`, `grpc_deadline_exceeded`)
//! or `etcd_transport`. The data version is `raft_term.revision` of the
//! answer; a key's version is its `mod_revision`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use etcd_client::{Client, ConnectOptions, Error as EtcdError, KvClient, ResponseHeader};

use super::backend::{Backend, Outcome};
use super::workload::{Op, OpKind};

/// One client's connection to an etcd cluster.
pub struct EtcdBackend {
    /// The KV service of this client's own channel.
    kv: KvClient,
    /// Names the endpoints in outcomes when no member id is known.
    label: String,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("label", &self.label)
            .finish()
    }
}

impl EtcdBackend {
    /// Connects to `endpoints` (`http://host:port`); every request is
    /// bounded by `timeout`.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<EtcdBackend, String> {
        let options = ConnectOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(timeout);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| format!("cannot connect to etcd at {}: {e}", endpoints.join(",")))?;
        Ok(EtcdBackend {
            kv: client.kv_client(),
            label: endpoints.join(","),
        })
    }
}

/// `term.revision` of a response header.
fn version_of(header: Option<&ResponseHeader>) -> Option<String> {
    header.map(|h| format!("{}.{}", h.raft_term(), h.revision()))
}

/// Who answered: the member id from the header.
fn member_of(header: Option<&ResponseHeader>, fallback: &str) -> String {
    match header {
        Some(h) => format!("etcd-member:{:x}", h.member_id()),
        None => fallback.to_string(),
    }
}

/// `grpc_{code in snake_case}` for gRPC statuses, else a coarse kind.
pub fn error_kind(error: &EtcdError) -> String {
    match error {
        EtcdError::GRpcStatus(status) => grpc_kind(&format!("{:?}", status.code())),
        EtcdError::TransportError(_) => "etcd_transport".into(),
        EtcdError::IoError(_) => "etcd_io".into(),
        _ => "etcd_error".into(),
    }
}

/// `DeadlineExceeded` → `grpc_deadline_exceeded`.
fn grpc_kind(code: &str) -> String {
    let mut kind = String::from("grpc");
    for c in code.chars() {
        if c.is_ascii_uppercase() {
            kind.push('_');
        }
        kind.push(c.to_ascii_lowercase());
    }
    kind
}

impl Backend for EtcdBackend {
    async fn execute(&mut self, op: &Op, _give_up_at: Instant) -> Outcome {
        match op.kind {
            OpKind::Put => match self
                .kv
                .put(op.key.as_bytes(), op.value.to_vec(), None)
                .await
            {
                Ok(response) => Outcome {
                    ok: true,
                    status: 200,
                    data_version: version_of(response.header()),
                    answered_by: member_of(response.header(), &self.label),
                    attempts: 1,
                    ..Outcome::default()
                },
                Err(e) => Outcome::failed(error_kind(&e), self.label.clone(), 1),
            },
            OpKind::Get => match self.kv.get(op.key.as_bytes(), None).await {
                Ok(response) => {
                    let header = response.header();
                    let found = response.kvs().first();
                    Outcome {
                        ok: true,
                        status: if found.is_some() { 200 } else { 404 },
                        data_version: version_of(header),
                        key_version: found.map(|kv| kv.mod_revision().to_string()),
                        read_value: found.map(|kv| Bytes::copy_from_slice(kv.value())),
                        answered_by: member_of(header, &self.label),
                        attempts: 1,
                        ..Outcome::default()
                    }
                }
                Err(e) => Outcome::failed(error_kind(&e), self.label.clone(), 1),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_become_snake_case_kinds() {
        assert_eq!(grpc_kind("DeadlineExceeded"), "grpc_deadline_exceeded");
        assert_eq!(grpc_kind("Unavailable"), "grpc_unavailable");
        let invalid = EtcdError::InvalidArgs("x".into());
        assert_eq!(error_kind(&invalid), "etcd_error");
    }
}
