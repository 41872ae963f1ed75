//! The arbiter's clocks: a monotonic one for decisions, a wall clock for
//! people.
//!
//! The lease wait (DESIGN.md, "The arbiter's wait") must never
//! run *fast* against real time. `CLOCK_MONOTONIC` stops while a machine is
//! suspended: an arbiter resumed from a suspend would think less time had
//! passed than did — safe for the lease wait (it only waits longer), but
//! slow to notice that the active died meanwhile. `CLOCK_BOOTTIME` keeps
//! counting through suspend, like the replica's lease clock. Only
//! differences matter, so [`Clock`] counts from the process's start.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::core::Millis;

/// Monotonic milliseconds since this clock was created (`Millis` for the
/// core), plus the wall clock for decision timestamps.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// `CLOCK_BOOTTIME` at creation, in ns: the core's time zero.
    origin_nanos: u64,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start() -> Clock {
        Clock {
            origin_nanos: proto_common::clock::now_nanos(),
        }
    }

    /// Monotonic time for the core.
    pub fn now(&self) -> Millis {
        Millis(proto_common::clock::now_nanos().saturating_sub(self.origin_nanos) / 1_000_000)
    }

    /// Wall-clock ms since the Unix epoch; only ever shown, never compared.
    pub fn unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_near_zero_and_never_goes_backwards() {
        let clock = Clock::start();
        let a = clock.now();
        assert!(a.0 < 1000, "{a}");
        std::thread::sleep(std::time::Duration::from_millis(3));
        let b = clock.now();
        assert!(b.0 >= a.0 + 2, "{a} then {b}");
        assert!(clock.unix_ms() > 1_600_000_000_000);
    }
}
