//! The replication wire protocol between the active and its standbys.
//!
//! - [`frame`]: the frames (handshake, entries, snapshot, acks).
//! - [`codec`]: length-prefixed framing with a version byte, the sender's
//!   epoch on every frame and a hard size limit (tokio-util codec).
//!
//! The conversation (DESIGN.md, "Replication"):
//! ```text
//! standby                          active
//!    |  ---------- connect ---------> |
//!    |  <-------- Challenge --------- |  cluster, active id, nonce
//!    |  ---------- Hello -----------> |  id, proof, nonce, position, epoch runs
//!    |  <---- Welcome | Refuse ------ |  active's proof (or why not)
//!    |  <-- Truncate? --------------- |  cut a divergent tail (quarantined)
//!    |  <-- SnapshotBegin/Chunk*/End  |  when the log was compacted past it
//!    |  <-- Entries / Commit -------- |  the log, then live entries
//!    |  ----------- Ack ------------> |  durable position (batched)
//! ```
//! A standby drops any frame whose epoch is below the highest it has seen.

pub mod codec;
pub mod frame;

pub use codec::{CodecError, Envelope, ReplCodec};
pub use frame::{Challenge, Frame, Hello, Refusal, RefuseCode, Welcome};
