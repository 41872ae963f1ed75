//! Proxy mode's settings, resolved and checked with the rest of the
//! replica's configuration (`config.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;

use proto_common::cpus;

/// The proxy-mode part of `Options`, as given.
#[derive(Debug, Default)]
pub struct ProxyOptions {
    pub upstream: Option<String>,
    pub upstream_password_file: Option<PathBuf>,
    pub upstream_socket: Option<PathBuf>,
    pub resp_listen: Option<String>,
    pub resp_cpus: Option<String>,
    pub advertise_resp: Option<String>,
    pub advertise_upstream: Option<String>,
    pub standby_reads: Option<String>,
    pub client_password_file: Option<PathBuf>,
    pub adopt_upstream_data: Option<bool>,
    pub upstream_timeout_ms: Option<u64>,
}

/// Where a standby's reads go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandbyReads {
    /// To the active, like writes: never stale.
    Forward,
    /// To the standby's own upstream: possibly stale.
    Local,
}

/// Validated proxy-mode settings.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// The upstream server, `host:port`.
    pub upstream: String,
    /// Its password (`requirepass`), if any.
    pub upstream_password: Option<String>,
    /// Its Unix socket, for client sessions and the offset probe; `None`:
    /// they use `upstream` over TCP.
    pub upstream_socket: Option<PathBuf>,
    /// Where Redis clients connect.
    pub resp_listen: SocketAddr,
    /// The CPUs the RESP thread is pinned to; `None`: not pinned.
    pub resp_cpus: Option<Vec<usize>>,
    /// The RESP address other replicas forward to.
    pub advertise_resp: String,
    /// The upstream's address for other replicas' upstreams (REPLICAOF).
    pub advertise_upstream: String,
    pub standby_reads: StandbyReads,
    /// A password clients may AUTH with, besides the cluster token.
    pub client_password: Option<String>,
    /// Adopt the data already in the upstream (a new cluster only).
    pub adopt_upstream_data: bool,
    /// An upstream that leaves a `PING` unanswered this long is stopped or
    /// hung: the replica's failure (`liveness.rs`).
    pub upstream_timeout: std::time::Duration,
}

/// Resolves proxy mode: `None` without `--upstream`; an error names the
/// setting and the fix. `has_token`: a cluster token is configured (then
/// the RESP port may listen beyond loopback).
pub fn resolve(o: ProxyOptions, has_token: bool) -> Result<Option<ProxySettings>, String> {
    let Some(upstream_url) = o.upstream else {
        for (name, given) in [
            ("resp_listen", o.resp_listen.is_some()),
            ("resp_cpus", o.resp_cpus.is_some()),
            ("upstream_password_file", o.upstream_password_file.is_some()),
            ("upstream_socket", o.upstream_socket.is_some()),
            ("standby_reads", o.standby_reads.is_some()),
            ("adopt_upstream_data", o.adopt_upstream_data.is_some()),
            ("upstream_timeout_ms", o.upstream_timeout_ms.is_some()),
        ] {
            if given {
                return Err(format!(
                    "{name} is a proxy-mode setting, but no upstream is set; pass --upstream \
                     redis://HOST:PORT to front a Redis server"
                ));
            }
        }
        return Ok(None);
    };
    let upstream = upstream_url
        .strip_prefix("redis://")
        .filter(|rest| !rest.is_empty() && !rest.contains('/') && !rest.contains('@'))
        .ok_or_else(|| {
            format!(
                "upstream={upstream_url:?} must be redis://HOST:PORT (no user, password or \
                 database in the URL; the password goes in upstream_password_file)"
            )
        })?
        .to_string();
    if !upstream.contains(':') {
        return Err(format!(
            "upstream={upstream_url:?} has no port; write e.g. redis://127.0.0.1:6379"
        ));
    }
    let read_secret = |path: &PathBuf, what: &str| -> Result<String, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
        let secret = text.trim().to_string();
        if secret.is_empty() {
            return Err(format!("{what} {} is empty", path.display()));
        }
        Ok(secret)
    };
    let upstream_password = o
        .upstream_password_file
        .as_ref()
        .map(|p| read_secret(p, "upstream_password_file"))
        .transpose()?;
    let client_password = o
        .client_password_file
        .as_ref()
        .map(|p| read_secret(p, "client_password_file"))
        .transpose()?;
    let listen_text = o.resp_listen.unwrap_or_else(|| "127.0.0.1:6380".into());
    let resp_listen: SocketAddr = listen_text.parse().map_err(|_| {
        format!("resp_listen={listen_text:?} is not an address; use IP:PORT such as 127.0.0.1:6380")
    })?;
    if !has_token && client_password.is_none() && !resp_listen.ip().is_loopback() {
        return Err(format!(
            "resp_listen={resp_listen} is not a loopback address and neither a cluster token nor \
             a client password is set; set --token-file or --client-password-file, or listen on \
             127.0.0.1"
        ));
    }
    let resp_cpus = o
        .resp_cpus
        .as_deref()
        .map(|text| {
            let cpus = cpus::parse("resp_cpus", text)?;
            cpus::check_allowed("resp_cpus", &cpus)?;
            Ok::<_, String>(cpus)
        })
        .transpose()?;
    let standby_reads = match o.standby_reads.as_deref().unwrap_or("forward") {
        "forward" => StandbyReads::Forward,
        "local" => StandbyReads::Local,
        other => {
            return Err(format!(
                "standby_reads={other:?} is not a mode; use \"forward\" (default) or \"local\""
            ))
        }
    };
    let upstream_timeout_ms = o.upstream_timeout_ms.unwrap_or(5000);
    if !(100..=600_000).contains(&upstream_timeout_ms) {
        return Err(format!(
            "upstream_timeout_ms={upstream_timeout_ms} is out of range: between 100 and 600000 \
             (default 5000, Redis's busy-reply threshold)"
        ));
    }
    Ok(Some(ProxySettings {
        upstream_timeout: std::time::Duration::from_millis(upstream_timeout_ms),
        advertise_resp: o.advertise_resp.unwrap_or_else(|| resp_listen.to_string()),
        advertise_upstream: o.advertise_upstream.unwrap_or_else(|| upstream.clone()),
        upstream,
        upstream_password,
        upstream_socket: o.upstream_socket,
        resp_listen,
        resp_cpus,
        standby_reads,
        client_password,
        adopt_upstream_data: o.adopt_upstream_data.unwrap_or(false),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(upstream: &str) -> ProxyOptions {
        ProxyOptions {
            upstream: Some(upstream.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_upstream_url_resolves_with_defaults() {
        let p = resolve(opts("redis://127.0.0.1:6379"), false)
            .unwrap()
            .unwrap();
        assert_eq!(p.upstream, "127.0.0.1:6379");
        assert_eq!(p.advertise_upstream, "127.0.0.1:6379");
        assert_eq!(p.resp_listen.to_string(), "127.0.0.1:6380");
        assert_eq!(p.standby_reads, StandbyReads::Forward);
    }

    #[test]
    fn bad_settings_name_the_value_and_the_fix() {
        for (url, part) in [
            ("http://127.0.0.1:6379", "must be redis://HOST:PORT"),
            ("redis://:secret@127.0.0.1:6379", "upstream_password_file"),
            ("redis://127.0.0.1", "has no port"),
        ] {
            let err = resolve(opts(url), false).unwrap_err();
            assert!(err.contains(part), "{url}: {err}");
        }
        let mut o = opts("redis://127.0.0.1:6379");
        o.resp_listen = Some("0.0.0.0:6380".into());
        assert!(resolve(o, false).unwrap_err().contains("loopback"));
        let o = ProxyOptions {
            resp_listen: Some("127.0.0.1:1".into()),
            ..Default::default()
        };
        assert!(resolve(o, false)
            .unwrap_err()
            .contains("no upstream is set"));
        let mut o = opts("redis://127.0.0.1:6379");
        o.standby_reads = Some("sometimes".into());
        assert!(resolve(o, false).unwrap_err().contains("\"forward\""));
        let mut o = opts("redis://127.0.0.1:6379");
        o.standby_reads = Some("local".into());
        assert_eq!(
            resolve(o, false).unwrap().unwrap().standby_reads,
            StandbyReads::Local
        );
        let mut o = opts("redis://127.0.0.1:6379");
        o.resp_cpus = Some("1023".into());
        assert!(resolve(o, false).unwrap_err().contains("resp_cpus=1023"));
        let mut o = opts("redis://127.0.0.1:6379");
        o.resp_cpus = Some("0-".into());
        assert!(resolve(o, false).unwrap_err().contains("resp_cpus=\"0-\""));
    }
}
