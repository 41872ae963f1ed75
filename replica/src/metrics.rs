//! Prometheus metrics of a replica (`GET /metrics`, OpenMetrics text).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label set for per-outcome and per-standby families.
pub type Labels = Vec<(String, String)>;

/// Every metric the replica exports. Cheap to update (atomics), shared by `Arc`.
pub struct Metrics {
    registry: Registry,
    /// Client writes answered, by outcome (ok, not_found, compare_failed, error).
    pub writes: Family<Labels, Counter>,
    /// Client reads served.
    pub reads: Counter,
    /// `fdatasync` calls on the write log (one per group-commit batch).
    pub fsyncs: Counter,
    /// Entries per group-commit batch.
    pub batch_entries: Histogram,
    /// Bytes appended to the write log.
    pub log_bytes: Counter,
    /// Time from a write's arrival to its acknowledgement.
    pub write_latency: Histogram,
    /// Last applied (committed) index.
    pub applied_index: Gauge,
    /// Current epoch.
    pub epoch: Gauge,
    /// Entries currently moved to quarantine.
    pub quarantined_entries: Gauge,
    /// Per standby (active only): entries not yet acknowledged.
    pub standby_lag_entries: Family<Labels, Gauge>,
    /// Per standby: bytes not yet acknowledged.
    pub standby_lag_bytes: Family<Labels, Gauge>,
    /// Per standby: age of the oldest unacknowledged entry, seconds.
    pub standby_lag_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Time from shipping a batch to the standby's acknowledgement.
    pub ack_latency: Histogram,
    /// Snapshots streamed to standbys (active) or installed (standby).
    pub snapshot_transfers: Family<Labels, Counter>,
    /// Snapshots written locally.
    pub snapshots_written: Counter,
    /// CPU time the idle poller spent spinning (see `idle_poll`).
    pub idle_poll_seconds: Counter<f64, AtomicU64>,
    /// Bytes the program allocated (jemalloc's `stats.allocated`), read at
    /// each scrape; 0 when jemalloc is not the allocator (tests).
    pub heap_allocated: Gauge,
    /// Bytes of memory jemalloc holds resident (`stats.resident`).
    pub heap_resident: Gauge,
    /// The smallest lease left, seconds, at any write acknowledged since
    /// the last scrape (reset then): how close a busy active came to
    /// losing its lease. -1 when nothing was acknowledged.
    pub lease_margin_min_seconds: Gauge<f64, AtomicU64>,
    /// Writes acknowledged with less than a quarter of the lease left.
    pub lease_margin_low: Counter,
    /// Always 1; the version in a label.
    pub build_info: Family<Labels, Gauge>,
    /// Client credentials refused, by listener (`http`, `resp`).
    pub credentials_rejected: Family<Labels, Counter>,
    /// Bytes in the data directory (the log, snapshots, checkpoints,
    /// RDBs), measured every second: what compaction must bound.
    pub data_dir_bytes: Gauge,
    /// Seconds since the newest snapshot (proxy mode: checkpoint) was
    /// written; -1 while there is none.
    pub snapshot_age_seconds: Gauge,
    /// Proxy mode, by upstream address: 1 while its `INFO` answers.
    pub upstream_up: Family<Labels, Gauge>,
    /// Proxy mode: the upstream's `used_memory`.
    pub upstream_used_memory_bytes: Family<Labels, Gauge>,
    /// Proxy mode: the upstream's `maxmemory` (0: no limit).
    pub upstream_maxmemory_bytes: Family<Labels, Gauge>,
    /// Proxy mode: the upstream's `connected_clients`.
    pub upstream_connected_clients: Family<Labels, Gauge>,
    /// Proxy mode: the upstream's `maxclients`.
    pub upstream_maxclients: Family<Labels, Gauge>,
    /// Proxy mode: 1 while the upstream loads an RDB.
    pub upstream_loading: Family<Labels, Gauge>,
    /// Proxy mode: the upstream's `repl_backlog_size`.
    pub upstream_repl_backlog_bytes: Family<Labels, Gauge>,
    /// Proxy mode, on the active: stream bytes the upstream has and the
    /// tap has not logged yet.
    pub tap_lag_bytes: Family<Labels, Gauge>,
    rejects: proto_common::auth::RejectLog,
}

impl Metrics {
    /// Counts a refused client credential and logs it (once a minute per
    /// peer address at most).
    pub fn credential_rejected(
        &self,
        listener: &str,
        peer: Option<std::net::SocketAddr>,
        what: &str,
        why: &str,
    ) {
        self.credentials_rejected
            .get_or_create(&vec![("listener".to_string(), listener.to_string())])
            .inc();
        self.rejects.rejected(peer, what, why);
    }

    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("understudy");
        let m = Metrics {
            writes: Family::default(),
            reads: Counter::default(),
            fsyncs: Counter::default(),
            batch_entries: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            log_bytes: Counter::default(),
            write_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            applied_index: Gauge::default(),
            epoch: Gauge::default(),
            quarantined_entries: Gauge::default(),
            standby_lag_entries: Family::default(),
            standby_lag_bytes: Family::default(),
            standby_lag_seconds: Family::default(),
            // Fine buckets around the milliseconds that matter for lag.
            ack_latency: Histogram::new([
                0.000_05, 0.000_1, 0.000_15, 0.000_2, 0.000_3, 0.000_4, 0.000_5, 0.000_75, 0.001,
                0.001_5, 0.002, 0.003, 0.004, 0.005, 0.007_5, 0.01, 0.015, 0.02, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5,
            ]),
            snapshot_transfers: Family::default(),
            snapshots_written: Counter::default(),
            idle_poll_seconds: Counter::default(),
            heap_allocated: Gauge::default(),
            heap_resident: Gauge::default(),
            lease_margin_min_seconds: Gauge::default(),
            lease_margin_low: Counter::default(),
            build_info: Family::default(),
            credentials_rejected: Family::default(),
            data_dir_bytes: Gauge::default(),
            snapshot_age_seconds: Gauge::default(),
            upstream_up: Family::default(),
            upstream_used_memory_bytes: Family::default(),
            upstream_maxmemory_bytes: Family::default(),
            upstream_connected_clients: Family::default(),
            upstream_maxclients: Family::default(),
            upstream_loading: Family::default(),
            upstream_repl_backlog_bytes: Family::default(),
            tap_lag_bytes: Family::default(),
            rejects: Default::default(),
            registry: Registry::default(),
        };
        m.build_info
            .get_or_create(&vec![(
                "version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )])
            .set(1);
        m.lease_margin_min_seconds.set(-1.0);
        registry.register(
            "writes",
            "Client writes answered, by outcome",
            m.writes.clone(),
        );
        registry.register("reads", "Client reads served", m.reads.clone());
        registry.register(
            "credentials_rejected",
            "Client credentials refused (missing, wrong, or not allowing the request), by listener",
            m.credentials_rejected.clone(),
        );
        registry.register(
            "log_fsyncs",
            "fdatasync calls on the write log",
            m.fsyncs.clone(),
        );
        registry.register(
            "commit_batch_entries",
            "Entries per group-commit batch",
            m.batch_entries.clone(),
        );
        registry.register(
            "log_written_bytes",
            "Bytes appended to the write log",
            m.log_bytes.clone(),
        );
        registry.register(
            "write_latency_seconds",
            "Time from a write's arrival to its acknowledgement",
            m.write_latency.clone(),
        );
        registry.register(
            "applied_index",
            "Last applied log index",
            m.applied_index.clone(),
        );
        registry.register("epoch", "Current epoch", m.epoch.clone());
        registry.register(
            "quarantined_entries",
            "Log entries moved to quarantine/",
            m.quarantined_entries.clone(),
        );
        registry.register(
            "standby_lag_entries",
            "Entries a standby has not acknowledged",
            m.standby_lag_entries.clone(),
        );
        registry.register(
            "standby_lag_bytes",
            "Bytes a standby has not acknowledged",
            m.standby_lag_bytes.clone(),
        );
        registry.register(
            "standby_lag_seconds",
            "Age of the oldest entry a standby has not acknowledged",
            m.standby_lag_seconds.clone(),
        );
        registry.register(
            "replication_ack_latency_seconds",
            "Time from shipping a batch to its acknowledgement",
            m.ack_latency.clone(),
        );
        registry.register(
            "snapshot_transfers",
            "Snapshots streamed to or installed from the active",
            m.snapshot_transfers.clone(),
        );
        registry.register(
            "snapshots_written",
            "Local snapshots written",
            m.snapshots_written.clone(),
        );
        registry.register(
            "idle_poll_seconds",
            "CPU time spent keeping a CPU awake around writes (SCHED_IDLE)",
            m.idle_poll_seconds.clone(),
        );
        registry.register(
            "heap_allocated_bytes",
            "Bytes allocated by the program (jemalloc stats.allocated)",
            m.heap_allocated.clone(),
        );
        registry.register(
            "heap_resident_bytes",
            "Bytes held resident by the allocator (jemalloc stats.resident)",
            m.heap_resident.clone(),
        );
        registry.register(
            "lease_margin_min_seconds",
            "Smallest lease left at a write's acknowledgement since the last scrape (-1: none)",
            m.lease_margin_min_seconds.clone(),
        );
        registry.register(
            "lease_margin_low",
            "Writes acknowledged with less than a quarter of the lease left",
            m.lease_margin_low.clone(),
        );
        registry.register(
            "data_dir_bytes",
            "Bytes in the data directory (the log, snapshots, checkpoints, RDBs), measured every second",
            m.data_dir_bytes.clone(),
        );
        registry.register(
            "snapshot_age_seconds",
            "Seconds since the newest snapshot (proxy mode: checkpoint) was written; -1: none yet",
            m.snapshot_age_seconds.clone(),
        );
        for (name, help, family) in [
            (
                "upstream_up",
                "Proxy mode: 1 while the upstream answers INFO",
                &m.upstream_up,
            ),
            (
                "upstream_used_memory_bytes",
                "Proxy mode: the upstream's used_memory",
                &m.upstream_used_memory_bytes,
            ),
            (
                "upstream_maxmemory_bytes",
                "Proxy mode: the upstream's maxmemory (0: no limit)",
                &m.upstream_maxmemory_bytes,
            ),
            (
                "upstream_connected_clients",
                "Proxy mode: the upstream's connected_clients",
                &m.upstream_connected_clients,
            ),
            (
                "upstream_maxclients",
                "Proxy mode: the upstream's maxclients",
                &m.upstream_maxclients,
            ),
            (
                "upstream_loading",
                "Proxy mode: 1 while the upstream loads an RDB",
                &m.upstream_loading,
            ),
            (
                "upstream_repl_backlog_bytes",
                "Proxy mode: the upstream's repl_backlog_size",
                &m.upstream_repl_backlog_bytes,
            ),
            (
                "tap_lag_bytes",
                "Proxy mode, active: stream bytes of the upstream not yet logged",
                &m.tap_lag_bytes,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "build_info",
            "Always 1; the replica's version is the label",
            m.build_info.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition, with the allocator's numbers read
    /// now; the lease margin starts over.
    pub fn render(&self) -> String {
        let (allocated, resident) = heap_stats();
        self.heap_allocated.set(allocated as i64);
        self.heap_resident.set(resident as i64);
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        self.lease_margin_min_seconds.set(-1.0);
        out
    }

    /// Records the lease left (ns of `lease_nanos`) at an acknowledgement.
    pub fn observe_lease_margin(&self, left_nanos: u64, lease_nanos: u64) {
        let seconds = left_nanos as f64 / 1e9;
        let current = self.lease_margin_min_seconds.get();
        if current < 0.0 || seconds < current {
            self.lease_margin_min_seconds.set(seconds);
        }
        if left_nanos < lease_nanos / 4 {
            self.lease_margin_low.inc();
        }
    }

    pub fn count_write(&self, outcome: &str) {
        self.writes
            .get_or_create(&vec![("outcome".to_string(), outcome.to_string())])
            .inc();
    }
}

/// jemalloc's allocated and resident bytes (after refreshing its stats).
pub fn heap_stats() -> (u64, u64) {
    if tikv_jemalloc_ctl::epoch::advance().is_err() {
        return (0, 0);
    }
    (
        tikv_jemalloc_ctl::stats::allocated::read().unwrap_or(0) as u64,
        tikv_jemalloc_ctl::stats::resident::read().unwrap_or(0) as u64,
    )
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
