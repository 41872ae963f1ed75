//! What it takes to reach a server the harness started: its TLS client
//! configuration and the token its data API asks for.
//!
//! The harness remembers both per `host:port` when it starts a cluster
//! with TLS or a token, so every helper that is handed only a URL (status
//! polls, waits, checkers) reaches those servers like any other; a test
//! that wants to be refused builds its client without them
//! ([`super::KvClient::bare`]).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

use proto_common::tls::Tls;

/// A server's TLS (for `https://`) and the token to send.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub tls: Option<Arc<Tls>>,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<String>,
}

static KNOWN: LazyLock<RwLock<HashMap<String, Credentials>>> = LazyLock::new(Default::default);

/// Remembers how to reach `authority` (`host:port`).
pub fn remember(authority: &str, credentials: Credentials) {
    KNOWN
        .write()
        .expect("credentials lock")
        .insert(authority.to_string(), credentials);
}

/// How to reach `authority`, if the harness said.
pub fn for_authority(authority: &str) -> Option<Credentials> {
    KNOWN
        .read()
        .expect("credentials lock")
        .get(authority)
        .cloned()
}
