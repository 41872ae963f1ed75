//! Fault injection for end-to-end tests: `UNDERSTUDY_FAILPOINT`.
//!
//! **A test hook — never set it in production.** It exists so a test can
//! make the disk fail under a running replica at a moment it chooses, the
//! way a dying disk or a full file system does, and check what clients
//! were told.
//!
//! One failpoint exists:
//!
//! - `fsync_error_if_exists:PATH`: while the file `PATH` exists (a
//!   relative `PATH` is in the replica's data directory, so one setting
//!   serves every replica of a test and each fails alone), every
//!   `fdatasync` of the write log fails with an I/O error (the write
//!   before it succeeds, so the batch is in the page cache and already
//!   shipped to the standbys — the case where the outcome is unknown).
//!   The log then fails for good, as it does on a real fsync error.
//!
//! The variable is read once, by [`arm_from_env`] at start-up (`main.rs`;
//! a replica run in-process by a library caller is never armed). An
//! unknown value refuses to start, so a typo cannot silently disarm a
//! test. Unset, a check costs one atomic load of a static.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::config::ConfigError;

/// The environment variable that arms a failpoint.
pub const ENV: &str = "UNDERSTUDY_FAILPOINT";

static ARMED: OnceLock<Failpoint> = OnceLock::new();

/// A failpoint the replica can be started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failpoint {
    /// Fail every log fsync while this file exists.
    FsyncErrorIfExists(PathBuf),
}

impl Failpoint {
    /// Parses `fsync_error_if_exists:PATH`.
    pub fn parse(text: &str) -> Result<Failpoint, ConfigError> {
        match text.trim().split_once(':') {
            Some(("fsync_error_if_exists", path)) if !path.is_empty() => {
                Ok(Failpoint::FsyncErrorIfExists(PathBuf::from(path)))
            }
            _ => Err(ConfigError::UnknownFailpoint {
                text: text.to_string(),
            }),
        }
    }
}

/// Reads [`ENV`] and arms the failpoint it names (unset or empty: none).
/// Call once, at start-up, before serving.
pub fn arm_from_env() -> Result<Option<Failpoint>, ConfigError> {
    let Some(raw) = std::env::var_os(ENV) else {
        return Ok(None);
    };
    let text = raw.to_str().ok_or(ConfigError::FailpointNotUtf8)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let failpoint = Failpoint::parse(text)?;
    let armed = ARMED.get_or_init(|| failpoint);
    tracing::warn!(failpoint = ?armed,
        "{ENV} is set: this replica will fail on purpose (a test hook; never set it in production)");
    Ok(Some(armed.clone()))
}

/// The error an armed `fsync_error_if_exists` injects now into the log of
/// the replica whose data directory is `data_dir`, if any.
pub fn fsync_error(data_dir: &Path) -> Option<io::Error> {
    let Failpoint::FsyncErrorIfExists(path) = ARMED.get()?;
    let path = data_dir.join(path);
    path.exists().then(|| {
        io::Error::other(format!(
            "failpoint fsync_error_if_exists: {} exists (injected I/O error)",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_failpoint() {
        assert_eq!(
            Failpoint::parse(" fsync_error_if_exists:/tmp/x ").unwrap(),
            Failpoint::FsyncErrorIfExists("/tmp/x".into())
        );
        for bad in [
            "fsync_error_if_exists:",
            "fsync_error",
            "abort_after_epoch_bump",
        ] {
            let err = Failpoint::parse(bad).unwrap_err();
            assert_eq!(err.code(), "unknown_failpoint");
            assert!(
                err.to_string().contains("fsync_error_if_exists:PATH"),
                "{err}"
            );
        }
    }

    #[test]
    fn an_unarmed_failpoint_injects_nothing() {
        assert!(fsync_error(Path::new("/")).is_none());
    }
}
