//! `arbiter reinit NODE`: a standby discards its copy of the data and
//! copies the active's again (for a disk suspected of corruption, or a
//! replica an operator no longer trusts), like `patronictl reinit`.
//!
//! The arbiter takes the standby out of the sync set and out of promotion
//! in the same write that records the order, so no acknowledged write
//! depends on it by the time it acts. The standby then, in two steps that
//! survive a crash between them:
//!
//! 1. [`order`]: writes the order's number to `REINIT` in its data
//!    directory (fsynced) and restarts itself in place (`exec` of its own
//!    binary with the same arguments; the process id stays the same);
//! 2. [`carry_out`], when the node opens its data directory and finds
//!    `REINIT`: moves `log/` and `snapshots/` into `discarded/reinit-N/`
//!    (kept for the operator to inspect and delete; nothing is destroyed),
//!    records the order as done in `node-state.json` (its epochs stay:
//!    they guard against reusing positions), and removes `REINIT`.
//!
//! It starts empty, follows the active, which sends it a snapshot and the
//! log, and reports the order done in its heartbeats; the arbiter then
//! lets it rejoin the sync set once it has caught up.

use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::log::writer::sync_dir;
use crate::node::error::StartError;
use crate::node_state::NodeState;

/// The marker: the order's number while an order is being carried out.
const MARKER: &str = "REINIT";

/// Records order `n` durably and restarts this process in place. Returns
/// only if that fails (with why).
pub fn order(data_dir: &Path, n: u64) -> String {
    let path = data_dir.join(MARKER);
    let written = (|| -> io::Result<()> {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(n.to_string().as_bytes())?;
        f.sync_all()?;
        sync_dir(data_dir)
    })();
    if let Err(e) = written {
        return format!("cannot write {}: {e}", path.display());
    }
    tracing::warn!(
        order = n,
        "reinitializing at the operator's request (arbiter reinit): restarting to discard this \
         replica's log and snapshots and copy the active's data"
    );
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let err = std::process::Command::new("/proc/self/exe")
        .args(args)
        .exec();
    format!("cannot restart this replica in place: {err}")
}

/// At start: carries out a recorded order, if there is one. Called with the
/// data directory locked, before anything in it is opened.
pub fn carry_out(data_dir: &Path) -> Result<(), StartError> {
    let marker = data_dir.join(MARKER);
    let n: u64 = match std::fs::read_to_string(&marker) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|source| StartError::ReinitMarkerDamaged {
                path: marker.clone(),
                source,
            })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StartError::ReadReinitMarker {
                path: marker,
                source,
            })
        }
    };
    let err = |doing: &str, source: io::Error| StartError::Reinit {
        order: n,
        doing: doing.to_string(),
        source,
    };
    let keep = data_dir.join("discarded").join(format!("reinit-{n}"));
    std::fs::create_dir_all(&keep).map_err(|e| err(&format!("making {}", keep.display()), e))?;
    for name in ["log", "snapshots", "checkpoint", "rdb"] {
        let from = data_dir.join(name);
        if from.exists() {
            std::fs::rename(&from, keep.join(name))
                .map_err(|e| err(&format!("moving {} aside", from.display()), e))?;
        }
    }
    sync_dir(&keep).map_err(|e| err("syncing", e))?;
    sync_dir(data_dir).map_err(|e| err("syncing", e))?;
    let mut state = NodeState::load(data_dir).map_err(StartError::LoadNodeState)?;
    state.reinitialized = n;
    state.commit_hint = proto_common::LogIndex::ZERO;
    state
        .store(data_dir)
        .map_err(|e| err("saving node-state.json", e))?;
    std::fs::remove_file(&marker).map_err(|e| err("removing the marker", e))?;
    sync_dir(data_dir).map_err(|e| err("syncing", e))?;
    tracing::warn!(
        order = n,
        kept = %keep.display(),
        "reinitialized: the old log and snapshots were moved aside (delete them once you no \
         longer need them); starting empty, the active's data follows"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_common::{Epoch, LogIndex};

    #[test]
    fn an_order_moves_the_data_aside_keeps_the_epochs_and_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("log")).unwrap();
        std::fs::write(d.join("log").join("00000001.seg"), b"entries").unwrap();
        std::fs::create_dir_all(d.join("snapshots")).unwrap();
        std::fs::create_dir_all(d.join("quarantine")).unwrap();
        let before = NodeState {
            active_epoch: Epoch(4),
            seen_epoch: Epoch(6),
            commit_hint: LogIndex(90),
            ..Default::default()
        };
        before.store(d).unwrap();
        // No order: nothing happens.
        carry_out(d).unwrap();
        assert!(d.join("log").exists());

        std::fs::write(d.join(MARKER), b"7").unwrap();
        carry_out(d).unwrap();
        assert!(!d.join("log").exists() && !d.join("snapshots").exists());
        assert!(d.join("quarantine").exists(), "quarantine is never moved");
        let kept = d.join("discarded/reinit-7/log/00000001.seg");
        assert_eq!(std::fs::read(kept).unwrap(), b"entries");
        let after = NodeState::load(d).unwrap();
        assert_eq!(after.active_epoch, Epoch(4));
        assert_eq!(after.seen_epoch, Epoch(6));
        assert_eq!(after.commit_hint, LogIndex::ZERO);
        assert_eq!(after.reinitialized, 7);
        assert!(!d.join(MARKER).exists());
    }

    #[test]
    fn a_damaged_marker_stops_the_start_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MARKER), b"x").unwrap();
        let err = carry_out(dir.path()).unwrap_err();
        assert_eq!(err.code(), "reinit_marker_damaged");
        assert!(err.to_string().contains("REINIT is damaged"), "{err}");
    }
}
