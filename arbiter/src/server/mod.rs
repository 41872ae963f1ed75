//! The arbiter's I/O shell: the HTTP API, the tick loop and the store
//! driver around the I/O-free decision core.
//!
//! ```text
//! replicas ── POST /v1/heartbeat ─┐            ┌─ following: 307 to the leader
//! operators ─ POST /v1/switchover ┼─▶ routes ─▶ Office
//!             POST /v1/maintenance│            └─ leading: Shell ─▶ Core (tokio mutex)
//!             POST /v1/params ────┘                      │  └─▶ StateStore CAS (own task)
//! ticker ── every heartbeat_ms/4 ────────────────────────┘
//! ```
//!
//! - [`run`](mod@run): `run(listener, settings, shutdown)` and friends.
//! - `http`: the advertised URL, and serving the API on a listener (TLS
//!   when configured) until shutdown.
//! - `elected`: the etcd mode — campaign, serve each won term, step down.
//! - `tenure`: one term served — load, a fresh `Core::take_office`, tick,
//!   tear down in a safe order.
//! - [`office`]: what the routes see — leading (a shell) or following (a
//!   redirect to the leader, the stored state for status).
//! - `bootstrap`: load or create the stored state; stored parameters win.
//! - [`shell`]: `Shell`, the core behind a lock plus the write protocol,
//!   bound to one leadership term; `operations`: its operator requests
//!   (switchover, maintenance, parameters).
//! - `ticker`: the tick loop (shutdown first in a biased select).
//! - `routes`: the axum router and handlers; `request`: token and body
//!   checks; `api_error`: JSON error answers.
//! - [`metrics`]: Prometheus metrics; `dashboard`: the `GET /` page.

mod api_error;
mod bootstrap;
mod dashboard;
mod elected;
mod http;
pub mod metrics;
pub mod office;
mod operations;
mod request;
mod routes;
pub mod run;
pub mod shell;
mod tenure;
mod ticker;

pub use api_error::ApiError;
pub use bootstrap::{describe_params, ignored_params};
pub use request::MAX_BODY_BYTES;
pub use run::{run, run_with_store, serve};
pub use shell::Shell;
