//! Log shipping from the active to its standbys (DESIGN.md, "Replication").
//!
//! - [`error`]: why a replication connection ended ([`ReplError`]).
//! - [`sender`]: the active's side of one standby connection.
//! - [`outbox`]: its outgoing stream, which the log's writer feeds live.
//! - [`receiver`]: the standby's side, following the active.
//! - [`divergence`]: the common prefix of two logs and the plan that follows.
//! - [`cut`]: a standby cutting its divergent tail when the active says so.
//! - [`quarantine`]: where a cut divergent tail is kept.
//! - [`progress`]: the active's view of each standby (lag, acks).
//! - [`rewind`]: un-applying a cut tail (async mode only).
//! - [`snapshot_send`]: the active's state encoded straight onto the wire.
//! - [`snapshot_install`]: a streamed snapshot written and decoded at once.
//! - [`replication`]: the role switches (promote, follow, deposed) that
//!   start and stop the tasks above.

pub mod cut;
pub mod divergence;
pub mod error;
pub mod outbox;
pub mod progress;
pub mod quarantine;
pub mod receiver;
pub mod replication;
pub mod rewind;
pub mod sender;
pub mod snapshot_install;
pub mod snapshot_send;
pub mod transport;

pub use error::{ReplError, Violation};
pub use replication::Replication;
