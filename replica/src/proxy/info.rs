//! `INFO` and `ROLE` with understudy's view of replication (DESIGN.md,
//! "Sessions and refusals"). The upstream's own replication section would
//! say "master, no replicas" on every replica; clients and tools that read
//! it must see which replica is the active and how far behind the others
//! are.

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

use super::client::Session;
use super::resp::{error, Reply};
use super::upstream::text;

/// Our `# Replication` section.
fn replication_section(s: &Session) -> String {
    let node = &s.node;
    let role = node.role();
    let applied = node.applied();
    let mut out = String::from("# Replication\r\n");
    if role.state.term().is_some() {
        let standbys = s.repl.followers.report(node.commit.durable().index);
        out.push_str("role:master\r\n");
        out.push_str(&format!(
            "connected_slaves:{}\r\n",
            standbys.iter().filter(|p| p.connected).count()
        ));
        for (i, p) in standbys.iter().enumerate() {
            out.push_str(&format!(
                "slave{i}:ip={},port=0,state={},offset={},lag={}\r\n",
                p.node_id,
                if p.connected {
                    "online"
                } else {
                    "disconnected"
                },
                p.acked.index.0,
                p.lag_ms / 1000
            ));
        }
        out.push_str(&format!("master_repl_offset:{}\r\n", applied.index.0));
    } else {
        let active = s.core.active_resp().unwrap_or_default();
        let (host, port) = active.rsplit_once(':').unwrap_or(("", "0"));
        let connected = s.repl.following().is_some_and(|f| f.connected);
        out.push_str("role:slave\r\n");
        out.push_str(&format!("master_host:{host}\r\nmaster_port:{port}\r\n"));
        out.push_str(&format!(
            "master_link_status:{}\r\n",
            if connected { "up" } else { "down" }
        ));
        out.push_str(&format!(
            "master_sync_in_progress:{}\r\n",
            s.core.needs_resync().is_some() as u8
        ));
        out.push_str(&format!("slave_repl_offset:{}\r\n", applied.index.0));
        out.push_str("slave_read_only:0\r\n");
    }
    out.push_str(&format!(
        "understudy_epoch:{}\r\nunderstudy_applied:{applied}\r\nunderstudy_durable:{}\r\n",
        role.seen,
        node.commit.durable()
    ));
    out
}

/// `INFO [section ...]`: the upstream's, with our replication section.
pub async fn info(s: &mut Session, argv: &[Bytes]) -> Reply {
    let sections: Vec<String> = argv[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_lowercase())
        .collect();
    let ours = replication_section(s);
    if sections.len() == 1 && sections[0] == "replication" {
        return BytesFrame::BulkString(Bytes::from(ours)).into();
    }
    let conn = match s.core.upstream().connect().await {
        Ok(c) => c,
        Err(e) => {
            return error(format!(
                "TRYAGAIN the local upstream cannot be reached: {e}"
            ))
            .into()
        }
    };
    let mut conn = conn;
    let reply = match conn.call(argv.iter().cloned()).await {
        Ok(r) => r,
        Err(e) => return error(format!("TRYAGAIN {e}")).into(),
    };
    let Some(theirs) = text(&reply) else {
        return reply.into();
    };
    // Replace (or add, if asked for everything) the replication section.
    let mut out = String::new();
    let mut skipping = false;
    let mut replaced = false;
    for line in theirs.split("\r\n") {
        if line.starts_with("# ") {
            skipping = line == "# Replication";
            if skipping {
                out.push_str(&ours);
                replaced = true;
                continue;
            }
        }
        if !skipping {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    if !replaced
        && (sections.is_empty()
            || sections
                .iter()
                .any(|s| s == "all" || s == "everything" || s == "default"))
    {
        out.push_str(&ours);
    }
    BytesFrame::BulkString(Bytes::from(out)).into()
}

/// `ROLE`: `master offset [[standby, 0, offset] …]`, or `slave host port
/// state offset`.
pub fn role(s: &Session) -> BytesFrame {
    let node = &s.node;
    let applied = node.applied().index.0 as i64;
    let b = |t: String| BytesFrame::BulkString(Bytes::from(t));
    if node.role().state.term().is_some() {
        let standbys = s.repl.followers.report(node.commit.durable().index);
        BytesFrame::Array(vec![
            b("master".into()),
            BytesFrame::Integer(applied),
            BytesFrame::Array(
                standbys
                    .iter()
                    .map(|p| {
                        BytesFrame::Array(vec![
                            b(p.node_id.to_string()),
                            b("0".into()),
                            b(p.acked.index.0.to_string()),
                        ])
                    })
                    .collect(),
            ),
        ])
    } else {
        let active = s.core.active_resp().unwrap_or_default();
        let (host, port) = active.rsplit_once(':').unwrap_or(("", "0"));
        let connected = s.repl.following().is_some_and(|f| f.connected);
        BytesFrame::Array(vec![
            b("slave".into()),
            b(host.to_string()),
            BytesFrame::Integer(port.parse().unwrap_or(0)),
            b(if connected { "connected" } else { "connect" }.into()),
            BytesFrame::Integer(applied),
        ])
    }
}
