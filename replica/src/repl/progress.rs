//! The active's view of each standby: what it acknowledged, what is still
//! in flight, how far behind it is (entries, bytes, milliseconds). Feeds the
//! heartbeat (the arbiter grows the sync set from it) and the metrics.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use proto_common::heartbeat::StandbyProgress;
use proto_common::{LogIndex, NodeId, Position};

use crate::metrics::Metrics;
use proto_common::clock;

/// A batch shipped to a standby and not yet acknowledged.
struct Shipped {
    last: LogIndex,
    bytes: usize,
    /// When the entries were written (live) or sent (catch-up), ns.
    at: u64,
}

#[derive(Default)]
struct Progress {
    acked: Position,
    connected: bool,
    in_flight: VecDeque<Shipped>,
    /// The first index this standby still needs from our log: compaction
    /// keeps it, or a standby catching up could be sent snapshot after
    /// snapshot while the log moves on.
    needs_from: LogIndex,
    /// Since when the standby has been catching up (from disk or a
    /// snapshot) rather than streaming live, ns; `None` while live.
    behind_since: Option<u64>,
}

/// Progress of every standby that has connected to this active.
pub struct Followers {
    map: Mutex<HashMap<NodeId, Progress>>,
    metrics: Arc<Metrics>,
}

fn labels(id: &NodeId) -> Vec<(String, String)> {
    vec![("standby".to_string(), id.to_string())]
}

impl Followers {
    pub fn new(metrics: Arc<Metrics>) -> Followers {
        Followers {
            map: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// A standby connected and will be sent entries from `needs_from`.
    pub fn connected(&self, id: &NodeId, needs_from: LogIndex) {
        let mut map = self.map.lock();
        let p = map.entry(id.clone()).or_default();
        p.connected = true;
        p.in_flight.clear();
        p.needs_from = needs_from;
        p.behind_since = Some(clock::now_nanos());
    }

    /// The standby streams live (`true`: it has everything written so far
    /// or on its way) or fell behind and catches up from disk (`false`).
    pub fn streaming(&self, id: &NodeId, live: bool) {
        if let Some(p) = self.map.lock().get_mut(id) {
            p.behind_since = match (live, p.behind_since) {
                (true, _) => None,
                (false, Some(t)) => Some(t),
                (false, None) => Some(clock::now_nanos()),
            };
        }
    }

    /// The standby was sent a snapshot ending at `index - 1`.
    pub fn needs_from(&self, id: &NodeId, index: LogIndex) {
        if let Some(p) = self.map.lock().get_mut(id) {
            p.needs_from = index;
        }
    }

    /// The lowest index any connected standby still needs, if any.
    pub fn min_needed(&self) -> Option<LogIndex> {
        self.map
            .lock()
            .values()
            .filter(|p| p.connected)
            .map(|p| p.needs_from)
            .min()
    }

    pub fn disconnected(&self, id: &NodeId) {
        if let Some(p) = self.map.lock().get_mut(id) {
            p.connected = false;
            p.in_flight.clear();
        }
    }

    /// Forgets everyone (this node stopped being the active).
    pub fn clear(&self) {
        self.map.lock().clear();
    }

    pub fn shipped(&self, id: &NodeId, last: LogIndex, bytes: usize, at: u64) {
        if let Some(p) = self.map.lock().get_mut(id) {
            p.in_flight.push_back(Shipped { last, bytes, at });
        }
    }

    /// Records an acknowledgement; observes the ack latency of each batch
    /// it completes.
    pub fn acked(&self, id: &NodeId, pos: Position) {
        let now = clock::now_nanos();
        let mut map = self.map.lock();
        let Some(p) = map.get_mut(id) else { return };
        if pos > p.acked {
            p.acked = pos;
            p.needs_from = p.needs_from.max(pos.index.next());
        }
        while p.in_flight.front().is_some_and(|s| s.last <= pos.index) {
            let s = p.in_flight.pop_front().unwrap();
            self.metrics
                .ack_latency
                .observe(now.saturating_sub(s.at) as f64 / 1e9);
        }
    }

    /// Per-standby progress against our last index; updates the lag gauges.
    pub fn report(&self, our_last: LogIndex) -> Vec<StandbyProgress> {
        let now = clock::now_nanos();
        let map = self.map.lock();
        let mut out: Vec<StandbyProgress> = map
            .iter()
            .map(|(id, p)| {
                let lag_entries = our_last.0.saturating_sub(p.acked.index.0);
                let lag_bytes: usize = p.in_flight.iter().map(|s| s.bytes).sum();
                // Live: the age of the oldest unacknowledged batch. Catching
                // up: at least as long as it has been catching up — the
                // batches it is sent were written long before they are
                // sent, and a snapshot in transfer has no batch in flight.
                let in_flight_ms = p
                    .in_flight
                    .front()
                    .map_or(0, |s| now.saturating_sub(s.at) / 1_000_000);
                let behind_ms = p
                    .behind_since
                    .map_or(0, |t| now.saturating_sub(t) / 1_000_000);
                let lag_ms = if lag_entries == 0 {
                    0
                } else {
                    in_flight_ms.max(behind_ms)
                };
                let l = labels(id);
                self.metrics
                    .standby_lag_entries
                    .get_or_create(&l)
                    .set(lag_entries as i64);
                self.metrics
                    .standby_lag_bytes
                    .get_or_create(&l)
                    .set(lag_bytes as i64);
                self.metrics
                    .standby_lag_seconds
                    .get_or_create(&l)
                    .set(lag_ms as f64 / 1000.0);
                StandbyProgress {
                    node_id: id.clone(),
                    acked: p.acked,
                    lag_entries,
                    lag_ms,
                    connected: p.connected,
                }
            })
            .collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_common::Epoch;
    use std::time::{Duration, Instant};

    fn id() -> NodeId {
        NodeId::new("c").unwrap()
    }

    /// A standby that is far behind with nothing in flight (a snapshot in
    /// transfer) must not look caught up: the arbiter would add it to the
    /// sync set and every write would wait for its whole catch-up.
    #[test]
    fn a_standby_catching_up_reports_growing_lag() {
        let f = Followers::new(Arc::new(Metrics::new()));
        f.connected(&id(), LogIndex(1));
        let deadline = Instant::now() + Duration::from_secs(5);
        let lag = loop {
            let p = &f.report(LogIndex(1_000_000))[0];
            assert_eq!(p.lag_entries, 1_000_000);
            if p.lag_ms >= 2 || Instant::now() > deadline {
                break p.lag_ms;
            }
            std::thread::yield_now();
        };
        assert!(lag >= 2, "lag stayed at {lag} ms while catching up");

        // Streaming live with nothing unacknowledged: no lag in time.
        f.streaming(&id(), true);
        f.acked(
            &id(),
            Position {
                epoch: Epoch(1),
                index: LogIndex(1_000_000),
            },
        );
        let p = &f.report(LogIndex(1_000_000))[0];
        assert_eq!((p.lag_entries, p.lag_ms), (0, 0));
    }
}
