//! Idle polling: keeps a CPU awake while a write is on its way, so the
//! wake-ups on the write's path do not wait for a halted CPU.
//!
//! A replicated write crosses several wake-ups: the request reaching the
//! runtime, the frame reaching the standby, each fsync's completion, the
//! ack coming back, the answer reaching the client. Between them every
//! thread of the write is blocked, and an idle CPU halts. Getting a halted
//! CPU running again costs tens of microseconds on a virtual machine whose
//! guest does not poll before halting, and a deep C-state exit costs as
//! much on bare metal. Seastar-based databases spin their reactor before
//! sleeping for the same reason (`--idle-poll-time-us`).
//!
//! Here one thread per replica spins while any write is in flight (a
//! [`Busy`] guard is alive) and for `tail` after the last one ended, then
//! parks. It runs under `SCHED_IDLE`: the kernel gives it a CPU only when
//! nothing else wants it and preempts it the moment anything else becomes
//! runnable, so it fills idle time instead of taking time from work. It
//! stays off under load ([`MAX_IN_FLIGHT`], [`LOAD_HOLD`]), where it only
//! cost latency. The cost is CPU time that would otherwise be idle (it
//! shows as busy in `top`, and on a cloud machine it is billed like any
//! other), which is why the spin ends [`STALL_LIMIT`] after the last event
//! even when a write is stuck, and why `idle_poll_us = 0` switches it off.
//! BENCHMARKS.md has the measurements.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

/// The spin ends this long after the last event, writes in flight or not:
/// a write that waits longer (a standby gone quiet, a slow disk) does not
/// gain from a CPU that is awake, and would burn it for nothing.
pub const STALL_LIMIT: Duration = Duration::from_millis(5);

/// No spinning while more writes than this are in flight. Under load the
/// CPUs do not idle between the steps of a write anyway, and a CPU that
/// runs the spinner does not count as idle when the kernel looks for one
/// to take over threads that wait.
pub const MAX_IN_FLIGHT: u32 = 4;

/// After more than [`MAX_IN_FLIGHT`] writes were in flight, no spinning
/// (and no unparking the spinner) for this long. Load comes in bursts, and
/// between them the in-flight count dips low for moments; a spinner woken
/// in every dip costs each write that wakes it a syscall and a wake-up of
/// another CPU, and the spinning itself keeps that CPU from taking over
/// threads that wait for one.
pub const LOAD_HOLD: Duration = Duration::from_millis(10);

/// The upper bound on `idle_poll_us`.
pub const MAX_TAIL: Duration = Duration::from_millis(10);

/// The spinner of one replica; dropping it stops the thread.
#[derive(Debug)]
pub struct IdlePoll {
    shared: Option<Arc<Shared>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    epoch: Instant,
    tail_ns: u64,
    /// Writes in flight.
    busy: AtomicU32,
    /// Nanoseconds since `epoch` of the last event (a write starting or
    /// ending).
    last: AtomicU64,
    /// Nanoseconds since `epoch` until which the replica counts as under
    /// load (see [`LOAD_HOLD`]).
    loaded_until: AtomicU64,
    /// Set by the spinner before it parks; whoever clears it unparks it.
    parked: AtomicBool,
    stop: AtomicBool,
    /// Seconds spent spinning, exported as a metric.
    spun: Counter<f64, AtomicU64>,
    spinner: std::sync::OnceLock<Thread>,
}

/// The spinner thread's scheduling: `SCHED_IDLE` always, but in tests of
/// its wake-and-park mechanics, where a thread that runs only on an idle
/// CPU could wait for seconds behind the other tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    Idle,
    #[cfg(test)]
    Normal,
}

impl IdlePoll {
    /// Starts the spinner; a zero `tail` means no spinner at all.
    pub fn start(tail: Duration, spun: Counter<f64, AtomicU64>) -> std::io::Result<IdlePoll> {
        IdlePoll::start_with(tail, spun, Policy::Idle)
    }

    fn start_with(
        tail: Duration,
        spun: Counter<f64, AtomicU64>,
        policy: Policy,
    ) -> std::io::Result<IdlePoll> {
        if tail.is_zero() {
            return Ok(IdlePoll::off());
        }
        let shared = Arc::new(Shared::new(tail, spun));
        let for_thread = shared.clone();
        let name = match policy {
            Policy::Idle => "idle-poll",
            #[cfg(test)]
            Policy::Normal => "idle-poll-test",
        };
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || spin(&for_thread, policy))?;
        let _ = shared.spinner.set(thread.thread().clone());
        Ok(IdlePoll {
            shared: Some(shared),
            thread: Some(thread),
        })
    }

    /// No spinner: every call is a no-op.
    pub fn off() -> IdlePoll {
        IdlePoll {
            shared: None,
            thread: None,
        }
    }

    /// Marks one write in flight until the guard is dropped.
    pub fn busy(&self) -> Busy<'_> {
        self.busy_for(1)
    }

    /// Marks `writes` writes in flight (a standby's flush of that many
    /// entries) until the guard is dropped.
    pub fn busy_for(&self, writes: usize) -> Busy<'_> {
        let writes = u32::try_from(writes).unwrap_or(u32::MAX / 2);
        if let Some(s) = &self.shared {
            let now_busy = s.busy.fetch_add(writes, Ordering::AcqRel) + writes;
            s.event(now_busy);
        }
        Busy { poll: self, writes }
    }
}

impl Drop for IdlePoll {
    fn drop(&mut self) {
        if let (Some(s), Some(t)) = (&self.shared, self.thread.take()) {
            s.stop.store(true, Ordering::Release);
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// A write in flight; see [`IdlePoll::busy`].
#[must_use = "the write counts as in flight only while the guard lives"]
pub struct Busy<'a> {
    poll: &'a IdlePoll,
    writes: u32,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Some(s) = &self.poll.shared {
            let now_busy = s.busy.fetch_sub(self.writes, Ordering::AcqRel) - self.writes;
            // A flush of many entries was load, even if it ends alone.
            s.event(now_busy.max(self.writes));
        }
    }
}

impl Shared {
    fn new(tail: Duration, spun: Counter<f64, AtomicU64>) -> Shared {
        Shared {
            epoch: Instant::now(),
            tail_ns: tail.min(MAX_TAIL).as_nanos() as u64,
            busy: AtomicU32::new(0),
            last: AtomicU64::new(0),
            loaded_until: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            spun,
            spinner: std::sync::OnceLock::new(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Records an event with `busy` writes now in flight.
    fn event(&self, busy: u32) {
        self.event_at(busy, self.now_ns());
    }

    fn event_at(&self, busy: u32, now: u64) {
        self.last.store(now, Ordering::SeqCst);
        if busy > MAX_IN_FLIGHT {
            let until = now + LOAD_HOLD.as_nanos() as u64;
            self.loaded_until.fetch_max(until, Ordering::SeqCst);
            return;
        }
        // Only a parked spinner needs the (syscall) unpark, and only when
        // it would spin: under load this stays a few atomic operations.
        if now >= self.loaded_until.load(Ordering::SeqCst)
            && self.parked.load(Ordering::SeqCst)
            && self.parked.swap(false, Ordering::SeqCst)
        {
            if let Some(t) = self.spinner.get() {
                t.unpark();
            }
        }
    }

    /// Whether the spinner should keep the CPU awake at `now`.
    fn wanted(&self, now: u64) -> bool {
        let since = now.saturating_sub(self.last.load(Ordering::SeqCst));
        let loaded = now < self.loaded_until.load(Ordering::SeqCst);
        keep_spinning(
            self.busy.load(Ordering::SeqCst),
            since,
            self.tail_ns,
            loaded,
        )
    }
}

/// The rule: spin while a few writes are in flight (up to [`STALL_LIMIT`]
/// after the last event), or for `tail_ns` after the last one ended; never
/// under load: while more than [`MAX_IN_FLIGHT`] are in flight, or within
/// [`LOAD_HOLD`] of the last time they were.
fn keep_spinning(busy: u32, since_ns: u64, tail_ns: u64, loaded: bool) -> bool {
    if loaded {
        return false;
    }
    match busy {
        0 => since_ns < tail_ns,
        b if b <= MAX_IN_FLIGHT => since_ns < STALL_LIMIT.as_nanos() as u64,
        _ => false,
    }
}

fn spin(shared: &Shared, policy: Policy) {
    if policy == Policy::Idle && !set_idle_policy() {
        return;
    }
    while !shared.stop.load(Ordering::Acquire) {
        let began = shared.now_ns();
        let mut now = began;
        while shared.wanted(now) && !shared.stop.load(Ordering::Relaxed) {
            for _ in 0..32 {
                std::hint::spin_loop();
            }
            now = shared.now_ns();
        }
        if now > began {
            shared.spun.inc_by((now - began) as f64 / 1e9);
        }
        // Announce the park, then look once more: an event that came
        // before the announcement was not followed by an unpark.
        shared.parked.store(true, Ordering::SeqCst);
        if !shared.wanted(shared.now_ns()) && !shared.stop.load(Ordering::SeqCst) {
            std::thread::park();
        }
        shared.parked.store(false, Ordering::SeqCst);
    }
}

/// Puts the calling thread under `SCHED_IDLE`. Without it the spinner
/// would compete with real work, so a failure stops the spinning (logged).
fn set_idle_policy() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread (pid 0) with a valid param.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(),
            "idle polling is off: cannot put its thread under SCHED_IDLE");
    }
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAIL: Duration = Duration::from_micros(200);

    /// A spinner at normal priority, for the wake-and-park mechanics: under
    /// SCHED_IDLE it would wait for an idle CPU, which the other tests may
    /// not leave it for seconds.
    fn started() -> (IdlePoll, Counter<f64, AtomicU64>) {
        let spun = Counter::<f64, AtomicU64>::default();
        let poll = IdlePoll::start_with(TAIL, spun.clone(), Policy::Normal).unwrap();
        (poll, spun)
    }

    fn parked(poll: &IdlePoll) -> bool {
        poll.shared.as_ref().unwrap().parked.load(Ordering::SeqCst)
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_rule_spins_for_few_writes_and_never_under_load() {
        let tail = TAIL.as_nanos() as u64;
        let stall = STALL_LIMIT.as_nanos() as u64;
        // Nothing in flight: the tail only.
        assert!(keep_spinning(0, 0, tail, false));
        assert!(keep_spinning(0, tail - 1, tail, false));
        assert!(!keep_spinning(0, tail, tail, false));
        // A few writes in flight: until the stall limit.
        assert!(keep_spinning(1, tail * 2, tail, false));
        assert!(keep_spinning(MAX_IN_FLIGHT, stall - 1, tail, false));
        assert!(!keep_spinning(1, stall, tail, false));
        // Load, or load a moment ago: never.
        assert!(!keep_spinning(MAX_IN_FLIGHT + 1, 0, tail, false));
        assert!(!keep_spinning(1, 0, tail, true));
        assert!(!keep_spinning(0, 0, tail, true));
    }

    #[test]
    fn after_load_a_lone_write_wakes_no_spinner_until_the_hold_ends() {
        // No thread: the flag shows whether an event would have unparked.
        let shared = Shared::new(TAIL, Counter::default());
        let hold = LOAD_HOLD.as_nanos() as u64;
        let t0 = 1_000_000;
        shared.parked.store(true, Ordering::SeqCst);
        shared.event_at(MAX_IN_FLIGHT + 1, t0);
        assert!(
            shared.parked.load(Ordering::SeqCst),
            "load woke the spinner"
        );
        shared.event_at(1, t0 + hold - 1);
        assert!(
            shared.parked.load(Ordering::SeqCst),
            "woken within the hold"
        );
        assert!(!shared.wanted(t0 + hold - 1));
        shared.event_at(1, t0 + hold);
        assert!(
            !shared.parked.load(Ordering::SeqCst),
            "not woken after the hold"
        );
        assert!(shared.wanted(t0 + hold));
    }

    #[test]
    fn a_write_wakes_the_spinner_which_parks_after_the_tail() {
        // The longest tail, and another write whenever one's spin was not
        // counted within 50 ms: on a busy machine the woken spinner may get
        // its CPU only after the tail has passed, and then rightly does not
        // spin at all.
        let spun = Counter::<f64, AtomicU64>::default();
        let poll = IdlePoll::start_with(MAX_TAIL, spun.clone(), Policy::Normal).unwrap();
        wait_for("the spinner parks after starting", || parked(&poll));
        let before = spun.get();
        let mut next_write = Instant::now();
        // A spin is counted when it ends, so this also shows that it ended.
        wait_for("a write's spin is counted", || {
            if Instant::now() >= next_write && parked(&poll) {
                drop(poll.busy());
                next_write = Instant::now() + Duration::from_millis(50);
            }
            spun.get() > before
        });
        wait_for("the spinner parks again after the tail", || parked(&poll));
    }

    #[test]
    fn many_writes_in_flight_leave_the_spinner_parked() {
        let (poll, _) = started();
        wait_for("the spinner parks after starting", || parked(&poll));
        let flush = poll.busy_for(MAX_IN_FLIGHT as usize + 1);
        assert_eq!(poll.shared.as_ref().unwrap().busy.load(Ordering::SeqCst), 5);
        // The event did not clear the flag, so no unpark was sent.
        assert!(parked(&poll));
        drop(flush);
        assert!(parked(&poll), "the end of a large flush started a tail");
        assert_eq!(poll.shared.as_ref().unwrap().busy.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_spinner_runs_under_sched_idle_and_stops_with_its_owner() {
        let poll = IdlePoll::start(TAIL, Counter::default()).unwrap();
        // Other tests' spinners may be starting; each sets its policy first.
        wait_for("every idle-poll thread runs under SCHED_IDLE", || {
            let seen = idle_poll_policies();
            !seen.is_empty() && seen.iter().all(|&p| p == libc::SCHED_IDLE)
        });
        drop(poll); // joins the thread; a spinner that ignored stop would hang here
    }

    /// The scheduling policy of every thread named `idle-poll` in this process.
    fn idle_poll_policies() -> Vec<i32> {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Vec::new();
        };
        tasks
            .filter_map(|t| {
                let dir = t.ok()?.path();
                let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
                if comm.trim() != "idle-poll" {
                    return None;
                }
                let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                // Fields after the parenthesised name start at field 3; the
                // policy is field 41.
                let rest = &stat[stat.rfind(')')? + 2..];
                rest.split(' ').nth(41 - 3)?.parse().ok()
            })
            .collect()
    }

    #[test]
    fn off_has_no_thread_and_counts_nothing() {
        let poll = IdlePoll::start(Duration::ZERO, Counter::default()).unwrap();
        assert!(poll.shared.is_none() && poll.thread.is_none());
        let _write = poll.busy();
        let _flush = poll.busy_for(3);
    }
}
