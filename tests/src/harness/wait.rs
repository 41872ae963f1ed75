//! Polling with a deadline: the only way tests wait for something.
//!
//! A test that sleeps "long enough" is slow on a fast machine and flaky on
//! a loaded one. These helpers check a condition right away, then again
//! with a short back-off (2 ms doubling up to 100 ms), and give up at the
//! deadline with an error that says what was awaited and for how long. A
//! check that itself hangs (a request to a paused node) is cut off at the
//! deadline too.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// Longest pause between two checks.
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// The condition did not hold before the deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitTimeout {
    /// What was awaited, as the caller described it.
    pub what: String,
    /// How long we waited.
    pub waited: Duration,
    /// How many checks completed.
    pub checks: u32,
}

impl fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up waiting for {} after {:?} ({} checks)",
            self.what, self.waited, self.checks
        )
    }
}

impl std::error::Error for WaitTimeout {}

/// Waits until `check` returns `true`, at most `within`.
///
/// ```no_run
/// # async fn demo(url: String) -> Result<(), understudy_tests::harness::WaitTimeout> {
/// use std::time::Duration;
/// use understudy_tests::client::KvClient;
/// use understudy_tests::harness::wait_until;
///
/// wait_until(Duration::from_secs(10), "replica ready", || {
///     let url = url.clone();
///     async move {
///         let mut c = KvClient::new(&url).unwrap();
///         matches!(c.request(hyper::Method::GET, "/readyz", &[], "").await,
///                  Ok(r) if r.status == 200)
///     }
/// })
/// .await
/// # }
/// ```
pub async fn wait_until<F, Fut>(
    within: Duration,
    what: &str,
    mut check: F,
) -> Result<(), WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(within, what, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Waits until `check` returns `Some(value)` and returns the value, at most
/// `within`.
pub async fn wait_for<T, F, Fut>(
    within: Duration,
    what: &str,
    mut check: F,
) -> Result<T, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let deadline = start + within;
    let mut pause = Duration::from_millis(2);
    let mut checks = 0;
    loop {
        // Always allow at least a short check, even at the deadline.
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        if let Ok(result) = tokio::time::timeout(budget, check()).await {
            checks += 1;
            if let Some(value) = result {
                return Ok(value);
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitTimeout {
                what: what.to_string(),
                waited: now - start,
                checks,
            });
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_as_soon_as_the_condition_holds() {
        let calls = AtomicU32::new(0);
        let value = wait_for(Duration::from_secs(5), "third call", || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move { (n == 3).then_some(n) }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn times_out_with_a_description() {
        let err = wait_until(Duration::from_millis(30), "never", || async { false })
            .await
            .unwrap_err();
        assert_eq!(err.what, "never");
        assert!(err.waited >= Duration::from_millis(30));
        assert!(err.checks >= 2);
        assert!(err
            .to_string()
            .starts_with("gave up waiting for never after"));
    }

    #[tokio::test]
    async fn a_hanging_check_is_cut_off() {
        let start = Instant::now();
        let result = wait_until(Duration::from_millis(50), "hang", std::future::pending).await;
        assert!(result.is_err());
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
