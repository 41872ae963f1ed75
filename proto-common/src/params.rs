//! Cluster-wide timing and policy parameters.
//!
//! They live in the arbiter's store (a new arbiter leader uses the stored
//! ones) and reach replicas in every heartbeat reply, so one validated copy
//! governs both sides of the lease rule.

use serde::{Deserialize, Serialize};

/// Timing and failover policy shared by the arbiter and the replicas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterParams {
    /// How often replicas heartbeat the arbiter.
    pub heartbeat_ms: u64,
    /// How long a grant lets the active take writes (shortened on the
    /// replica by `drift`, lengthened on the arbiter by `drift`).
    pub lease_ms: u64,
    /// Upper bound on the relative clock-rate difference between any two
    /// machines (0.1 = 10 %). Only rate matters, never offset.
    pub drift: f64,
    /// `k`: how many standbys must hold a write before it is acknowledged.
    /// 0 is async mode.
    pub sync_standbys: u32,
    /// With `k ≥ 1`: when no standby can be in the sync set, block writes
    /// (`true`) or record an empty sync set and keep going degraded (`false`).
    pub strict: bool,
    /// First formation: how long to wait for replicas to report before
    /// naming the first active.
    pub initial_wait_ms: u64,
    /// A standby silent this long is dropped from membership.
    pub remove_after_ms: u64,
    /// Async mode only: a standby more than this many entries behind the
    /// failed active's last reported position is not promoted.
    pub max_lag_on_failover: u64,
}

impl Default for ClusterParams {
    fn default() -> Self {
        ClusterParams {
            heartbeat_ms: 100,
            lease_ms: 1000,
            drift: 0.1,
            sync_standbys: 1,
            strict: false,
            initial_wait_ms: 2000,
            remove_after_ms: 300_000,
            max_lag_on_failover: 100_000,
        }
    }
}

impl ClusterParams {
    /// Checks every rule that ties the fields together. The message names the
    /// values and the rule, so the operator knows what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_ms < 5 || self.heartbeat_ms > 60_000 {
            return Err(format!(
                "heartbeat_ms={} must be between 5 and 60000",
                self.heartbeat_ms
            ));
        }
        if self.lease_ms < 3 * self.heartbeat_ms {
            return Err(format!(
                "lease_ms={} must be at least 3 × heartbeat_ms={} (so a lease survives two lost heartbeats)",
                self.lease_ms, self.heartbeat_ms
            ));
        }
        if self.lease_ms > 600_000 {
            return Err(format!("lease_ms={} must be at most 600000", self.lease_ms));
        }
        if !self.drift.is_finite() || self.drift < 0.0 || self.drift > 0.5 {
            return Err(format!(
                "drift={} must be between 0.0 and 0.5 (a bound on clock-rate difference)",
                self.drift
            ));
        }
        if self.sync_standbys > 16 {
            return Err(format!(
                "sync_standbys={} must be at most 16",
                self.sync_standbys
            ));
        }
        if self.remove_after_ms < self.lease_ms {
            return Err(format!(
                "remove_after_ms={} must be at least lease_ms={}",
                self.remove_after_ms, self.lease_ms
            ));
        }
        if self.initial_wait_ms > 600_000 {
            return Err(format!(
                "initial_wait_ms={} must be at most 600000",
                self.initial_wait_ms
            ));
        }
        Ok(())
    }

    /// How long the active may keep taking writes after sending the
    /// heartbeat that earned its grant: `lease_ms · (1 − drift)`.
    pub fn replica_lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.lease_ms as f64 * (1.0 - self.drift) / 1000.0)
    }

    /// How long the arbiter waits after its last grant before another
    /// replica may be made active: `lease_ms · (1 + drift)`.
    pub fn arbiter_wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.lease_ms as f64 * (1.0 + self.drift) / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ClusterParams::default().validate().unwrap();
    }

    #[test]
    fn lease_must_cover_three_heartbeats() {
        let p = ClusterParams {
            heartbeat_ms: 200,
            lease_ms: 300,
            ..Default::default()
        };
        let err = p.validate().unwrap_err();
        assert!(err.contains("lease_ms=300"), "{err}");
        assert!(err.contains("heartbeat_ms=200"), "{err}");
    }

    #[test]
    fn drift_bounds() {
        for bad in [-0.1, 0.6, f64::NAN] {
            let p = ClusterParams {
                drift: bad,
                ..Default::default()
            };
            assert!(p.validate().is_err(), "drift {bad} accepted");
        }
    }

    #[test]
    fn lease_arithmetic() {
        let p = ClusterParams::default();
        assert_eq!(p.replica_lease().as_millis(), 900);
        assert_eq!(p.arbiter_wait().as_millis(), 1100);
    }
}
