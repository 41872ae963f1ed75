//! The numbers every part shares: node ids, epochs, log indices and positions.
//!
//! A replica's **position** is the `(epoch, index)` of the last entry in its
//! log. Positions compare lexicographically (epoch first), and a position is
//! what a client sees as the data version `E.I` (DESIGN.md, "Numbers everybody
//! shares"): after a divergent tail is cut, an index can be reused in a newer
//! epoch, so the index alone would not name a write.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest node id accepted, in bytes. Ids show up in logs, keys of the
/// arbiter's store and status tables; a short bound keeps them readable.
pub const MAX_NODE_ID_LEN: usize = 64;

/// A replica's identity. Identity is the id, never the address: a node may
/// come back on another address and is still the same member.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    /// Validates an id: 1–64 characters of `[A-Za-z0-9._-]`, so it is safe in
    /// file names, store keys and URLs without escaping.
    pub fn new(id: impl Into<String>) -> Result<Self, String> {
        let id = id.into();
        if id.is_empty() || id.len() > MAX_NODE_ID_LEN {
            return Err(format!(
                "node id {id:?} must be 1 to {MAX_NODE_ID_LEN} characters long"
            ));
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "node id {id:?} contains {bad:?}; use only letters, digits, '.', '_' and '-'"
            ));
        }
        Ok(NodeId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        NodeId::new(s)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0
    }
}

impl FromStr for NodeId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        NodeId::new(s)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a cluster name. Names become etcd key prefixes (`/<cluster>/`)
/// and appear in logs, so they are kept plain: 1 to 64 of letters, digits,
/// '-', '_' and '.'.
pub fn check_cluster_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "cluster={name:?} must be 1 to 64 characters of letters, digits, '-', '_' or '.'"
        ))
    }
}

/// Incremented by the arbiter (compare-and-swap in its store) each time it
/// names a new active. Epoch 0 means "never had an active".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    pub const ZERO: Epoch = Epoch(0);

    /// How far past an epoch it knows a process believes a peer's epoch.
    ///
    /// Epochs grow by one per new active, so no real history puts two
    /// processes of one cluster 2³² epochs apart (that would take a failover
    /// a second for 136 years). A larger leap is a forged or corrupted
    /// number: believing it would depose an active for nothing and bring
    /// the epoch within reach of overflowing. It is refused and logged.
    pub const MAX_LEAP: u64 = 1 << 32;

    /// The epoch after this one; `None` at `u64::MAX`, which is never
    /// wrapped around to 0.
    pub fn checked_next(self) -> Option<Epoch> {
        self.0.checked_add(1).map(Epoch)
    }

    /// Checks a peer's epoch against the highest this process knows:
    /// `Err` names both when the peer's is absurdly far ahead (see
    /// [`Epoch::MAX_LEAP`]).
    pub fn check_plausible(self, known: Epoch) -> Result<Epoch, String> {
        if self.0 > known.0.saturating_add(Self::MAX_LEAP) {
            return Err(format!(
                "epoch {self} is implausible: more than 2^32 ahead of the highest known epoch \
                 {known} (forged or corrupted); it is ignored"
            ));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod epoch_tests {
    use super::Epoch;

    #[test]
    fn the_next_epoch_never_wraps() {
        assert_eq!(Epoch(7).checked_next(), Some(Epoch(8)));
        assert_eq!(Epoch(u64::MAX).checked_next(), None);
    }

    #[test]
    fn an_epoch_far_ahead_of_the_known_one_is_implausible() {
        assert!(Epoch(5 + Epoch::MAX_LEAP).check_plausible(Epoch(5)).is_ok());
        let err = Epoch(6 + Epoch::MAX_LEAP)
            .check_plausible(Epoch(5))
            .unwrap_err();
        assert!(err.contains("4294967302") && err.contains(" 5 "), "{err}");
        assert!(Epoch(u64::MAX).check_plausible(Epoch(3)).is_err());
        assert!(Epoch(u64::MAX).check_plausible(Epoch(u64::MAX)).is_ok());
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// +1 per entry in the write log. Index 0 is "before the first entry".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct LogIndex(pub u64);

impl LogIndex {
    pub const ZERO: LogIndex = LogIndex(0);

    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The index before this one; saturates at zero.
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `(epoch, index)` of a log entry; the data version `E.I`.
///
/// Field order matters: the derived `Ord` compares the epoch first, which is
/// the lexicographic order DESIGN.md, "Numbers everybody shares", requires.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct Position {
    pub epoch: Epoch,
    pub index: LogIndex,
}

impl Position {
    /// The position of an empty log.
    pub const ZERO: Position = Position {
        epoch: Epoch::ZERO,
        index: LogIndex::ZERO,
    };

    pub fn new(epoch: u64, index: u64) -> Position {
        Position {
            epoch: Epoch(epoch),
            index: LogIndex(index),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch.0, self.index.0)
    }
}

impl FromStr for Position {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a data version; expected EPOCH.INDEX such as 3.1742");
        let (e, i) = s.trim().split_once('.').ok_or_else(bad)?;
        let epoch = e.parse::<u64>().map_err(|_| bad())?;
        let index = i.parse::<u64>().map_err(|_| bad())?;
        Ok(Position::new(epoch, index))
    }
}

impl From<Position> for String {
    fn from(p: Position) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for Position {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_compare_epoch_first() {
        assert!(Position::new(2, 1) > Position::new(1, 900));
        assert!(Position::new(2, 5) > Position::new(2, 4));
        assert_eq!(Position::ZERO, Position::default());
    }

    #[test]
    fn position_text_round_trips() {
        let p: Position = "3.1742".parse().unwrap();
        assert_eq!(p, Position::new(3, 1742));
        assert_eq!(p.to_string(), "3.1742");
        for bad in ["", "3", "3.", ".4", "a.b", "3.4.5", "-1.2"] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?} parsed");
        }
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"3.1742\"");
        assert_eq!(serde_json::from_str::<Position>(&json).unwrap(), p);
    }

    #[test]
    fn node_ids_are_validated() {
        assert!(NodeId::new("node-1.a_b").is_ok());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("a b").is_err());
        assert!(NodeId::new("a/b").is_err());
        assert!(NodeId::new("x".repeat(65)).is_err());
        assert!(serde_json::from_str::<NodeId>("\"bad id\"").is_err());
    }
}
