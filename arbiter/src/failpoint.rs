//! Fault injection for end-to-end tests: `UNDERSTUDY_FAILPOINT`.
//!
//! **A test hook — never set it in production.** It exists so a test can
//! kill the leading arbiter at one exact instant that a `kill -9` from
//! outside can only hit by luck.
//!
//! One failpoint exists:
//!
//! - `abort_after_epoch_bump[:KIND]`: the process calls
//!   [`std::process::abort`] right after the store has accepted (CAS
//!   succeeded) a state write that names a new active, before the core
//!   learns that the write landed. The core withholds every grant while
//!   such a write is in flight (`core::draft`), so no reply ever carries
//!   the new active's grant: the epoch is bumped in the store, the new
//!   active has not been told, and the leader dies without revoking its
//!   etcd lease. The next leader must finish the failover from the stored
//!   state (`tests/tests/etcd_failpoint_failover.rs`). `KIND` — `formation`,
//!   `failover` or `switchover` — limits it to that kind of epoch change;
//!   without it, any epoch change aborts (so a cluster could never form).
//!
//! The variable is read once, by [`arm_from_env`] at start-up (`main.rs`;
//! an arbiter run in-process by a library caller is never armed). An
//! unknown value refuses to start, so a typo cannot silently disarm a
//! test. Unset, a check costs one atomic load of a static.

use std::sync::OnceLock;

use crate::core::DecisionKind;

/// The environment variable that arms a failpoint.
pub const ENV: &str = "UNDERSTUDY_FAILPOINT";

/// The failpoint armed in this process, if any; set once at start-up.
static ARMED: OnceLock<Failpoint> = OnceLock::new();

/// A failpoint the arbiter can be started with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failpoint {
    /// Abort once a write naming a new active is stored, before any reply
    /// carries its grant.
    AbortAfterEpochBump {
        /// Only epoch changes of this kind; `None`: every one.
        only: Option<DecisionKind>,
    },
}

impl Failpoint {
    /// Parses `abort_after_epoch_bump[:formation|failover|switchover]`.
    pub fn parse(text: &str) -> Result<Failpoint, String> {
        let text = text.trim();
        let (name, kind) = match text.split_once(':') {
            Some((name, kind)) => (name, Some(kind)),
            None => (text, None),
        };
        if name != "abort_after_epoch_bump" {
            return Err(format!(
                "{ENV}={text:?} names no failpoint; the only one is \
                 abort_after_epoch_bump[:formation|failover|switchover] (a test hook: unset it \
                 outside tests)"
            ));
        }
        let only = match kind {
            None => None,
            Some("formation") => Some(DecisionKind::Formation),
            Some("failover") => Some(DecisionKind::Failover),
            Some("switchover") => Some(DecisionKind::Switchover),
            Some(other) => {
                return Err(format!(
                    "{ENV}={text:?}: {other:?} is no kind of epoch change; use formation, \
                     failover or switchover, or nothing for all three"
                ))
            }
        };
        Ok(Failpoint::AbortAfterEpochBump { only })
    }
}

/// Reads [`ENV`] and arms the failpoint it names (unset or empty: none).
/// Call once, at start-up, before serving.
pub fn arm_from_env() -> Result<Option<Failpoint>, String> {
    let Some(raw) = std::env::var_os(ENV) else {
        return Ok(None);
    };
    let text = raw
        .to_str()
        .ok_or_else(|| format!("{ENV} is not valid UTF-8"))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let failpoint = Failpoint::parse(text)?;
    let armed = *ARMED.get_or_init(|| failpoint);
    tracing::warn!(
        failpoint = ?armed,
        "{ENV} is set: this arbiter will abort on purpose (a test hook; never set it in \
         production)"
    );
    Ok(Some(armed))
}

/// The `abort_after_epoch_bump` failpoint: call right after a write naming
/// a new active through an epoch change of `kind` was stored, before the
/// core is told. Does nothing unless armed for `kind`.
pub fn abort_after_epoch_bump(kind: DecisionKind) {
    let Some(Failpoint::AbortAfterEpochBump { only }) = ARMED.get() else {
        return;
    };
    if only.is_none_or(|k| k == kind) {
        tracing::error!(
            failpoint = "abort_after_epoch_bump",
            kind = ?kind,
            "failpoint: aborting after the epoch bump was stored, before any grant was sent"
        );
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_failpoint_and_its_kind() {
        assert_eq!(
            Failpoint::parse("abort_after_epoch_bump"),
            Ok(Failpoint::AbortAfterEpochBump { only: None })
        );
        assert_eq!(
            Failpoint::parse(" abort_after_epoch_bump:failover "),
            Ok(Failpoint::AbortAfterEpochBump {
                only: Some(DecisionKind::Failover)
            })
        );
        let err = Failpoint::parse("abort_after_epoch_bump:sync_set").unwrap_err();
        assert!(
            err.contains("\"sync_set\"") && err.contains("failover"),
            "{err}"
        );
        let err = Failpoint::parse("abort_after_bump").unwrap_err();
        assert!(err.contains("abort_after_epoch_bump"), "{err}");
    }

    #[test]
    fn an_unarmed_failpoint_does_nothing() {
        // Nothing in unit tests arms it; the call must simply return.
        abort_after_epoch_bump(DecisionKind::Failover);
    }
}
