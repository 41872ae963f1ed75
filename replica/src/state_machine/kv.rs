//! The embedded key-value store as a [`StateMachine`]: committed entries
//! are applied to the in-memory map on the committing thread, so a reader
//! sees an entry as soon as its writer is answered.

use std::sync::Arc;

use parking_lot::RwLock;
use proto_common::Position;
use tokio::sync::watch;

use super::{Answerer, StateMachine};
use crate::metrics::Metrics;
use crate::pending::PendingEntry;
use crate::state::KvState;

/// The embedded store behind the log.
pub struct KvMachine {
    /// The map readers read (shared with the API, snapshots and rewinds).
    kv: Arc<RwLock<KvState>>,
    /// Last applied position, for `X-Min-Version` waiters.
    applied_tx: watch::Sender<Position>,
    answerer: Answerer,
    metrics: Arc<Metrics>,
}

impl KvMachine {
    pub fn new(kv: Arc<RwLock<KvState>>, answerer: Answerer, metrics: Arc<Metrics>) -> KvMachine {
        let (applied_tx, _) = watch::channel(kv.read().applied());
        KvMachine {
            kv,
            applied_tx,
            answerer,
            metrics,
        }
    }
}

impl KvMachine {
    /// The value at `key`, as a reader sees it now.
    pub fn read(&self, key: &[u8]) -> Option<bytes::Bytes> {
        self.kv.read().get(key).map(|e| e.value.clone())
    }
}

impl StateMachine for KvMachine {
    fn apply(&self, entries: Vec<PendingEntry>) {
        let mut answers = Vec::new();
        let applied = {
            let mut kv = self.kv.write();
            for p in entries {
                let outcome = kv.apply(p.position, &p.command);
                if let Some(r) = p.responder {
                    answers.push((r, p.position, outcome, p.received));
                }
            }
            kv.applied()
        };
        self.metrics.applied_index.set(applied.index.0 as i64);
        self.applied_tx.send_replace(applied);
        self.answerer.answer(answers);
    }

    fn applied(&self) -> Position {
        self.kv.read().applied()
    }

    fn watch_applied(&self) -> watch::Receiver<Position> {
        self.applied_tx.subscribe()
    }

    fn reset(&self, applied: Position) {
        debug_assert_eq!(self.kv.read().applied(), applied);
        self.metrics.applied_index.set(applied.index.0 as i64);
        self.applied_tx.send_replace(applied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::conformance;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        conformance::run(|| {
            let metrics = Arc::new(Metrics::new());
            let kv = Arc::new(RwLock::new(KvState::default()));
            let machine = KvMachine::new(kv, Answerer::new(metrics.clone()), metrics);
            async move { conformance::Subject::kv(Arc::new(machine)) }
        })
        .await;
    }
}
