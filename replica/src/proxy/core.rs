//! What a proxy-mode replica holds besides its node: the settings, the
//! upstream machine (with the deadline index), the command table, whether
//! the upstream must be resynced from the active's, and where the active's
//! RESP port is (for forwarding).

use std::sync::Arc;

use parking_lot::Mutex;

use super::config::ProxySettings;
use super::machine::{UpstreamAddr, UpstreamMachine};
use super::mux::Mux;
use super::table::CommandTable;

/// A proxy-mode replica's shared parts.
pub struct ProxyCore {
    pub settings: ProxySettings,
    pub machine: Arc<UpstreamMachine>,
    /// The shared, pipelined connection for reads, started by the first
    /// session on the runtime that serves clients.
    reads: std::sync::OnceLock<Mux>,
    /// Read from the upstream at start.
    pub table: CommandTable,
    /// Why the upstream must be filled from the active's (a full resync),
    /// if it must; cleared by the resync.
    resync: Mutex<Option<String>>,
    /// The active's RESP address, learned in the replication handshake.
    active_resp: Mutex<Option<String>>,
    /// A new replica: its first follow fills the upstream from the
    /// active's (REPLICAOF) instead of replaying the whole log.
    fresh: std::sync::atomic::AtomicBool,
}

impl ProxyCore {
    pub fn new(
        settings: ProxySettings,
        machine: Arc<UpstreamMachine>,
        table: CommandTable,
        resync: Option<String>,
        fresh: bool,
    ) -> ProxyCore {
        ProxyCore {
            reads: std::sync::OnceLock::new(),
            settings,
            machine,
            table,
            resync: Mutex::new(resync),
            active_resp: Mutex::new(None),
            fresh: std::sync::atomic::AtomicBool::new(fresh),
        }
    }

    /// Whether this replica is still new (nothing applied, never led).
    pub fn is_fresh(&self) -> bool {
        self.fresh.load(std::sync::atomic::Ordering::SeqCst)
            && self.machine.shared_applied() == proto_common::Position::ZERO
    }

    /// It led, or was filled: no longer new.
    pub fn not_fresh(&self) {
        self.fresh.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// The shared connection for reads (started on first use, on the
    /// calling runtime).
    pub fn reads(&self) -> &Mux {
        self.reads.get_or_init(|| Mux::start(self.upstream()))
    }

    pub fn upstream(&self) -> UpstreamAddr {
        UpstreamAddr::of(&self.settings)
    }

    /// Why a full resync is due, if it is: decided at start or by a
    /// refusal of the active, or seen by the apply loop (an upstream that
    /// is not where the log left it).
    pub fn needs_resync(&self) -> Option<String> {
        self.resync
            .lock()
            .clone()
            .or_else(|| self.machine.shared.diverged.lock().clone())
    }

    pub fn require_resync(&self, why: String) {
        tracing::warn!(reason = %why, "the upstream will be resynced from the active's");
        *self.resync.lock() = Some(why);
    }

    pub fn resynced(&self) {
        *self.resync.lock() = None;
        self.not_fresh();
    }

    pub fn set_active_resp(&self, addr: Option<String>) {
        *self.active_resp.lock() = addr;
    }

    pub fn active_resp(&self) -> Option<String> {
        self.active_resp.lock().clone()
    }
}
