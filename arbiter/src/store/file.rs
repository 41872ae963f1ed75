//! `FileStore`: the embedded state store, `--store file:PATH`.
//!
//! One JSON file, replaced atomically: write `.NAME.tmp` in the same
//! directory, fsync it, rename it over `NAME`, fsync the directory (without
//! the last step a power loss can bring the old name back). An exclusive
//! `flock` on `NAME.lock` ([`FileLock`]) keeps a second arbiter off the file,
//! so the in-memory copy of the stored version is authoritative and a CAS
//! needs no read. A file that does not parse or validate refuses to load,
//! naming the path and the problem: starting empty would forget the epoch.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::cas::{check_version_rule, version_matches, CasOutcome, StateStore, StoreFuture};
use super::error::StoreError;
use super::file_lock::FileLock;
use super::state::ClusterState;

/// The embedded, single-arbiter [`StateStore`].
#[derive(Clone, Debug)]
pub struct FileStore {
    /// Shared with blocking tasks, which need `'static` data.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The state file.
    path: PathBuf,
    /// Where the next state is written before the rename.
    tmp_path: PathBuf,
    /// The directory, fsynced after each rename.
    dir: PathBuf,
    /// Held for the store's life so no other arbiter uses the file.
    lock: FileLock,
    /// What the file holds (we are its only writer); the mutex also
    /// serialises concurrent CAS calls from this process.
    stored: Mutex<Option<ClusterState>>,
}

impl FileStore {
    /// Opens (without creating) the state at `path`: takes the lock, clears a
    /// temp file left by a crash, and reads the current state so a corrupt
    /// file fails here, at start-up. Blocking; call before serving.
    pub fn open(path: impl AsRef<Path>) -> Result<FileStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| StoreError::Io {
                path: path.clone(),
                op: "parse the store path",
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the store path must name a file, e.g. file:/var/lib/understudy/arbiter.json",
                ),
            })?
            .to_string();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(StoreError::Io {
                path: dir,
                op: "find the store directory",
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            });
        }
        let lock = FileLock::acquire(&path, &dir.join(format!("{name}.lock")))?;
        let tmp_path = dir.join(format!(".{name}.tmp"));
        match std::fs::remove_file(&tmp_path) {
            Ok(()) => {
                tracing::warn!(path = %tmp_path.display(), "removed a temp state file left by an interrupted write")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&tmp_path, "remove stale temp file")(e)),
        }
        let stored = read_state(&path)?;
        Ok(FileStore {
            inner: Arc::new(Inner {
                path,
                tmp_path,
                dir,
                lock,
                stored: Mutex::new(stored),
            }),
        })
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The lock file's path.
    pub fn lock_path(&self) -> &Path {
        self.inner.lock.path()
    }
}

impl Inner {
    fn stored(&self) -> std::sync::MutexGuard<'_, Option<ClusterState>> {
        self.stored.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn load(&self) -> Result<Option<ClusterState>, StoreError> {
        let mut stored = self.stored();
        let on_disk = read_state(&self.path)?;
        *stored = on_disk.clone();
        Ok(on_disk)
    }

    fn compare_and_swap(
        &self,
        expected: Option<u64>,
        new: &ClusterState,
    ) -> Result<CasOutcome, StoreError> {
        check_version_rule(expected, new)?;
        let mut stored = self.stored();
        if !version_matches(stored.as_ref(), expected) {
            return Ok(CasOutcome::Conflict(stored.clone()));
        }
        self.write_atomically(new)?;
        *stored = Some(new.clone());
        Ok(CasOutcome::Written)
    }

    fn write_atomically(&self, state: &ClusterState) -> Result<(), StoreError> {
        let mut bytes = serde_json::to_vec_pretty(state).map_err(|e| StoreError::Corrupt {
            location: self.path.display().to_string(),
            detail: format!("cannot encode the new state: {e}"),
        })?;
        bytes.push(b'\n');
        let mut tmp = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.tmp_path)
            .map_err(StoreError::io(&self.tmp_path, "create temp file"))?;
        tmp.write_all(&bytes)
            .map_err(StoreError::io(&self.tmp_path, "write temp file"))?;
        tmp.sync_all()
            .map_err(StoreError::io(&self.tmp_path, "fsync temp file"))?;
        drop(tmp);
        std::fs::rename(&self.tmp_path, &self.path).map_err(StoreError::io(
            &self.path,
            "rename temp file over state file",
        ))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::io(&self.dir, "fsync directory"))?;
        Ok(())
    }
}

/// Reads and validates the state file; `None` if it does not exist.
fn read_state(path: &Path) -> Result<Option<ClusterState>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(path, "read state file")(e)),
    };
    let corrupt = |detail: String| StoreError::Corrupt {
        location: path.display().to_string(),
        detail,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(corrupt(format!(
            "the file is empty ({} bytes)",
            bytes.len()
        )));
    }
    let state: ClusterState =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not a cluster state: {e}")))?;
    if state.version == 0 {
        return Err(corrupt(
            "version is 0, but every stored state has version ≥ 1".into(),
        ));
    }
    state.validate().map_err(corrupt)?;
    Ok(Some(state))
}

impl StateStore for FileStore {
    fn load(&self) -> StoreFuture<'_, Option<ClusterState>> {
        let inner = self.inner.clone();
        Box::pin(async move { blocking(move || inner.load()).await })
    }

    fn compare_and_swap<'a>(
        &'a self,
        expected: Option<u64>,
        new: &'a ClusterState,
    ) -> StoreFuture<'a, CasOutcome> {
        let inner = self.inner.clone();
        let new = new.clone();
        Box::pin(async move { blocking(move || inner.compare_and_swap(expected, &new)).await })
    }

    fn describe(&self) -> String {
        format!("file:{}", self.inner.path.display())
    }
}

/// Runs file I/O off the async worker threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|join| {
        Err(StoreError::Unavailable {
            detail: format!("the file store's I/O task failed: {join}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{self, sample_state, Harness};

    /// Each fresh store gets its own file in one temp dir.
    struct FileHarness {
        /// Owns the directory for the test's duration.
        dir: tempfile::TempDir,
        /// Makes file names unique.
        next: u32,
    }

    impl Harness for FileHarness {
        type Store = FileStore;

        async fn fresh(&mut self) -> FileStore {
            self.next += 1;
            FileStore::open(self.dir.path().join(format!("state{}.json", self.next))).unwrap()
        }

        async fn reopen(&mut self, store: FileStore) -> FileStore {
            let path = store.path().to_path_buf();
            drop(store);
            FileStore::open(path).unwrap()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn file_store_passes_the_conformance_suite() {
        let mut h = FileHarness {
            dir: tempfile::tempdir().unwrap(),
            next: 0,
        };
        conformance::run_all(&mut h).await;
    }

    fn corrupt_message(contents: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, contents).unwrap();
        let err = FileStore::open(&path).unwrap_err();
        assert_eq!(err.code(), "store_corrupt", "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        msg
    }

    #[test]
    fn corrupt_files_refuse_to_load_and_say_why() {
        let msg = corrupt_message(b"{\"format\": 1, \"version\": ");
        assert!(msg.contains("line 1 column"), "{msg}");
        let msg = corrupt_message(b"");
        assert!(msg.contains("empty"), "{msg}");
        let mut bad = sample_state(2, "x");
        bad.sync_set
            .push(proto_common::NodeId::new("ghost").unwrap());
        let msg = corrupt_message(&serde_json::to_vec(&bad).unwrap());
        assert!(msg.contains("ghost"), "{msg}");
        let zero = sample_state(0, "x");
        let msg = corrupt_message(&serde_json::to_vec(&zero).unwrap());
        assert!(msg.contains("version is 0"), "{msg}");
    }

    #[test]
    fn a_second_store_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let first = FileStore::open(&path).unwrap();
        let err = FileStore::open(&path).unwrap_err();
        assert_eq!(err.code(), "store_locked");
        assert!(err.to_string().contains("--store"), "{err}");
        drop(first);
        FileStore::open(&path).unwrap();
    }

    #[tokio::test]
    async fn writes_are_atomic_renames_and_leftovers_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let store = FileStore::open(&path).unwrap();
        let v1 = sample_state(1, "v1");
        assert_eq!(
            store.compare_and_swap(None, &v1).await.unwrap(),
            CasOutcome::Written
        );
        assert!(
            !dir.path().join(".state.json.tmp").exists(),
            "temp file must be renamed away"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"cluster\": \"conformance-v1\""), "{text}");
        drop(store);
        // A crash between writing and renaming leaves a temp file: the old
        // state stays in force and the leftover is removed.
        std::fs::write(dir.path().join(".state.json.tmp"), b"{half").unwrap();
        let store = FileStore::open(&path).unwrap();
        assert!(!dir.path().join(".state.json.tmp").exists());
        assert_eq!(store.load().await.unwrap(), Some(v1));
    }

    #[test]
    fn a_missing_directory_is_named() {
        let err = FileStore::open("/nonexistent-understudy-dir/state.json").unwrap_err();
        assert_eq!(err.code(), "store_io");
        assert!(
            err.to_string().contains("/nonexistent-understudy-dir"),
            "{err}"
        );
    }
}
