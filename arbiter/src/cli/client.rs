//! `ArbiterClient`: the arbiter's API for the operator commands and the
//! crate's HTTP tests, over the processes' one HTTP client
//! (`proto_common::http_client`).
//!
//! `https://` with the CA given by `--tls-ca` (and a client certificate
//! when the arbiter asks for one).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use proto_common::auth::Token;
use proto_common::http_client::{HttpClient, HttpError};
use proto_common::tls::Tls;
use proto_common::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::CliError;

/// Longest a call may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read (a status of hundreds of replicas fits easily).
const MAX_ANSWER: usize = 16 << 20;

/// A client for one arbiter.
#[derive(Clone)]
pub struct ArbiterClient {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:7700`.
    base: String,
    /// Sent as `Authorization: Bearer` when set.
    token: Option<Token>,
    /// For `https://` arbiters.
    tls: Option<Arc<Tls>>,
    /// Pooled connections.
    client: HttpClient,
}

/// A raw answer: status and body bytes.
#[derive(Debug)]
pub struct RawResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// `Location`, if any (a non-leading arbiter's 307).
    pub location: Option<String>,
    /// The body.
    pub body: Bytes,
}

impl ArbiterClient {
    /// A client for the arbiter at `base` (`http://host:port`).
    pub fn new(base: &str, token: Option<Token>) -> Result<ArbiterClient, CliError> {
        ArbiterClient::with_tls(base, token, None)
    }

    /// A client for the arbiter at `base`, `https://` with `tls`.
    pub fn with_tls(
        base: &str,
        token: Option<Token>,
        tls: Option<Arc<Tls>>,
    ) -> Result<ArbiterClient, CliError> {
        let trimmed = base.trim_end_matches('/');
        let bad = |detail: &str| CliError::BadUrl {
            url: base.to_string(),
            detail: detail.to_string(),
        };
        if trimmed.starts_with("https://") && tls.is_none() {
            return Err(bad(
                "an https:// arbiter needs the CA that signed its certificate: pass --tls-ca \
                 (or set UNDERSTUDY_TLS_CA)",
            ));
        }
        if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
            return Err(bad(
                "it must start with http:// or https://, e.g. http://127.0.0.1:7700",
            ));
        }
        trimmed
            .parse::<hyper::Uri>()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(ArbiterClient {
            base: trimmed.to_string(),
            token,
            client: HttpClient::new(Duration::from_secs(2), tls.clone())
                .with_max_answer(MAX_ANSWER),
            tls,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`, decoding a JSON answer (errors decode as [`CliError::Refused`]).
    /// A non-leading arbiter's 307 is followed once, to the leader.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let raw = self.send_to_leader(Method::GET, path, None).await?;
        self.decode(path, raw)
    }

    /// `POST path` with a JSON body, decoding a JSON answer.
    pub async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        let bytes = serde_json::to_vec(body).expect("request bodies always serialize");
        let raw = self
            .send_to_leader(Method::POST, path, Some(Bytes::from(bytes)))
            .await?;
        self.decode(path, raw)
    }

    /// Sends with the token; when a non-leading arbiter answers 307 with a
    /// `leader` (etcd mode), sends the same request to the leader, once.
    async fn send_to_leader(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<RawResponse, CliError> {
        let raw = self.send(method.clone(), path, body.clone(), true).await?;
        if raw.status != StatusCode::TEMPORARY_REDIRECT {
            return Ok(raw);
        }
        let leader = serde_json::from_slice::<ErrorBody>(&raw.body)
            .ok()
            .and_then(|b| b.leader)
            .map(|l| l.trim_end_matches('/').to_string());
        match leader {
            Some(leader) if leader != self.base => {
                let at_leader =
                    ArbiterClient::with_tls(&leader, self.token.clone(), self.tls.clone())?;
                at_leader.send(method, path, body, true).await
            }
            _ => Ok(raw),
        }
    }

    /// Sends any request; `auth` adds the bearer token (when there is one).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        auth: bool,
    ) -> Result<RawResponse, CliError> {
        let url = format!("{}{path}", self.base);
        let token = self.token.as_ref().filter(|_| auth);
        let req = HttpClient::request(method, &url, body, token).map_err(|e| CliError::BadUrl {
            url: url.clone(),
            detail: e.to_string(),
        })?;
        let answer = self.client.send(req, TIMEOUT).await.map_err(|e| match e {
            HttpError::NotSent(detail) => CliError::Unreachable {
                url: url.clone(),
                detail,
            },
            HttpError::Failed(detail) => CliError::BadResponse {
                url: url.clone(),
                detail,
            },
            HttpError::Timeout(_) => CliError::Timeout {
                url: url.clone(),
                secs: TIMEOUT.as_secs(),
            },
        })?;
        Ok(RawResponse {
            status: answer.status,
            content_type: answer.header("content-type"),
            location: answer.location(),
            body: answer.body,
        })
    }

    fn decode<T: DeserializeOwned>(&self, path: &str, raw: RawResponse) -> Result<T, CliError> {
        let url = format!("{}{path}", self.base);
        if !raw.status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&raw.body) {
                Ok(body) => CliError::Refused {
                    status: raw.status.as_u16(),
                    body,
                },
                Err(_) => CliError::BadResponse {
                    url,
                    detail: format!(
                        "status {} with a body that is not an error body: {:?}",
                        raw.status,
                        String::from_utf8_lossy(&raw.body[..raw.body.len().min(200)])
                    ),
                },
            });
        }
        serde_json::from_slice(&raw.body).map_err(|e| CliError::BadResponse {
            url,
            detail: format!("the JSON does not match: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(ArbiterClient::new("http://127.0.0.1:7700/", None).is_ok());
        let err = ArbiterClient::new("127.0.0.1:7700", None).err().unwrap();
        assert!(err.to_string().contains("http://"), "{err}");
        let err = ArbiterClient::new("https://a:1", None).err().unwrap();
        assert!(err.to_string().contains("--tls-ca"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_arbiter_is_named() {
        // Bind then drop, so the port is (very likely) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = ArbiterClient::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let err = client
            .get_json::<serde_json::Value>("/v1/status")
            .await
            .unwrap_err();
        assert_eq!(err.code(), "unreachable", "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
        assert!(msg.contains("is it running"), "{msg}");
    }
}
