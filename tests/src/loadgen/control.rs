//! Stopping and pausing a load from outside, for tests and benchmarks that
//! run loadgen in the background while they inject faults.
//!
//! A client looks at the control only *between* operations: an operation
//! that has started always ends by its own rules (answer, final error or
//! give-up), so a history never holds an operation cut short by the
//! harness. Pausing therefore quiesces the load: once every client waits
//! at the pause point ([`LoadControl::idle_clients`]) nothing is in flight,
//! and a test can compare replicas that stand still.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How often a paused client looks whether it may go on.
const PAUSE_POLL: Duration = Duration::from_millis(2);

/// Shared by the clients of one run and whoever steers it.
#[derive(Debug, Default)]
pub struct LoadControl {
    /// Set once: clients send nothing more and end.
    stop: AtomicBool,
    /// While set, clients wait before their next operation.
    pause: AtomicBool,
    /// Clients waiting at the pause point right now.
    idle: AtomicUsize,
    /// Operations completed so far (their history lines already sent).
    completed: AtomicU64,
}

impl LoadControl {
    pub fn new() -> LoadControl {
        LoadControl::default()
    }

    /// Ends the run: every client stops after its current operation.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Clients wait before their next operation until [`LoadControl::resume`].
    pub fn pause(&self) {
        self.pause.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.pause.store(false, Ordering::SeqCst);
    }

    /// Clients waiting at the pause point.
    pub fn idle_clients(&self) -> usize {
        self.idle.load(Ordering::SeqCst)
    }

    /// Operations completed so far, all clients.
    pub fn completed_ops(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }

    /// Called by a client after an operation (and its history line).
    pub(crate) fn completed(&self) {
        self.completed.fetch_add(1, Ordering::SeqCst);
    }

    /// Called by a client before an operation: returns at once unless
    /// paused; `false` means stop.
    pub(crate) async fn wait_while_paused(&self) -> bool {
        if self.is_stopped() {
            return false;
        }
        if !self.pause.load(Ordering::SeqCst) {
            return true;
        }
        self.idle.fetch_add(1, Ordering::SeqCst);
        let go_on = loop {
            if self.is_stopped() {
                break false;
            }
            if !self.pause.load(Ordering::SeqCst) {
                break true;
            }
            tokio::time::sleep(PAUSE_POLL).await;
        };
        self.idle.fetch_sub(1, Ordering::SeqCst);
        go_on
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn pause_holds_clients_until_resume_or_stop() {
        let control = Arc::new(LoadControl::new());
        assert!(control.wait_while_paused().await);
        control.pause();
        let waiting = tokio::spawn({
            let control = control.clone();
            async move { control.wait_while_paused().await }
        });
        while control.idle_clients() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        control.resume();
        assert!(waiting.await.unwrap());
        assert_eq!(control.idle_clients(), 0);

        control.pause();
        let waiting = tokio::spawn({
            let control = control.clone();
            async move { control.wait_while_paused().await }
        });
        control.stop();
        assert!(!waiting.await.unwrap());
        control.completed();
        assert_eq!(control.completed_ops(), 1);
    }
}
