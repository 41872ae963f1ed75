//! Proxy mode (DESIGN.md, "Proxy mode"): the replica fronts a standalone
//! Redis-compatible server, its *upstream*, and serves Redis clients on a
//! RESP port. The log holds the upstream's own replication stream: the
//! active reads it as a Redis replica of its upstream (the tap) and logs
//! it; every reply to a client waits until the stream is committed up to
//! the point that reply reveals (the gate); each standby's upstream is a
//! Redis replica of its own replica process, fed committed entries only
//! (the feed).
//!
//! - [`config`]: the proxy-mode settings.
//! - [`request`], [`frame`]: client requests read with Redis's limits;
//!   where a reply frame ends (RESP2 and RESP3).
//! - [`upstream`], [`table`]: an administrative connection to the upstream;
//!   its command table.
//! - [`entry`], [`history`], [`stream`]: what a log entry holds; the
//!   committed history of the stream (psync2's rule); the stream as a
//!   state machine.
//! - [`link`], [`tap`]: the replica's side of Redis's replication
//!   protocol; the active's tap.
//! - [`feed`], [`rdb`]: the master's side, served to a standby's own
//!   upstream; RDB snapshots.
//! - [`follow`]: `SYNC`/`PSYNC` from a client, served the committed
//!   stream as the feed serves it.
//! - [`checkpoint`], [`compact`]: an RDB at a committed position with the
//!   history before it, which lets the log's older segments go; taking one.
//! - [`gate`], [`probe`], [`relay`], [`lane`]: the reply gate; the offset
//!   that covers a reply; one client's session; the connection sessions
//!   share until they need their own.
//! - [`core`], [`control`], [`start`]: what a proxy-mode replica shares;
//!   what a role change does to the upstream; the checks at start.
//! - [`liveness`]: an upstream that leaves a `PING` unanswered too long
//!   is this replica's failure.
//! - [`report`]: the upstream's numbers (memory, clients, loading, the
//!   tap's lag) as metrics.
//! - [`server`]: the RESP listener.
//! - [`error`]: the errors at proxy mode's boundaries.
//!
//! Deliberately left out: pub/sub messages surviving a failover (as in
//! Redis, they are not durable).

pub mod checkpoint;
pub mod compact;
pub mod config;
pub mod control;
pub mod core;
pub mod entry;
pub mod error;
pub mod feed;
pub mod follow;
pub mod frame;
pub mod gate;
pub mod history;
pub mod lane;
pub mod link;
pub mod liveness;
pub mod probe;
pub mod rdb;
pub mod relay;
pub mod report;
pub mod request;
pub mod server;
pub mod start;
pub mod stream;
pub mod table;
pub mod tap;
pub mod upstream;

pub use config::ProxySettings;
pub use core::ProxyCore;
