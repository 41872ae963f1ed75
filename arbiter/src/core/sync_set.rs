//! Sync-set upkeep (`k = sync_standbys ≥ 1`): which standbys the active must
//! wait for before acknowledging a write (DESIGN.md, "Commit rule and the
//! sync set").
//!
//! Driven by the live active's heartbeat, one round per tick:
//!
//! 1. **Confirm**: when the active reports `sync_version` equal to ours, the
//!    whole current set holds every acknowledged write; it becomes the
//!    confirmed set (proto-common `HeartbeatReply::sync_version`).
//! 2. **Remove** a member that is silent longer than `lease·(1+drift)`,
//!    reports itself unhealthy, whose replication connection the active
//!    reports closed (at once: the active saw it end — a killed standby's
//!    socket is closed by its kernel — and waits for it until it learns
//!    the new set, so every write stalls meanwhile), that the active has
//!    not reported at all for longer than `lease_ms` (never connected to
//!    it), or that has not acknowledged for longer than `lease_ms` (a stuck
//!    standby blocks every write just like a dead one). Removing a member
//!    is safe at any time: it is recorded before the active hears of it,
//!    and only then does the active acknowledge writes without it.
//! 3. **Add** standbys the active reports connected and caught up
//!    (`lag_entries == 0` or `lag_ms ≤ heartbeat_ms`) until there are `k`,
//!    promotable ones (`priority > 0`) first, then ones that can lead now
//!    (no `cannot_lead` in their heartbeat). A member that cannot lead now
//!    (proxy mode: its upstream is being refilled) is replaced by such a
//!    standby when one is ready: kept, it would leave no candidate.
//!
//! Every change bumps `sync_version`, and the confirmed set shrinks to its
//! intersection with the new set: a member that left and came back must be
//! confirmed again, because the active may have acknowledged writes without
//! it in between. Nothing changes while the active is not live — removing a
//! member then would only take away a failover candidate, since nobody is
//! acknowledging writes anyway.

use proto_common::heartbeat::{Heartbeat, StandbyProgress};
use proto_common::NodeId;

use super::decision::{DecisionKind, DecisionRecord, Stamp};
use super::detector::Detector;
use super::draft::Draft;
use super::time::{arbiter_wait_ms, Millis};
use crate::store::ClusterState;

/// Whether `state` is degraded: an active with fewer than `k ≥ 1` sync members.
pub fn is_degraded(state: &ClusterState) -> bool {
    let k = state.params.sync_standbys as usize;
    k >= 1 && state.active.is_some() && state.sync_set.len() < k
}

/// One round of upkeep on `draft`, given the live active's `report` (`None`
/// when the active is not live: nothing changes). Adds are skipped when
/// `adds_allowed` is false (during a switchover). Returns a shortfall note
/// (dedup key and decision not taken) when the set stays below `k`.
pub fn upkeep(
    draft: &mut Draft,
    detector: &Detector,
    now: Millis,
    report: Option<&Heartbeat>,
    adds_allowed: bool,
    stamp: &Stamp,
) -> Option<(String, DecisionRecord)> {
    let report = report?;
    let params = draft.state.params.clone();
    let k = params.sync_standbys as usize;
    let state = &mut draft.state;

    if report.sync_version == state.sync_version
        && !state.sync_set.is_empty()
        && (state.confirmed_sync_version != state.sync_version
            || state.confirmed_sync != state.sync_set)
    {
        state.confirmed_sync = state.sync_set.clone();
        state.confirmed_sync_version = state.sync_version;
        let reason = format!(
            "the active confirmed sync set v{} {:?}: its members hold every acknowledged write",
            state.sync_version,
            names(&state.sync_set)
        );
        draft.decide(stamp.taken(DecisionKind::SyncSet, None, reason));
    }

    let state = &draft.state;
    let mut removed: Vec<(NodeId, String)> = state
        .sync_set
        .iter()
        .filter_map(|n| removal_reason(state, detector, now, report, n).map(|why| (n.clone(), why)))
        .collect();
    let mut kept: Vec<NodeId> = state
        .sync_set
        .iter()
        .filter(|n| !removed.iter().any(|(r, _)| r == *n))
        .cloned()
        .collect();
    while kept.len() > k {
        let extra = kept.pop().expect("kept is longer than k");
        removed.push((extra, format!("sync_standbys is {k}")));
    }

    let cannot_lead = |n: &NodeId| {
        detector
            .observation(n)
            .and_then(|o| o.report.cannot_lead.clone())
    };
    // Members that could not be promoted now (their upstream is being
    // refilled): replaced by a caught-up standby that could, if any.
    let stuck: Vec<(NodeId, String)> = kept
        .iter()
        .filter_map(|n| cannot_lead(n).map(|why| (n.clone(), why)))
        .collect();
    let mut added = Vec::new();
    let mut lagging = Vec::new();
    if adds_allowed && (kept.len() < k || !stuck.is_empty()) {
        let mut ready: Vec<&StandbyProgress> = Vec::new();
        for p in &report.standbys {
            let node = &p.node_id;
            if kept.contains(node)
                || removed.iter().any(|(r, _)| r == node)
                || state.is_active(node)
            {
                continue;
            }
            let eligible = state.members.contains_key(node)
                && !state.reinit.contains_key(node)
                && detector.heard_within(node, now, arbiter_wait_ms(&params))
                && detector.observation(node).is_some_and(|o| o.report.healthy);
            if !eligible {
                continue;
            }
            if p.connected && (p.lag_entries == 0 || p.lag_ms <= params.heartbeat_ms) {
                ready.push(p);
            } else {
                lagging.push(describe_progress(p));
            }
        }
        let priority = |n: &NodeId| state.members.get(n).map_or(0, |m| m.priority);
        ready.sort_by_key(|p| {
            (
                priority(&p.node_id) == 0,
                cannot_lead(&p.node_id).is_some(),
                std::cmp::Reverse(p.acked),
                p.node_id.clone(),
            )
        });
        let mut ready = ready.into_iter();
        for p in ready.by_ref().take(k.saturating_sub(kept.len())) {
            let why = format!("caught up (lag {} entries, {} ms)", p.lag_entries, p.lag_ms);
            added.push((p.node_id.clone(), why));
        }
        for (member, why) in stuck {
            let Some(p) = ready.next() else { break };
            if cannot_lead(&p.node_id).is_some() || priority(&p.node_id) == 0 {
                break;
            }
            kept.retain(|n| *n != member);
            removed.push((
                member.clone(),
                format!("it cannot lead ({why}) and {} can", p.node_id),
            ));
            let why = format!(
                "caught up (lag {} entries, {} ms), replacing {member}",
                p.lag_entries, p.lag_ms
            );
            added.push((p.node_id.clone(), why));
        }
    }

    if !removed.is_empty() || !added.is_empty() {
        let before = format!("v{} {:?}", state.sync_version, names(&state.sync_set));
        let state = &mut draft.state;
        state.sync_set = kept
            .into_iter()
            .chain(added.iter().map(|(n, _)| n.clone()))
            .collect();
        state.sync_version += 1;
        let set = state.sync_set.clone();
        state.confirmed_sync.retain(|n| set.contains(n));
        let mut parts: Vec<String> = removed
            .iter()
            .map(|(n, why)| format!("removed {n}: {why}"))
            .collect();
        parts.extend(added.iter().map(|(n, why)| format!("added {n}: {why}")));
        let reason = format!(
            "sync set v{} {:?} (was {before}): {}",
            state.sync_version,
            names(&state.sync_set),
            parts.join("; ")
        );
        let node = added.first().or(removed.first()).map(|(n, _)| n);
        draft.decide(stamp.taken(DecisionKind::SyncSet, node, reason));
    }

    let have = draft.state.sync_set.len();
    if have >= k {
        return None;
    }
    let key = format!(
        "short:{have}:{}",
        lagging
            .iter()
            .map(|(key, _)| key.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let effect = if params.strict {
        "strict mode: the active refuses writes"
    } else {
        "the active acknowledges writes with fewer standbys"
    };
    let why = if lagging.is_empty() {
        "no other standby is connected to the active and healthy".to_string()
    } else {
        let texts: Vec<&str> = lagging.iter().map(|(_, text)| text.as_str()).collect();
        format!("not caught up: {}", texts.join("; "))
    };
    let reason = format!("sync set has {have} of sync_standbys={k} members ({effect}); {why}");
    Some((key, stamp.not_taken(DecisionKind::SyncSet, None, reason)))
}

/// Records a change of the degraded flag as a decision.
pub fn settle_degraded(draft: &mut Draft, stamp: &Stamp) {
    let degraded = is_degraded(&draft.state);
    if degraded == draft.state.degraded {
        return;
    }
    draft.state.degraded = degraded;
    let k = draft.state.params.sync_standbys;
    let reason = if degraded {
        format!(
            "degraded: sync set {:?} has fewer than sync_standbys={k} members; a failover now could promote only a confirmed member",
            names(&draft.state.sync_set)
        )
    } else {
        format!(
            "no longer degraded: sync set {:?} has sync_standbys={k} members",
            names(&draft.state.sync_set)
        )
    };
    draft.decide(stamp.taken(DecisionKind::SyncSet, None, reason));
}

/// Why sync member `node` should leave the set now, if it should.
fn removal_reason(
    state: &ClusterState,
    detector: &Detector,
    now: Millis,
    report: &Heartbeat,
    node: &NodeId,
) -> Option<String> {
    let params = &state.params;
    let wait = arbiter_wait_ms(params);
    if !state.members.contains_key(node) {
        return Some("no longer a member".into());
    }
    if state.is_active(node) {
        return Some("it is the active".into());
    }
    if let Some(order) = state.reinit.get(node) {
        return Some(format!("it is being reinitialized (order {order})"));
    }
    let silent = detector.silence_ms(node, now);
    if silent > wait {
        return Some(format!(
            "silent for {silent} ms (more than lease·(1+drift) = {wait} ms)"
        ));
    }
    if let Some(obs) = detector.observation(node) {
        if !obs.report.healthy {
            return Some(format!(
                "reports unhealthy ({})",
                obs.report.detail.as_deref().unwrap_or("no detail")
            ));
        }
    }
    if report
        .standbys
        .iter()
        .any(|p| p.node_id == *node && !p.connected)
    {
        return Some("the active reports its replication connection closed".into());
    }
    if let Some(ms) = detector.disconnected_ms(node, now) {
        if ms > params.lease_ms {
            return Some(format!(
                "the active has not reported it connected for {ms} ms (more than lease_ms={})",
                params.lease_ms
            ));
        }
    }
    if let Some(p) = report
        .standbys
        .iter()
        .find(|p| p.node_id == *node && p.connected)
    {
        if p.lag_ms > params.lease_ms {
            return Some(format!(
                "has not acknowledged for {} ms (more than lease_ms={}; {} entries behind)",
                p.lag_ms, params.lease_ms, p.lag_entries
            ));
        }
    }
    None
}

/// `(dedup key, text)` for a standby that is not caught up.
fn describe_progress(p: &StandbyProgress) -> (String, String) {
    if p.connected {
        (
            format!("{}:lagging", p.node_id),
            format!(
                "{} lags {} entries ({} ms)",
                p.node_id, p.lag_entries, p.lag_ms
            ),
        )
    } else {
        (
            format!("{}:disconnected", p.node_id),
            format!("{} is not connected to the active", p.node_id),
        )
    }
}

fn names(nodes: &[NodeId]) -> Vec<&str> {
    nodes.iter().map(NodeId::as_str).collect()
}
