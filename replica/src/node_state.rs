//! The few facts a replica must remember across restarts besides its log
//! and snapshot, in `node-state.json` (written atomically).
//!
//! - `active_epoch`: the highest epoch this replica was granted the active
//!   role in, written *before* it takes its first write in that epoch. After
//!   a restart the replica refuses a grant for that epoch or a lower one: its
//!   previous life may have shipped entries to standbys that never reached
//!   its own disk, and writing new entries at those same positions would give
//!   one position two meanings. The arbiter must open a new epoch instead.
//! - `commit_hint`: an index known to be committed (lower than or equal to
//!   the real commit index). After a restart, entries up to it are applied at
//!   once; later ones wait for the active to confirm them, because an entry
//!   that was never committed must not become visible (it may yet be cut).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use proto_common::{Epoch, LogIndex};
use serde::{Deserialize, Serialize};

use crate::log::writer::sync_dir;

const FILE: &str = "node-state.json";

/// Persisted node facts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Highest epoch this replica ever took writes in.
    pub active_epoch: Epoch,
    /// Highest epoch this replica has seen (from the arbiter or a frame).
    pub seen_epoch: Epoch,
    /// An index known committed.
    pub commit_hint: LogIndex,
    /// Entries this replica moved to `quarantine/` over its life.
    #[serde(default)]
    pub quarantined_entries: u64,
    /// The last reinit order carried out (`reinit.rs`); 0 for none.
    #[serde(default)]
    pub reinitialized: u64,
}

impl NodeState {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE)
    }

    /// Loads the state; a missing file is a fresh replica. A damaged file is
    /// an error naming the file (never silently reset: `active_epoch` guards
    /// against reusing positions).
    pub fn load(data_dir: &Path) -> io::Result<NodeState> {
        let path = Self::path(data_dir);
        match fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is damaged ({e}); if you are sure this replica was never active, \
                         delete it, otherwise restore it",
                        path.display()
                    ),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(NodeState::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the state durably (temp file, fsync, rename, fsync dir).
    pub fn store(&self, data_dir: &Path) -> io::Result<()> {
        let path = Self::path(data_dir);
        let tmp = data_dir.join(format!("{FILE}.tmp"));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).expect("serializable"))?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        sync_dir(data_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(NodeState::load(dir.path()).unwrap(), NodeState::default());
        let s = NodeState {
            active_epoch: Epoch(3),
            seen_epoch: Epoch(4),
            commit_hint: LogIndex(77),
            quarantined_entries: 2,
            reinitialized: 5,
        };
        s.store(dir.path()).unwrap();
        assert_eq!(NodeState::load(dir.path()).unwrap(), s);
        fs::write(NodeState::path(dir.path()), b"{not json").unwrap();
        let err = NodeState::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("node-state.json"), "{err}");
    }
}
