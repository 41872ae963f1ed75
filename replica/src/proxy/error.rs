//! Proxy mode's errors at its boundaries, in one module that imports none
//! of the modules raising them (the node's `StartError` holds two of them,
//! and the node is what most of those modules use).

use std::time::Duration;

use super::frame::FrameError;
use super::link::LinkError;
use super::rdb::RdbError;
use super::stream::HistoryError;

/// Why a call to the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{why}")]
    Connect { addr: String, why: String },
    #[error("{addr} refused the password: {reply}")]
    Password { addr: String, reply: String },
    #[error("sending to {addr}: {why}")]
    Send { addr: String, why: String },
    #[error("reading from {addr}: {why}")]
    Read { addr: String, why: String },
    #[error("{addr} closed the connection")]
    Closed { addr: String },
    #[error("{addr} did not answer within {within:?}")]
    Timeout { addr: String, within: Duration },
}

/// Why the upstream's command table cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(
        "cannot read the command table of {addr} (`COMMAND`): {why}; is it a Redis 7 compatible \
         server?"
    )]
    Malformed { addr: String, why: String },
}

/// Why a role change could not be carried out on the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the upstream: {0}")]
    Call(#[from] UpstreamError),
    #[error("the upstream {addr}: {why}")]
    Upstream { addr: String, why: String },
    #[error(
        "the upstream did not catch up within {secs} s (it is at {at:?}, the log committed {want})"
    )]
    Behind {
        secs: u64,
        at: Option<u64>,
        want: u64,
    },
    #[error("the log did not commit its entries within {0} s")]
    NotCommitted(u64),
    #[error(transparent)]
    Tap(#[from] TapError),
}

/// Why the tap stopped.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Rdb(#[from] RdbError),
    #[error(
        "the upstream cannot continue the stream this replica logged ({why}): it lost data \
         (restarted without persistence, flushed by someone else, or its backlog is too small); \
         this replica steps down and its upstream is refilled from the new active"
    )]
    LostHistory { why: String },
    #[error("the upstream's stream is not RESP: {0}")]
    Garbled(#[from] FrameError),
    #[error("the log refused the stream: {0}")]
    Log(String),
    #[error("the term ended")]
    TermEnded,
}

/// Why proxy mode cannot start; each message names the upstream and the
/// fix.
#[derive(Debug, thiserror::Error)]
pub enum ProxyStartError {
    #[error("{0}; start the upstream there, or point --upstream at it")]
    Unreachable(UpstreamError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    CommandTable(#[from] TableError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(
        "the upstream {addr} runs Redis {version}; proxy mode needs Redis 7.0 or later (or a \
         server compatible with it)"
    )]
    TooOld { addr: String, version: String },
    #[error(
        "the upstream {addr} is a replica of {master}, not of this replica: something else \
         writes it. Run REPLICAOF NO ONE on it (or point --upstream at the right server)"
    )]
    FollowsAnother { addr: String, master: String },
    #[error("the upstream {addr} did not say its role (INFO replication)")]
    NoRole { addr: String },
    #[error(
        "the upstream {addr} holds {keys} keys, but this replica's log has no history of them: \
         serving them would make replicas differ, and following a cluster would replace them. \
         To make this data the first state of a new cluster, start this replica alone with \
         --adopt-upstream-data; to join an existing cluster, empty it (FLUSHALL)"
    )]
    UnknownData { addr: String, keys: u64 },
    #[error(
        "--adopt-upstream-data is for a new cluster only, but this replica's log already holds \
         entries; remove the flag"
    )]
    AdoptWithHistory,
    #[error("cannot write {}: {source}", .path.display())]
    FeedSecret {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot bind the feed's loopback port: {0}")]
    FeedPort(std::io::Error),
    #[error(
        "the upstream's socket {}: {why}; set unixsocket on the redis-server (or leave \
         upstream_socket out)", .path.display()
    )]
    Socket {
        path: std::path::PathBuf,
        why: String,
    },
    #[error(
        "the upstream's socket {} reaches another redis-server than --upstream {addr} \
         (their run_id differ); point both at the same one", .path.display()
    )]
    OtherServer {
        path: std::path::PathBuf,
        addr: String,
    },
    #[error(transparent)]
    Follow(#[from] ControlError),
}

/// Why the RESP thread could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum RespThreadError {
    #[error("moving the RESP listener to its thread: {0}")]
    Listener(std::io::Error),
    #[error("cannot start the RESP runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start the RESP thread: {0}")]
    Thread(std::io::Error),
    #[error("the RESP thread ended before it started serving")]
    Ended,
    /// `resp_cpus` could not be applied (the message names the CPUs).
    #[error("{0}")]
    Pin(String),
}
