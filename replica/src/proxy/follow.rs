//! `SYNC` and `PSYNC` from a client (`redis-cli --replica`, `redis-cli
//! --rdb`, a redis-server made a replica of the cluster), answered as a
//! Redis master would, with committed effects only (DESIGN.md, "Proxy
//! mode"). A client never becomes a replica of an upstream itself: that
//! would show it effects before they are committed.
//!
//! The data comes as an RDB fetched from the active's upstream once its
//! position is committed (after `REPLCONF rdb-only 1`, `redis-cli --rdb`'s
//! backup, nothing else follows), then the committed stream from there, as
//! a standby's own upstream is fed (`feed.rs`). `PSYNC id offset+1`
//! continues where the committed history allows. A follower ends with its
//! session's role, at `CLIENT KILL TYPE replica`, and, after `PSYNC`, when
//! the stream's id changes (it reconnects and learns the new one, as a
//! Redis replica does after a failover).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::core::ProxyCore;
use super::entry::ReplId;
use super::feed::{send_rdb, FeedError, Link, Source};
use super::history::Continuation;
use super::request::Request;
use crate::node::Node;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// `SYNC`: the RDB as `$<len>`, then the stream; no id, no offset.
    Sync,
    /// `PSYNC id offset+1` (`?` and `-1`: a full resync).
    Psync { replid: Option<ReplId>, offset: u64 },
}

impl Ask {
    /// The request `SYNC` or `PSYNC …` as asked.
    pub fn of(req: &Request) -> Ask {
        if !req.arg_is(0, "psync") {
            return Ask::Sync;
        }
        let arg = |i: usize| req.argv.get(i).and_then(|a| std::str::from_utf8(a).ok());
        let replid = arg(1).and_then(ReplId::parse);
        match (replid, arg(2).and_then(|o| o.parse::<u64>().ok())) {
            (Some(replid), Some(next)) if next >= 1 => Ask::Psync {
                replid: Some(replid),
                offset: next - 1,
            },
            _ => Ask::Psync {
                replid: None,
                offset: 0,
            },
        }
    }
}

/// Serves the follower on the client's connection until it leaves, `stop`
/// (its session's role ended), or `CLIENT KILL TYPE replica`.
pub async fn serve<R, W>(
    core: &ProxyCore,
    node: &Node,
    ask: Ask,
    rdb_only: bool,
    mut read: R,
    mut write: W,
    stop: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // The active fetches from its own upstream; a standby serving it (with
    // local reads) from the active's.
    let from = match node.roles.writer() {
        Ok(_) => Some(core.settings.upstream.clone()),
        Err(_) => core.feed.active_upstream(),
    };
    let link = Link::new(
        core.feed.clone(),
        core.machine.clone(),
        core.settings.upstream_password.clone(),
        node.settings.tls.clone(),
        node.data_dir(),
    );
    let killed = core.follower_scope();
    let served = follow(&link, ask, rdb_only, from, &mut write);
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = killed.cancelled() => {}
        // What a follower sends (`REPLCONF ACK`) is of no use here; its
        // end is the client leaving.
        _ = drain(&mut read) => {}
        r = served => if let Err(e) = r {
            tracing::info!(error = %e, "a client that followed the stream was cut off");
        },
    }
    let _ = write.flush().await;
    let _ = write.shutdown().await;
}

async fn follow<W: AsyncWrite + Unpin>(
    link: &Link,
    ask: Ask,
    rdb_only: bool,
    from: Option<String>,
    write: &mut W,
) -> Result<(), FeedError> {
    if let (
        Ask::Psync {
            replid: Some(id),
            offset,
        },
        false,
    ) = (&ask, rdb_only)
    {
        // Anything else (even an offset beyond what is committed, which no
        // follower of the committed stream can hold) gets a full resync.
        if let Continuation::From { mut index, current } = link.continuation(id, *offset) {
            write
                .write_all(format!("+CONTINUE {current}\r\n").as_bytes())
                .await?;
            let mut sent = *offset;
            return link
                .stream(write, &mut index, &mut sent, Some(&current))
                .await;
        }
    }
    let source = Source::Client { or_kept: !rdb_only };
    let Some(mut chosen) = link.choose(from.as_deref(), source).await? else {
        write
            .write_all(
                b"-ERR no RDB of the committed data can be had right now (the active's \
                  upstream cannot be reached, or its position was not committed in time); \
                  retry\r\n",
            )
            .await?;
        return Ok(());
    };
    let psync = matches!(ask, Ask::Psync { .. });
    send_rdb(write, &mut chosen, psync).await?;
    tracing::info!(replid = %chosen.replid, offset = chosen.offset, bytes = chosen.len,
        rdb_only, "an RDB sent to a client that asked for it");
    write.flush().await?;
    if rdb_only {
        return Ok(());
    }
    let (mut index, mut sent, id) = chosen.start.clone();
    // After `SYNC` the follower keeps no id: the stream goes on across a
    // promotion (offsets continue).
    let current = psync.then_some(&id);
    link.stream(write, &mut index, &mut sent, current).await
}

/// Reads until the client leaves.
async fn drain<R: AsyncRead + Unpin>(read: &mut R) {
    let mut buf = vec![0u8; 4096];
    while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_client_asks_for() {
        let id = "a".repeat(40);
        assert_eq!(Ask::of(&Request::new(["SYNC"])), Ask::Sync);
        assert_eq!(
            Ask::of(&Request::new(["PSYNC", "?", "-1"])),
            Ask::Psync {
                replid: None,
                offset: 0
            }
        );
        assert_eq!(
            Ask::of(&Request::new(["psync", &id, "101"])),
            Ask::Psync {
                replid: ReplId::parse(&id),
                offset: 100
            }
        );
        // An offset that cannot be continued from: a full resync.
        assert_eq!(
            Ask::of(&Request::new(["PSYNC", &id, "0"])),
            Ask::Psync {
                replid: None,
                offset: 0
            }
        );
    }
}
