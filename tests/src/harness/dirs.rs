//! A directory per test, for data dirs, configs and process logs.
//!
//! Removed when the test passes; kept when it fails (the guard is dropped
//! while panicking) so the logs of every process it started can be read,
//! and its path is printed next to the failure. Set
//! `UNDERSTUDY_KEEP_TEST_DIRS=1` to keep the directories of passing tests too.

use std::io;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// A temporary directory owned by one test.
#[derive(Debug)]
pub struct TestDir {
    /// The directory; `None` only during drop.
    dir: Option<TempDir>,
    /// The test's name, printed with the path when the directory is kept.
    name: String,
}

impl TestDir {
    /// Creates `$TMPDIR/understudy-{name}-XXXXXX`.
    pub fn new(name: &str) -> io::Result<TestDir> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("understudy-{name}-"))
            .tempdir()?;
        Ok(TestDir {
            dir: Some(dir),
            name: name.to_string(),
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("dir lives until drop").path()
    }

    /// A path inside the directory.
    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.path().join(relative)
    }

    /// Keeps the directory after the guard is gone (a benchmark's logs).
    pub fn keep(mut self) -> PathBuf {
        let dir = self.dir.take().expect("dir lives until drop");
        dir.keep()
    }

    /// Creates (if needed) and returns a subdirectory, e.g. a node's data dir.
    pub fn subdir(&self, relative: impl AsRef<Path>) -> io::Result<PathBuf> {
        let path = self.join(relative);
        std::fs::create_dir_all(&path)?;
        Ok(path)
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let keep_all = std::env::var_os("UNDERSTUDY_KEEP_TEST_DIRS").is_some_and(|v| v == "1");
        if std::thread::panicking() || keep_all {
            let path = dir.keep();
            eprintln!("test {}: files kept in {}", self.name, path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_after_a_passing_test() {
        let dir = TestDir::new("dirs-unit").unwrap();
        let sub = dir.subdir("node-a/data").unwrap();
        assert!(sub.is_dir());
        assert!(dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("understudy-dirs-unit-"));
        let path = dir.path().to_path_buf();
        drop(dir);
        if std::env::var_os("UNDERSTUDY_KEEP_TEST_DIRS").is_none() {
            assert!(!path.exists());
        }
    }
}
