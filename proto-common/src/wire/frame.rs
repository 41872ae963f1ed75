//! Replication frames and their bodies.
//!
//! Handshake frames (rare, small) carry JSON bodies so they can grow fields
//! without a new version; the data path (`Entries`, `Ack`, snapshot chunks)
//! is fixed binary. The header around every body (length, version, kind,
//! sender's epoch) is the codec's business (`codec.rs`).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::ids::{Epoch, LogIndex, NodeId, Position};

/// Most epoch runs a standby describes in its `Hello`; older runs matter
/// only if the divergence is older than that many failovers.
pub const MAX_HELLO_EPOCHS: usize = 1024;

/// Active → standby, first frame: who the active is and a nonce for the
/// standby's proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub cluster: String,
    pub node_id: NodeId,
    /// Hex of 32 random bytes.
    pub nonce: String,
}

/// Standby → active: identity, proof, and what its log looks like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub cluster: String,
    pub node_id: NodeId,
    /// Hex of HMAC(token, "standby", active's nonce, cluster, node_id).
    pub proof: String,
    /// Hex of 32 random bytes, for the active's proof.
    pub nonce: String,
    /// Last entry in the standby's log.
    pub position: Position,
    /// Position its log starts after (its snapshot).
    pub base: Position,
    /// `(first index, epoch)` of the newest runs of its log, oldest first;
    /// lets the active find the common prefix in one round trip.
    pub epochs: Vec<(LogIndex, Epoch)>,
}

/// Active → standby: accepted; the active's own proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Hex of HMAC(token, "active", standby's nonce, cluster, active's id).
    pub proof: String,
    /// The active's client API URL, for forwarding writes.
    pub client_url: String,
    /// Proxy mode: the active's upstream (`host:port`), for a full resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Proxy mode: the active's RESP address, for forwarding commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp: Option<String>,
}

/// Why a connection is refused (sent before closing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefuseCode {
    WrongCluster,
    BadProof,
    /// The sender's epoch is lower than one the receiver has seen.
    StaleEpoch,
    /// The receiver is not the active (or no longer).
    NotActive,
    /// Something in the stream broke the protocol.
    Protocol,
    /// Proxy mode: the active's log no longer holds what the standby
    /// needs; the standby must fill its upstream from the active's.
    NeedsResync,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: RefuseCode,
    pub reason: String,
}

/// One replication frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Challenge(Challenge),
    Hello(Hello),
    Welcome(Welcome),
    Refuse(Refusal),
    /// Cut everything after `after` (quarantine it), then expect entries.
    Truncate {
        after: Position,
    },
    /// Records continuing the log right after `prev`, plus the commit index.
    Entries {
        prev: Position,
        commit: LogIndex,
        records: Bytes,
    },
    /// The commit index advanced (no new entries).
    Commit {
        commit: LogIndex,
    },
    /// A snapshot file follows in chunks; it ends the log at `position`.
    SnapshotBegin {
        position: Position,
        size: u64,
    },
    SnapshotChunk {
        data: Bytes,
    },
    /// The snapshot is complete; entries after its position follow.
    SnapshotEnd,
    /// Standby → active: everything up to `position` is durable here.
    Ack {
        position: Position,
    },
}

/// Wire kind byte of each frame.
pub(super) mod kind {
    pub const CHALLENGE: u8 = 1;
    pub const HELLO: u8 = 2;
    pub const WELCOME: u8 = 3;
    pub const REFUSE: u8 = 4;
    pub const TRUNCATE: u8 = 5;
    pub const ENTRIES: u8 = 6;
    pub const COMMIT: u8 = 7;
    pub const SNAPSHOT_BEGIN: u8 = 8;
    pub const SNAPSHOT_CHUNK: u8 = 9;
    pub const SNAPSHOT_END: u8 = 10;
    pub const ACK: u8 = 11;
}

impl Frame {
    pub fn kind(&self) -> u8 {
        use kind::*;
        match self {
            Frame::Challenge(_) => CHALLENGE,
            Frame::Hello(_) => HELLO,
            Frame::Welcome(_) => WELCOME,
            Frame::Refuse(_) => REFUSE,
            Frame::Truncate { .. } => TRUNCATE,
            Frame::Entries { .. } => ENTRIES,
            Frame::Commit { .. } => COMMIT,
            Frame::SnapshotBegin { .. } => SNAPSHOT_BEGIN,
            Frame::SnapshotChunk { .. } => SNAPSHOT_CHUNK,
            Frame::SnapshotEnd => SNAPSHOT_END,
            Frame::Ack { .. } => ACK,
        }
    }

    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Challenge(_) => "challenge",
            Frame::Hello(_) => "hello",
            Frame::Welcome(_) => "welcome",
            Frame::Refuse(_) => "refuse",
            Frame::Truncate { .. } => "truncate",
            Frame::Entries { .. } => "entries",
            Frame::Commit { .. } => "commit",
            Frame::SnapshotBegin { .. } => "snapshot_begin",
            Frame::SnapshotChunk { .. } => "snapshot_chunk",
            Frame::SnapshotEnd => "snapshot_end",
            Frame::Ack { .. } => "ack",
        }
    }

    /// Appends the body (everything after the header).
    pub(super) fn encode_body(&self, dst: &mut BytesMut) {
        let json = |dst: &mut BytesMut, v: &dyn erased::Json| dst.put_slice(&v.to_json());
        match self {
            Frame::Challenge(c) => json(dst, c),
            Frame::Hello(h) => json(dst, h),
            Frame::Welcome(w) => json(dst, w),
            Frame::Refuse(r) => json(dst, r),
            Frame::Truncate { after } => put_position(dst, *after),
            Frame::Entries {
                prev,
                commit,
                records,
            } => {
                put_position(dst, *prev);
                dst.put_u64_le(commit.0);
                dst.put_slice(records);
            }
            Frame::Commit { commit } => dst.put_u64_le(commit.0),
            Frame::SnapshotBegin { position, size } => {
                put_position(dst, *position);
                dst.put_u64_le(*size);
            }
            Frame::SnapshotChunk { data } => dst.put_slice(data),
            Frame::SnapshotEnd => {}
            Frame::Ack { position } => put_position(dst, *position),
        }
    }

    /// Parses a body of the given kind. `body` is exactly the body bytes.
    pub(super) fn decode_body(kind: u8, mut body: Bytes) -> Result<Frame, String> {
        use kind::*;
        fn json<T: serde::de::DeserializeOwned>(body: &mut Bytes, what: &str) -> Result<T, String> {
            let all = std::mem::take(body);
            serde_json::from_slice(&all).map_err(|e| format!("bad {what} body: {e}"))
        }
        let frame = match kind {
            CHALLENGE => Frame::Challenge(json(&mut body, "challenge")?),
            HELLO => Frame::Hello(json(&mut body, "hello")?),
            WELCOME => Frame::Welcome(json(&mut body, "welcome")?),
            REFUSE => Frame::Refuse(json(&mut body, "refuse")?),
            TRUNCATE => Frame::Truncate {
                after: take_position(&mut body)?,
            },
            ENTRIES => {
                let prev = take_position(&mut body)?;
                let commit = LogIndex(take_u64(&mut body)?);
                Frame::Entries {
                    prev,
                    commit,
                    records: body.split_off(0),
                }
            }
            COMMIT => Frame::Commit {
                commit: LogIndex(take_u64(&mut body)?),
            },
            SNAPSHOT_BEGIN => Frame::SnapshotBegin {
                position: take_position(&mut body)?,
                size: take_u64(&mut body)?,
            },
            SNAPSHOT_CHUNK => Frame::SnapshotChunk {
                data: body.split_off(0),
            },
            SNAPSHOT_END => Frame::SnapshotEnd,
            ACK => Frame::Ack {
                position: take_position(&mut body)?,
            },
            other => return Err(format!("unknown frame kind {other}")),
        };
        if body.has_remaining() {
            return Err(format!(
                "{} frame has {} unexpected trailing bytes",
                frame.name(),
                body.remaining()
            ));
        }
        Ok(frame)
    }
}

fn put_position(dst: &mut BytesMut, p: Position) {
    dst.put_u64_le(p.epoch.0);
    dst.put_u64_le(p.index.0);
}

fn take_u64(b: &mut Bytes) -> Result<u64, String> {
    if b.remaining() < 8 {
        return Err("frame body too short".into());
    }
    Ok(b.get_u64_le())
}

fn take_position(b: &mut Bytes) -> Result<Position, String> {
    Ok(Position::new(take_u64(b)?, take_u64(b)?))
}

/// Lets `encode_body` serialize the JSON bodies through one helper.
mod erased {
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("frame bodies serialize")
        }
    }
}
