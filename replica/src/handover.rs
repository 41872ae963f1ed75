//! SIGTERM on an active: hand over first (DESIGN.md, "Switchover"). The
//! replica asks the arbiter for a switchover, keeps serving while it is
//! fenced and drained, and stops once it has been demoted — or after a
//! bound, when no standby could take over.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use proto_common::http_client::HttpClient;

use crate::node::Node;

/// Longest a shutting-down active waits for its switchover.
const HANDOVER_LIMIT: Duration = Duration::from_secs(5);

/// If `node` is the active of a cluster, asks the arbiter to switch over
/// and waits (bounded) until this node is no longer active.
pub async fn hand_over(node: Arc<Node>) {
    if node.settings.arbiters.is_empty() || node.role().state.term().is_none() {
        return;
    }
    let client = HttpClient::new(Duration::from_secs(1), node.settings.tls.clone());
    let mut asked = false;
    for url in &node.settings.arbiters {
        let Ok(req) = HttpClient::request(
            Method::POST,
            &format!("{url}/v1/switchover"),
            Some(Bytes::from_static(b"{}")),
            node.settings.token.as_ref(),
        ) else {
            continue;
        };
        match client.send(req, Duration::from_secs(2)).await {
            Ok(answer) if answer.status.is_success() => {
                tracing::info!(arbiter = %url, "shutting down: switchover requested");
                asked = true;
                break;
            }
            Ok(answer) => {
                tracing::warn!(
                    arbiter = %url,
                    status = %answer.status,
                    answer = %String::from_utf8_lossy(&answer.body),
                    "shutting down without a switchover: the arbiter refused it"
                );
                if answer.status.as_u16() != 307 && answer.status.as_u16() != 503 {
                    return;
                }
            }
            Err(e) => tracing::warn!(arbiter = %url, error = %e, "switchover request failed"),
        }
    }
    if !asked {
        return;
    }
    let deadline = tokio::time::Instant::now() + HANDOVER_LIMIT;
    let mut role = node.roles.subscribe();
    let handed_over = role.wait_for(|r| r.state.term().is_none());
    let handed_over = tokio::time::timeout_at(deadline, handed_over).await;
    if !matches!(handed_over, Ok(Ok(_))) {
        tracing::warn!("switchover did not complete within 5 s; shutting down anyway");
    } else {
        tracing::info!("handed over to the new active; shutting down");
    }
}
