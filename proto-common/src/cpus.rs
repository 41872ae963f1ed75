//! CPU lists and thread affinity, for settings that pin a thread
//! (the replica's `resp_cpus`).
//!
//! A list is written as Redis's `server_cpulist` and `taskset -c` take
//! it: `0`, `0,2`, `1-3,6`.

/// The highest CPU number accepted (the kernel's `CPU_SETSIZE`).
const MAX_CPU: usize = 1023;

/// Parses the CPU list of setting `setting`: numbers and ranges,
/// comma-separated.
pub fn parse(setting: &str, text: &str) -> Result<Vec<usize>, String> {
    let bad = |why: &str| {
        format!(
            "{setting}={text:?} {why}; write CPU numbers and ranges such as \"0\", \"0,2\" \
             or \"1-3\""
        )
    };
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.trim(), hi.trim()),
            None => (part, part),
        };
        let number = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| bad(&format!("has {part:?}, which is not a CPU number or range")))
        };
        let (lo, hi) = (number(lo)?, number(hi)?);
        if lo > hi {
            return Err(bad(&format!(
                "has the range {part:?}, which runs backwards"
            )));
        }
        if hi > MAX_CPU {
            return Err(bad(&format!(
                "names CPU {hi}, beyond the highest, {MAX_CPU}"
            )));
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// `[0, 1, 2, 5]` as `0-2,5`.
pub fn format(cpus: &[usize]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// The CPUs the calling thread may run on (its affinity, which the
/// process's cgroup and any `taskset` bound).
pub fn allowed() -> Result<Vec<usize>, String> {
    // SAFETY: `set` is a plain bit set, zeroed and then filled by the
    // kernel; its size is passed with it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(format!(
                "cannot read this process's CPU affinity: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok((0..=MAX_CPU)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect())
    }
}

/// Checks that every CPU of setting `setting` is one this process may
/// run on.
pub fn check_allowed(setting: &str, cpus: &[usize]) -> Result<(), String> {
    let allowed = allowed()?;
    let outside: Vec<usize> = cpus
        .iter()
        .copied()
        .filter(|c| !allowed.contains(c))
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{setting}={} names CPU {}, but this process may run only on CPUs {} (its affinity or \
         cgroup); pick from those",
        format(cpus),
        format(&outside),
        format(&allowed)
    ))
}

/// Pins the calling thread to `cpus`; the error names the thread by
/// its name.
pub fn pin_current_thread(cpus: &[usize]) -> Result<(), String> {
    // SAFETY: as in `allowed`; every CPU is at most `MAX_CPU`, within the
    // set (`parse` bounds them).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "cannot pin the {} thread to CPUs {}: {}",
                std::thread::current().name().unwrap_or("unnamed"),
                format(cpus),
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_as_redis_and_taskset_write_them() {
        assert_eq!(parse("s", "0").unwrap(), vec![0]);
        assert_eq!(parse("s", "3,1").unwrap(), vec![1, 3]);
        assert_eq!(parse("s", "0-2, 5,1").unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(format(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(format(&parse("s", "4").unwrap()), "4");
    }

    #[test]
    fn bad_lists_name_the_part_and_the_form() {
        for (text, part) in [
            ("", "is not a CPU number"),
            ("a", "\"a\""),
            ("3-1", "runs backwards"),
            ("0,,1", "is not a CPU number"),
            ("2048", "beyond the highest"),
            ("-1", "is not a CPU number"),
        ] {
            let err = parse("s", text).unwrap_err();
            assert!(
                err.contains(part) && err.contains("\"1-3\""),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn the_allowed_cpus_include_the_one_running_now() {
        let allowed = allowed().unwrap();
        // SAFETY: no arguments; returns the CPU number or -1.
        let now = unsafe { libc::sched_getcpu() };
        assert!(
            now >= 0 && allowed.contains(&(now as usize)),
            "{now} in {allowed:?}"
        );
        check_allowed("s", &allowed).unwrap();
        if !allowed.contains(&MAX_CPU) {
            let err = check_allowed("s", &[MAX_CPU]).unwrap_err();
            assert!(err.contains("may run only on CPUs"), "{err}");
        }
    }

    #[test]
    fn a_pinned_thread_runs_only_on_its_cpu() {
        let last = *allowed().unwrap().last().unwrap();
        let seen = std::thread::spawn(move || {
            pin_current_thread(&[last]).unwrap();
            // SAFETY: as above.
            (allowed().unwrap(), unsafe { libc::sched_getcpu() })
        })
        .join()
        .unwrap();
        assert_eq!(seen, (vec![last], last as i32));
        // Only that thread: this one may still run anywhere it could.
        assert!(allowed().unwrap().contains(&last));
    }
}
