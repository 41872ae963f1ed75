//! The cluster token and the proofs built from it.
//!
//! The token never crosses the wire on the replication port: each side
//! proves it knows the token with an HMAC-SHA256 over a fresh nonce chosen
//! by the *other* side, so a recorded handshake cannot be replayed. HTTP
//! calls (heartbeats, operator calls) carry it as a bearer token, over TLS
//! when the network is not trusted.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Whether two secrets are equal, in time that does not depend on where
/// they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a client credential allows on a data API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grant {
    /// Reads, `/v1/status`, `/metrics`.
    ReadOnly,
    /// Everything a client may do.
    ReadWrite,
}

/// Who may use a data API: the cluster token and the client tokens. With
/// none configured (a loopback-only cluster) no credential is asked for.
#[derive(Clone, Debug, Default)]
pub struct Access {
    cluster: Option<Token>,
    read_write: Option<Token>,
    read_only: Option<Token>,
}

impl Access {
    pub fn new(
        cluster: Option<Token>,
        read_write: Option<Token>,
        read_only: Option<Token>,
    ) -> Access {
        Access {
            cluster,
            read_write,
            read_only,
        }
    }

    /// Whether requests must carry a credential.
    pub fn required(&self) -> bool {
        self.cluster.is_some() || self.read_write.is_some() || self.read_only.is_some()
    }

    /// What `secret` allows, if it is one of the tokens.
    pub fn grant(&self, secret: &[u8]) -> Option<Grant> {
        let is = |t: &Option<Token>| t.as_ref().is_some_and(|t| t.matches(secret));
        if is(&self.cluster) || is(&self.read_write) {
            Some(Grant::ReadWrite)
        } else if is(&self.read_only) {
            Some(Grant::ReadOnly)
        } else {
            None
        }
    }

    /// What an `Authorization` header allows: `Bearer <token>`, or `Basic`
    /// with the token as the password (what a browser sends); `Err` says
    /// why the header gives nothing.
    pub fn grant_for_header(&self, header: Option<&[u8]>) -> Result<Grant, &'static str> {
        let Some(value) = header else {
            return Err("no Authorization header was sent");
        };
        let secret: Vec<u8> = if let Some(t) = value.strip_prefix(b"Bearer ") {
            t.to_vec()
        } else if let Some(b) = value.strip_prefix(b"Basic ") {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|_| "the Basic credential is not base64")?;
            match decoded.iter().position(|&c| c == b':') {
                Some(i) => decoded[i + 1..].to_vec(),
                None => return Err("the Basic credential is not user:password"),
            }
        } else {
            return Err("the Authorization header is neither `Bearer <token>` nor Basic");
        };
        self.grant(&secret)
            .ok_or("the token matches none of this node's tokens")
    }
}

/// Limits log lines about a peer (a rejected credential, a failed TLS
/// handshake): the first from an address at once, then at most one a
/// minute per address, so a client retrying with a wrong token or
/// certificate cannot flood the log (callers still count every one).
#[derive(Debug, Default)]
pub struct PeerLogLimit {
    last:
        parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, (std::time::Instant, u64)>>,
}

impl PeerLogLimit {
    /// `Some(n)`: log now, `n` lines from this address were held back
    /// since the last one; `None`: hold this one back.
    pub fn allow(&self, peer: std::net::SocketAddr) -> Option<u64> {
        const EVERY: std::time::Duration = std::time::Duration::from_secs(60);
        let now = std::time::Instant::now();
        let mut last = self.last.lock();
        if last.len() > 4096 {
            last.retain(|_, (at, _)| now.duration_since(*at) < EVERY);
        }
        let entry = last.entry(peer.ip()).or_insert((now - EVERY * 2, 0));
        if now.duration_since(entry.0) >= EVERY {
            entry.0 = now;
            Some(std::mem::take(&mut entry.1))
        } else {
            entry.1 += 1;
            None
        }
    }
}

/// Logs rejected credentials with the peer's address, limited by
/// [`PeerLogLimit`].
#[derive(Debug, Default)]
pub struct RejectLog {
    limit: PeerLogLimit,
}

impl RejectLog {
    pub fn rejected(&self, peer: Option<std::net::SocketAddr>, what: &str, why: &str) {
        let Some(peer) = peer else {
            tracing::warn!(request = what, reason = why, "credential rejected");
            return;
        };
        if let Some(held_back) = self.limit.allow(peer) {
            tracing::warn!(%peer, request = what, reason = why, earlier_not_logged = held_back,
                "credential rejected");
        }
    }
}

/// Shortest token accepted: short tokens can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// A shared secret of the cluster.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Checks a token's shape. Surrounding whitespace (a trailing newline in
    /// a token file) is ignored.
    pub fn new(text: &str) -> Result<Token, String> {
        let t = text.trim();
        if t.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the cluster token is {} characters; use at least {MIN_TOKEN_LEN} (for example \
                 `openssl rand -hex 32`)",
                t.len()
            ));
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(
                "the cluster token must not contain whitespace or control characters".into(),
            );
        }
        Ok(Token(t.to_string()))
    }

    /// The key used when no token is configured. Allowed only when every
    /// listener is on a loopback address (configuration enforces it), so it
    /// protects nothing and pretends nothing.
    pub fn loopback_only() -> Token {
        Token("understudy-no-token-loopback-only".into())
    }

    /// Reads a token from a file (`--token-file`).
    pub fn from_file(path: &std::path::Path) -> Result<Token, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
        Token::new(&text).map_err(|e| format!("token file {}: {e}", path.display()))
    }

    /// The token as it goes in an `Authorization: Bearer` header.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// The token itself, as a Redis client sends it with `AUTH`.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Constant-time check of a password a client sent.
    pub fn matches(&self, given: &[u8]) -> bool {
        constant_time_eq(given, self.0.as_bytes())
    }

    /// Constant-time check of an `Authorization` header value.
    pub fn check_bearer(&self, header: Option<&str>) -> bool {
        let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        constant_time_eq(given.trim().as_bytes(), self.0.as_bytes())
    }

    /// HMAC-SHA256 proof that the sender, acting as `role`, knows the token,
    /// bound to the peer's `nonce`, the cluster and the sender's node id.
    pub fn proof(&self, role: &str, nonce: &[u8], cluster: &str, node: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_bytes())
            .expect("HMAC takes keys of any length");
        for part in [role.as_bytes(), nonce, cluster.as_bytes(), node.as_bytes()] {
            mac.update(&(part.len() as u32).to_le_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Checks a proof in constant time.
    pub fn verify(
        &self,
        role: &str,
        nonce: &[u8],
        cluster: &str,
        node: &str,
        proof: &[u8],
    ) -> bool {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_bytes())
            .expect("HMAC takes keys of any length");
        for part in [role.as_bytes(), nonce, cluster.as_bytes(), node.as_bytes()] {
            mac.update(&(part.len() as u32).to_le_bytes());
            mac.update(part);
        }
        mac.verify_slice(proof).is_ok()
    }
}

/// A fresh random nonce for a handshake.
pub fn new_nonce() -> [u8; 32] {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_grants_by_token_and_scheme() {
        let t = |s: &str| Some(Token::new(s).unwrap());
        let open = Access::default();
        assert!(!open.required());
        let access = Access::new(
            t("cluster-token-0123456789"),
            t("client-rw-0123456789"),
            t("client-ro-0123456789"),
        );
        assert!(access.required());
        let bearer = |s: &str| format!("Bearer {s}").into_bytes();
        assert_eq!(
            access.grant_for_header(Some(&bearer("cluster-token-0123456789"))),
            Ok(Grant::ReadWrite)
        );
        assert_eq!(
            access.grant_for_header(Some(&bearer("client-rw-0123456789"))),
            Ok(Grant::ReadWrite)
        );
        assert_eq!(
            access.grant_for_header(Some(&bearer("client-ro-0123456789"))),
            Ok(Grant::ReadOnly)
        );
        assert!(access
            .grant_for_header(Some(&bearer("wrong-0123456789")))
            .is_err());
        assert!(access
            .grant_for_header(None)
            .unwrap_err()
            .contains("no Authorization"));
        // A browser's Basic credential: any user, the token as password.
        use base64::Engine;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:client-ro-0123456789")
        );
        assert_eq!(
            access.grant_for_header(Some(basic.as_bytes())),
            Ok(Grant::ReadOnly)
        );
        assert!(access.grant_for_header(Some(b"Basic !!!")).is_err());
        assert!(Grant::ReadOnly < Grant::ReadWrite);
    }

    #[test]
    fn proofs_bind_every_input() {
        let t = Token::new("0123456789abcdef0123").unwrap();
        let n = new_nonce();
        let p = t.proof("standby", &n, "c", "b");
        assert!(t.verify("standby", &n, "c", "b", &p));
        assert!(!t.verify("active", &n, "c", "b", &p));
        assert!(!t.verify("standby", &new_nonce(), "c", "b", &p));
        assert!(!t.verify("standby", &n, "other", "b", &p));
        assert!(!t.verify("standby", &n, "c", "x", &p));
        let other = Token::new("0123456789abcdef0124").unwrap();
        assert!(!other.verify("standby", &n, "c", "b", &p));
    }

    #[test]
    fn tokens_are_checked() {
        assert!(Token::new("short").is_err());
        assert!(Token::new("has a space in it!!").is_err());
        let t = Token::new("  0123456789abcdef\n").unwrap();
        assert!(t.check_bearer(Some("Bearer 0123456789abcdef")));
        assert!(!t.check_bearer(Some("Bearer 0123456789abcdeX")));
        assert!(!t.check_bearer(Some("0123456789abcdef")));
        assert!(!t.check_bearer(None));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }
}
