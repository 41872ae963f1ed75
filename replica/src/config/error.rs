//! `ConfigError`: why a replica refuses its configuration (the TOML file,
//! `UNDERSTUDY_*`, flags, `UNDERSTUDY_FAILPOINT`) before it starts.
//!
//! Each variant has a stable [`ConfigError::code`] (logs, tests). Messages
//! name the key, the value given and the rule or the fix; `main.rs` prints
//! them after `invalid configuration:` and exits with status 2. A
//! configuration error never goes away by itself, so there is no retry hint.
//!
//! The variants holding a `String` carry a message built by a check shared
//! with the arbiter (`proto_common`: node ids, cluster names, tokens, TLS
//! files, plaintext listeners) or by proxy mode's own settings; those
//! messages already name the value and the fix.

use std::path::PathBuf;

use crate::failpoint::ENV as FAILPOINT_ENV;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", .path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The config file is not valid TOML of the replica's schema.
    #[error("config file {}: {source}", .path.display())]
    ParseFile {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },

    /// A required setting was not given anywhere.
    #[error("{key} is required: pass {flag}, set {env} or {key} in the config file")]
    Missing {
        key: &'static str,
        flag: &'static str,
        env: &'static str,
    },

    /// A listen address that does not parse.
    #[error("{key}={value:?} is not an address; use IP:PORT such as {example}")]
    NotAnAddress {
        key: &'static str,
        value: String,
        example: &'static str,
    },

    /// A URL that is neither `http://` nor `https://`.
    #[error("{key}={value:?} must be an http:// or https:// URL")]
    NotHttpUrl { key: &'static str, value: String },

    /// TLS is on but other nodes are told to reach the API in clear text.
    #[error(
        "advertise_url={value:?}: the client API serves TLS, so other nodes must reach it \
         with https://"
    )]
    AdvertiseNeedsHttps { value: String },

    /// A setting that takes one of a few words got another.
    #[error("{key}={value:?} is not a {kind}; use {choices}")]
    NotAChoice {
        key: &'static str,
        value: String,
        /// What the setting chooses ("policy", "mode").
        kind: &'static str,
        /// The words allowed, the default marked.
        choices: &'static str,
    },

    /// A number outside its bounds.
    #[error("{key}={value} must be between {min} and {max}")]
    OutOfRange {
        key: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },

    /// A value limit larger than the body that must carry it.
    #[error("max_value_bytes={value} must not exceed max_body_bytes={body}")]
    ValueExceedsBody { value: usize, body: usize },

    /// A replication frame too small for the largest write.
    #[error(
        "max_frame_bytes={frame} must exceed max_body_bytes={body} by at least 4096 (a frame \
         must hold the largest write)"
    )]
    FrameTooSmall { frame: usize, body: usize },

    /// A listener off loopback with no cluster token to protect it.
    #[error(
        "{key}={addr} is not a loopback address and no cluster token is set; set \
         --token-file or UNDERSTUDY_TOKEN, or listen on 127.0.0.1"
    )]
    NeedsToken {
        key: &'static str,
        addr: std::net::SocketAddr,
    },

    /// `--arbiter` without a replication address.
    #[error(
        "with --arbiter, --repl-listen is required: any replica may become the active and \
         must then serve its standbys"
    )]
    ArbiterNeedsReplListen,

    /// `node_id` is not a valid node id.
    #[error("node_id: {0}")]
    NodeId(String),

    /// `cluster` is not a valid cluster name.
    #[error("{0}")]
    Cluster(String),

    /// `UNDERSTUDY_TOKEN` is not a usable token.
    #[error("UNDERSTUDY_TOKEN: {0}")]
    TokenEnv(String),

    /// A token file (cluster, client, read-only) is unreadable or unusable.
    #[error("{0}")]
    TokenFile(String),

    /// The TLS settings or files are unusable.
    #[error("{0}")]
    Tls(String),

    /// A listener off loopback without TLS, and no `--insecure-plaintext`.
    #[error("{0}")]
    Plaintext(String),

    /// Proxy mode's settings (`proxy::config`) are refused.
    #[error("{0}")]
    Proxy(String),

    /// `UNDERSTUDY_FAILPOINT` names no failpoint.
    #[error(
        "{FAILPOINT_ENV}={text:?} names no failpoint; the only one is \
         fsync_error_if_exists:PATH (a test hook: unset it outside tests)"
    )]
    UnknownFailpoint { text: String },

    /// `UNDERSTUDY_FAILPOINT` is not UTF-8.
    #[error("{FAILPOINT_ENV} is not valid UTF-8")]
    FailpointNotUtf8,
}

impl ConfigError {
    /// Stable machine-readable code; never renamed.
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::ReadFile { .. } => "read_file",
            ConfigError::ParseFile { .. } => "parse_file",
            ConfigError::Missing { .. } => "missing",
            ConfigError::NotAnAddress { .. } => "not_an_address",
            ConfigError::NotHttpUrl { .. } => "not_http_url",
            ConfigError::AdvertiseNeedsHttps { .. } => "advertise_needs_https",
            ConfigError::NotAChoice { .. } => "not_a_choice",
            ConfigError::OutOfRange { .. } => "out_of_range",
            ConfigError::ValueExceedsBody { .. } => "value_exceeds_body",
            ConfigError::FrameTooSmall { .. } => "frame_too_small",
            ConfigError::NeedsToken { .. } => "needs_token",
            ConfigError::ArbiterNeedsReplListen => "arbiter_needs_repl_listen",
            ConfigError::NodeId(_) => "node_id",
            ConfigError::Cluster(_) => "cluster",
            ConfigError::TokenEnv(_) => "token_env",
            ConfigError::TokenFile(_) => "token_file",
            ConfigError::Tls(_) => "tls",
            ConfigError::Plaintext(_) => "plaintext",
            ConfigError::Proxy(_) => "proxy",
            ConfigError::UnknownFailpoint { .. } => "unknown_failpoint",
            ConfigError::FailpointNotUtf8 => "failpoint_not_utf8",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_key_the_value_and_the_fix() {
        let e = ConfigError::Missing {
            key: "data_dir",
            flag: "--data-dir",
            env: "UNDERSTUDY_DATA_DIR",
        };
        assert_eq!(
            e.to_string(),
            "data_dir is required: pass --data-dir, set UNDERSTUDY_DATA_DIR or data_dir in the \
             config file"
        );
        let e = ConfigError::NotAChoice {
            key: "fsync",
            value: "sometimes".into(),
            kind: "policy",
            choices: "\"always\" (default) or \"never\"",
        };
        assert_eq!(
            e.to_string(),
            "fsync=\"sometimes\" is not a policy; use \"always\" (default) or \"never\""
        );
        assert_eq!(e.code(), "not_a_choice");
    }
}
