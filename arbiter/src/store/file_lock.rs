//! `FileLock`: an exclusive advisory lock (`flock`) on a lock file beside
//! the state file, held for the file store's whole life.
//!
//! Two arbiters writing one state file would each believe its CAS decides
//! the epoch; the lock makes the second one refuse to start instead. `flock`
//! locks belong to the open file description, so the lock also excludes a
//! second store opened by the same process, and the kernel drops it when the
//! process dies (no stale lock after a crash).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::StoreError;

/// A held `flock(LOCK_EX)`; released when dropped (the file is closed).
#[derive(Debug)]
pub struct FileLock {
    /// The open lock file; closing it releases the lock.
    _file: File,
    /// The lock file's path, for messages.
    path: PathBuf,
}

impl FileLock {
    /// Takes the lock on `lock_path` without waiting, or fails with
    /// [`StoreError::Locked`] naming the holder's pid when it is known.
    pub fn acquire(state_path: &Path, lock_path: &Path) -> Result<FileLock, StoreError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(lock_path)
            .map_err(StoreError::io(lock_path, "open lock file"))?;
        // SAFETY: `flock` only reads the descriptor, which `file` keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StoreError::Locked {
                    path: state_path.to_path_buf(),
                    lock: lock_path.to_path_buf(),
                    holder: if holder.is_empty() {
                        String::new()
                    } else {
                        format!(", by pid {holder}")
                    },
                });
            }
            return Err(StoreError::Io {
                path: lock_path.to_path_buf(),
                op: "flock lock file",
                source: err,
            });
        }
        // Name ourselves for the error message of whoever comes second.
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .map_err(StoreError::io(lock_path, "write pid to lock file"))?;
        Ok(FileLock {
            _file: file,
            path: lock_path.to_path_buf(),
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let lock = dir.path().join("state.json.lock");
        let first = FileLock::acquire(&state, &lock).unwrap();
        let err = FileLock::acquire(&state, &lock).unwrap_err();
        assert_eq!(err.code(), "store_locked");
        let msg = err.to_string();
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        assert!(msg.contains("state.json"), "{msg}");
        drop(first);
        FileLock::acquire(&state, &lock).unwrap();
    }
}
