//! A Redis client connection's state: who it is, what it may do, which
//! database it selected, the `MULTI` block it is queueing, and its
//! connection to the active when this replica forwards. The connection's
//! loop is in `session.rs`; the commands it sends on go through
//! `dispatch.rs`; both read and change this state.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use proto_common::auth::Grant;

use super::core::ProxyCore;
use super::upstream::Conn;
use crate::node::Node;
use crate::repl::Replication;

/// A client's `MULTI` block being queued.
#[derive(Debug, Default)]
pub struct Multi {
    pub queued: Vec<Vec<Bytes>>,
    /// A command refused while queueing: `EXEC` then aborts.
    pub refused: bool,
}

/// One client connection.
pub struct Session {
    pub core: Arc<ProxyCore>,
    pub node: Arc<Node>,
    pub repl: Arc<Replication>,
    /// What the client's `AUTH` allows; `None` until it authenticates.
    pub grant: Option<Grant>,
    /// The client's address, for the log.
    pub peer: SocketAddr,
    /// The database the client selected.
    pub db: u8,
    pub multi: Option<Multi>,
    /// To the active's RESP port (a standby forwarding), its address and
    /// the database selected on it.
    pub forward: Option<(String, Conn, u8)>,
}

impl Session {
    pub fn new(
        core: Arc<ProxyCore>,
        node: Arc<Node>,
        repl: Arc<Replication>,
        peer: SocketAddr,
    ) -> Session {
        let open = !node.settings.access.required() && core.settings.client_password.is_none();
        Session {
            core,
            node,
            repl,
            grant: open.then_some(Grant::ReadWrite),
            peer,
            db: 0,
            multi: None,
            forward: None,
        }
    }
}
