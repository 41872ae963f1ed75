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
