//! A replica's view of itself: `GET /v1/status` and `GET /v1/role`, and a
//! full dump of its data through the list endpoint.
//!
//! The replica crate is not a dependency of this one (tests talk to it over
//! HTTP only), so its status shape is restated here with the fields tests
//! look at; unknown fields are ignored so the replica can add more.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use proto_common::heartbeat::Role;
use proto_common::{Epoch, LogIndex, Position};
use serde::Deserialize;

use super::wait::wait_for;
use crate::client::KvClient;

/// Bound on one status request: a paused replica must not hang a test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest list page the replica serves by default.
const PAGE: usize = 1000;

/// `GET /v1/status` of a replica.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ReplicaSelfStatus {
    pub node_id: String,
    /// The role it is in now.
    pub role: Role,
    /// Whether a write sent here now would be accepted.
    pub writable: bool,
    /// The highest epoch it has seen.
    pub epoch: Epoch,
    /// Last entry of its log (durable).
    pub position: Position,
    /// Last applied entry: the version reads see.
    pub applied: Position,
    pub commit_index: LogIndex,
    /// The active's client URL, as a standby knows it.
    #[serde(default)]
    pub active_url: Option<String>,
    /// Why it does not take writes, when it does not.
    #[serde(default)]
    pub not_writable: Option<String>,
    /// Entries it moved to `quarantine/`.
    pub quarantined_entries: u64,
}

/// `GET {url}/v1/status`, parsed.
pub async fn replica_status(url: &str) -> Result<ReplicaSelfStatus, String> {
    let mut client = KvClient::new(url)
        .map_err(|e| e.to_string())?
        .with_timeout(REQUEST_TIMEOUT);
    let response = client
        .request(Method::GET, "/v1/status", &[], "")
        .await
        .map_err(|e| format!("GET {url}/v1/status: {e}"))?;
    if response.status != 200 {
        return Err(format!(
            "GET {url}/v1/status answered {}: {}",
            response.status,
            response.body_text()
        ));
    }
    response
        .json()
        .map_err(|e| format!("GET {url}/v1/status: {e}: {}", response.body_text()))
}

/// The status code of `GET {url}/v1/role` (200 only on a writable active);
/// `None` when there was no answer.
pub async fn role_code(url: &str) -> Option<u16> {
    let mut client = KvClient::new(url).ok()?.with_timeout(REQUEST_TIMEOUT);
    let response = client
        .request(Method::GET, "/v1/role", &[], "")
        .await
        .ok()?;
    Some(response.status)
}

/// `GET {url}/metrics` (a replica's or an arbiter's), in the classic
/// Prometheus text format.
pub async fn metrics_text(url: &str) -> Result<String, String> {
    let mut client = KvClient::new(url)
        .map_err(|e| e.to_string())?
        .with_timeout(REQUEST_TIMEOUT);
    let response = client
        .request(Method::GET, "/metrics", &[], "")
        .await
        .map_err(|e| format!("GET {url}/metrics: {e}"))?;
    if response.status != 200 {
        return Err(format!("GET {url}/metrics answered {}", response.status));
    }
    Ok(response.body_text())
}

/// The value of the sample `name` (no labels) in metrics `text`.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Every key and value a replica serves (its applied state), read page by
/// page through `GET /v1/kv?prefix=`.
pub async fn dump(url: &str) -> Result<BTreeMap<String, Bytes>, String> {
    let mut client = KvClient::new(url)
        .map_err(|e| e.to_string())?
        .with_timeout(Duration::from_secs(10));
    let mut all = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let response = client
            .list("", after.as_deref(), Some(PAGE))
            .await
            .map_err(|e| format!("listing {url}: {e}"))?;
        if response.status != 200 {
            return Err(format!(
                "listing {url} answered {}: {}",
                response.status,
                response.body_text()
            ));
        }
        let page = response.list_page()?;
        let last = page.items.last().map(|item| item.key.clone());
        for item in page.items {
            all.insert(item.key, item.value);
        }
        match (page.more, last) {
            (true, Some(last)) => after = Some(last),
            _ => return Ok(all),
        }
    }
}

/// Waits until the replicas `(name, url)` `a` and `b` have applied the same
/// position and then compares their full data; returns it when identical.
/// Quiesce writes first: under load the two never stand still together.
pub async fn wait_same_data(
    (a, url_a): (&str, &str),
    (b, url_b): (&str, &str),
    within: Duration,
) -> Result<BTreeMap<String, Bytes>, String> {
    let last = RefCell::new(String::new());
    let outcome = wait_for(
        within,
        &format!("{a} and {b} holding the same data"),
        || {
            let last = &last;
            async move {
                let (sa, sb) = match (replica_status(url_a).await, replica_status(url_b).await) {
                    (Ok(sa), Ok(sb)) => (sa, sb),
                    (Err(e), _) | (_, Err(e)) => {
                        *last.borrow_mut() = e;
                        return None;
                    }
                };
                if sa.applied != sb.applied || sa.position != sb.position {
                    *last.borrow_mut() = format!(
                        "{a} at {} (applied {}), {b} at {} (applied {})",
                        sa.position, sa.applied, sb.position, sb.applied
                    );
                    return None;
                }
                let (da, db) = match (dump(url_a).await, dump(url_b).await) {
                    (Ok(da), Ok(db)) => (da, db),
                    (Err(e), _) | (_, Err(e)) => {
                        *last.borrow_mut() = e;
                        return None;
                    }
                };
                match describe_difference(a, &da, b, &db) {
                    None => Some(da),
                    Some(diff) => {
                        *last.borrow_mut() = format!("both applied {}, but {diff}", sa.applied);
                        None
                    }
                }
            }
        },
    )
    .await;
    outcome.map_err(|timeout| format!("{timeout}; last seen: {}", last.borrow()))
}

/// A short description of how two dumps differ, for assertion messages.
pub fn describe_difference(
    left_name: &str,
    left: &BTreeMap<String, Bytes>,
    right_name: &str,
    right: &BTreeMap<String, Bytes>,
) -> Option<String> {
    if left == right {
        return None;
    }
    let only_left: Vec<&String> = left.keys().filter(|k| !right.contains_key(*k)).collect();
    let only_right: Vec<&String> = right.keys().filter(|k| !left.contains_key(*k)).collect();
    let differ: Vec<&String> = left
        .iter()
        .filter(|(k, v)| right.get(*k).is_some_and(|w| w != *v))
        .map(|(k, _)| k)
        .collect();
    let first = |keys: &[&String]| {
        keys.iter()
            .take(5)
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "{left_name} has {} keys, {right_name} {}; only in {left_name}: {} (first: {}); \
         only in {right_name}: {} (first: {}); different values: {} (first: {})",
        left.len(),
        right.len(),
        only_left.len(),
        first(&only_left),
        only_right.len(),
        first(&only_right),
        differ.len(),
        first(&differ)
    ))
}
