//! Whether the upstream still answers (DESIGN.md, "Proxy mode"): a
//! `PING` every [`PING_EVERY`] on a connection of its own. Any answer
//! counts, an error too (`-BUSY` while a script runs past Redis's
//! busy-reply threshold, `-LOADING`): Redis is there and says why it
//! waits. A `PING` left unanswered for `upstream_timeout` (connecting and
//! `AUTH` included: a stopped process still accepts connections in the
//! kernel) means the upstream is stopped or hung, or runs one command that
//! long without yielding: it is this replica's failure, as a dead upstream
//! is. The active steps down at its next heartbeat (`heartbeat.rs`) and is
//! failed over like a dead active; a standby reports itself unhealthy (out
//! of the sync set, not a candidate). The failure ends with the next
//! answer.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::core::ProxyCore;
use super::upstream::Conn;
use crate::node::Node;

/// How often the upstream is asked.
pub const PING_EVERY: Duration = Duration::from_millis(100);

impl ProxyCore {
    /// Pings the upstream until `stop`; says whether it is up
    /// (`understudy_upstream_up`, the heartbeat's `upstream.up`).
    pub async fn watch_liveness(self: Arc<Self>, node: Arc<Node>, stop: CancellationToken) {
        let bound = self.settings.upstream_timeout;
        let label = vec![("upstream".to_string(), self.settings.upstream.clone())];
        let up = node.metrics.upstream_up.get_or_create(&label).clone();
        let mut conn: Option<Conn> = None;
        loop {
            let sent = Instant::now();
            let answered = tokio::select! {
                _ = stop.cancelled() => return,
                r = timeout(bound, self.ping(&mut conn)) => r,
            };
            let answered_now = matches!(answered, Ok(true));
            up.set(answered_now as i64);
            self.health.lock().get_or_insert_with(Default::default).up = answered_now;
            match answered {
                Ok(true) => self.set_hung(None),
                // Refused or closed: not hung. A dead upstream is the tap's
                // and the standby's watch's to see.
                Ok(false) => conn = None,
                Err(_) => {
                    conn = None;
                    self.set_hung(Some(format!(
                        "the upstream has not answered a PING for {} ms: it is stopped or hung, \
                         or runs a command that long (raise upstream_timeout_ms if that is \
                         expected)",
                        bound.as_millis()
                    )));
                }
            }
            let next = sent + PING_EVERY;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
            }
        }
    }

    /// One `PING`; whether anything answered.
    async fn ping(&self, conn: &mut Option<Conn>) -> bool {
        if conn.is_none() {
            *conn = Conn::connect(
                &self.settings.upstream,
                self.settings.upstream_password.as_deref(),
                None,
            )
            .await
            .ok();
        }
        match conn.as_mut() {
            Some(c) => c.call(["PING"]).await.is_ok(),
            None => false,
        }
    }
}
