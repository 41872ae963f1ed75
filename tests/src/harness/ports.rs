//! Free loopback ports for the servers a test starts.
//!
//! The kernel picks a free port when we bind port 0; we note it and close
//! the socket so the server under test can bind it. Two guards against
//! collisions: all ports of one call are held open until every one is
//! chosen (so one call never returns a port twice), and a process-wide set
//! remembers every port handed out (so tests running in parallel threads
//! never get the same port). Another process could still take the port in
//! the short window before the server binds it; on a test machine that is
//! rare enough, and a server that fails to bind says so in its log.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

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
    let mut tries = 0;
    while ports.len() < n {
        tries += 1;
        assert!(tries < 10_000, "no free loopback port after {tries} tries");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if handed_out.insert(port) {
            ports.push(port);
        }
        // Held until the loop ends, so the kernel cannot hand it out again.
        held.push(listener);
    }
    ports
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
    fn ports_are_distinct_and_bindable() {
        let ports = free_ports(20);
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), 20);
        for port in ports {
            TcpListener::bind(("127.0.0.1", port)).expect("port is free");
        }
        assert_ne!(free_port(), free_port());
        assert_eq!(loopback_url(80), "http://127.0.0.1:80");
    }
}
