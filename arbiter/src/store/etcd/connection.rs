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

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use proto_common::tls::TlsFiles;

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

/// Connects to the etcd cluster at `endpoints` (`host:port` each), in TLS
/// with `tls` (the CA that signed etcd's certificates; the certificate
/// offered when etcd asks for one). etcd's connection keeps the files read
/// here: a renewed certificate is used after a restart.
///
/// The channel connects lazily and balances across members, so this only
/// fails on malformed endpoints; an unreachable etcd shows up on the first
/// call. `require_leader` makes a member cut off from its quorum refuse at
/// once instead of serving (or hanging on) a request it cannot commit.
pub async fn connect(endpoints: &[String], tls: Option<&TlsFiles>) -> Result<Client, StoreError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let urls: Vec<String> = endpoints
        .iter()
        .map(|e| format!("{scheme}://{e}"))
        .collect();
    let described = describe(endpoints);
    let mut options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_keep_alive(KEEPALIVE.0, KEEPALIVE.1)
        .with_keep_alive_while_idle(true)
        .with_require_leader(true);
    if let Some(files) = tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| {
                unavailable(
                    &described,
                    "connect",
                    &format!("cannot read {}: {e}", p.display()),
                )
            })
        };
        let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&files.ca)?));
        if let Some((cert, key)) = &files.identity {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        options = options.with_tls(config);
    }
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
///
/// `attempt` makes the call. It is made again, up to [`NOT_SENT_RETRIES`]
/// times, when the request never left this host: the balanced channel
/// keeps every endpoint, including a member that is dead or restarting,
/// and hands it about one call in three, which then fails with a refused
/// connection. Another attempt most likely goes to a live member, and
/// since nothing reached etcd, repeating even a transaction is safe. Any
/// other failure is returned at once: the request may have been applied.
pub async fn call<T, F, Fut>(store: &str, what: &str, mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    let mut retries = 0;
    loop {
        let error = match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e,
            Err(_) => {
                return Err(unavailable(
                    store,
                    what,
                    &format!("no answer within {CALL_TIMEOUT:?}"),
                ))
            }
        };
        let retry_at = tokio::time::Instant::now() + NOT_SENT_PAUSE;
        if retries == NOT_SENT_RETRIES || retry_at >= deadline || !never_sent(&error) {
            return Err(unavailable(store, what, &error.to_string()));
        }
        retries += 1;
        tracing::debug!(what, retries, error = %error, "etcd call refused before it was sent; trying again");
        tokio::time::sleep_until(retry_at).await;
    }
}

/// How many times [`call`] repeats a call that never left this host.
/// With one dead member of three, every attempt going to it is about 1 in
/// 3²¹; with all of etcd down, the caller hears so after about 0.4 s.
const NOT_SENT_RETRIES: u32 = 20;

/// Pause before such a repeat.
const NOT_SENT_PAUSE: Duration = Duration::from_millis(20);

/// Whether `error` says the request was never sent: the TCP connection to
/// the member it was given to was refused.
fn never_sent(error: &etcd_client::Error) -> bool {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return false;
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(status);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        cause = e.source();
    }
    false
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
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A client whose only endpoint is a closed loopback port.
    async fn refusing() -> (Client, String, u16) {
        // Bind then drop: the port is (very likely) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoints = vec![format!("127.0.0.1:{port}")];
        let client = connect(&endpoints, None).await.expect("connecting is lazy");
        (client, describe(&endpoints), port)
    }

    #[tokio::test]
    async fn an_unreachable_etcd_is_named_with_the_fix() {
        let (client, store, port) = refusing().await;
        let attempts = AtomicU32::new(0);
        let err = call(&store, "load the state", || {
            attempts.fetch_add(1, Ordering::Relaxed);
            let mut kv = client.kv_client();
            async move { kv.get("/x", None).await }
        })
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
        // A refused connection is recognised as a request never sent.
        assert_eq!(attempts.into_inner(), NOT_SENT_RETRIES + 1);
    }

    #[tokio::test]
    async fn a_call_refused_before_it_was_sent_is_made_again() {
        let (client, store, _) = refusing().await;
        let attempts = AtomicU32::new(0);
        let result = call(&store, "read", || {
            let attempt = attempts.fetch_add(1, Ordering::Relaxed);
            let mut kv = client.kv_client();
            async move {
                if attempt < 2 {
                    kv.get("/x", None).await.map(|_| "refused?")
                } else {
                    Ok("answered")
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), "answered");
        assert_eq!(attempts.into_inner(), 3);
    }

    #[tokio::test]
    async fn a_call_that_may_have_reached_etcd_is_not_made_again() {
        let attempts = AtomicU32::new(0);
        let err = call("etcd://x", "write", || {
            attempts.fetch_add(1, Ordering::Relaxed);
            // Any failure but a refused connection: the request may
            // have been applied.
            async { Err::<(), _>(etcd_client::Error::Internal("stream reset".into())) }
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("write failed"), "{err}");
        assert_eq!(attempts.into_inner(), 1);
    }
}
