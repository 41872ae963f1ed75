//! The tick loop: runs `Core::tick` (through the shell) every quarter of
//! `heartbeat_ms`, so failover, sync-set upkeep and membership decisions
//! happen even when no heartbeat arrives — a dead active sends none.
//!
//! Shutdown comes first in a biased `select!`: once it is signalled no new
//! round starts. A round already running finishes, so a write in flight is
//! always reported to the core (and the store never sees half a decision).

use std::sync::Arc;

use tokio::sync::watch;

use super::shell::Shell;

/// Ticks `shell` until `stop` turns true (or its sender is dropped).
pub async fn run(shell: Arc<Shell>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        let period = shell.tick().await;
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            _ = tokio::time::sleep(period) => {}
        }
    }
    tracing::debug!("tick loop stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::core::Core;
    use crate::server::metrics::Metrics;
    use crate::store::{ClusterState, MemoryStore};
    use proto_common::params::ClusterParams;

    #[tokio::test]
    async fn stops_promptly_when_told() {
        let clock = Clock::start();
        let state = ClusterState::new("c", ClusterParams::default());
        let core = Core::take_office(state, clock.now(), clock.unix_ms());
        let shell = Shell::new(
            core,
            Arc::new(MemoryStore::new()),
            clock,
            Arc::new(Metrics::new()),
            "http://127.0.0.1:1".into(),
            crate::election::Term::unbounded(clock),
        );
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(run(shell, rx));
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        tx.send(true).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), task)
            .await
            .expect("the tick loop did not stop")
            .unwrap();
    }
}
