//! What a replica's data directory holds on disk: its size and how old its
//! newest snapshot (in proxy mode: checkpoint) is. Measured once a second
//! by the housekeeping task, exported as metrics and in the heartbeat
//! (`arbiter status`): what compaction must bound, and whether it runs.

use std::path::Path;
use std::time::SystemTime;

use proto_common::heartbeat::DiskUse;

/// Measures `data_dir` (blocking: walks the directory).
pub fn measure(data_dir: &Path) -> DiskUse {
    let newest = ["snapshots", "checkpoint"]
        .iter()
        .filter_map(|d| newest_mtime(&data_dir.join(d)))
        .max();
    DiskUse {
        data_dir_bytes: dir_bytes(data_dir),
        snapshot_age_secs: newest.map(|t| {
            SystemTime::now()
                .duration_since(t)
                .map_or(0, |age| age.as_secs())
        }),
    }
}

/// When the newest snapshot or checkpoint file in `dir` was written.
fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".snap") || (name.starts_with("checkpoint-") && name.ends_with(".rdb"))
        })
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()
}

/// Bytes of the regular files under `dir`; what cannot be read counts 0.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_the_newest_snapshot_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(
            measure(d),
            DiskUse {
                data_dir_bytes: 0,
                snapshot_age_secs: None
            }
        );
        std::fs::create_dir_all(d.join("log")).unwrap();
        std::fs::write(d.join("log").join("seg"), vec![0u8; 1000]).unwrap();
        std::fs::create_dir_all(d.join("checkpoint")).unwrap();
        std::fs::write(d.join("checkpoint").join("taking.tmp"), b"x").unwrap();
        assert_eq!(
            measure(d).snapshot_age_secs,
            None,
            "a file being written is not one"
        );
        std::fs::write(
            d.join("checkpoint")
                .join("checkpoint-00000000000000000001-00000000000000000009.rdb"),
            vec![0u8; 24],
        )
        .unwrap();
        let m = measure(d);
        assert_eq!(m.data_dir_bytes, 1025);
        assert!(m.snapshot_age_secs.is_some_and(|s| s < 60), "{m:?}");
    }
}
