//! What this replica is now: a standby following an active, the active in
//! a term with its lease, or handing over. One owner holds it
//! ([`Roles`]); everything else reads it or answers through its guard.
//!
//! - [`machine`]: the transitions, as a state machine without I/O.
//! - [`roles`]: the owner: the machine behind a lock, its decisions
//!   published on a `watch` channel, and the guards.
//! - [`term`]: a term as the active, its lease, and [`ActiveGuard`], the
//!   value every answer of an active is given through.
//! - [`lease`]: the lease's deadline on a suspend-proof clock.
//! - [`lapse`]: answering waiting writes when the lease runs out.

pub mod lapse;
pub mod lease;
pub mod machine;
pub mod roles;
pub mod term;

pub use machine::{Action, RoleState};
pub use roles::{RoleView, Roles};
pub use term::{ActiveGuard, NotActive, Term};
