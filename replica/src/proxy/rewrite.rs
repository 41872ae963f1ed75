//! Deterministic entries (DESIGN.md, "Logging client commands"): the log
//! holds what every upstream will run, so the active rewrites what would
//! otherwise depend on each server's clock, and refuses what would depend
//! on each server's randomness.
//!
//! Relative expiries become absolute, shifted deadlines (`expiry::SHIFT_MS`):
//! `EXPIRE`/`PEXPIRE`/`EXPIREAT`/`PEXPIREAT` → `PEXPIREAT`; `SET … EX|PX|
//! EXAT|PXAT` → `SET … PXAT`; `SETEX`/`PSETEX` → `SET … PXAT`; `GETEX …
//! EX|PX|EXAT|PXAT` → `GETEX … PXAT`; `RESTORE` with a ttl → `ABSTTL`. A
//! command whose time argument Redis would refuse (not an integer, not
//! positive where it must be, out of range) is left as it is: every
//! upstream refuses it alike, with Redis's own error.

use bytes::Bytes;

use super::expiry::SHIFT_MS;

/// The largest deadline Redis accepts, less the shift.
const MAX_DEADLINE_MS: i64 = i64::MAX / 2;

/// What to log for `argv` (name first, any case), decided at `now_ms`:
/// `Ok(None)` to log it as it is, `Ok(Some(new))` for a rewritten command,
/// `Err(why)` for a command that cannot be made deterministic.
pub fn deterministic(argv: &[Bytes], now_ms: i64) -> Result<Option<Vec<Bytes>>, String> {
    let name = String::from_utf8_lossy(&argv[0]).to_uppercase();
    Ok(match name.as_str() {
        "EXPIRE" => relative_expire(argv, now_ms, 1000),
        "PEXPIRE" => relative_expire(argv, now_ms, 1),
        "EXPIREAT" => absolute_expire(argv, 1000),
        "PEXPIREAT" => absolute_expire(argv, 1),
        "SET" => set_options(argv, now_ms, 3, "SET"),
        "GETEX" => set_options(argv, now_ms, 2, "GETEX"),
        "SETEX" => setex(argv, now_ms, 1000),
        "PSETEX" => setex(argv, now_ms, 1),
        "RESTORE" => restore(argv, now_ms),
        "SPOP" => {
            return Err(
                "ERR SPOP is not supported by understudy: it removes random members, and \
                 each server would pick different ones; read members with SRANDMEMBER and \
                 remove them with SREM (together in MULTI/EXEC)"
                    .into(),
            )
        }
        "XADD" if xadd_auto_id(argv) => {
            return Err(
                "ERR XADD with an automatic ID (*) is not supported by understudy: each \
                 server would pick the ID from its own clock; give an explicit ID"
                    .into(),
            )
        }
        _ => None,
    })
}

fn int(b: &Bytes) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// `deadline_ms` (real) as the shifted `PXAT`/`PEXPIREAT` argument, if in
/// range.
fn shifted(deadline_ms: i64) -> Option<Bytes> {
    (0..=MAX_DEADLINE_MS)
        .contains(&deadline_ms)
        .then(|| b(&(deadline_ms + SHIFT_MS).to_string()))
}

/// `EXPIRE key n [flags]` / `PEXPIRE key n [flags]`.
fn relative_expire(argv: &[Bytes], now: i64, unit: i64) -> Option<Vec<Bytes>> {
    let n = int(argv.get(2)?)?;
    let deadline = n.checked_mul(unit)?.checked_add(now)?;
    let mut out = vec![b("PEXPIREAT"), argv[1].clone(), shifted(deadline.max(0))?];
    out.extend_from_slice(&argv[3..]);
    Some(out)
}

/// `EXPIREAT key t [flags]` / `PEXPIREAT key t [flags]`.
fn absolute_expire(argv: &[Bytes], unit: i64) -> Option<Vec<Bytes>> {
    let t = int(argv.get(2)?)?;
    let deadline = t.checked_mul(unit)?;
    let mut out = vec![b("PEXPIREAT"), argv[1].clone(), shifted(deadline.max(0))?];
    out.extend_from_slice(&argv[3..]);
    Some(out)
}

/// `SET key value [options]` (options from index 3) and `GETEX key
/// [options]` (from 2): the one expiry option becomes `PXAT`.
fn set_options(argv: &[Bytes], now: i64, from: usize, _name: &str) -> Option<Vec<Bytes>> {
    let mut found: Option<(usize, i64)> = None;
    let mut i = from;
    while i < argv.len() {
        let opt = String::from_utf8_lossy(&argv[i]).to_uppercase();
        let unit_and_base = match opt.as_str() {
            "EX" => Some((1000, now)),
            "PX" => Some((1, now)),
            "EXAT" => Some((1000, 0)),
            "PXAT" => Some((1, 0)),
            _ => None,
        };
        if let Some((unit, base)) = unit_and_base {
            if found.is_some() {
                return None; // Redis refuses two expiry options.
            }
            let n = int(argv.get(i + 1)?)?;
            if n <= 0 {
                return None; // "invalid expire time": left for Redis to say.
            }
            found = Some((i, n.checked_mul(unit)?.checked_add(base)?));
            i += 2;
        } else {
            i += 1;
        }
    }
    let (at, deadline) = found?;
    let mut out = argv.to_vec();
    out[at] = b("PXAT");
    out[at + 1] = shifted(deadline)?;
    Some(out)
}

/// `SETEX key seconds value` / `PSETEX key ms value` → `SET key value PXAT`.
fn setex(argv: &[Bytes], now: i64, unit: i64) -> Option<Vec<Bytes>> {
    if argv.len() != 4 {
        return None;
    }
    let n = int(&argv[2])?;
    if n <= 0 {
        return None;
    }
    let deadline = n.checked_mul(unit)?.checked_add(now)?;
    Some(vec![
        b("SET"),
        argv[1].clone(),
        argv[3].clone(),
        b("PXAT"),
        shifted(deadline)?,
    ])
}

/// `RESTORE key ttl payload [REPLACE] [ABSTTL] ...`: a ttl of 0 means none.
fn restore(argv: &[Bytes], now: i64) -> Option<Vec<Bytes>> {
    let ttl = int(argv.get(2)?)?;
    if ttl <= 0 {
        return None;
    }
    let abs = argv[4..].iter().any(|a| a.eq_ignore_ascii_case(b"ABSTTL"));
    let deadline = if abs { ttl } else { ttl.checked_add(now)? };
    let mut out = argv.to_vec();
    out[2] = shifted(deadline)?;
    if !abs {
        out.push(b("ABSTTL"));
    }
    Some(out)
}

/// Whether `XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] n [LIMIT c]] id ...`
/// asks for an automatic ID.
fn xadd_auto_id(argv: &[Bytes]) -> bool {
    let mut i = 2;
    let upper = |i: usize| {
        argv.get(i)
            .map(|a| String::from_utf8_lossy(a).to_uppercase())
    };
    if upper(i).as_deref() == Some("NOMKSTREAM") {
        i += 1;
    }
    if matches!(upper(i).as_deref(), Some("MAXLEN") | Some("MINID")) {
        i += 1;
        if matches!(upper(i).as_deref(), Some("=") | Some("~")) {
            i += 1;
        }
        i += 1;
        if upper(i).as_deref() == Some("LIMIT") {
            i += 2;
        }
    }
    argv.get(i).is_some_and(|id| id.as_ref() == b"*")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn args(s: &str) -> Vec<Bytes> {
        s.split(' ').map(b).collect()
    }

    fn text(v: &[Bytes]) -> String {
        v.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn rewritten(s: &str) -> Option<String> {
        deterministic(&args(s), NOW).unwrap().map(|v| text(&v))
    }

    fn at(ms: i64) -> String {
        (ms + SHIFT_MS).to_string()
    }

    #[test]
    fn relative_and_absolute_expiries_become_shifted_deadlines() {
        assert_eq!(
            rewritten("EXPIRE k 10"),
            Some(format!("PEXPIREAT k {}", at(NOW + 10_000)))
        );
        assert_eq!(
            rewritten("pexpire k 5 NX"),
            Some(format!("PEXPIREAT k {} NX", at(NOW + 5)))
        );
        assert_eq!(
            rewritten("EXPIREAT k 1800000000"),
            Some(format!("PEXPIREAT k {}", at(1_800_000_000_000)))
        );
        assert_eq!(
            rewritten("PEXPIREAT k 42"),
            Some(format!("PEXPIREAT k {}", at(42)))
        );
        // A deadline in the past stays one (the key expires on next touch).
        assert_eq!(
            rewritten("EXPIRE k -5"),
            Some(format!("PEXPIREAT k {}", at(NOW - 5_000)))
        );
        assert_eq!(
            rewritten("SET k v EX 2 NX"),
            Some(format!("SET k v PXAT {} NX", at(NOW + 2_000)))
        );
        assert_eq!(
            rewritten("SET k v GET EXAT 1800000000"),
            Some(format!("SET k v GET PXAT {}", at(1_800_000_000_000)))
        );
        assert_eq!(
            rewritten("SETEX k 3 v"),
            Some(format!("SET k v PXAT {}", at(NOW + 3_000)))
        );
        assert_eq!(
            rewritten("PSETEX k 3 v"),
            Some(format!("SET k v PXAT {}", at(NOW + 3)))
        );
        assert_eq!(
            rewritten("GETEX k PX 100"),
            Some(format!("GETEX k PXAT {}", at(NOW + 100)))
        );
        assert_eq!(
            rewritten("RESTORE k 1000 payload REPLACE"),
            Some(format!(
                "RESTORE k {} payload REPLACE ABSTTL",
                at(NOW + 1000)
            ))
        );
        assert_eq!(
            rewritten("RESTORE k 5 payload ABSTTL"),
            Some(format!("RESTORE k {} payload ABSTTL", at(5)))
        );
    }

    #[test]
    fn what_redis_would_refuse_is_left_for_redis_to_refuse() {
        for s in [
            "SET k v EX 0",
            "SET k v EX x",
            "SET k v EX 1 PX 2",
            "SETEX k 0 v",
            "EXPIRE k soon",
            "EXPIRE k 9223372036854775807",
            "RESTORE k 0 payload",
            "SET k v",
            "SET k v KEEPTTL",
            "GETEX k PERSIST",
            "INCR k",
        ] {
            assert_eq!(rewritten(s), None, "{s}");
        }
    }

    #[test]
    fn random_writes_are_refused_with_the_alternative() {
        let err = deterministic(&args("SPOP s"), NOW).unwrap_err();
        assert!(
            err.starts_with("ERR SPOP") && err.contains("SRANDMEMBER"),
            "{err}"
        );
        for s in [
            "XADD st * f v",
            "XADD st NOMKSTREAM MAXLEN ~ 10 * f v",
            "XADD st MINID = 5 LIMIT 3 * f v",
        ] {
            assert!(deterministic(&args(s), NOW).is_err(), "{s}");
        }
        assert_eq!(deterministic(&args("XADD st 1-1 f *"), NOW), Ok(None));
    }
}
