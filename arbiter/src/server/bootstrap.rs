//! Start-up: load the cluster state from the store, or create it on the
//! very first start, and decide whose parameters rule.
//!
//! Once a state exists, its **stored** parameters win over flags, the
//! environment and the config file: the replicas already follow the stored
//! lease numbers, and an arbiter that silently used shorter ones could
//! promote a standby while the old active's lease still runs (DESIGN.md,
//! "Arbiter failover": a new leader uses the stored parameters). Given
//! values that differ are logged, by name, as ignored.

use proto_common::params::ClusterParams;

use crate::clock::Clock;
use crate::config::Settings;
use crate::core::{DecisionKind, DecisionRecord};
use crate::store::{CasOutcome, ClusterState, StateStore};

/// The state to take office over: what the store holds, or a new state
/// with the configured parameters, written before anything else happens so
/// the parameters are fixed from the first heartbeat on.
pub async fn load_or_create(
    store: &dyn StateStore,
    settings: &Settings,
    clock: &Clock,
) -> Result<ClusterState, String> {
    let where_ = store.describe();
    let loaded = store
        .load()
        .await
        .map_err(|e| format!("cannot load the cluster state ({}): {e}", e.code()))?;
    if let Some(state) = loaded {
        return adopt(state, settings, &where_);
    }
    let mut state = ClusterState::new(settings.cluster.clone(), settings.params.clone());
    state.version = 1;
    state.push_history(DecisionRecord {
        unix_ms: clock.unix_ms(),
        epoch: state.epoch,
        kind: DecisionKind::Store,
        taken: true,
        node: None,
        reason: format!(
            "created the state of cluster {:?} in {where_} with {}",
            settings.cluster,
            describe_params(&settings.params)
        ),
        write_gap_ms: None,
    });
    match store.compare_and_swap(None, &state).await {
        Ok(CasOutcome::Written) => {
            tracing::info!(
                cluster = %settings.cluster,
                store = %where_,
                params = %describe_params(&state.params),
                "created the cluster state"
            );
            Ok(state)
        }
        // Another arbiter created it first (shared store): use theirs.
        Ok(CasOutcome::Conflict(Some(current))) => adopt(current, settings, &where_),
        Ok(CasOutcome::Conflict(None)) => Err(format!(
            "{where_} reported a conflict creating the cluster state but holds none; retry, \
             and check that nothing else writes to it"
        )),
        Err(e) => Err(format!(
            "cannot create the cluster state in {where_} ({}): {e}",
            e.code()
        )),
    }
}

/// Checks a loaded state belongs to this cluster and reports the given
/// parameters the stored ones override.
fn adopt(state: ClusterState, settings: &Settings, where_: &str) -> Result<ClusterState, String> {
    if state.cluster != settings.cluster {
        return Err(format!(
            "{where_} holds the state of cluster {:?}, but this arbiter was started with \
             cluster={:?}; fix --cluster, or give this cluster its own --store",
            state.cluster, settings.cluster
        ));
    }
    let ignored = ignored_params(&state.params, &settings.params, &settings.params_given);
    if !ignored.is_empty() {
        tracing::warn!(
            ignored = %ignored.join(", "),
            store = %where_,
            "the store already holds cluster parameters and they win over the given ones \
             (replicas follow the stored lease); changing them will take POST /v1/params"
        );
    }
    tracing::info!(
        cluster = %state.cluster,
        store = %where_,
        version = state.version,
        epoch = %state.epoch,
        active = %state.active_id().map_or("none", |a| a.as_str()),
        params = %describe_params(&state.params),
        "loaded the cluster state"
    );
    Ok(state)
}

/// `name=given (stored: value)` for every given parameter whose value
/// differs from the stored one.
pub fn ignored_params(
    stored: &ClusterParams,
    given: &ClusterParams,
    names: &[&'static str],
) -> Vec<String> {
    let (Ok(stored), Ok(given)) = (serde_json::to_value(stored), serde_json::to_value(given))
    else {
        return Vec::new();
    };
    names
        .iter()
        .filter(|n| stored.get(**n) != given.get(**n))
        .map(|n| {
            let show = |v: &serde_json::Value| v.get(*n).map_or("?".into(), |x| x.to_string());
            format!("{n}={} (stored: {})", show(&given), show(&stored))
        })
        .collect()
}

/// `heartbeat_ms=100 lease_ms=1000 …`, for logs and the history.
pub fn describe_params(p: &ClusterParams) -> String {
    format!(
        "heartbeat_ms={} lease_ms={} drift={} sync_standbys={} strict={} initial_wait_ms={} \
         remove_after_ms={} max_lag_on_failover={}",
        p.heartbeat_ms,
        p.lease_ms,
        p.drift,
        p.sync_standbys,
        p.strict,
        p.initial_wait_ms,
        p.remove_after_ms,
        p.max_lag_on_failover
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Options;
    use crate::store::MemoryStore;

    fn settings(extra: Options) -> Settings {
        Options {
            store: Some("file:/unused.json".into()),
            cluster: Some("c1".into()),
            ..extra
        }
        .resolve()
        .unwrap()
    }

    #[test]
    fn only_given_and_different_params_are_reported() {
        let stored = ClusterParams::default();
        let given = ClusterParams {
            lease_ms: 2000,
            heartbeat_ms: 100,
            ..Default::default()
        };
        let out = ignored_params(&stored, &given, &["lease_ms", "heartbeat_ms"]);
        assert_eq!(out, ["lease_ms=2000 (stored: 1000)"]);
        let out = ignored_params(&stored, &given, &[]);
        assert!(
            out.is_empty(),
            "defaults that differ were not given: {out:?}"
        );
    }

    #[tokio::test]
    async fn first_start_stores_the_given_params_later_starts_keep_them() {
        let store = MemoryStore::new();
        let clock = Clock::start();
        let first = settings(Options {
            lease_ms: Some(1500),
            ..Default::default()
        });
        let created = load_or_create(&store, &first, &clock).await.unwrap();
        assert_eq!(created.version, 1);
        assert_eq!(created.params.lease_ms, 1500);
        assert_eq!(store.snapshot().unwrap(), created);
        assert!(created.history[0].reason.contains("lease_ms=1500"));

        let second = settings(Options {
            lease_ms: Some(900),
            ..Default::default()
        });
        let loaded = load_or_create(&store, &second, &clock).await.unwrap();
        assert_eq!(loaded.params.lease_ms, 1500, "the stored parameters win");
    }

    #[tokio::test]
    async fn a_state_of_another_cluster_is_refused() {
        let store = MemoryStore::new();
        let clock = Clock::start();
        load_or_create(&store, &settings(Options::default()), &clock)
            .await
            .unwrap();
        let other = Options {
            store: Some("file:/unused.json".into()),
            cluster: Some("c2".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let err = load_or_create(&store, &other, &clock).await.unwrap_err();
        assert!(
            err.contains("\"c1\"") && err.contains("cluster=\"c2\"") && err.contains("--store"),
            "{err}"
        );
    }
}
