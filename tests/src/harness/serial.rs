//! One failover test at a time per test binary.
//!
//! Tests in one binary run on parallel threads. Failover tests each start
//! an arbiter, two or three replicas and a 64-client load, and measure
//! leases of a few hundred milliseconds; two of them at once on a small
//! machine starve each other's heartbeats and fail over for the wrong
//! reason. Each such test holds [`serial`]'s guard for its whole run.
//! (Test binaries themselves run one after another under `cargo test`.)
//!
//! A tokio mutex, so it works across the per-test runtimes and is not
//! poisoned by a failed test.

use tokio::sync::{Mutex, MutexGuard};

/// The lock every failover test of a binary shares.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Waits for the other failover tests of this binary to finish; hold the
/// guard until the test ends.
pub async fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().await
}
