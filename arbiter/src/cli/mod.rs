//! The operator CLI: `arbiter status`, `arbiter switchover`,
//! `arbiter maintenance`, `arbiter params`, talking to a running arbiter
//! over its HTTP API (following a non-leader's redirect to the leader).
//!
//! - [`commands`]: the subcommands' flags and what each does.
//! - [`client`]: `ArbiterClient`, a minimal hyper client (also used by the
//!   crate's HTTP tests).
//! - [`table`]: the human rendering of `GET /v1/status`.
//! - [`error`]: `CliError`, with stable codes.

pub mod client;
pub mod commands;
pub mod error;
pub mod table;

pub use client::ArbiterClient;
pub use commands::OperatorCommand;
pub use error::CliError;
pub use table::render_status;
