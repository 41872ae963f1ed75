//! The understudy replica: a durable key-value service over a write log,
//! made highly available by an arbiter and log shipping to standbys.
//!
//! Layout:
//! - [`config`]: flags / environment / TOML, validated into `Settings`
//!   (or refused with a `ConfigError`).
//! - [`failpoint`]: `UNDERSTUDY_FAILPOINT`, a fault-injection hook for tests.
//! - [`log`]: the segmented, checksummed write log and group commit.
//! - [`command`], [`state`]: log entry payloads and the key-value state machine.
//! - [`state_machine`]: the seam between the log and what it is applied to.
//! - [`pending`]: a write on its way from the log to the state machine,
//!   and its outcome.
//! - [`commit`]: the commit rule, visibility, answering clients;
//!   [`sync_set`]: the standbys it waits for, and strict mode.
//! - [`snapshot`], [`node_state`]: what else persists across restarts.
//! - [`repl`]: log shipping (sender, receiver, divergence, quarantine).
//! - [`role`]: what this replica is now (one owner), the active's term,
//!   its lease and the guard every answer as the active goes through;
//!   [`heartbeat`], [`handover`]: the loop that feeds it from the arbiter,
//!   and the switchover on SIGTERM.
//! - [`node`]: opening a data directory, replay, the write path; the
//!   errors of starting, storage and promotion; [`unhealthy`]: why a
//!   replica cannot serve now.
//! - [`api`]: the client HTTP API; [`metrics`]: Prometheus metrics.
//! - [`proxy`]: proxy mode, fronting a standalone Redis server.
//! - [`server`]: `serve` / `run(listener, node, shutdown)`.

pub mod api;
pub mod command;
pub mod commit;
pub mod config;
pub mod disk_use;
pub mod failpoint;
pub mod handover;
pub mod heartbeat;
pub mod idle_poll;
pub mod log;
pub mod metrics;
pub mod node;
pub mod node_state;
pub mod pending;
pub mod proxy;
pub mod reinit;
pub mod repl;
pub mod role;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod state_machine;
pub mod sync_set;
pub mod unhealthy;
