//! What `proxy_commands.rs` compares beyond one command at a time: runs
//! recorded as transcripts (`transcript.rs`) and the families that need
//! them (`families.rs`).

pub mod families;
pub mod transcript;
