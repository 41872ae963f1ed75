//! The clock both sides of the lease rule use: `CLOCK_BOOTTIME`, in
//! nanoseconds.
//!
//! The lease rule (DESIGN.md, "The lease rule") needs clocks
//! that never run slow relative to real time. `CLOCK_MONOTONIC` stops while
//! a machine is suspended: an active resumed after a suspend longer than its
//! lease would think the lease still valid, and an arbiter would notice a
//! dead active late. `CLOCK_BOOTTIME` keeps counting through suspend. Only
//! rate matters here, never the value.

/// Nanoseconds since boot, including time spent suspended.
pub fn now_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on
    // every Linux since 2.6.39.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_goes_backwards() {
        let a = super::now_nanos();
        let b = super::now_nanos();
        assert!(b >= a);
    }
}
