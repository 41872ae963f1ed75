//! The operator API's request and answer bodies (`POST /v1/switchover`,
//! `POST /v1/maintenance`, `POST /v1/params`), shared by the server and the
//! CLI so the two can never disagree on a field.

use proto_common::params::ClusterParams;
use proto_common::NodeId;
use serde::{Deserialize, Serialize};

/// `POST /v1/switchover` body: `{"to": "id"}`, or `{}` (or no body) for the
/// best candidate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    /// The standby to hand over to; absent: the best candidate. Kept as
    /// text so a malformed id gets a 400 naming it, not a JSON error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// `POST /v1/maintenance` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    /// On (no automatic failover) or off.
    pub enabled: bool,
}

/// `POST /v1/remove` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    /// The member to remove, as text so a malformed id gets a 400 naming it.
    pub node: String,
}

/// Answer to a remove request, once the change is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// The member removed.
    pub node: NodeId,
    /// The stored state's version after the removal.
    pub state_version: u64,
}

/// `POST /v1/reinit` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReinitRequest {
    /// The standby to reinitialize, as text so a malformed id gets a 400.
    pub node: String,
}

/// Answer to a reinit order, once it is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReinitOrdered {
    /// The standby.
    pub node: NodeId,
    /// The order's number (it reports it in its heartbeats once done).
    pub order: u64,
    /// The decision as recorded.
    pub reason: String,
}

/// `POST /v1/promote` body: a forced promotion (`arbiter promote NODE
/// --force --accept-data-loss`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// The standby to promote, as text so a malformed id gets a 400.
    pub node: String,
    /// Must be `true`: the operator accepts that acknowledged writes may
    /// be lost.
    #[serde(default)]
    pub accept_data_loss: bool,
}

/// Answer to a forced promotion, once it is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promoted {
    /// The new active.
    pub node: NodeId,
    /// Its epoch.
    pub epoch: proto_common::Epoch,
    /// The decision as recorded: what may have been lost.
    pub reason: String,
}

/// Answer to a started switchover. It completes through heartbeats; watch
/// `GET /v1/status` (`switchover`, then the new `active`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverStarted {
    /// The standby taking over.
    pub target: NodeId,
    /// The active handing over.
    pub from: Option<NodeId>,
    /// The epoch it started in (the target becomes active in the next).
    pub epoch: u64,
    /// What happens next, for people.
    pub message: String,
}

/// Answer to a maintenance request, once the change is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceState {
    /// Maintenance mode as now stored.
    pub maintenance: bool,
    /// Whether this request changed it (false: it already was so).
    pub changed: bool,
    /// The stored state's version after the request.
    pub state_version: u64,
    /// The current epoch.
    pub epoch: u64,
}

/// `POST /v1/params` body: any subset of the cluster parameters; the rest
/// keep their stored values. Unknown names are refused (a typo must not be
/// silently ignored).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamsUpdate {
    /// New `heartbeat_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// New `lease_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// New `drift`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<f64>,
    /// New `sync_standbys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_standbys: Option<u32>,
    /// New `strict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// New `initial_wait_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_wait_ms: Option<u64>,
    /// New `remove_after_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_after_ms: Option<u64>,
    /// New `max_lag_on_failover`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_on_failover: Option<u64>,
}

macro_rules! each_param {
    ($m:ident) => {
        $m!(
            heartbeat_ms,
            lease_ms,
            drift,
            sync_standbys,
            strict,
            initial_wait_ms,
            remove_after_ms,
            max_lag_on_failover
        )
    };
}

impl ParamsUpdate {
    /// Whether it names no parameter at all.
    pub fn is_empty(&self) -> bool {
        macro_rules! none {
            ($($f:ident),*) => { true $(&& self.$f.is_none())* };
        }
        each_param!(none)
    }

    /// `base` with the named parameters replaced (not yet validated).
    pub fn apply(&self, base: &ClusterParams) -> ClusterParams {
        let mut out = base.clone();
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { out.$f = v; })* };
        }
        each_param!(set);
        out
    }

    /// Parses the CLI's `key=value` words (`lease_ms=1500 strict=true`).
    /// Values are JSON scalars; a name that is not a parameter, or a value
    /// of the wrong type, is refused naming it.
    pub fn from_pairs<S: AsRef<str>>(pairs: &[S]) -> Result<ParamsUpdate, String> {
        let mut map = serde_json::Map::new();
        for pair in pairs {
            let pair = pair.as_ref();
            let Some((key, value)) = pair.split_once('=') else {
                return Err(format!(
                    "{pair:?} is not key=value; write e.g. lease_ms=1500 or strict=true"
                ));
            };
            let key = key.trim();
            let value = value.trim();
            let parsed = serde_json::from_str(value)
                .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
            if map.insert(key.to_string(), parsed).is_some() {
                return Err(format!("{key} is given twice"));
            }
        }
        serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| format!("{e} (parameters: {})", PARAM_NAMES.join(", ")))
    }
}

/// Every parameter name `POST /v1/params` takes.
pub const PARAM_NAMES: [&str; 8] = [
    "heartbeat_ms",
    "lease_ms",
    "drift",
    "sync_standbys",
    "strict",
    "initial_wait_ms",
    "remove_after_ms",
    "max_lag_on_failover",
];

/// `name: old -> new` for every parameter that differs.
pub fn describe_changes(old: &ClusterParams, new: &ClusterParams) -> Vec<String> {
    let (Ok(old), Ok(new)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return Vec::new();
    };
    PARAM_NAMES
        .iter()
        .filter(|n| old.get(**n) != new.get(**n))
        .map(|n| {
            let show = |v: &serde_json::Value| v.get(*n).map_or("?".into(), |x| x.to_string());
            format!("{n}: {} -> {}", show(&old), show(&new))
        })
        .collect()
}

/// Answer to `POST /v1/params`, once the change is stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamsChanged {
    /// The parameters now stored (and sent to replicas in every reply).
    pub params: ClusterParams,
    /// `name: old -> new` for each change; empty: nothing changed.
    pub changed: Vec<String>,
    /// The stored state's version after the request.
    pub state_version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_into_a_partial_update() {
        let u = ParamsUpdate::from_pairs(&["lease_ms=1500", "strict=true", "drift=0.2"]).unwrap();
        assert_eq!(u.lease_ms, Some(1500));
        assert_eq!(u.strict, Some(true));
        assert_eq!(u.drift, Some(0.2));
        assert_eq!(u.heartbeat_ms, None);
        assert!(!u.is_empty());
        assert!(ParamsUpdate::default().is_empty());
        let p = u.apply(&ClusterParams::default());
        assert_eq!((p.lease_ms, p.heartbeat_ms), (1500, 100));
        assert_eq!(
            describe_changes(&ClusterParams::default(), &p),
            [
                "lease_ms: 1000 -> 1500",
                "drift: 0.1 -> 0.2",
                "strict: false -> true"
            ]
        );
    }

    #[test]
    fn bad_pairs_name_the_problem() {
        let err = ParamsUpdate::from_pairs(&["lease=5"]).unwrap_err();
        assert!(err.contains("lease") && err.contains("lease_ms"), "{err}");
        let err = ParamsUpdate::from_pairs(&["lease_ms"]).unwrap_err();
        assert!(err.contains("key=value"), "{err}");
        let err = ParamsUpdate::from_pairs(&["lease_ms=fast"]).unwrap_err();
        assert!(err.contains("fast"), "{err}");
        let err = ParamsUpdate::from_pairs(&["lease_ms=1", "lease_ms=2"]).unwrap_err();
        assert!(err.contains("twice"), "{err}");
    }
}
