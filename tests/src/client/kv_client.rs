//! [`KvClient`]: one keep-alive HTTP/1.1 connection to one replica, and
//! the API calls made over it.
//!
//! Requests are sequential (`&mut self`). The connection is opened on the
//! first request (or by [`KvClient::connect`]), replaced when the server
//! closed it, and dropped after a failure or timeout so that a late answer
//! can never be read as the answer to the next request. See the module
//! docs of [`crate::client`] for when a request is resent.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use proto_common::tls::{MaybeTls, Tls};
use tokio::net::TcpStream;

use super::credentials;
use super::error::ClientError;
use super::paths::{key_path, list_path};
use super::response::KvResponse;

/// Default bound on one request, connect and body included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One keep-alive connection to one replica's client API.
pub struct KvClient {
    /// `http://host:port` as given, without a trailing slash; reported in
    /// histories as "who answered".
    base_url: String,
    /// `host:port`, for connecting and for the `Host` header.
    authority: String,
    /// The open connection; `None` before the first request and after a
    /// failure, so the next request reconnects.
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Bound on one request (connect, send, full body).
    timeout: Duration,
    /// For `https://` URLs.
    tls: Option<Arc<Tls>>,
    /// Sent as `Authorization` on every request, when set.
    authorization: Option<String>,
}

impl KvClient {
    /// A client for `http://host:port` (or `https://`); connects lazily on
    /// the first request. A server the harness started with TLS or a token
    /// is reached with them (see [`super::credentials`]).
    pub fn new(base_url: &str) -> Result<KvClient, ClientError> {
        let known = base_url
            .trim_end_matches('/')
            .parse::<Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.to_string()))
            .and_then(|a| credentials::for_authority(&a));
        let Some(known) = known else {
            return KvClient::bare(base_url, None);
        };
        let client = KvClient::bare(base_url, known.tls)?;
        Ok(match known.token {
            Some(token) => client.with_bearer(&token),
            None => client,
        })
    }

    /// A client with exactly `tls` and no credential, whatever the harness
    /// knows about the server.
    pub fn bare(base_url: &str, tls: Option<Arc<Tls>>) -> Result<KvClient, ClientError> {
        KvClient::with_tls(base_url, tls)
    }

    /// A client for `http://host:port`, or `https://host:port` with `tls`.
    fn with_tls(base_url: &str, tls: Option<Arc<Tls>>) -> Result<KvClient, ClientError> {
        let trimmed = base_url.trim_end_matches('/');
        let uri: Uri = trimmed
            .parse()
            .map_err(|e| ClientError::InvalidRequest(format!("url {base_url:?}: {e}")))?;
        let scheme_ok = match uri.scheme_str() {
            Some("http") => true,
            Some("https") => tls.is_some(),
            _ => false,
        };
        if !scheme_ok {
            return Err(ClientError::InvalidRequest(format!(
                "url {base_url:?} must start with http:// (or https:// with a TLS configuration)"
            )));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(ClientError::InvalidRequest(format!(
                "url {base_url:?} must not have a path; use http://host:port"
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| ClientError::InvalidRequest(format!("url {base_url:?} has no host")))?;
        let authority = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:80", authority.as_str()),
        };
        Ok(KvClient {
            base_url: trimmed.to_string(),
            authority,
            sender: None,
            timeout: DEFAULT_TIMEOUT,
            tls: tls.filter(|_| uri.scheme_str() == Some("https")),
            authorization: None,
        })
    }

    /// Sends no `Authorization` unless a request names one.
    pub fn without_credential(mut self) -> KvClient {
        self.authorization = None;
        self
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_bearer(mut self, token: &str) -> KvClient {
        self.authorization = Some(format!("Bearer {}", token.trim()));
        self
    }

    /// Sets the bound on each request.
    pub fn with_timeout(mut self, timeout: Duration) -> KvClient {
        self.timeout = timeout;
        self
    }

    /// The base URL this client talks to, e.g. `http://127.0.0.1:7001`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Opens the connection now (e.g. before a benchmark's clock starts).
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.ready_sender()).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }

    /// `PUT /v1/kv/{key}` with the raw value as body.
    pub async fn put(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
    ) -> Result<KvResponse, ClientError> {
        let path = key_path(key.as_ref());
        self.request(Method::PUT, &path, &[], value).await
    }

    /// `GET /v1/kv/{key}`.
    pub async fn get(&mut self, key: impl AsRef<[u8]>) -> Result<KvResponse, ClientError> {
        let path = key_path(key.as_ref());
        self.request(Method::GET, &path, &[], Bytes::new()).await
    }

    /// `GET /v1/kv/{key}` with `X-Min-Version: {min_version}` (text `E.I`,
    /// passed through unchecked so tests can send malformed tokens).
    pub async fn get_with_min_version(
        &mut self,
        key: impl AsRef<[u8]>,
        min_version: &str,
    ) -> Result<KvResponse, ClientError> {
        let path = key_path(key.as_ref());
        let headers = [("x-min-version", min_version)];
        self.request(Method::GET, &path, &headers, Bytes::new())
            .await
    }

    /// `DELETE /v1/kv/{key}`.
    pub async fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<KvResponse, ClientError> {
        let path = key_path(key.as_ref());
        self.request(Method::DELETE, &path, &[], Bytes::new()).await
    }

    /// `GET /v1/kv?prefix=P&start_after=K&limit=N`; absent arguments are
    /// left out of the query.
    pub async fn list(
        &mut self,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<KvResponse, ClientError> {
        let path = list_path(prefix, start_after, limit);
        self.request(Method::GET, &path, &[], Bytes::new()).await
    }

    /// `POST /v1/txn` with a JSON body (`{"compare": [...], "ops": [...]}`).
    pub async fn txn(&mut self, body: &serde_json::Value) -> Result<KvResponse, ClientError> {
        let body = Bytes::from(body.to_string());
        let headers = [("content-type", "application/json")];
        self.request(Method::POST, "/v1/txn", &headers, body).await
    }

    /// Any request: `path` includes the query; `headers` are sent as given.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<KvResponse, ClientError> {
        let body = body.into();
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.send(method, path, headers, body)).await {
            Ok(result) => result,
            Err(_) => {
                // The answer may still arrive on this connection; never let
                // it be mistaken for the answer to the next request.
                self.sender = None;
                Err(ClientError::Timeout(timeout))
            }
        }
    }

    /// Sends on the current connection, once more on a fresh one when the
    /// first try provably did not reach the server (or was an idempotent GET
    /// on a connection that had died while idle).
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<KvResponse, ClientError> {
        let idempotent = method == Method::GET || method == Method::HEAD;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let reused = self.sender.is_some();
            let request = self.build(method.clone(), path, headers, body.clone())?;
            let sender = self.ready_sender().await?;
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let (parts, incoming) = response.into_parts();
                    match incoming.collect().await {
                        Ok(collected) => {
                            return Ok(KvResponse::new(
                                parts.status,
                                parts.headers,
                                collected.to_bytes(),
                            ))
                        }
                        Err(e) => {
                            self.sender = None;
                            return Err(ClientError::Http(e));
                        }
                    }
                }
                Err(mut failed) => {
                    self.sender = None;
                    let unsent = failed.take_message().is_some();
                    let error = failed.into_error();
                    let died_idle = idempotent && error.is_incomplete_message();
                    if reused && attempt == 1 && (unsent || died_idle) {
                        continue;
                    }
                    return Err(ClientError::Http(error));
                }
            }
        }
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.authority)
            .body(Full::new(body))
            .map_err(|e| ClientError::InvalidRequest(format!("path {path:?}: {e}")))?;
        if let Some(auth) = &self.authorization {
            let value = HeaderValue::from_str(auth)
                .map_err(|e| ClientError::InvalidRequest(format!("authorization: {e}")))?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            let octets = HeaderValue::from_static("application/octet-stream");
            request.headers_mut().insert(CONTENT_TYPE, octets);
        }
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| ClientError::InvalidRequest(format!("header {name:?}: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| ClientError::InvalidRequest(format!("header value {value:?}: {e}")))?;
            request.headers_mut().insert(name, value);
        }
        Ok(request)
    }

    /// The live connection, opening a new one when there is none or the
    /// server has closed it.
    async fn ready_sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, ClientError> {
        if let Some(sender) = &mut self.sender {
            if sender.is_closed() || sender.ready().await.is_err() {
                self.sender = None;
            }
        }
        if self.sender.is_none() {
            let stream = TcpStream::connect(&self.authority)
                .await
                .map_err(ClientError::Connect)?;
            // Small request/response pairs: Nagle would add up to 40 ms.
            stream.set_nodelay(true).map_err(ClientError::Connect)?;
            let stream = match &self.tls {
                None => MaybeTls::Plain(stream),
                Some(tls) => tls
                    .connect(proto_common::tls::host_of(&self.authority), stream)
                    .await
                    .map_err(ClientError::Connect)?,
            };
            let (sender, connection) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(ClientError::Http)?;
            // Ends by itself when the sender is dropped or the peer closes.
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("connection was just set"))
    }
}

impl fmt::Debug for KvClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvClient")
            .field("base_url", &self.base_url)
            .field("connected", &self.sender.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn base_urls_are_checked() {
        let c = KvClient::new("http://127.0.0.1:7001/").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:7001");
        assert_eq!(c.authority, "127.0.0.1:7001");
        assert_eq!(
            KvClient::new("http://localhost").unwrap().authority,
            "localhost:80"
        );
        for bad in ["https://a:1", "a:1", "http://a:1/v1", ""] {
            assert!(KvClient::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Answers each request with `Connection: close` and closes, recording
    /// the request line; so every request needs a new connection.
    async fn closing_server(listener: TcpListener, lines: tokio::sync::mpsc::Sender<String>) {
        let mut served = 0u32;
        while let Ok((mut stream, _)) = listener.accept().await {
            served += 1;
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&seen).to_string();
            let _ = lines
                .send(head.lines().next().unwrap_or("").to_string())
                .await;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nx-data-version: 1.{served}\r\ncontent-length: 2\r\n\
                 connection: close\r\n\r\nok"
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    }

    #[tokio::test]
    async fn reconnects_after_the_server_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let server = tokio::spawn(closing_server(listener, tx));

        let mut client = KvClient::new(&url).unwrap();
        let first = client.get("a/b").await.unwrap();
        assert_eq!(
            (first.status, first.data_version.as_deref()),
            (200, Some("1.1"))
        );
        let second = client.get("a/b").await.unwrap();
        assert_eq!(second.data_version.as_deref(), Some("1.2"));
        assert_eq!(&second.body[..], b"ok");
        assert_eq!(rx.recv().await.unwrap(), "GET /v1/kv/a%2Fb HTTP/1.1");
        server.abort();
    }

    #[tokio::test]
    async fn refused_connections_are_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let err = KvClient::new(&url)
            .unwrap()
            .put("k", "v")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "connect_refused");
        assert!(err.never_sent());
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let timeout = Duration::from_millis(100);
        let mut client = KvClient::new(&url).unwrap().with_timeout(timeout);
        let err = client.get("k").await.unwrap_err();
        assert!(
            matches!(err, ClientError::Timeout(t) if t == timeout),
            "{err}"
        );
        drop(listener);
    }
}
