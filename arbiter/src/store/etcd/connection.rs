//! Connecting to etcd through `etcd-client` (v3 gRPC API), and the one way
//! every etcd call is made: under a deadline, with failures turned into
//! `StoreError::Unavailable` messages that name the endpoints and the fix.
//!
//! A hung etcd call must never hang the arbiter: a store write that does
//! not return keeps the core's one write slot taken, and a campaign that
//! does not return keeps a follower from ever leading. So every unary call
//! goes through [`call`] with [`CALL_TIMEOUT`]; streams (watches,
//! keep-alives) are timed by their users.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::store::StoreError;

/// Longest one unary etcd call (get, txn, lease grant) may take. An etcd
/// that answers slower than this is treated as unavailable; the caller
/// retries. Well above etcd's own commit latency (a few ms on a healthy
/// cluster, up to its 1 s election timeout while it elects a leader).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest a TCP connection to one etcd member may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// HTTP/2 ping interval and ping timeout: a member that vanished (power
/// loss, partition) is noticed on long-lived watch and keep-alive streams
/// within about 1.5 s, not after the kernel's TCP timeout.
const KEEPALIVE: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(1));

/// Connects to the etcd cluster at `endpoints` (`host:port` each).
///
/// The channel connects lazily and balances across members, so this only
/// fails on malformed endpoints; an unreachable etcd shows up on the first
/// call. `require_leader` makes a member cut off from its quorum refuse at
/// once instead of serving (or hanging on) a request it cannot commit.
pub async fn connect(endpoints: &[String]) -> Result<Client, StoreError> {
    let urls: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
    let options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(KEEPALIVE.0, KEEPALIVE.1)
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    let described = describe(endpoints);
    match tokio::time::timeout(CALL_TIMEOUT, Client::connect(urls, Some(options))).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(unavailable(&described, "connect", &e.to_string())),
        Err(_) => Err(unavailable(
            &described,
            "connect",
            &format!("no connection within {CALL_TIMEOUT:?}"),
        )),
    }
}

/// Runs one etcd call under [`CALL_TIMEOUT`]; `what` names it in errors
/// ("load the state", "campaign"), `store` names the etcd cluster.
pub async fn call<T>(
    store: &str,
    what: &str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(unavailable(store, what, &e.to_string())),
        Err(_) => Err(unavailable(
            store,
            what,
            &format!("no answer within {CALL_TIMEOUT:?}"),
        )),
    }
}

/// `etcd://h1:2379,h2:2379`, for logs and messages.
pub fn describe(endpoints: &[String]) -> String {
    format!("etcd://{}", endpoints.join(","))
}

/// The error for an etcd that could not do `what`.
pub fn unavailable(store: &str, what: &str, detail: &str) -> StoreError {
    StoreError::Unavailable {
        detail: format!(
            "{store}: {what} failed: {detail} (check that etcd is running, reachable from \
             this host and has a quorum: etcdctl --endpoints=… endpoint health)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_etcd_is_named_with_the_fix() {
        // Bind then drop: the port is (very likely) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoints = vec![format!("127.0.0.1:{port}")];
        let client = connect(&endpoints).await.expect("connecting is lazy");
        let store = describe(&endpoints);
        let mut kv = client.kv_client();
        let err = call(&store, "load the state", kv.get("/x", None))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "store_unavailable");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("127.0.0.1:{port}"))
                && msg.contains("load the state")
                && msg.contains("endpoint health"),
            "{msg}"
        );
    }
}
