//! `X-Min-Version: E.I` — a client that has seen data version `E.I` never
//! sees older data: the replica waits (bounded by `min_version_wait_ms`)
//! until it has applied that position, then answers; if it cannot in time it
//! answers 503 `version_not_reached` (retryable). A token that names a write
//! which was cut from the log (never committed; a failover replaced it) can
//! never be reached: 409 `version_cut`.

use axum::http::HeaderMap;
use proto_common::{ErrorCode, Position};

use super::error::ApiError;
use crate::node::Node;

/// Header a client sends with the last data version it has seen.
pub const MIN_VERSION: &str = "x-min-version";

/// Where a replica stands relative to a client's version token.
#[derive(Debug, PartialEq, Eq)]
enum Standing {
    Reached,
    Pending,
    /// The token's write is not in this cluster's committed history.
    Cut,
}

fn standing(node: &Node, applied: Position, want: Position) -> Standing {
    if applied.index >= want.index {
        // Committed history is the same everywhere: the entry at that index
        // either is the token's write or replaced it.
        return match node.reader.epoch_at(want.index) {
            Some(e) if e == want.epoch => Standing::Reached,
            Some(_) => Standing::Cut,
            None if applied >= want => Standing::Reached,
            None => Standing::Cut,
        };
    }
    if applied.epoch > want.epoch {
        // Everything after `applied` is from epoch `applied.epoch` or later,
        // so `want` (older epoch, later index) can never be committed.
        return Standing::Cut;
    }
    Standing::Pending
}

/// Waits for the version named by `X-Min-Version`, if the request has one.
pub async fn wait_for_min_version(node: &Node, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(raw) = headers.get(MIN_VERSION) else {
        return Ok(());
    };
    let want: Position = raw
        .to_str()
        .map_err(|_| "not text".to_string())
        .and_then(|t| t.parse())
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("X-Min-Version: {e}")))?;
    let mut applied = node.commit.applied();
    let deadline = tokio::time::Instant::now() + node.settings.min_version_wait;
    loop {
        let now_applied = *applied.borrow_and_update();
        match standing(node, now_applied, want) {
            Standing::Reached => return Ok(()),
            Standing::Cut => {
                return Err(ApiError::new(
                    ErrorCode::VersionCut,
                    format!(
                        "version {want} names a write that was cut from the log by a failover (it \
                         was never committed); this replica's history is at {now_applied}. Drop \
                         the token and read again"
                    ),
                ))
            }
            Standing::Pending => {}
        }
        // A failed write log takes nothing more until a restart: waiting
        // would only hold the client for nothing.
        if let Some(why) = node.commit.failure() {
            return Err(ApiError::new(
                ErrorCode::VersionNotReached,
                format!(
                    "this replica has applied {now_applied} and will not reach {want}: its write \
                     log failed ({why}); read from the active or another standby"
                ),
            )
            .with_active(node.role().active_url().map(str::to_string)));
        }
        match tokio::time::timeout_at(deadline, applied.changed()).await {
            Ok(Ok(())) => continue,
            _ => {
                let role = node.role();
                return Err(ApiError::new(
                    ErrorCode::VersionNotReached,
                    format!(
                        "this replica has applied {now_applied}, not yet {want}, after waiting \
                         {} ms; retry, or read from the active",
                        node.settings.min_version_wait.as_millis()
                    ),
                )
                .with_active(role.active_url().map(str::to_string)));
            }
        }
    }
}
