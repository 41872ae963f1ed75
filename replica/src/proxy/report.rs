//! What a proxy-mode replica reports about its upstream, on both roles:
//! whether it answers, its memory against `maxmemory`, its clients against
//! `maxclients`, whether it is loading an RDB, its replication backlog, and
//! on the active how far the tap's log is behind the upstream's stream.
//! Read from `INFO` every [`REPORT_EVERY`], exported as gauges labelled
//! with the upstream's address (`replica/src/metrics.rs`; the alert rules
//! in `deploy/prometheus/alerts.yml` watch them) and sent in each heartbeat
//! (`arbiter status` and the dashboard show them).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use super::core::ProxyCore;
use super::upstream::{info_field, text, Conn};
use crate::metrics::Labels;
use crate::node::Node;

/// How often the upstream's `INFO` is read.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Longest an `INFO` may take before the upstream counts as not answering.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// The numbers read from one `INFO`.
#[derive(Debug, Default, PartialEq)]
pub struct UpstreamReport {
    pub used_memory: u64,
    pub maxmemory: u64,
    pub connected_clients: u64,
    pub maxclients: u64,
    pub loading: bool,
    pub repl_backlog_size: u64,
    pub master_repl_offset: u64,
}

impl UpstreamReport {
    /// From `INFO`'s text; a field Redis does not give counts as 0.
    pub fn parse(info: &str) -> UpstreamReport {
        let n = |f: &str| {
            info_field(info, f)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        UpstreamReport {
            used_memory: n("used_memory"),
            maxmemory: n("maxmemory"),
            connected_clients: n("connected_clients"),
            maxclients: n("maxclients"),
            loading: n("loading") == 1,
            repl_backlog_size: n("repl_backlog_size"),
            master_repl_offset: n("master_repl_offset"),
        }
    }
}

impl ProxyCore {
    /// Until `stop`: reads the upstream's `INFO` and sets the gauges.
    pub async fn report_upstream(self: Arc<Self>, node: Arc<Node>, stop: CancellationToken) {
        let label = vec![("upstream".to_string(), self.settings.upstream.clone())];
        let m = &node.metrics;
        let mut conn: Option<Conn> = None;
        loop {
            let report = tokio::time::timeout(ANSWER_WITHIN, self.read_info(&mut conn))
                .await
                .ok()
                .flatten();
            {
                // Whether it is up is the liveness check's to say
                // (`liveness.rs`): an `INFO` refused with `-BUSY` is no
                // number, but the upstream is there.
                let mut health = self.health.lock();
                let h = health.get_or_insert_with(Default::default);
                if let Some(r) = &report {
                    h.used_memory = r.used_memory;
                    h.maxmemory = r.maxmemory;
                    h.connected_clients = r.connected_clients;
                    h.maxclients = r.maxclients;
                    h.loading = r.loading;
                }
            }
            match report {
                Some(r) => {
                    let set = |family: &Family<Labels, Gauge>, v: u64| {
                        family.get_or_create(&label).set(v as i64);
                    };
                    set(&m.upstream_used_memory_bytes, r.used_memory);
                    set(&m.upstream_maxmemory_bytes, r.maxmemory);
                    set(&m.upstream_connected_clients, r.connected_clients);
                    set(&m.upstream_maxclients, r.maxclients);
                    set(&m.upstream_loading, r.loading as u64);
                    set(&m.upstream_repl_backlog_bytes, r.repl_backlog_size);
                    // On the active, what its upstream streamed that the
                    // tap has not logged yet.
                    let lag = match (node.role().state.term(), &*self.logged.lock()) {
                        (Some(_), Some((_, logged))) => {
                            r.master_repl_offset.saturating_sub(*logged)
                        }
                        _ => 0,
                    };
                    set(&m.tap_lag_bytes, lag);
                    if let Some(h) = self.health.lock().as_mut() {
                        h.tap_lag_bytes = lag;
                    }
                }
                None => conn = None,
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REPORT_EVERY) => {}
            }
        }
    }

    /// One `INFO` on `conn` (opened when there is none).
    async fn read_info(&self, conn: &mut Option<Conn>) -> Option<UpstreamReport> {
        if conn.is_none() {
            *conn = Conn::connect(
                &self.settings.upstream,
                self.settings.upstream_password.as_deref(),
                None,
            )
            .await
            .ok();
        }
        let reply = conn.as_mut()?.call(["INFO"]).await.ok()?;
        text(&reply).map(|info| UpstreamReport::parse(&info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_read_from_info() {
        let info = "# Clients\r\nconnected_clients:7\r\nmaxclients:10000\r\n\
                    # Memory\r\nused_memory:1048576\r\nmaxmemory:0\r\n\
                    # Persistence\r\nloading:1\r\n\
                    # Replication\r\nmaster_repl_offset:12345\r\nrepl_backlog_size:1048576\r\n";
        assert_eq!(
            UpstreamReport::parse(info),
            UpstreamReport {
                used_memory: 1_048_576,
                maxmemory: 0,
                connected_clients: 7,
                maxclients: 10_000,
                loading: true,
                repl_backlog_size: 1_048_576,
                master_repl_offset: 12_345,
            }
        );
    }
}
