//! [`check_single_epoch_acks`]: from the clients' ledger, no write was
//! acknowledged under two epochs at once.

use std::collections::HashMap;

use understudy_tests::loadgen::Ledger;

/// Checks, from the clients' ledger, that no write was acknowledged under
/// two epochs at once around the end of epoch `old`:
///
/// - every acknowledgement in an epoch ≤ `old` arrived before the first
///   acknowledgement in a later epoch (the acks of the two epochs do not
///   interleave in time);
/// - no log index was acknowledged in two different epochs, and no
///   position was acknowledged for two different writes (an acknowledged
///   write is committed, so its index is never reused).
///
/// Returns a line describing the boundary.
pub fn check_single_epoch_acks(ledger: &Ledger, old: u64) -> Result<String, String> {
    let acked: Vec<_> = ledger.writes().iter().filter(|w| w.acked).collect();
    let last_old = acked
        .iter()
        .filter(|w| w.version.is_some_and(|v| v.epoch.0 <= old))
        .max_by_key(|w| w.end_ns);
    let first_new = acked
        .iter()
        .filter(|w| w.version.is_some_and(|v| v.epoch.0 > old))
        .min_by_key(|w| w.end_ns);
    let boundary = match (last_old, first_new) {
        (Some(o), Some(n)) => {
            if o.end_ns >= n.end_ns {
                return Err(format!(
                    "write {} was acknowledged in epoch ≤ {old} (version {:?}) {} ms after \
                     write {} was acknowledged in epoch {:?}",
                    o.value_id(),
                    o.version.map(|v| v.to_string()),
                    (o.end_ns - n.end_ns) as f64 / 1e6,
                    n.value_id(),
                    n.version.map(|v| v.to_string()),
                ));
            }
            // A write acknowledged in the new epoch may have *started*
            // before the old epoch's last ack: its client was retrying
            // through the failover. That is not two epochs at once.
            let retried_across = acked
                .iter()
                .filter(|w| w.version.is_some_and(|v| v.epoch.0 > old) && w.start_ns < o.end_ns)
                .count();
            format!(
                "last ack in epoch ≤ {old} ({}) {:.1} ms before the first in epoch {} ({}); \
                 {retried_across} writes of the new epoch were first sent before that last \
                 old ack (retried across the failover)",
                o.value_id(),
                (n.end_ns - o.end_ns) as f64 / 1e6,
                n.version.map_or(0, |v| v.epoch.0),
                n.value_id()
            )
        }
        _ => return Err(format!("no acks on both sides of epoch {old}")),
    };
    let mut by_index: HashMap<u64, (u64, String)> = HashMap::new();
    let mut problems = Vec::new();
    for w in &acked {
        let Some(v) = w.version else {
            problems.push(format!("{} acknowledged without a version", w.value_id()));
            continue;
        };
        if let Some((epoch, other)) = by_index.insert(v.index.0, (v.epoch.0, w.value_id())) {
            if epoch != v.epoch.0 {
                problems.push(format!(
                    "index {} acknowledged in epoch {epoch} ({other}) and in epoch {} ({})",
                    v.index,
                    v.epoch,
                    w.value_id()
                ));
            } else {
                problems.push(format!(
                    "position {v} acknowledged for both {other} and {}",
                    w.value_id()
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(boundary)
    } else {
        Err(format!(
            "{} problems, first: {:#?}",
            problems.len(),
            &problems[..problems.len().min(10)]
        ))
    }
}
