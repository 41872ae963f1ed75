//! A small HTTP/1.1 client for the replica's client API (`/v1/kv`, `/v1/txn`,
//! health and role endpoints), used by `loadgen` and the end-to-end tests.
//!
//! One [`KvClient`] owns one keep-alive connection to one replica. Requests
//! are sequential (`&mut self`), which is exactly what a closed-loop load
//! generator or a test script wants, and keeps the connection handling
//! obvious: no pool, no background reconnects.
//!
//! - A connection that the server closed (idle timeout, `Connection: close`,
//!   restart) is replaced on the next request. When hyper hands the request
//!   back unsent, or when a GET died on a reused connection before any answer,
//!   the request is sent once more on a fresh connection. A PUT that may have
//!   reached the server is never resent: the caller decides, because a
//!   history checker has to know about every attempt.
//! - HTTP errors are answers, not failures: a 404 or a 503 comes back as a
//!   [`KvResponse`] with its status and body. Only transport problems
//!   (connect refused, timeout, connection reset) are a [`ClientError`].
//! - Every request is bounded by a timeout, so a paused (`SIGSTOP`) server
//!   costs a test one timeout, not a hang.
//! - Keys are raw bytes and are percent-encoded into one path segment, so
//!   keys with `/`, spaces or non-ASCII characters reach the server intact.
//!
//! Layout: `kv_client.rs` (the connection and the API calls), `paths.rs`
//! (percent-encoding keys and queries), `error.rs` (transport failures),
//! `response.rs` (answers and the API's JSON shapes), `raw.rs` (requests
//! written byte for byte: chunked bodies, lying headers), `resp.rs` (a
//! minimal Redis client for proxy mode), `resp_raw.rs` (a Redis connection
//! that keeps the bytes: RESP3, push frames, protocol errors), `credentials.rs` (the TLS and
//! token of servers the harness started).

pub mod credentials;
mod error;
mod kv_client;
mod paths;
mod raw;
pub mod resp;
pub mod resp_raw;
mod response;

pub use error::ClientError;
pub use kv_client::{KvClient, DEFAULT_TIMEOUT};
pub use paths::{encode_key, key_path, list_path};
pub use raw::{chunked_request, raw_request};
pub use response::{KvResponse, ListItem, ListPage};
