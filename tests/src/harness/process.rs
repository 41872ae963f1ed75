//! Child processes that cannot outlive their test.
//!
//! [`ProcessSpec`] describes a command (program, args, env, working dir)
//! and where its output goes: `{log_dir}/{name}.stdout.log` and
//! `{name}.stderr.log`, appended to, so a node restarted under the same
//! name keeps the logs of all its lives (each start writes a header line
//! to the stderr log). [`ChildGuard`] is the running process:
//!
//! - dropping it sends SIGCONT and SIGKILL and reaps it, so a test that
//!   fails half-way (even with a node paused by SIGSTOP) leaves nothing
//!   running; when the test is panicking, the tail of the process's stderr
//!   is printed, so the failure shows what the node said;
//! - `kill`, `sigterm`, `sigstop`, `sigcont` inject faults;
//! - `wait_for_exit` polls with a deadline.
//!
//! **Signals and pid reuse.** A signal is only ever sent while the child
//! has not been reaped: the guard is the only code that waits on it
//! (through `std::process::Child`, which records the status), and it
//! remembers the exit status once seen. Until reaped, the pid cannot be
//! reused by another process, so `kill(pid, sig)` reaches our child.
//!
//! **Dying with the test process.** By default the child gets
//! `PR_SET_PDEATHSIG = SIGKILL`, so even a test binary killed with SIGKILL
//! leaves no node running. Linux ties this to the *thread* that spawned
//! the child: spawn from the test's thread or a runtime worker, not from a
//! `spawn_blocking` thread that may exit early — or turn it off with
//! [`ProcessSpec::die_with_parent`].

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Lines of stderr printed when a test fails with the process still around.
const TAIL_LINES: usize = 40;

/// A command to start, and where its output goes.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    /// Names the log files and appears in messages ("replica-a").
    name: String,
    /// The executable.
    program: PathBuf,
    /// Arguments, in order.
    args: Vec<OsString>,
    /// Extra environment; the rest is inherited.
    env: Vec<(OsString, OsString)>,
    /// Working directory; the test's own when `None`.
    current_dir: Option<PathBuf>,
    /// Where the `.stdout.log` / `.stderr.log` files go.
    log_dir: PathBuf,
    /// Whether the child gets SIGKILL when the spawning thread exits.
    die_with_parent: bool,
    /// The user and group to run as (the fault suite gives each process
    /// its own, so firewall rules can match it); the test's when `None`.
    user: Option<(u32, u32)>,
}

impl ProcessSpec {
    /// `program` run as `name`, logging into `log_dir`.
    pub fn new(name: &str, program: impl Into<PathBuf>, log_dir: &Path) -> ProcessSpec {
        ProcessSpec {
            name: name.to_string(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            current_dir: None,
            log_dir: log_dir.to_path_buf(),
            die_with_parent: true,
            user: None,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> ProcessSpec {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> ProcessSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> ProcessSpec {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> ProcessSpec {
        self.current_dir = Some(dir.into());
        self
    }

    /// See the module docs; on by default.
    pub fn die_with_parent(mut self, on: bool) -> ProcessSpec {
        self.die_with_parent = on;
        self
    }

    /// Runs the process as `uid`:`gid` (the test must be root).
    pub fn user(mut self, uid: u32, gid: u32) -> ProcessSpec {
        self.user = Some((uid, gid));
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `{log_dir}/{name}.stdout.log`.
    pub fn stdout_path(&self) -> PathBuf {
        self.log_dir.join(format!("{}.stdout.log", self.name))
    }

    /// `{log_dir}/{name}.stderr.log`.
    pub fn stderr_path(&self) -> PathBuf {
        self.log_dir.join(format!("{}.stderr.log", self.name))
    }

    /// Starts the process.
    pub fn spawn(&self) -> io::Result<ChildGuard> {
        std::fs::create_dir_all(&self.log_dir)?;
        let stdout = append(&self.stdout_path())?;
        let mut stderr = append(&self.stderr_path())?;
        writeln!(
            stderr,
            "=== harness: starting {} {:?} {:?}",
            self.name, self.program, self.args
        )?;

        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        // The parent-death signal is set after the user change (which
        // would clear it): std runs these closures after setuid.
        if self.die_with_parent {
            // SAFETY: runs in the forked child before exec; prctl is
            // async-signal-safe and touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {} ({:?}): {e}", self.name, self.program),
            )
        })?;
        Ok(ChildGuard {
            spec: self.clone(),
            child,
            exit: None,
        })
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// A running child process, killed and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    /// How it was started: names, log paths, and what `restart` re-runs.
    spec: ProcessSpec,
    /// The process; only this guard waits on it (see the pid-reuse note).
    child: Child,
    /// Its exit status once reaped; no signal is sent after that.
    exit: Option<ExitStatus>,
}

impl ChildGuard {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    pub fn stdout_path(&self) -> PathBuf {
        self.spec.stdout_path()
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.spec.stderr_path()
    }

    /// Everything the process wrote to stdout so far (all lives).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.stdout_path()).unwrap_or_default()
    }

    /// Everything the process wrote to stderr so far (all lives).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub fn try_exit_status(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait()?;
        }
        Ok(self.exit)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.try_exit_status(), Ok(None))
    }

    /// Sends `signal` unless the process has already been reaped.
    pub fn signal(&mut self, signal: libc::c_int) -> io::Result<()> {
        if self.try_exit_status()?.is_some() {
            return Err(io::Error::other(format!(
                "{} has already exited",
                self.spec.name
            )));
        }
        let pid = libc::pid_t::try_from(self.child.id()).map_err(io::Error::other)?;
        // SAFETY: plain syscall; the pid is our unreaped child (module docs).
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGKILL (a crash: no cleanup, no flush), then reaps.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.try_exit_status()? {
            return Ok(status);
        }
        self.signal(libc::SIGKILL)?;
        let status = self.child.wait()?;
        self.exit = Some(status);
        Ok(status)
    }

    /// SIGTERM: ask for a clean shutdown; see [`ChildGuard::wait_for_exit`].
    pub fn sigterm(&mut self) -> io::Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// SIGSTOP: freeze the process (a GC pause, a hung VM) without closing
    /// its sockets. Returns once every thread has stopped: the signal is
    /// taken by one thread, which then stops the others, and until then a
    /// thread already running (on a busy machine, for milliseconds) goes on
    /// reading its sockets and writing its files.
    pub fn sigstop(&mut self) -> io::Result<()> {
        self.signal(libc::SIGSTOP)?;
        let pid = libc::id_t::try_from(self.child.id()).map_err(io::Error::other)?;
        // SAFETY: an all-zero siginfo_t is valid; waitid fills it. The pid is
        // our unreaped child; WNOWAIT leaves its state for `try_wait`.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WSTOPPED | libc::WEXITED | libc::WNOWAIT;
        loop {
            // SAFETY: as above; waitid blocks until the child stopped or exited.
            if unsafe { libc::waitid(libc::P_PID, pid, &mut info, flags) } == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if info.si_code != libc::CLD_STOPPED {
            return Err(io::Error::other(format!(
                "{} ended instead of stopping",
                self.spec.name
            )));
        }
        Ok(())
    }

    /// SIGCONT: resume a stopped process.
    pub fn sigcont(&mut self) -> io::Result<()> {
        self.signal(libc::SIGCONT)
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still
    /// running then.
    pub async fn wait_for_exit(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(2);
        loop {
            if let Some(status) = self.try_exit_status()? {
                return Ok(Some(status));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Kills this process if still running and starts the same command again
    /// (logs are appended to).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill()?;
        let fresh = self.spec.spawn()?;
        // The old child is reaped; replacing it drops nothing that runs.
        *self = fresh;
        Ok(())
    }

    fn print_stderr_tail(&self) {
        let text = self.stderr();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
        eprintln!(
            "--- last {} lines of {} ({}) ---",
            tail.len(),
            self.spec.name,
            self.stderr_path().display()
        );
        for line in tail {
            eprintln!("{line}");
        }
    }
}

/// Describes how a process ended: "exit code 1", "signal 9".
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => format!("{status}"),
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_stderr_tail();
        }
        if matches!(self.try_exit_status(), Ok(Some(_))) {
            return;
        }
        // A stopped process still dies of SIGKILL, but resuming first means
        // a process group or tracer never sees it linger as stopped.
        let _ = self.signal(libc::SIGCONT);
        let _ = self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::TestDir;

    fn sleeper(dir: &TestDir, name: &str) -> ProcessSpec {
        ProcessSpec::new(name, "/bin/sh", dir.path())
            .args(["-c", "echo started; echo \"$GREETING\" >&2; exec sleep 30"])
            .env("GREETING", "hello from sh")
    }

    #[tokio::test]
    async fn signals_and_logs() {
        let dir = TestDir::new("process-unit").unwrap();
        let mut child = sleeper(&dir, "sleeper").spawn().unwrap();
        crate::harness::wait_until(Duration::from_secs(5), "sleeper logs", || {
            let ready =
                child.stdout().contains("started") && child.stderr().contains("hello from sh");
            async move { ready }
        })
        .await
        .unwrap();
        child.sigstop().unwrap();
        child.sigcont().unwrap();
        assert!(child.is_running());
        child.sigterm().unwrap();
        let status = child.wait_for_exit(Duration::from_secs(5)).await.unwrap();
        assert_eq!(describe_exit(status.expect("exited")), "signal 15");
        assert!(child.sigterm().is_err(), "no signals after reaping");
        assert!(child.stderr().starts_with("=== harness: starting sleeper"));
    }

    #[tokio::test]
    async fn drop_kills_and_restart_keeps_logs() {
        let dir = TestDir::new("process-unit").unwrap();
        let mut child = sleeper(&dir, "node").spawn().unwrap();
        let first = child.pid();
        child.restart().unwrap();
        assert_ne!(child.pid(), first);
        let pid = child.pid() as libc::pid_t;
        drop(child);
        // SAFETY: signal 0 only checks whether the pid exists. The child was
        // reaped in drop; the pid being reused within these microseconds
        // would make the assertion fail spuriously, never unsafely.
        let gone = unsafe { libc::kill(pid, 0) } != 0;
        assert!(gone, "child {pid} still exists after drop");
        let log = std::fs::read_to_string(dir.join("node.stderr.log")).unwrap();
        assert_eq!(log.matches("=== harness: starting node").count(), 2);
    }
}
