//! Load against understudy replicas over their HTTP client API, with the
//! retry policy of `--targets-all`.
//!
//! Each client holds one [`KvClient`] (one keep-alive connection). Without
//! `--targets-all` an operation is sent once and whatever comes back is the
//! outcome (a 307 is still followed: a redirect is an answer that says
//! "ask there", not an error).
//!
//! With `--targets-all` the URLs are replicas of one cluster, and an
//! operation is retried until it gets an answer that is not retryable:
//! - connection error or timeout, or a 503 whose body says
//!   `"retryable": true` → move to the next URL in the list (wrapping),
//!   wait `--retry-ms`, send the same operation (same key, same value) again;
//! - 307 → send to the `Location` at once and stay there for later
//!   operations; at most [`MAX_REDIRECTS`] in a row, so two nodes pointing
//!   at each other cannot trap a client;
//! - anything else (2xx, 404 on a read, 4xx) is the final answer.
//!
//! A retry is not sent once the operation's give-up time has passed; the
//! outcome is then the last error. Resending a write is safe for checkers
//! because the value is the same: the write took effect at most once per
//! attempt, all within the operation's `[start, end]` interval.

use std::time::{Duration, Instant};

use super::backend::{Backend, Outcome};
use super::workload::{Op, OpKind};
use crate::client::{ClientError, KvClient, KvResponse};

/// Redirects followed in a row before the operation counts as failed.
pub const MAX_REDIRECTS: u32 = 4;

/// One client's connection to a replica, or to a cluster of them.
#[derive(Debug)]
pub struct HttpBackend {
    /// The URLs to rotate through; one unless `--targets-all`.
    urls: Vec<String>,
    /// Index in `urls` of the node we moved to last.
    current: usize,
    /// The connection in use; after a redirect it may point at a URL that is
    /// not in `urls` (the active's advertised address).
    client: KvClient,
    /// Pause before a retry; `None` means no retries (single target).
    retry_delay: Option<Duration>,
    /// Bound on each request.
    timeout: Duration,
}

impl HttpBackend {
    /// A backend starting at `urls[start]` and connects at once, so the
    /// first measured operation does not pay for the TCP handshake. A node
    /// that is down is not an error here: the operations will say so.
    pub async fn connect(
        urls: Vec<String>,
        start: usize,
        retry_delay: Option<Duration>,
        timeout: Duration,
    ) -> Result<HttpBackend, String> {
        assert!(!urls.is_empty(), "an http target needs a URL");
        let current = start % urls.len();
        let mut client = KvClient::new(&urls[current])
            .map_err(|e| e.to_string())?
            .with_timeout(timeout);
        let _ = client.connect().await;
        Ok(HttpBackend {
            urls,
            current,
            client,
            retry_delay,
            timeout,
        })
    }

    fn open(&self, url: &str) -> Option<KvClient> {
        KvClient::new(url)
            .ok()
            .map(|c| c.with_timeout(self.timeout))
    }

    /// Moves to the next URL of the cluster, on a new connection.
    fn move_to_next(&mut self) {
        self.current = (self.current + 1) % self.urls.len();
        if let Some(client) = self.open(&self.urls[self.current]) {
            self.client = client;
        }
    }

    /// Moves to a redirect's target; `false` if `Location` is unusable.
    fn follow(&mut self, location: &str) -> bool {
        if location.starts_with('/') {
            return true; // same node, same connection
        }
        let Some(origin) = origin_of(location) else {
            return false;
        };
        if let Some(i) = self.urls.iter().position(|u| *u == origin) {
            self.current = i;
        }
        match self.open(&origin) {
            Some(client) => {
                self.client = client;
                true
            }
            None => false,
        }
    }

    async fn send(&mut self, op: &Op) -> Result<KvResponse, ClientError> {
        match op.kind {
            OpKind::Put => self.client.put(&op.key, op.value.clone()).await,
            OpKind::Get => self.client.get(&op.key).await,
        }
    }
}

/// `http://host:port` of an absolute URL.
pub fn origin_of(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    (!authority.is_empty()).then(|| format!("http://{authority}"))
}

/// The outcome of an HTTP answer that ends the operation.
fn answered(op: &Op, response: KvResponse, by: &str, attempts: u32) -> Outcome {
    let found = op.kind == OpKind::Get && response.status == 200;
    let ok = response.is_success() || (op.kind == OpKind::Get && response.status == 404);
    let error = (!ok).then(|| error_kind(&response));
    Outcome {
        ok,
        status: response.status,
        error,
        data_version: response.data_version,
        key_version: response.key_version,
        read_value: found.then_some(response.body),
        answered_by: by.to_string(),
        attempts,
    }
}

/// The error code of the body, else `http_{status}`. An unknown outcome
/// is told apart by who could not know it: the active itself
/// (`outcome_unknown`: its lease ended, it was demoted, its disk failed) or
/// a standby whose forwarded request went unanswered
/// (`outcome_unknown_forwarded`: the active died meanwhile).
fn error_kind(response: &KvResponse) -> String {
    let code = response
        .error_code()
        .unwrap_or_else(|| format!("http_{}", response.status));
    let forwarded = response
        .error_body()
        .is_some_and(|b| b.message.starts_with("forwarding to the active"));
    if code == "outcome_unknown" && forwarded {
        return "outcome_unknown_forwarded".into();
    }
    code
}

impl Backend for HttpBackend {
    async fn execute(&mut self, op: &Op, give_up_at: Instant) -> Outcome {
        let mut attempts = 0;
        let mut redirects = 0;
        loop {
            attempts += 1;
            let result = self.send(op).await;
            let by = self.client.base_url().to_string();
            let retry_kind = match result {
                Ok(response) if response.status == 307 => {
                    redirects += 1;
                    let location = response.location.clone().unwrap_or_default();
                    if redirects <= MAX_REDIRECTS && self.follow(&location) {
                        continue;
                    }
                    let mut outcome = answered(op, response, &by, attempts);
                    outcome.error = Some("bad_redirect".into());
                    return outcome;
                }
                Ok(response) if self.retry_delay.is_some() && response.is_retryable() => {
                    (error_kind(&response), Some(response))
                }
                Ok(response) => return answered(op, response, &by, attempts),
                Err(error) => (error.kind().to_string(), None),
            };
            let (kind, response) = retry_kind;
            let delay = self.retry_delay.unwrap_or_default();
            if self.retry_delay.is_none() || Instant::now() + delay >= give_up_at {
                return match response {
                    Some(response) => answered(op, response, &by, attempts),
                    None => Outcome::failed(kind, by, attempts),
                };
            }
            redirects = 0;
            self.move_to_next();
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_of_redirects() {
        assert_eq!(
            origin_of("http://10.0.0.1:7001/v1/kv/a%2Fb").as_deref(),
            Some("http://10.0.0.1:7001")
        );
        assert_eq!(origin_of("http://h:1").as_deref(), Some("http://h:1"));
        assert_eq!(origin_of("https://h:1/x"), None);
        assert_eq!(origin_of("http:///x"), None);
    }
}
