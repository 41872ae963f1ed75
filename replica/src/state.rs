//! The state machine: an ordered map of bytes → bytes, each key carrying the
//! position of its last write.
//!
//! Only committed entries are applied (DESIGN.md, "Visibility follows
//! commit"), in log order, so every replica that applied up to the same
//! position holds the same map. The map is persistent (`imbl::OrdMap`):
//! cloning it for a snapshot is O(1) and never blocks writers.

use std::ops::Bound;

use bytes::Bytes;
use imbl::OrdMap;
use proto_common::Position;

use crate::command::{Command, Compare, Op};

/// A key's current value and the position of its last write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    pub value: Bytes,
    /// Position of the write that set this value (the key's version).
    pub version: Position,
}

/// What applying one command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The command changed the state (or was a no-op entry).
    Written,
    /// A delete found no such key; nothing changed.
    NotFound,
    /// A transaction's compare did not hold; nothing changed.
    CompareFailed(FailedCompare),
    /// The entry belongs to the other kind of state machine (a cluster that
    /// mixes proxy-mode and embedded replicas); nothing changed.
    Mismatch(String),
}

/// Which compare of a transaction did not hold, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("compare {index} failed: {why}")]
pub struct FailedCompare {
    /// Its place in the transaction, from 0.
    pub index: usize,
    pub why: CompareFailure,
}

/// Why one compare did not hold. Keys are shown as text (lossily), for the
/// client's message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompareFailure {
    /// `Compare::Version`: the key was last written elsewhere.
    #[error("key {key:?} has version {found}, expected {expected}")]
    OtherVersion {
        key: String,
        found: Position,
        expected: Position,
    },
    /// `Compare::Version`: the key does not exist.
    #[error("key {key:?} does not exist, expected version {expected}")]
    NoVersion { key: String, expected: Position },
    /// `Compare::Exists` (true) or `Compare::Value`: the key does not exist.
    #[error("key {key:?} does not exist")]
    Missing { key: String },
    /// `Compare::Exists` (false): the key exists.
    #[error("key {key:?} exists")]
    Exists { key: String },
    /// `Compare::Value`: the key holds another value.
    #[error("key {key:?} holds a different value")]
    OtherValue { key: String },
}

/// The replicated key-value map.
#[derive(Clone, Debug, Default)]
pub struct KvState {
    /// Keys → values, ordered so range reads are cheap.
    map: OrdMap<Bytes, KvEntry>,
    /// Position of the last applied entry; the replica's data version.
    applied: Position,
    /// Sum of key and value lengths, for metrics and snapshot sizing.
    bytes: u64,
}

impl KvState {
    /// Rebuilds a state from a snapshot's contents.
    pub fn from_parts(map: OrdMap<Bytes, KvEntry>, applied: Position) -> KvState {
        let bytes = map
            .iter()
            .map(|(k, v)| (k.len() + v.value.len()) as u64)
            .sum();
        KvState {
            map,
            applied,
            bytes,
        }
    }

    pub fn applied(&self) -> Position {
        self.applied
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn data_bytes(&self) -> u64 {
        self.bytes
    }

    /// An O(1) copy of the map for a snapshot.
    pub fn map(&self) -> &OrdMap<Bytes, KvEntry> {
        &self.map
    }

    pub fn get(&self, key: &[u8]) -> Option<&KvEntry> {
        self.map.get(key)
    }

    /// Keys with `prefix`, strictly after `start_after`, at most `limit`.
    /// Returns the page and whether more keys follow it.
    pub fn range(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> (Vec<(Bytes, KvEntry)>, bool) {
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(Bytes::copy_from_slice(after)),
            _ => Bound::Included(Bytes::copy_from_slice(prefix)),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut iter = self
            .map
            .range::<_, Bytes>((lower, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix));
        for (k, v) in iter.by_ref().take(limit) {
            out.push((k.clone(), v.clone()));
        }
        let more = iter.next().is_some();
        (out, more)
    }

    /// Applies one committed entry. Must be called in log order.
    pub fn apply(&mut self, position: Position, cmd: &Command) -> Outcome {
        debug_assert!(
            position > self.applied,
            "apply {position} after {}",
            self.applied
        );
        self.applied = position;
        match cmd {
            Command::Put { key, value } => {
                self.put(key, value, position);
                Outcome::Written
            }
            Command::Delete { key } => {
                if self.delete(key) {
                    Outcome::Written
                } else {
                    Outcome::NotFound
                }
            }
            Command::Txn { compares, ops } => {
                for (i, c) in compares.iter().enumerate() {
                    if let Err(why) = self.check(c) {
                        return Outcome::CompareFailed(FailedCompare { index: i, why });
                    }
                }
                for op in ops {
                    match op {
                        Op::Put { key, value } => self.put(key, value, position),
                        Op::Delete { key } => {
                            self.delete(key);
                        }
                    }
                }
                Outcome::Written
            }
            Command::Noop => Outcome::Written,
            Command::Stream(_) => Outcome::Mismatch(
                "the log holds a proxy-mode (Redis) entry, but this replica runs the embedded \
                 store: every replica of a cluster must be started alike (all with --upstream, \
                 or none)"
                    .into(),
            ),
        }
    }

    fn put(&mut self, key: &Bytes, value: &Bytes, version: Position) {
        let new_len = (key.len() + value.len()) as u64;
        // Copied into allocations of their own: the command's key and value
        // are slices of whatever buffer they arrived in (an HTTP request's
        // read buffer, a replication frame of many entries), and storing a
        // slice would keep that whole buffer alive as long as the key.
        let old = self.map.insert(
            Bytes::copy_from_slice(key),
            KvEntry {
                value: Bytes::copy_from_slice(value),
                version,
            },
        );
        if let Some(old) = old {
            self.bytes -= (key.len() + old.value.len()) as u64;
        }
        self.bytes += new_len;
    }

    fn delete(&mut self, key: &Bytes) -> bool {
        match self.map.remove(key) {
            Some(old) => {
                self.bytes -= (key.len() + old.value.len()) as u64;
                true
            }
            None => false,
        }
    }

    fn check(&self, c: &Compare) -> Result<(), CompareFailure> {
        let current = self.map.get(c.key());
        let key = || String::from_utf8_lossy(c.key()).into_owned();
        match (c, current) {
            (Compare::Version { version, .. }, Some(e)) if e.version == *version => Ok(()),
            (Compare::Version { version, .. }, Some(e)) => Err(CompareFailure::OtherVersion {
                key: key(),
                found: e.version,
                expected: *version,
            }),
            (Compare::Version { version, .. }, None) => Err(CompareFailure::NoVersion {
                key: key(),
                expected: *version,
            }),
            (Compare::Exists { exists, .. }, cur) if cur.is_some() == *exists => Ok(()),
            (Compare::Exists { exists: true, .. }, _) => {
                Err(CompareFailure::Missing { key: key() })
            }
            (Compare::Exists { exists: false, .. }, _) => {
                Err(CompareFailure::Exists { key: key() })
            }
            (Compare::Value { value, .. }, Some(e)) if e.value == *value => Ok(()),
            (Compare::Value { .. }, Some(_)) => Err(CompareFailure::OtherValue { key: key() }),
            (Compare::Value { .. }, None) => Err(CompareFailure::Missing { key: key() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn put(k: &str, v: &str) -> Command {
        Command::Put {
            key: b(k),
            value: b(v),
        }
    }

    #[test]
    fn put_get_delete() {
        let mut s = KvState::default();
        assert_eq!(
            s.apply(Position::new(1, 1), &put("a", "1")),
            Outcome::Written
        );
        assert_eq!(s.get(b"a").unwrap().value, b("1"));
        assert_eq!(s.get(b"a").unwrap().version, Position::new(1, 1));
        assert_eq!(s.data_bytes(), 2);
        assert_eq!(
            s.apply(Position::new(1, 2), &Command::Delete { key: b("a") }),
            Outcome::Written
        );
        assert_eq!(
            s.apply(Position::new(1, 3), &Command::Delete { key: b("a") }),
            Outcome::NotFound
        );
        assert_eq!(s.applied(), Position::new(1, 3));
        assert_eq!(s.data_bytes(), 0);
    }

    #[test]
    fn txn_is_all_or_nothing() {
        let mut s = KvState::default();
        s.apply(Position::new(1, 1), &put("a", "1"));
        let txn = |version| Command::Txn {
            compares: vec![
                Compare::Version {
                    key: b("a"),
                    version,
                },
                Compare::Exists {
                    key: b("b"),
                    exists: false,
                },
            ],
            ops: vec![
                Op::Put {
                    key: b("b"),
                    value: b("2"),
                },
                Op::Delete { key: b("a") },
            ],
        };
        let out = s.apply(Position::new(1, 2), &txn(Position::new(1, 9)));
        let Outcome::CompareFailed(failed) = out else {
            panic!("{out:?}")
        };
        assert_eq!(
            failed.why,
            CompareFailure::OtherVersion {
                key: "a".into(),
                found: Position::new(1, 1),
                expected: Position::new(1, 9),
            }
        );
        assert_eq!(
            failed.to_string(),
            "compare 0 failed: key \"a\" has version 1.1, expected 1.9"
        );
        assert!(s.get(b"b").is_none());
        assert_eq!(
            s.apply(Position::new(1, 3), &txn(Position::new(1, 1))),
            Outcome::Written
        );
        assert!(s.get(b"a").is_none());
        assert_eq!(s.get(b"b").unwrap().version, Position::new(1, 3));
    }

    #[test]
    fn range_pages_within_prefix() {
        let mut s = KvState::default();
        for (i, k) in ["a", "b/1", "b/2", "b/3", "c"].iter().enumerate() {
            s.apply(Position::new(1, i as u64 + 1), &put(k, "v"));
        }
        let (page, more) = s.range(b"b/", None, 2);
        let keys: Vec<_> = page.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![b("b/1"), b("b/2")]);
        assert!(more);
        let (page, more) = s.range(b"b/", Some(b"b/2"), 2);
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].0, b("b/3"));
        assert!(!more);
        let (all, more) = s.range(b"", None, 100);
        assert_eq!(all.len(), 5);
        assert!(!more);
    }
}
