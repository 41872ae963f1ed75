//! Expiry decided by the active and carried by the log (DESIGN.md,
//! "Expiry").
//!
//! Two upstreams that expire keys by their own clocks diverge, so none
//! does: every deadline is stored in the upstreams [`SHIFT_MS`] later than
//! it really is (a hundred years), far beyond any clock. Each replica keeps
//! a [`DeadlineIndex`] of the real deadlines, updated from the upstream's
//! own `PEXPIRETIME` of every key an applied entry touched, so every
//! replica's index is the same at the same log position. When a deadline
//! passes on the active's clock, the active logs "expire k if its deadline
//! is still d"; every replica applies it alike. Replies that carry a
//! deadline (`TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`) have the shift
//! taken off ([`unshift_reply`]).

use std::collections::{BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

/// How far past its real deadline an upstream holds a key: 100 years of
/// 365.25 days, in ms (a whole number of seconds, so `TTL`'s rounding is
/// unchanged).
pub const SHIFT_MS: i64 = 3_155_760_000_000;

/// Milliseconds since the Unix epoch on this machine's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Real deadlines of every key that has one, by database and key.
#[derive(Debug, Default)]
pub struct DeadlineIndex {
    by_key: HashMap<(u8, Bytes), i64>,
    by_time: BTreeSet<(i64, u8, Bytes)>,
}

impl DeadlineIndex {
    /// Records what the upstream's `PEXPIRETIME` said of `key` after an
    /// entry was applied: a shifted deadline, -1 (none) or -2 (no key).
    pub fn observe(&mut self, db: u8, key: Bytes, pexpiretime: i64) {
        let deadline = (pexpiretime >= 0).then(|| pexpiretime - SHIFT_MS);
        self.set(db, key, deadline);
    }

    pub fn set(&mut self, db: u8, key: Bytes, deadline: Option<i64>) {
        let slot = (db, key);
        if let Some(old) = self.by_key.remove(&slot) {
            self.by_time.remove(&(old, slot.0, slot.1.clone()));
        }
        if let Some(d) = deadline {
            self.by_time.insert((d, slot.0, slot.1.clone()));
            self.by_key.insert(slot, d);
        }
    }

    /// The real deadline of `key`, if it has one.
    pub fn get(&self, db: u8, key: &Bytes) -> Option<i64> {
        self.by_key.get(&(db, key.clone())).copied()
    }

    /// Up to `limit` keys whose deadline is at or before `now`, oldest first.
    pub fn due(&self, now: i64, limit: usize) -> Vec<(u8, Bytes, i64)> {
        self.by_time
            .iter()
            .take_while(|(d, _, _)| *d <= now)
            .take(limit)
            .map(|(d, db, k)| (*db, k.clone(), *d))
            .collect()
    }

    /// `FLUSHDB`: forgets every key of `db`.
    pub fn clear_db(&mut self, db: u8) {
        self.by_key.retain(|(d, _), _| *d != db);
        self.by_time.retain(|(_, d, _)| *d != db);
    }

    /// `FLUSHALL`.
    pub fn clear(&mut self) {
        self.by_key.clear();
        self.by_time.clear();
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Takes the shift off a reply that carries a deadline, so clients see what
/// Redis would show. `command` is the lowercase command name. A deadline
/// already past (possible only on a standby serving local reads, before the
/// active's expiry arrives) reads as a missing key.
pub fn unshift_reply(command: &str, reply: BytesFrame) -> BytesFrame {
    let shift = match command {
        "ttl" | "expiretime" => SHIFT_MS / 1000,
        "pttl" | "pexpiretime" => SHIFT_MS,
        _ => return reply,
    };
    match reply {
        BytesFrame::Integer(n) if n >= 0 => {
            let real = n - shift;
            if real < 0 {
                BytesFrame::Integer(-2)
            } else {
                BytesFrame::Integer(real)
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn the_index_follows_what_the_upstream_reports() {
        let mut ix = DeadlineIndex::default();
        ix.observe(0, k("a"), 1_000 + SHIFT_MS);
        ix.observe(0, k("b"), 500 + SHIFT_MS);
        ix.observe(2, k("a"), 2_000 + SHIFT_MS);
        assert_eq!(ix.get(0, &k("a")), Some(1_000));
        assert_eq!(
            ix.due(1_000, 10),
            vec![(0, k("b"), 500), (0, k("a"), 1_000)]
        );
        ix.observe(0, k("b"), -1); // PERSIST
        ix.observe(0, k("a"), -2); // deleted
        assert!(ix.due(1_500, 10).is_empty());
        assert_eq!(ix.len(), 1);
        ix.observe(0, k("c"), 10 + SHIFT_MS);
        ix.clear_db(2);
        assert_eq!(ix.due(i64::MAX, 10), vec![(0, k("c"), 10)]);
        ix.clear();
        assert!(ix.is_empty());
    }

    #[test]
    fn deadline_replies_lose_the_shift() {
        let int = BytesFrame::Integer;
        assert_eq!(unshift_reply("ttl", int(SHIFT_MS / 1000 + 10)), int(10));
        assert_eq!(unshift_reply("pttl", int(SHIFT_MS + 10_500)), int(10_500));
        assert_eq!(
            unshift_reply("pexpiretime", int(SHIFT_MS + 1_700_000_000_000)),
            int(1_700_000_000_000)
        );
        assert_eq!(
            unshift_reply("expiretime", int(SHIFT_MS / 1000 + 1_700_000_000)),
            int(1_700_000_000)
        );
        assert_eq!(unshift_reply("ttl", int(-1)), int(-1));
        assert_eq!(unshift_reply("ttl", int(-2)), int(-2));
        assert_eq!(
            unshift_reply("pttl", int(SHIFT_MS - 5)),
            int(-2),
            "past its deadline"
        );
        assert_eq!(unshift_reply("get", int(7)), int(7));
    }
}
