//! The tokio-util codec for replication frames.
//!
//! ```text
//! 0      4         5      6              14
//! +------+---------+------+--------------+----------------+
//! | len  | version | kind | epoch (u64)  | body (len - 10)|
//! +------+---------+------+--------------+----------------+
//! ```
//!
//! `len` counts everything after itself. Decoding is two-phase like
//! mini-redis: first check that a whole frame is buffered (returning
//! `Ok(None)` — "incomplete", control flow, not failure), then parse it.
//! A length over the limit is refused as soon as the four length bytes
//! arrive, before any of the body is buffered; any decoding error ends the
//! connection (the caller logs the reason), so nothing from a garbled
//! stream is ever applied.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::frame::Frame;
use crate::ids::Epoch;

/// Wire version spoken by this build.
pub const VERSION: u8 = 1;
/// Bytes after the length prefix that every frame has.
const FIXED: usize = 1 + 1 + 8;
/// Default hard limit on one frame.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// A frame with the epoch of its sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub epoch: Epoch,
    pub frame: Frame,
}

/// Why a stream of frames is unreadable.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame has wire version {0}; this build speaks version {VERSION}")]
    Version(u8),
    #[error("garbled frame: {0}")]
    Garbled(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Encoder/decoder of [`Envelope`]s with a hard size limit.
#[derive(Clone, Debug)]
pub struct ReplCodec {
    max_frame: usize,
}

impl ReplCodec {
    pub fn new(max_frame: usize) -> ReplCodec {
        ReplCodec { max_frame }
    }
}

impl Default for ReplCodec {
    fn default() -> Self {
        ReplCodec::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder for ReplCodec {
    type Item = Envelope;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Envelope>, CodecError> {
        // Phase 1: is a whole frame here?
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes(src[..4].try_into().unwrap()) as usize;
        if len > self.max_frame {
            return Err(CodecError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        if len < FIXED {
            return Err(CodecError::Garbled(format!(
                "frame length {len} is shorter than the {FIXED}-byte header"
            )));
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        // Phase 2: parse it.
        src.advance(4);
        let mut frame = src.split_to(len).freeze();
        let version = frame.get_u8();
        if version != VERSION {
            return Err(CodecError::Version(version));
        }
        let kind = frame.get_u8();
        let epoch = Epoch(frame.get_u64_le());
        let frame = Frame::decode_body(kind, frame).map_err(CodecError::Garbled)?;
        Ok(Some(Envelope { epoch, frame }))
    }
}

impl Encoder<Envelope> for ReplCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Envelope, dst: &mut BytesMut) -> Result<(), CodecError> {
        let start = dst.len();
        dst.put_u32_le(0);
        dst.put_u8(VERSION);
        dst.put_u8(item.frame.kind());
        dst.put_u64_le(item.epoch.0);
        item.frame.encode_body(dst);
        let len = dst.len() - start - 4;
        if len > self.max_frame {
            dst.truncate(start);
            return Err(CodecError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        dst[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{LogIndex, NodeId, Position};
    use crate::wire::frame::{Challenge, Hello, Refusal, RefuseCode};
    use bytes::Bytes;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Challenge(Challenge {
                cluster: "c".into(),
                node_id: NodeId::new("a").unwrap(),
                nonce: "00ff".into(),
            }),
            Frame::Hello(Hello {
                cluster: "c".into(),
                node_id: NodeId::new("b").unwrap(),
                proof: "ab".into(),
                nonce: "cd".into(),
                position: Position::new(2, 9),
                base: Position::ZERO,
                epochs: vec![(LogIndex(1), Epoch(1)), (LogIndex(5), Epoch(2))],
            }),
            Frame::Refuse(Refusal {
                code: RefuseCode::BadProof,
                reason: "no".into(),
            }),
            Frame::Truncate {
                after: Position::new(1, 4),
            },
            Frame::Entries {
                prev: Position::new(1, 4),
                commit: LogIndex(3),
                records: Bytes::from_static(b"records"),
            },
            Frame::Commit {
                commit: LogIndex(7),
            },
            Frame::SnapshotBegin {
                position: Position::new(3, 100),
                size: 12345,
            },
            Frame::SnapshotChunk {
                data: Bytes::from_static(b"chunk"),
            },
            Frame::SnapshotEnd,
            Frame::Ack {
                position: Position::new(3, 101),
            },
        ]
    }

    #[test]
    fn every_frame_round_trips_even_byte_by_byte() {
        let mut codec = ReplCodec::default();
        for frame in all_frames() {
            let env = Envelope {
                epoch: Epoch(7),
                frame,
            };
            let mut buf = BytesMut::new();
            codec.encode(env.clone(), &mut buf).unwrap();
            let wire = buf.clone();
            // Whole.
            assert_eq!(codec.decode(&mut buf).unwrap(), Some(env.clone()));
            assert!(buf.is_empty());
            // Dribbled in one byte at a time: incomplete until the end.
            let mut partial = BytesMut::new();
            for (i, b) in wire.iter().enumerate() {
                partial.put_u8(*b);
                let got = codec.decode(&mut partial).unwrap();
                if i + 1 < wire.len() {
                    assert_eq!(got, None);
                } else {
                    assert_eq!(got, Some(env.clone()));
                }
            }
        }
    }

    #[test]
    fn oversize_is_refused_before_buffering_the_body() {
        let mut codec = ReplCodec::new(64);
        let mut buf = BytesMut::new();
        buf.put_u32_le(65);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::TooLarge { len: 65, max: 64 })
        ));
        let big = Envelope {
            epoch: Epoch(1),
            frame: Frame::SnapshotChunk {
                data: Bytes::from(vec![0u8; 100]),
            },
        };
        assert!(codec.encode(big, &mut BytesMut::new()).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut codec = ReplCodec::default();
        for bad in [
            vec![3, 0, 0, 0, 1, 1, 0],                        // shorter than the header
            vec![10, 0, 0, 0, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0],  // wrong version
            vec![10, 0, 0, 0, 1, 99, 0, 0, 0, 0, 0, 0, 0, 0], // unknown kind
            vec![12, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, b'{', b'x'], // bad JSON
            vec![11, 0, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0, 1], // short commit body
        ] {
            let mut buf = BytesMut::from(&bad[..]);
            assert!(codec.decode(&mut buf).is_err(), "{bad:?} accepted");
        }
    }
}
