//! The one HTTP client of understudy's processes, configured here once:
//! a replica's heartbeats, a standby's forwards to the active, a
//! shutting-down active's switchover request, and the operator CLI.
//!
//! hyper's pooled client underneath; what each caller used to decide for
//! itself is decided here: connections without Nagle's delay, a connect
//! timeout (so a whole-call timeout means the request went out), a bound
//! on the answer read, no redirects followed (callers that follow a
//! leader's 307 do so on purpose), and one error type that says whether
//! the request was sent — a request that never left failed for sure and
//! may be retried; one that was sent may have been carried out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use hyper::Uri;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::auth::Token;
use crate::tls::{MaybeTls, Tls};
use crate::ErrorBody;

/// Largest answer read unless a caller sets another bound.
pub const DEFAULT_MAX_ANSWER: usize = 1 << 20;

/// A pooled client; cheap to clone.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<Connector, Full<Bytes>>,
    max_answer: usize,
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// A header as text, if present and printable.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// `Location` (a redirect's target).
    pub fn location(&self) -> Option<String> {
        self.header(LOCATION.as_str())
    }

    /// The JSON error body, when the answer is one.
    pub fn error_body(&self) -> Option<ErrorBody> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No connection: the request never left; retrying is safe.
    #[error("{0}")]
    NotSent(String),
    /// Sent, then the connection failed or the answer was unreadable.
    #[error("{0}")]
    Failed(String),
    /// Sent, and no whole answer within the time allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl HttpError {
    /// Whether the request may have reached the server.
    pub fn was_sent(&self) -> bool {
        !matches!(self, HttpError::NotSent(_))
    }
}

impl HttpClient {
    /// A client whose connections must be made within `connect_timeout`,
    /// speaking TLS to `https://` URLs with `tls` (without it, an
    /// `https://` URL is refused with the reason).
    pub fn new(connect_timeout: Duration, tls: Option<Arc<Tls>>) -> HttpClient {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.enforce_http(false);
        HttpClient {
            client: Client::builder(TokioExecutor::new()).build(Connector { http, tls }),
            max_answer: DEFAULT_MAX_ANSWER,
        }
    }

    /// The same client reading answers of up to `bytes`.
    pub fn with_max_answer(mut self, bytes: usize) -> HttpClient {
        self.max_answer = bytes;
        self
    }

    /// A request to `url`: with a JSON `body` when given, and the cluster
    /// `token` as a bearer credential when given.
    pub fn request(
        method: Method,
        url: &str,
        body: Option<Bytes>,
        token: Option<&Token>,
    ) -> Result<Request<Full<Bytes>>, HttpError> {
        let mut req = Request::builder().method(method).uri(url);
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(token) = token {
            req = req.header(AUTHORIZATION, token.bearer());
        }
        req.body(Full::new(body.unwrap_or_default()))
            .map_err(|e| HttpError::NotSent(format!("cannot build a request to {url}: {e}")))
    }

    /// Sends `req` and reads the whole answer, within `timeout`.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Answer, HttpError> {
        let call = async {
            let resp = self.client.request(req).await.map_err(|e| {
                let chain = error_chain(&e);
                if e.is_connect() {
                    HttpError::NotSent(chain)
                } else {
                    HttpError::Failed(chain)
                }
            })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, self.max_answer)
                .collect()
                .await
                .map_err(|e| HttpError::Failed(format!("reading the answer failed: {e}")))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| HttpError::Timeout(timeout))?
    }
}

/// TCP from hyper's connector, then TLS for `https://` with the
/// configuration current when the connection is made (so a reloaded
/// certificate is used by the next connection).
#[derive(Clone, Debug)]
pub struct Connector {
    http: HttpConnector,
    tls: Option<Arc<Tls>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<MaybeTls<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = uri.scheme_str() == Some("https");
        let tls = self.tls.clone();
        let host = uri.host().unwrap_or_default().to_string();
        let tcp = self.http.call(uri);
        Box::pin(async move {
            if https && tls.is_none() {
                return Err(
                    "an https:// URL, but this process has no TLS configured: set --tls-ca (and \
                     --tls-cert, --tls-key) or use http://"
                        .into(),
                );
            }
            let tcp = tcp.await?.into_inner();
            match tls {
                Some(tls) if https => Ok(TokioIo::new(tls.connect(&host, tcp).await?)),
                _ => Ok(TokioIo::new(MaybeTls::Plain(tcp))),
            }
        })
    }
}

/// `a: b: c` from an error and its sources ("client error (Connect): tcp
/// connect error: Connection refused (os error 111)").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_sent() {
        let client = HttpClient::new(Duration::from_secs(1), None);
        let url = format!("http://127.0.0.1:{}/x", closed_port());
        let req = HttpClient::request(Method::GET, &url, None, None).unwrap();
        let err = client.send(req, Duration::from_secs(2)).await.unwrap_err();
        assert!(!err.was_sent(), "{err:?}");
        assert!(err.to_string().contains("Connection refused"), "{err}");
    }

    #[tokio::test]
    async fn a_server_that_accepts_and_never_answers_is_a_timeout_after_sending() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let client = HttpClient::new(Duration::from_secs(1), None);
        let req =
            HttpClient::request(Method::POST, &url, Some(Bytes::from_static(b"{}")), None).unwrap();
        let err = client
            .send(req, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Timeout(_)), "{err:?}");
        assert!(err.was_sent());
        server.abort();
    }

    #[tokio::test]
    async fn answers_over_the_bound_are_refused_and_headers_are_kept() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        tokio::spawn(async move {
            for body_len in [10usize, 100] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://leader\r\ncontent-length: {body_len}\r\nconnection: close\r\n\r\n"
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&vec![b'x'; body_len]).await;
            }
        });
        let client = HttpClient::new(Duration::from_secs(1), None).with_max_answer(50);
        let req = HttpClient::request(Method::GET, &url, None, None).unwrap();
        let answer = client.send(req, Duration::from_secs(2)).await.unwrap();
        assert_eq!(answer.status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(answer.location().as_deref(), Some("http://leader"));
        assert_eq!(answer.body.len(), 10);
        let req = HttpClient::request(Method::GET, &url, None, None).unwrap();
        let err = client.send(req, Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(err, HttpError::Failed(_)), "{err:?}");
    }
}
