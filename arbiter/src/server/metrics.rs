//! Prometheus metrics of the arbiter (`GET /metrics`, OpenMetrics text).
//!
//! Counters are bumped where things happen (the shell and the routes);
//! gauges that describe the cluster (epoch, active, flags, replicas by role)
//! are set from a status snapshot at scrape time, so they can never drift
//! from what `GET /v1/status` shows.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use proto_common::heartbeat::Role;

use crate::core::{DecisionKind, DecisionRecord};
use crate::status::ClusterStatus;

/// Label set of the families.
pub type Labels = Vec<(String, String)>;

/// Every metric the arbiter exports. Cheap to update (atomics).
pub struct Metrics {
    /// Owns the descriptors; encoding walks it.
    registry: Registry,
    /// Current epoch (from the stored state).
    pub epoch: Gauge,
    /// 1 while an active is recorded.
    pub has_active: Gauge,
    /// 1 while fewer standbys than `sync_standbys` are in the sync set.
    pub degraded: Gauge,
    /// 1 while maintenance mode is on.
    pub maintenance: Gauge,
    /// Failovers written to the store by this process.
    pub failovers: Counter,
    /// Switchovers completed (written) by this process.
    pub switchovers: Counter,
    /// Heartbeats answered, by result (`active`, `standby`, or an error code).
    pub heartbeats: Family<Labels, Counter>,
    /// Decisions recorded, by kind and whether taken.
    pub decisions: Family<Labels, Counter>,
    /// Store compare-and-swaps, by outcome (`written`, `conflict`, error code).
    pub store_writes: Family<Labels, Counter>,
    /// Time one store compare-and-swap took.
    pub store_write_seconds: Histogram,
    /// Known replicas by assigned role.
    pub replicas: Family<Labels, Gauge>,
    /// Members of the sync set.
    pub sync_set_members: Gauge,
    /// 1 while this arbiter leads (always 1 for a file store).
    pub leader: Gauge,
    /// Leadership terms this process has taken office in.
    pub terms: Counter,
    /// Per replica (`node`): 1 while it is the recorded active.
    pub replica_active: Family<Labels, Gauge>,
    /// Per replica: 1 while its last heartbeat said healthy.
    pub replica_healthy: Family<Labels, Gauge>,
    /// Per replica: seconds since its last heartbeat (absent before one).
    pub replica_heartbeat_age: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Per replica: entries behind the active, as last reported.
    pub replica_lag_entries: Family<Labels, Gauge>,
    /// Always 1; the version in a label.
    pub build_info: Family<Labels, Gauge>,
    /// Requests refused for a missing or wrong credential.
    pub rejected_credentials: Counter,
}

impl Metrics {
    /// All metrics at zero, registered under the `understudy_arbiter_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("understudy_arbiter");
        let m = Metrics {
            epoch: Gauge::default(),
            has_active: Gauge::default(),
            degraded: Gauge::default(),
            maintenance: Gauge::default(),
            failovers: Counter::default(),
            switchovers: Counter::default(),
            heartbeats: Family::default(),
            decisions: Family::default(),
            store_writes: Family::default(),
            // 0.1 ms … ~3.3 s: an fsync'd rename or an etcd round trip.
            store_write_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            replicas: Family::default(),
            sync_set_members: Gauge::default(),
            leader: Gauge::default(),
            terms: Counter::default(),
            replica_active: Family::default(),
            replica_healthy: Family::default(),
            replica_heartbeat_age: Family::default(),
            replica_lag_entries: Family::default(),
            build_info: Family::default(),
            rejected_credentials: Counter::default(),
            registry: Registry::default(),
        };
        m.build_info
            .get_or_create(&label("version", env!("CARGO_PKG_VERSION")))
            .set(1);
        registry.register("epoch", "Current epoch", m.epoch.clone());
        registry.register(
            "has_active",
            "1 while an active replica is recorded",
            m.has_active.clone(),
        );
        registry.register(
            "degraded",
            "1 while the sync set has fewer members than sync_standbys",
            m.degraded.clone(),
        );
        registry.register(
            "maintenance",
            "1 while maintenance mode (no automatic failover) is on",
            m.maintenance.clone(),
        );
        registry.register(
            "failovers",
            "Failovers written by this arbiter",
            m.failovers.clone(),
        );
        registry.register(
            "switchovers",
            "Planned switchovers completed by this arbiter",
            m.switchovers.clone(),
        );
        registry.register(
            "heartbeats",
            "Heartbeats answered, by result",
            m.heartbeats.clone(),
        );
        registry.register(
            "decisions",
            "Decisions recorded, by kind and whether taken",
            m.decisions.clone(),
        );
        registry.register(
            "store_writes",
            "State store compare-and-swaps, by outcome",
            m.store_writes.clone(),
        );
        registry.register(
            "store_write_seconds",
            "Time one state store compare-and-swap took",
            m.store_write_seconds.clone(),
        );
        registry.register(
            "replicas",
            "Known replicas by assigned role",
            m.replicas.clone(),
        );
        registry.register(
            "sync_set_members",
            "Standbys in the sync set",
            m.sync_set_members.clone(),
        );
        registry.register(
            "leader",
            "1 while this arbiter leads and decides for the cluster",
            m.leader.clone(),
        );
        registry.register(
            "terms",
            "Leadership terms this arbiter has taken office in",
            m.terms.clone(),
        );
        registry.register(
            "replica_active",
            "1 while this replica is the recorded active, by node",
            m.replica_active.clone(),
        );
        registry.register(
            "replica_healthy",
            "1 while this replica's last heartbeat said it is healthy, by node",
            m.replica_healthy.clone(),
        );
        registry.register(
            "replica_heartbeat_age_seconds",
            "Time since this replica's last heartbeat, by node",
            m.replica_heartbeat_age.clone(),
        );
        registry.register(
            "replica_lag_entries",
            "Entries this replica is behind the active, as last reported, by node",
            m.replica_lag_entries.clone(),
        );
        registry.register(
            "rejected_credentials",
            "Requests refused for a missing or wrong credential",
            m.rejected_credentials.clone(),
        );
        registry.register(
            "build_info",
            "Always 1; the arbiter's version is the label",
            m.build_info.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Counts one heartbeat answered with `result`.
    pub fn count_heartbeat(&self, result: &str) {
        self.heartbeats
            .get_or_create(&label("result", result))
            .inc();
    }

    /// Counts one store write that ended with `outcome`.
    pub fn count_store_write(&self, outcome: &str) {
        self.store_writes
            .get_or_create(&label("outcome", outcome))
            .inc();
    }

    /// Counts a recorded decision.
    pub fn count_decision(&self, d: &DecisionRecord) {
        let labels = vec![
            ("kind".to_string(), kind_name(d.kind)),
            ("taken".to_string(), d.taken.to_string()),
        ];
        self.decisions.get_or_create(&labels).inc();
    }

    /// Sets the cluster gauges from a status snapshot.
    pub fn observe(&self, status: &ClusterStatus) {
        self.epoch.set(status.epoch.0 as i64);
        self.has_active.set(i64::from(status.active.is_some()));
        self.degraded.set(i64::from(status.degraded));
        self.maintenance.set(i64::from(status.maintenance));
        self.sync_set_members.set(status.sync_set.len() as i64);
        for role in [Role::Active, Role::Standby] {
            let n = status.replicas.iter().filter(|r| r.role == role).count();
            self.replicas
                .get_or_create(&label("role", &role.to_string()))
                .set(n as i64);
        }
        // Rebuilt each time, so a removed member's series go away.
        self.replica_active.clear();
        self.replica_healthy.clear();
        self.replica_heartbeat_age.clear();
        self.replica_lag_entries.clear();
        for r in &status.replicas {
            let node = label("node", r.node_id.as_str());
            self.replica_active
                .get_or_create(&node)
                .set(i64::from(r.role == Role::Active));
            self.replica_healthy
                .get_or_create(&node)
                .set(i64::from(r.healthy));
            if let Some(ms) = r.last_heartbeat_age_ms {
                self.replica_heartbeat_age
                    .get_or_create(&node)
                    .set(ms as f64 / 1000.0);
            }
            if let Some(lag) = r.lag_entries {
                self.replica_lag_entries
                    .get_or_create(&node)
                    .set(lag as i64);
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_string(), value.to_string())]
}

/// The snake_case name a decision kind has on the wire.
pub fn kind_name(kind: DecisionKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_names_and_labels() {
        let m = Metrics::new();
        m.count_heartbeat("active");
        m.count_store_write("written");
        m.failovers.inc();
        m.store_write_seconds.observe(0.002);
        let text = m.render();
        for want in [
            "understudy_arbiter_epoch ",
            "understudy_arbiter_failovers_total 1",
            "understudy_arbiter_heartbeats_total{result=\"active\"} 1",
            "understudy_arbiter_store_writes_total{outcome=\"written\"} 1",
            "understudy_arbiter_store_write_seconds_bucket",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert_eq!(kind_name(DecisionKind::SyncSet), "sync_set");
    }
}
