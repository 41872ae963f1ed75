//! `Millis`: the arbiter's monotonic time, in milliseconds since an
//! arbitrary origin, fed to the core by its caller.
//!
//! The core never reads a clock. The shell passes `Instant`-derived
//! milliseconds; tests pass a fake clock. Only differences of `Millis` mean
//! anything, which is exactly what the lease argument needs (DESIGN.md,
//! "The arbiter's wait": clock *rate*, never offset).

use std::fmt;
use std::ops::Add;

use proto_common::params::ClusterParams;
use serde::{Deserialize, Serialize};

/// A point on the arbiter's monotonic clock, in ms.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// Milliseconds from `earlier` to `self`; 0 if `earlier` is later.
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Milliseconds from `self` to `later`; 0 if `later` has passed.
    pub fn until(self, later: Millis) -> u64 {
        later.0.saturating_sub(self.0)
    }
}

impl Add<u64> for Millis {
    type Output = Millis;
    fn add(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

/// `lease_ms · (1 + drift)` in whole ms, rounded **up** (a longer wait is
/// always safe). The tiny epsilon keeps `1000 · 1.1 = 1100.0000000000002`
/// at 1100 instead of 1101: it is far below any clock's resolution.
pub fn arbiter_wait_ms(params: &ClusterParams) -> u64 {
    let exact = params.lease_ms as f64 * (1.0 + params.drift);
    (exact - 1e-6).ceil().max(params.lease_ms as f64) as u64
}

/// A replica is *suspected* once it has been silent this long; the active's
/// absence is logged from then on (the decision itself waits for its lease).
pub fn suspect_after_ms(params: &ClusterParams) -> u64 {
    2 * params.heartbeat_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arbiter_wait_rounds_up_but_not_for_float_noise() {
        let p = ClusterParams::default();
        assert_eq!(arbiter_wait_ms(&p), 1100);
        let p = ClusterParams {
            lease_ms: 333,
            heartbeat_ms: 100,
            drift: 0.1,
            ..Default::default()
        };
        // 366.3 → 367: never shorter than the real bound.
        assert_eq!(arbiter_wait_ms(&p), 367);
        let p = ClusterParams {
            drift: 0.0,
            ..Default::default()
        };
        assert_eq!(arbiter_wait_ms(&p), 1000);
    }

    #[test]
    fn millis_arithmetic_saturates() {
        assert_eq!(Millis(5).since(Millis(9)), 0);
        assert_eq!(Millis(9).since(Millis(5)), 4);
        assert_eq!(Millis(9).until(Millis(5)), 0);
        assert_eq!(Millis(u64::MAX) + 1, Millis(u64::MAX));
    }
}
