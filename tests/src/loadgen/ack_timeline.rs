//! When writes were acknowledged, and in which epoch: the client-side
//! measure of a failover.
//!
//! [`AckTimeline`] lists the time of every acknowledgement with the epoch it
//! was written in (from the answer's `X-Data-Version`), so the gap around a
//! kill or a switchover can be measured from the clients' side: from the
//! last ack before the event to the first ack of a later epoch, the longest
//! stretch without any ack (across all clients).

/// Every acknowledgement as `(end_ns, epoch)`, in time order.
#[derive(Clone, Debug, Default)]
pub struct AckTimeline {
    /// Sorted by time.
    acks: Vec<(u64, u64)>,
}

/// The write gap around one event (a kill, a switchover), client side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventGap {
    /// When the event happened.
    pub event_ns: u64,
    /// The last acknowledgement at or before the event.
    pub last_before_ns: u64,
    /// The first acknowledgement after the event in a later epoch.
    pub first_after_ns: u64,
    /// That epoch.
    pub new_epoch: u64,
    /// The longest stretch without any acknowledgement between the two
    /// (equal to `first_after_ns - last_before_ns` when nobody acked in
    /// between, as after a kill).
    pub longest_gap_ns: u64,
}

impl EventGap {
    /// The longest stretch without an ack, ms.
    pub fn gap_ms(&self) -> f64 {
        self.longest_gap_ns as f64 / 1e6
    }

    /// From the event to the first ack of the new epoch, ms.
    pub fn recovery_ms(&self) -> f64 {
        self.first_after_ns.saturating_sub(self.event_ns) as f64 / 1e6
    }
}

impl AckTimeline {
    /// A timeline of `(end_ns, epoch)` acknowledgements, in any order.
    pub fn new(mut acks: Vec<(u64, u64)>) -> AckTimeline {
        acks.sort_unstable();
        AckTimeline { acks }
    }

    /// Acknowledgements in all.
    pub fn len(&self) -> usize {
        self.acks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
    }

    /// The gap around an event at `event_ns` that ends epoch `old_epoch`:
    /// `None` if there was no ack before it or none in a later epoch after.
    pub fn gap_around(&self, event_ns: u64, old_epoch: u64) -> Option<EventGap> {
        let after = self.acks.partition_point(|&(t, _)| t <= event_ns);
        let before = after.checked_sub(1)?;
        let first_new = after
            + self.acks[after..]
                .iter()
                .position(|&(_, e)| e > old_epoch)?;
        let longest_gap_ns = self.acks[before..=first_new]
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .max()
            .unwrap_or(0);
        Some(EventGap {
            event_ns,
            last_before_ns: self.acks[before].0,
            first_after_ns: self.acks[first_new].0,
            new_epoch: self.acks[first_new].1,
            longest_gap_ns,
        })
    }

    /// The longest stretch without an ack in `[from_ns, to_ns]`, counting
    /// both ends as marks.
    pub fn longest_gap_between(&self, from_ns: u64, to_ns: u64) -> u64 {
        let first = self.acks.partition_point(|&(t, _)| t < from_ns);
        let last = self.acks.partition_point(|&(t, _)| t <= to_ns);
        let mut previous = from_ns;
        let mut longest = 0;
        for &(t, _) in &self.acks[first..last] {
            longest = longest.max(t - previous);
            previous = t;
        }
        longest.max(to_ns.saturating_sub(previous))
    }
}

#[cfg(test)]
mod tests {
    use crate::loadgen::history::HistoryRecord;
    use crate::loadgen::ledger::Ledger;
    use crate::loadgen::workload::{key_name, value_id};

    fn put(client: u32, seq: u64, end: u64, epoch: u64) -> HistoryRecord {
        HistoryRecord {
            target: "t".into(),
            client,
            seq,
            op: "put",
            key: key_name(seq, 6),
            value_id: Some(value_id(client, seq)),
            checksum: None,
            start_ns: end - 5,
            end_ns: end,
            status: 200,
            error: None,
            version: Some(format!("{epoch}.{end}")),
            key_version: None,
            url: "http://r".into(),
            attempts: 1,
            counted: true,
        }
    }

    #[test]
    fn gaps_run_from_the_last_ack_to_the_new_epoch() {
        let mut ledger = Ledger::new(6, 20);
        // Epoch 1 acks at 10, 20, 30; epoch 2 acks at 500, 510.
        for (i, end) in [10u64, 20, 30].into_iter().enumerate() {
            ledger.record(&put(0, i as u64, end, 1));
        }
        for (i, end) in [500u64, 510].into_iter().enumerate() {
            ledger.record(&put(1, i as u64, end, 2));
        }
        let timeline = ledger.timeline();
        assert_eq!(timeline.len(), 5);
        let gap = timeline.gap_around(35, 1).unwrap();
        assert_eq!(
            (gap.last_before_ns, gap.first_after_ns, gap.new_epoch),
            (30, 500, 2)
        );
        assert_eq!(gap.longest_gap_ns, 470);
        assert_eq!(gap.recovery_ms(), 465.0 / 1e6);
        assert_eq!(timeline.gap_around(5, 1), None);
        assert_eq!(timeline.gap_around(35, 2), None);
        assert_eq!(timeline.longest_gap_between(0, 600), 470);
        assert_eq!(timeline.longest_gap_between(505, 600), 90);
    }
}
