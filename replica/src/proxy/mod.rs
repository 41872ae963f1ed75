//! Proxy mode (DESIGN.md, "Proxy mode (first form)"):
//! the replica fronts a standalone Redis-compatible server, its
//! *upstream*, and serves Redis clients on a RESP port. Writes are made
//! deterministic, logged, replicated and committed like any entry, then
//! applied to every replica's upstream by its apply loop; reads are served
//! by the upstream, which holds committed data only.
//!
//! - [`config`]: the proxy-mode settings.
//! - [`resp`]: the RESP2 request decoder (with limits) and replies.
//! - [`upstream`]: a connection to a Redis-compatible server.
//! - [`table`]: the upstream's own command table (`COMMAND`).
//! - [`rewrite`]: deterministic entries (relative expiries made absolute).
//! - [`expiry`]: deadlines decided by the active, the deadline index.
//! - [`machine`]: the upstream as a `StateMachine`: the apply loop and the
//!   applied marker.
//! - [`start`]: the checks at start and the recovery decision.
//! - [`resync`]: a full resync through `REPLICAOF`.
//! - [`core`]: what a proxy-mode replica shares.
//! - [`mux`]: the one pipelined upstream connection all sessions read on.
//! - [`client`], [`session`], [`dispatch`], [`info`]: one client
//!   connection's state and its loop; what happens to each command;
//!   `INFO` and `ROLE`.
//! - [`server`]: the RESP listener and the active's expiry task.
//!
//! Deliberately left out: RESP3, client-side caching, scripts, `WATCH`,
//! blocking commands and pub/sub (refused, each with the alternative),
//! and compacting the log (the log is the only durable copy while the
//! upstreams run without persistence).

pub mod client;
pub mod config;
pub mod core;
pub mod dispatch;
pub mod entry;
pub mod expiry;
pub mod frame;
pub mod gate;
pub mod history;
pub mod info;
pub mod link;
pub mod machine;
pub mod mux;
pub mod rdb;
pub mod request;
pub mod resp;
pub mod resync;
pub mod rewrite;
pub mod server;
pub mod session;
pub mod start;
pub mod stream;
pub mod table;
pub mod upstream;

pub use config::ProxySettings;
pub use core::ProxyCore;
