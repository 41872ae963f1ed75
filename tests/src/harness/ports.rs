//! Free loopback ports for the servers a test starts.
//!
//! Ports are chosen outside the kernel's ephemeral range
//! (`/proc/sys/net/ipv4/ip_local_port_range`), where the source ports of
//! outgoing connections come from: between our choosing a port and the
//! server binding it, any connection any process opens (a replica to its
//! redis-server, a client to a replica) could take an ephemeral one as its
//! source port, and the server then fails with "Address already in use"
//! (seen in a full run). A candidate is bound once to check it is free.
//! Two guards against collisions between tests: all ports of one call are
//! held open until every one is chosen (so one call never returns a port
//! twice), and a process-wide set remembers every port handed out (so tests
//! running in parallel threads never get the same port).

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

use rand::RngExt;

/// Where ports are chosen when the ephemeral range cannot be read (Linux's
/// default range is 32768–60999).
const FALLBACK: (u16, u16) = (20000, 32767);

/// Every port this process has handed out.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// One free port on 127.0.0.1.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free ports on 127.0.0.1.
///
/// Panics if the machine has no free ports left, which no test can survive.
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let range = non_ephemeral();
    let mut tries = 0;
    while ports.len() < n {
        tries += 1;
        assert!(tries < 10_000, "no free loopback port after {tries} tries");
        let port = candidate(&range);
        if handed_out.contains(&port) {
            continue;
        }
        let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        handed_out.insert(port);
        ports.push(port);
        // Held until the loop ends, so no other caller can bind it meanwhile.
        held.push(listener);
    }
    ports
}

/// The ports outside the ephemeral range, as (low, high) spans.
fn non_ephemeral() -> Vec<(u16, u16)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        });
    let Some((low, high)) = range else {
        return vec![FALLBACK];
    };
    let mut spans = Vec::new();
    if low > 10_001 {
        spans.push((10_000, low - 1));
    }
    if high < 65_000 {
        spans.push((high + 1, 65_535));
    }
    if spans.is_empty() {
        spans.push(FALLBACK);
    }
    spans
}

/// A random port in one of `spans`.
fn candidate(spans: &[(u16, u16)]) -> u16 {
    let total: u32 = spans.iter().map(|(l, h)| u32::from(h - l) + 1).sum();
    let mut pick = rand::rng().random_range(0..total);
    for (l, h) in spans {
        let width = u32::from(h - l) + 1;
        if pick < width {
            return l + pick as u16;
        }
        pick -= width;
    }
    spans[0].0
}

/// `http://127.0.0.1:{port}`.
pub fn loopback_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// `https://127.0.0.1:{port}` when `https`, else [`loopback_url`].
pub fn loopback_url_with(port: u16, https: bool) -> String {
    if https {
        format!("https://127.0.0.1:{port}")
    } else {
        loopback_url(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_outside_the_ephemeral_range() {
        let spans = non_ephemeral();
        let ports = free_ports(50);
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 50, "{ports:?}");
        for p in ports {
            assert!(
                spans.iter().any(|(l, h)| (*l..=*h).contains(&p)),
                "{p} is not in {spans:?}"
            );
            TcpListener::bind(("127.0.0.1", p)).expect("a port handed out is free");
        }
        assert_ne!(free_port(), free_port());
        assert_eq!(loopback_url(80), "http://127.0.0.1:80");
    }
}
