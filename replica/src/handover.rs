//! SIGTERM on an active: hand over first (DESIGN.md, "Arbiter decisions":
//! "SIGTERM on an active does a switchover first when a standby is in
//! sync"). The replica asks the arbiter for a switchover, keeps serving
//! while it is fenced and drained, and stops once it has been demoted — or
//! after a bound, when no standby could take over.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::node::Node;

/// Longest a shutting-down active waits for its switchover.
const HANDOVER_LIMIT: Duration = Duration::from_secs(5);

/// If `node` is the active of a cluster, asks the arbiter to switch over
/// and waits (bounded) until this node is no longer active.
pub async fn hand_over(node: Arc<Node>) {
    if node.settings.arbiters.is_empty() || node.role().write_epoch.is_none() {
        return;
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut asked = false;
    for url in &node.settings.arbiters {
        let mut req = hyper::Request::post(format!("{url}/v1/switchover"))
            .header("content-type", "application/json");
        if let Some(token) = &node.settings.token {
            req = req.header("authorization", token.bearer());
        }
        let Ok(req) = req.body(Full::new(Bytes::from_static(b"{}"))) else {
            continue;
        };
        match tokio::time::timeout(Duration::from_secs(2), client.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => {
                tracing::info!(arbiter = %url, "shutting down: switchover requested");
                asked = true;
                break;
            }
            Ok(Ok(resp)) => {
                let status = resp.status();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                tracing::warn!(
                    arbiter = %url,
                    status = %status,
                    answer = %String::from_utf8_lossy(&body),
                    "shutting down without a switchover: the arbiter refused it"
                );
                if status.as_u16() != 307 && status.as_u16() != 503 {
                    return;
                }
            }
            _ => tracing::warn!(arbiter = %url, "switchover request failed"),
        }
    }
    if !asked {
        return;
    }
    let deadline = tokio::time::Instant::now() + HANDOVER_LIMIT;
    while node.role().write_epoch.is_some() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if node.role().write_epoch.is_some() {
        tracing::warn!("switchover did not complete within 5 s; shutting down anyway");
    } else {
        tracing::info!("handed over to the new active; shutting down");
    }
}
