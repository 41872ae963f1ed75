//! `arbiter status` as text: a summary (epoch, active, leader, flags, what
//! a failover would do), one row per replica, then the last decisions with
//! their times and reasons — the answer to "why did / didn't it fail over?".

use proto_common::heartbeat::Role;

use crate::core::DecisionRecord;
use crate::server::metrics::kind_name;
use crate::status::{ClusterStatus, ReplicaStatus};

/// How many decisions the table shows.
pub const DECISIONS_SHOWN: usize = 10;

/// Renders `status` for a terminal.
pub fn render_status(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let active = status.active.as_ref().map_or("none", |a| a.as_str());
    out.push_str(&format!(
        "cluster {}  epoch {}  active {}  leader {}\n",
        status.cluster,
        status.epoch,
        active,
        status.leader.as_deref().unwrap_or("?")
    ));
    let names =
        |v: &[proto_common::NodeId]| v.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ");
    out.push_str(&format!(
        "maintenance {}  degraded {}  sync set [{}] confirmed [{}]  state version {}{}\n",
        on_off(status.maintenance),
        if status.degraded { "yes" } else { "no" },
        names(&status.sync_set),
        names(&status.confirmed_sync),
        status.state_version,
        if status.write_in_flight {
            " (write in flight)"
        } else {
            ""
        }
    ));
    if !status.is_leader {
        // A follower holds the stored state only: heartbeats, lag and the
        // failover clock live in the leader.
        out.push_str(&format!(
            "this arbiter follows; heartbeats, health and failover timing are the \
             leader's: arbiter status --arbiter {}\n",
            status.leader.as_deref().unwrap_or("<leader>")
        ));
        out.push('\n');
        out.push_str(&replica_table(status));
        out.push_str(&decisions_list(status));
        return out;
    }
    let f = &status.failover;
    let mut failover = format!(
        "failover: candidate {}",
        f.candidate.as_ref().map_or("none", |c| c.as_str())
    );
    if let Some(risk) = f.entries_at_risk {
        failover.push_str(&format!(" ({risk} entries at risk, async mode)"));
    }
    if let Some(silent) = f.active_silent_ms {
        failover.push_str(&format!(", active silent {silent} ms"));
    }
    failover.push_str(&format!(", lease wait left {} ms\n", f.lease_wait_left_ms));
    out.push_str(&failover);
    if let Some(sw) = &status.switchover {
        out.push_str(&format!(
            "switchover {} -> {}: {} ms elapsed, cancelled in {} ms unless complete\n",
            sw.from, sw.target, sw.elapsed_ms, sw.time_left_ms
        ));
    }

    out.push('\n');
    out.push_str(&replica_table(status));
    out.push_str(&decisions_list(status));
    out
}

/// One row per replica, then why any of them is not a candidate.
fn replica_table(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let mut rows = vec![[
        "ID",
        "ROLE",
        "POSITION",
        "LAG",
        "HB AGE MS",
        "SYNC",
        "PRIORITY",
        "QUARANTINED",
        "HEALTH",
    ]
    .map(String::from)
    .to_vec()];
    let silent_after = 2 * status.params.heartbeat_ms;
    rows.extend(
        status
            .replicas
            .iter()
            .map(|r| replica_row(r, silent_after, status.is_leader)),
    );
    out.push_str(&columns(&rows));
    for r in &status.replicas {
        if let Some(why) = &r.not_eligible {
            out.push_str(&format!("  {} is not a candidate: {why}\n", r.node_id));
        }
    }
    for r in &status.replicas {
        if let Some(u) = &r.upstream {
            out.push_str(&format!(
                "  {}'s upstream: {}\n",
                r.node_id,
                upstream_line(u)
            ));
        }
    }
    for r in &status.replicas {
        if let Some(d) = &r.disk {
            out.push_str(&format!("  {}'s disk: {}\n", r.node_id, disk_line(d)));
        }
    }
    out
}

/// A replica's data directory in one line: its size and how old its
/// newest snapshot is.
fn disk_line(d: &proto_common::heartbeat::DiskUse) -> String {
    let size = format!(
        "{:.1} MiB in its data directory",
        d.data_dir_bytes as f64 / (1024.0 * 1024.0)
    );
    match d.snapshot_age_secs {
        Some(s) => format!("{size}, newest snapshot {s} s old"),
        None => format!("{size}, no snapshot yet"),
    }
}

/// A proxy-mode replica's upstream in one line: down, or up with its
/// memory and clients against their limits (and the tap's lag).
fn upstream_line(u: &proto_common::heartbeat::UpstreamHealth) -> String {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
    let mut line = if u.up {
        "up,".to_string()
    } else {
        "DOWN (last read:".to_string()
    };
    line += &format!(
        " memory {} of {}, {} of {} clients",
        mib(u.used_memory),
        if u.maxmemory == 0 {
            "no maxmemory".to_string()
        } else {
            mib(u.maxmemory)
        },
        u.connected_clients,
        u.maxclients
    );
    if u.loading {
        line += ", loading an RDB";
    }
    if u.tap_lag_bytes > 0 {
        line += &format!(", tap {} B behind", u.tap_lag_bytes);
    }
    if !u.up {
        line += ")";
    }
    line
}

/// The last decisions, oldest first (the stored history on a follower).
fn decisions_list(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let (title, decisions) = if status.recent_decisions.is_empty() {
        ("stored history", &status.history)
    } else {
        ("recent decisions", &status.recent_decisions)
    };
    let skip = decisions.len().saturating_sub(DECISIONS_SHOWN);
    out.push_str(&format!(
        "\n{title} (last {}, oldest first):\n",
        decisions.len() - skip
    ));
    for d in decisions.iter().skip(skip) {
        out.push_str(&decision_line(d, status.now_unix_ms));
    }
    out
}

fn replica_row(r: &ReplicaStatus, silent_after: u64, is_leader: bool) -> Vec<String> {
    let role = match r.reported_role {
        Some(reported) if reported != r.role => format!("{} (reports {reported})", r.role),
        _ => r.role.to_string(),
    };
    let sync = if r.role == Role::Active {
        "-"
    } else if r.sync_confirmed {
        "confirmed"
    } else if r.in_sync_set {
        "yes"
    } else {
        "no"
    };
    let health = match (r.last_heartbeat_age_ms, r.healthy) {
        (None, _) if !is_leader => "(on the leader)".to_string(),
        (None, _) => "not heard".to_string(),
        (Some(age), _) if age > silent_after => "silent".to_string(),
        (Some(_), true) => "ok".to_string(),
        (Some(_), false) => format!(
            "unhealthy{}",
            r.detail
                .as_ref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ),
    };
    vec![
        r.node_id.to_string(),
        role,
        r.position.to_string(),
        r.lag_entries.map_or("-".into(), |l| l.to_string()),
        r.last_heartbeat_age_ms
            .map_or("-".into(), |a| a.to_string()),
        sync.to_string(),
        r.priority.to_string(),
        r.quarantined_entries.to_string(),
        health,
    ]
}

fn decision_line(d: &DecisionRecord, now_unix_ms: u64) -> String {
    let ago = now_unix_ms.saturating_sub(d.unix_ms) / 1000;
    format!(
        "  {} ({ago}s ago)  epoch {}  {} {}{}: {}\n",
        utc(d.unix_ms),
        d.epoch,
        kind_name(d.kind),
        if d.taken { "taken" } else { "not taken" },
        d.node
            .as_ref()
            .map(|n| format!(" [{n}]"))
            .unwrap_or_default(),
        d.reason
    )
}

/// Left-aligned columns two spaces apart, trailing spaces trimmed.
fn columns(rows: &[Vec<String>]) -> String {
    let mut widths = vec![0; rows.iter().map(Vec::len).max().unwrap_or(0)];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// `YYYY-MM-DD HH:MM:SSZ` for Unix ms (civil-from-days, proleptic Gregorian).
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::DecisionKind;
    use crate::status::FailoverStatus;
    use proto_common::params::ClusterParams;
    use proto_common::{Epoch, LogIndex, NodeId, Position};

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn replica(name: &str, role: Role, pos: Position) -> ReplicaStatus {
        ReplicaStatus {
            node_id: id(name),
            role,
            reported_role: Some(role),
            reported_epoch: Some(Epoch(3)),
            client_url: format!("http://{name}:7000"),
            repl_addr: format!("{name}:7100"),
            position: pos,
            commit_index: Some(LogIndex(pos.index.0)),
            lag_entries: None,
            connected_to_active: None,
            last_heartbeat_age_ms: Some(40),
            in_sync_set: false,
            sync_confirmed: false,
            priority: 1,
            quarantined_entries: 0,
            healthy: true,
            detail: None,
            following: None,
            not_eligible: None,
            upstream: None,
            disk: None,
        }
    }

    fn fixed_status() -> ClusterStatus {
        let now = 1_700_000_000_000;
        let b = ReplicaStatus {
            lag_entries: Some(0),
            in_sync_set: true,
            sync_confirmed: true,
            last_heartbeat_age_ms: Some(12),
            ..replica("b", Role::Standby, Position::new(3, 120))
        };
        let c = ReplicaStatus {
            lag_entries: Some(21),
            last_heartbeat_age_ms: Some(95),
            priority: 0,
            quarantined_entries: 4,
            healthy: false,
            detail: Some("disk failed".into()),
            reported_role: Some(Role::Active),
            not_eligible: Some("c has priority 0".into()),
            ..replica("c", Role::Standby, Position::new(2, 99))
        };
        ClusterStatus {
            cluster: "prod".into(),
            leader: Some("http://127.0.0.1:7700".into()),
            is_leader: true,
            epoch: Epoch(3),
            active: Some(id("a")),
            state_version: 17,
            maintenance: false,
            degraded: false,
            sync_set: vec![id("b")],
            sync_version: 5,
            confirmed_sync: vec![id("b")],
            confirmed_sync_version: 5,
            params: ClusterParams::default(),
            replicas: vec![replica("a", Role::Active, Position::new(3, 120)), b, c],
            failover: FailoverStatus {
                lease_wait_left_ms: 0,
                active_silent_ms: Some(40),
                candidate: Some(id("b")),
                entries_at_risk: None,
            },
            switchover: None,
            write_in_flight: false,
            recent_decisions: vec![DecisionRecord {
                unix_ms: now - 65_000,
                epoch: Epoch(3),
                kind: DecisionKind::Failover,
                taken: true,
                node: Some(id("a")),
                reason: "epoch 3: failover to a at position 2.99".into(),
                write_gap_ms: None,
            }],
            history: Vec::new(),
            now_unix_ms: now,
        }
    }

    #[test]
    fn renders_a_fixed_status() {
        let text = render_status(&fixed_status());
        let want = "\
cluster prod  epoch 3  active a  leader http://127.0.0.1:7700
maintenance off  degraded no  sync set [b] confirmed [b]  state version 17
failover: candidate b, active silent 40 ms, lease wait left 0 ms

ID  ROLE                      POSITION  LAG  HB AGE MS  SYNC       PRIORITY  QUARANTINED  HEALTH
a   active                    3.120     -    40         -          1         0            ok
b   standby                   3.120     0    12         confirmed  1         0            ok
c   standby (reports active)  2.99      21   95         no         0         4            unhealthy: disk failed
  c is not a candidate: c has priority 0

recent decisions (last 1, oldest first):
  2023-11-14 22:12:15Z (65s ago)  epoch 3  failover taken [a]: epoch 3: failover to a at position 2.99
";
        assert_eq!(text, want, "got:\n{text}");
    }

    #[test]
    fn silent_replicas_and_long_logs_are_summarised() {
        let mut s = fixed_status();
        s.replicas[1].last_heartbeat_age_ms = Some(5000);
        s.replicas[2].last_heartbeat_age_ms = None;
        s.recent_decisions = (0..25)
            .map(|i| DecisionRecord {
                reason: format!("#{i}"),
                ..s.recent_decisions[0].clone()
            })
            .collect();
        let text = render_status(&s);
        assert!(
            text.contains("5000       confirmed  1         0            silent"),
            "{text}"
        );
        assert!(text.contains("not heard"), "{text}");
        assert!(text.contains("last 10,"), "{text}");
        assert!(
            text.contains(": #24\n") && !text.contains(": #14\n"),
            "{text}"
        );
    }

    #[test]
    fn a_follower_points_to_the_leader_for_what_only_the_leader_knows() {
        let mut s = fixed_status();
        s.is_leader = false;
        for r in &mut s.replicas {
            r.last_heartbeat_age_ms = None;
        }
        let text = render_status(&s);
        assert!(
            text.contains(
                "this arbiter follows; heartbeats, health and failover timing are the \
                 leader's: arbiter status --arbiter http://127.0.0.1:7700\n"
            ),
            "{text}"
        );
        assert!(!text.contains("failover: candidate"), "{text}");
        assert!(
            text.contains("(on the leader)") && !text.contains("not heard"),
            "{text}"
        );
        assert!(text.contains("epoch 3: failover to a"), "{text}");
    }

    #[test]
    fn proxy_mode_shows_each_replicas_upstream() {
        use proto_common::heartbeat::UpstreamHealth;
        let mut s = fixed_status();
        s.replicas[0].upstream = Some(UpstreamHealth {
            up: true,
            used_memory: 3 << 20,
            maxmemory: 8 << 20,
            connected_clients: 12,
            maxclients: 10_000,
            loading: false,
            tap_lag_bytes: 512,
        });
        s.replicas[1].upstream = Some(UpstreamHealth {
            up: false,
            used_memory: 1 << 20,
            maxmemory: 0,
            connected_clients: 3,
            maxclients: 10_000,
            loading: true,
            tap_lag_bytes: 0,
        });
        let text = render_status(&s);
        assert!(
            text.contains(
                "  a's upstream: up, memory 3.0 MiB of 8.0 MiB, 12 of 10000 clients, tap 512 B \
                 behind\n  b's upstream: DOWN (last read: memory 1.0 MiB of no maxmemory, 3 of \
                 10000 clients, loading an RDB)\n"
            ),
            "{text}"
        );
        assert!(!text.contains("c's upstream"), "{text}");
    }

    #[test]
    fn each_replicas_disk_use_is_shown() {
        use proto_common::heartbeat::DiskUse;
        let mut s = fixed_status();
        s.replicas[0].disk = Some(DiskUse {
            data_dir_bytes: 300 << 20,
            snapshot_age_secs: Some(42),
        });
        s.replicas[1].disk = Some(DiskUse {
            data_dir_bytes: 1 << 19,
            snapshot_age_secs: None,
        });
        let text = render_status(&s);
        assert!(
            text.contains(
                "  a's disk: 300.0 MiB in its data directory, newest snapshot 42 s old\n  b's \
                 disk: 0.5 MiB in its data directory, no snapshot yet\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_700_000_000_999), "2023-11-14 22:13:20Z");
    }
}
