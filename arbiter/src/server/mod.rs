//! The arbiter's I/O shell: the HTTP API, the tick loop and the store
//! driver around the I/O-free decision core.
//!
//! ```text
//! replicas ── POST /v1/heartbeat ─┐
//! operators ─ POST /v1/switchover ┼─▶ routes ─▶ Shell ─▶ Core (tokio mutex)
//!             POST /v1/maintenance┘               │  └─▶ StateStore CAS (own task)
//! ticker ── every heartbeat_ms/4 ─────────────────┘
//! ```
//!
//! - [`run`](mod@run): `run(listener, settings, shutdown)` and friends.
//! - `bootstrap`: load or create the stored state; stored parameters win.
//! - [`shell`]: `Shell`, the core behind a lock plus the write protocol.
//! - `ticker`: the tick loop (shutdown first in a biased select).
//! - `routes`: the axum router and handlers; `request`: token and body
//!   checks; `api_error`: JSON error answers.
//! - [`metrics`]: Prometheus metrics; `dashboard`: the `GET /` page.
//!
//! Deliberately left out here: TLS (front the API with a TLS proxy for
//! now), arbiter leader election (the etcd store's job: a newly elected
//! leader builds a fresh `Shell` over `Core::take_office`), and
//! `POST /v1/params`.

mod api_error;
mod bootstrap;
mod dashboard;
pub mod metrics;
mod request;
mod routes;
pub mod run;
pub mod shell;
mod ticker;

pub use api_error::ApiError;
pub use bootstrap::{describe_params, ignored_params};
pub use request::MAX_BODY_BYTES;
pub use run::{run, run_with_store, serve};
pub use shell::Shell;
