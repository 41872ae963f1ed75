//! Prepares the next segment file in the background: created, zero-filled to
//! the segment size and fsynced, so rolling to a new segment never stalls a
//! commit on block allocation.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;

use super::segment::zero_range;

/// Hands out zero-filled files, one prepared ahead.
pub struct Preallocator {
    /// Rendezvous channel: the thread prepares exactly one file ahead and
    /// blocks until it is taken.
    ready: Receiver<io::Result<(File, PathBuf)>>,
}

impl Preallocator {
    /// Starts the background thread for files of `size` bytes in `dir`.
    /// Leftover files from a previous run are removed first.
    pub fn start(dir: &Path, size: u64) -> io::Result<Preallocator> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with("prealloc-") {
                match std::fs::remove_file(entry.path()) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        let (tx, rx) = mpsc::sync_channel(0);
        let dir = dir.to_path_buf();
        // Unique per instance: a closed log's thread may still be finishing
        // its file while a reopened log starts its own.
        let instance = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("prealloc-{}-{instance}", std::process::id());
        thread::Builder::new()
            .name("log-prealloc".into())
            .spawn(move || prepare_loop(&dir, &prefix, size, tx))?;
        Ok(Preallocator { ready: rx })
    }

    /// The next zero-filled file and its temporary path. Blocks only if the
    /// background thread has not finished it yet.
    pub fn take(&self) -> io::Result<(File, PathBuf)> {
        self.ready
            .recv()
            .map_err(|_| io::Error::other("segment preallocation thread stopped unexpectedly"))?
    }
}

static INSTANCES: AtomicU64 = AtomicU64::new(0);

fn prepare_loop(dir: &Path, prefix: &str, size: u64, tx: SyncSender<io::Result<(File, PathBuf)>>) {
    for n in 0u64.. {
        let path = dir.join(format!("{prefix}-{n}.tmp"));
        let made = prepare(&path, size).map(|f| (f, path.clone()));
        let failed = made.is_err();
        if tx.send(made).is_err() {
            // The log was closed; remove the unused file.
            let _ = std::fs::remove_file(&path);
            return;
        }
        if failed {
            return;
        }
    }
}

fn prepare(path: &Path, size: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    zero_range(&file, 0, size)?;
    file.sync_all()?;
    Ok(file)
}
