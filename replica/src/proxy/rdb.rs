//! RDB snapshots of the stream (DESIGN.md, "Proxy mode"): the data of an
//! upstream at a stream position `(replid, offset)`, as Redis's own RDB
//! bytes (opaque to understudy). A replica keeps its newest one under
//! `rdb/` in its data directory, written durably (temporary file, fsync,
//! rename, fsync of the directory) before anything relies on it. It is
//! what a full resync of this replica's own upstream starts from, when no
//! newer RDB can be fetched from the active's upstream.

use std::io;
use std::path::{Path, PathBuf};

use proto_common::tls::Tls;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::entry::ReplId;
use super::link::{Link, LinkError, Psync};

/// An RDB at a stream position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub replid: ReplId,
    pub offset: u64,
    pub path: PathBuf,
    pub len: u64,
}

/// What went wrong getting or keeping an RDB.
#[derive(Debug, thiserror::Error)]
pub enum RdbError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{addr} answered PSYNC ? -1 with {answer:?} instead of a full resync")]
    NotFull { addr: String, answer: String },
    #[error("writing the RDB snapshot {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{addr} did not answer the replication handshake within {} s", HANDSHAKE_WITHIN.as_secs())]
    Silent { addr: String },
}

/// How long a server may take to answer the replication handshake.
const HANDSHAKE_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

fn name(replid: &ReplId, offset: u64) -> String {
    format!("stream-{offset:020}-{replid}.rdb")
}

/// The newest snapshot in `dir`, if any.
pub fn newest(dir: &Path) -> io::Result<Option<Snapshot>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut best: Option<Snapshot> = None;
    for entry in entries {
        let entry = entry?;
        let file = entry.file_name();
        let Some(rest) = file
            .to_str()
            .and_then(|n| n.strip_prefix("stream-"))
            .and_then(|n| n.strip_suffix(".rdb"))
        else {
            continue;
        };
        let Some((offset, replid)) = rest.split_once('-') else {
            continue;
        };
        let (Ok(offset), Some(replid)) = (offset.parse::<u64>(), ReplId::parse(replid)) else {
            continue;
        };
        if best.as_ref().is_none_or(|b| offset > b.offset) {
            best = Some(Snapshot {
                replid,
                offset,
                path: entry.path(),
                len: entry.metadata()?.len(),
            });
        }
    }
    Ok(best)
}

/// A snapshot being written: call [`Writer::finish`] once the RDB is in.
pub struct Writer {
    dir: PathBuf,
    tmp: PathBuf,
    pub file: tokio::fs::File,
}

impl Writer {
    pub async fn create(dir: &Path) -> Result<Writer, RdbError> {
        let io_err = |source| RdbError::Io {
            path: dir.to_path_buf(),
            source,
        };
        tokio::fs::create_dir_all(dir).await.map_err(io_err)?;
        let tmp = dir.join(format!("incoming-{}.tmp", std::process::id()));
        let file = tokio::fs::File::create(&tmp).await.map_err(io_err)?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            tmp,
            file,
        })
    }

    /// Makes the RDB durable under its position's name. Others stay until
    /// [`keep_only`]: a fetched RDB may turn out not to be on the history
    /// (its server ran effects never committed), and the older one may be
    /// the only one left to fill an upstream from.
    pub async fn finish(mut self, replid: ReplId, offset: u64) -> Result<Snapshot, RdbError> {
        let path = self.dir.join(name(&replid, offset));
        let io_err = |source| RdbError::Io {
            path: path.clone(),
            source,
        };
        self.file.flush().await.map_err(io_err)?;
        self.file.sync_all().await.map_err(io_err)?;
        let len = self.file.metadata().await.map_err(io_err)?.len();
        tokio::fs::rename(&self.tmp, &path).await.map_err(io_err)?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
            .await
            .map_err(|e| io_err(io::Error::other(e)))?
            .map_err(io_err)?;
        Ok(Snapshot {
            replid,
            offset,
            path,
            len,
        })
    }
}

/// Deletes every RDB in `dir` but `keep` (and leftover temporary files).
/// Blocking.
pub fn keep_only(dir: &Path, keep: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        let ours = p.extension().is_some_and(|e| e == "rdb" || e == "tmp");
        if p != keep && ours {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// Keeps `bytes` as the snapshot at `(replid, offset)` unless one at that
/// offset or later is kept already; blocking (fsync), for a thread that
/// may block.
pub fn keep_blocking(dir: &Path, replid: &ReplId, offset: u64, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    if newest(dir)?.is_some_and(|s| s.offset >= offset) {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("logged-{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    let path = dir.join(name(replid, offset));
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p != path && p.extension().is_some_and(|e| e == "rdb") {
            let _ = std::fs::remove_file(&p);
        }
    }
    Ok(())
}

/// Fetches an RDB of the master at `addr` (as a Redis replica that wants
/// only the RDB: `REPLCONF rdb-only 1`, `PSYNC ? -1`) into `dir`.
pub async fn fetch(
    addr: &str,
    password: Option<&str>,
    tls: Option<&Tls>,
    dir: &Path,
) -> Result<Snapshot, RdbError> {
    let mut writer = Writer::create(dir).await?;
    let (replid, offset) = fetch_into(addr, password, tls, &mut writer.file).await?;
    writer.finish(replid, offset).await
}

/// Fetches an RDB of the master at `addr` into an unnamed file in `dir`
/// (`O_TMPFILE`: it is gone once closed, after a crash too), ready to be
/// read from its start; returns its position, the file and its length.
pub async fn fetch_unnamed(
    addr: &str,
    password: Option<&str>,
    tls: Option<&Tls>,
    dir: &Path,
) -> Result<(ReplId, u64, tokio::fs::File, u64), RdbError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |source| RdbError::Io {
        path: dir.to_path_buf(),
        source,
    };
    tokio::fs::create_dir_all(dir).await.map_err(io_err)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
        .map_err(io_err)?;
    let mut file = tokio::fs::File::from_std(file);
    let (replid, offset) = fetch_into(addr, password, tls, &mut file).await?;
    file.flush().await.map_err(io_err)?;
    let len = file.metadata().await.map_err(io_err)?.len();
    file.seek(io::SeekFrom::Start(0)).await.map_err(io_err)?;
    Ok((replid, offset, file, len))
}

/// Fetches an RDB of the server at `addr` (a master, or a replica with a
/// link to its master) into `sink`; returns the stream position it holds
/// the data at. The sink is not flushed.
pub async fn fetch_into<W: tokio::io::AsyncWrite + Unpin>(
    addr: &str,
    password: Option<&str>,
    tls: Option<&Tls>,
    sink: &mut W,
) -> Result<(ReplId, u64), RdbError> {
    // A server answers the handshake at once; one that does not is stopped
    // or hung: look elsewhere soon. (`+FULLRESYNC` itself may come only
    // when the RDB starts: `repl-diskless-sync-delay` later.)
    let started = tokio::time::timeout(HANDSHAKE_WITHIN, async {
        let mut link = Link::connect(addr, tls).await?;
        link.handshake(password, 0, true).await?;
        Ok::<_, LinkError>(link)
    })
    .await
    .map_err(|_| RdbError::Silent {
        addr: addr.to_string(),
    })?;
    let mut link = started?;
    let (replid, offset) = match link.psync(None, 0).await? {
        Psync::FullResync { replid, offset } => (replid, offset),
        other => {
            return Err(RdbError::NotFull {
                addr: addr.to_string(),
                answer: format!("{other:?}"),
            })
        }
    };
    let replid = ReplId::parse(&replid).ok_or_else(|| RdbError::NotFull {
        addr: addr.to_string(),
        answer: format!("+FULLRESYNC {replid} {offset}"),
    })?;
    link.read_rdb(sink).await?;
    Ok((replid, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_newest_snapshot_is_kept_and_found() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(newest(dir.path()).unwrap(), None);
        let a = ReplId::parse(&"a".repeat(40)).unwrap();
        let b = ReplId::parse(&"b".repeat(40)).unwrap();
        for (id, offset, body) in [(&a, 10, &b"old"[..]), (&b, 500, &b"newer"[..])] {
            let mut w = Writer::create(dir.path()).await.unwrap();
            w.file.write_all(body).await.unwrap();
            let snap = w.finish(id.clone(), offset).await.unwrap();
            assert_eq!(snap.len, body.len() as u64);
        }
        let snap = newest(dir.path()).unwrap().unwrap();
        assert_eq!((snap.replid.clone(), snap.offset), (b, 500));
        assert_eq!(std::fs::read(&snap.path).unwrap(), b"newer");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "the older one stays until the newer is known good"
        );
        keep_only(dir.path(), &snap.path).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
