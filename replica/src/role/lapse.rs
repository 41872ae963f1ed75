//! When the active's lease runs out while writes wait for their commit (it
//! is cut off from the arbiter and its standbys), the waiting clients are
//! answered at once: their outcome is unknown. A client that waits for a
//! commit that cannot come is a client that cannot fail over.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::roles::Roles;

/// Until `stop`: whenever the current term's lease runs out, `lapsed` is
/// called (the commit rule answers the writes still waiting:
/// `CommitTracker::lease_lapsed`; it answers those that arrive while it
/// stays lapsed by itself).
pub async fn watch_lapses(roles: Arc<Roles>, lapsed: impl Fn(), stop: CancellationToken) {
    let mut role = roles.subscribe();
    loop {
        let term = role.borrow_and_update().state.term().cloned();
        let Some(term) = term else {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = role.changed() => if r.is_err() { return },
            }
            continue;
        };
        // Registered before the deadline is read, so a grant in between
        // still wakes this loop.
        let moved = term.lease().changed();
        tokio::pin!(moved);
        moved.as_mut().enable();
        let left = term.lease().remaining_nanos();
        if left == Some(0) {
            lapsed();
        }
        let deadline = async {
            match left {
                Some(n) if n > 0 => tokio::time::sleep(Duration::from_nanos(n)).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            r = role.changed() => if r.is_err() { return },
            _ = &mut moved => {}
            _ = deadline => {}
        }
    }
}
