//! State-machine commands: what one log entry's payload means.
//!
//! A command is decided (compares evaluated, deletes of missing keys found
//! out) when it is *applied*, in log order, on every replica alike, so the
//! log holds the request and not its result. Encoding is a small hand-rolled
//! binary format: a tag byte, then length-prefixed fields (u32 LE lengths).
//!
//! ```text
//! Put    = 1, key, value
//! Delete = 2, key
//! Txn    = 3, n_compares: u32, Compare*, n_ops: u32, Op*
//! Noop   = 4                         (written by a new active to open its epoch)
//! Stream = 6, StreamEntry            (proxy mode: see `proxy::entry`)
//! Compare = 1 key epoch:u64 index:u64    (key's last write is exactly this position)
//!         | 2 key exists:u8              (key exists / does not exist)
//!         | 3 key value                  (key's value equals)
//! Op      = 1 key value (put) | 2 key (delete)
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use proto_common::Position;

/// One entry's meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put {
        key: Bytes,
        value: Bytes,
    },
    Delete {
        key: Bytes,
    },
    Txn {
        compares: Vec<Compare>,
        ops: Vec<Op>,
    },
    /// Opens a new epoch; changes no key.
    Noop,
    /// Proxy mode: a piece of the upstream's replication stream.
    Stream(crate::proxy::entry::StreamEntry),
}

/// A condition a transaction checks before it writes anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key's last write is at exactly this position.
    Version { key: Bytes, version: Position },
    /// The key exists (true) or does not (false).
    Exists { key: Bytes, exists: bool },
    /// The key exists and holds exactly this value.
    Value { key: Bytes, value: Bytes },
}

impl Compare {
    pub fn key(&self) -> &Bytes {
        match self {
            Compare::Version { key, .. }
            | Compare::Exists { key, .. }
            | Compare::Value { key, .. } => key,
        }
    }
}

/// Why a payload is not a command. Records are checksummed, so this means
/// a bug or a record written by an incompatible version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ends inside a field.
    #[error("command truncated")]
    Truncated,
    /// A length prefix runs past the end of the payload.
    #[error("field of {len} bytes but only {left} left")]
    FieldTooLong { len: usize, left: usize },
    #[error("unknown command tag {0}")]
    UnknownCommand(u8),
    #[error("unknown compare tag {0}")]
    UnknownCompare(u8),
    #[error("unknown op tag {0}")]
    UnknownOp(u8),
    /// Bytes left over after a whole command.
    #[error("{0} trailing bytes after command")]
    Trailing(usize),
    /// A proxy-mode entry that cannot be read.
    #[error(transparent)]
    Stream(#[from] crate::proxy::entry::EntryError),
}

/// A write inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: Bytes, value: Bytes },
    Delete { key: Bytes },
}

const PUT: u8 = 1;
const DELETE: u8 = 2;
const TXN: u8 = 3;
const NOOP: u8 = 4;
const STREAM: u8 = 6;

impl Command {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len_hint());
        match self {
            Command::Put { key, value } => {
                buf.put_u8(PUT);
                put_field(&mut buf, key);
                put_field(&mut buf, value);
            }
            Command::Delete { key } => {
                buf.put_u8(DELETE);
                put_field(&mut buf, key);
            }
            Command::Txn { compares, ops } => {
                buf.put_u8(TXN);
                buf.put_u32_le(compares.len() as u32);
                for c in compares {
                    match c {
                        Compare::Version { key, version } => {
                            buf.put_u8(1);
                            put_field(&mut buf, key);
                            buf.put_u64_le(version.epoch.0);
                            buf.put_u64_le(version.index.0);
                        }
                        Compare::Exists { key, exists } => {
                            buf.put_u8(2);
                            put_field(&mut buf, key);
                            buf.put_u8(*exists as u8);
                        }
                        Compare::Value { key, value } => {
                            buf.put_u8(3);
                            put_field(&mut buf, key);
                            put_field(&mut buf, value);
                        }
                    }
                }
                buf.put_u32_le(ops.len() as u32);
                for op in ops {
                    match op {
                        Op::Put { key, value } => {
                            buf.put_u8(1);
                            put_field(&mut buf, key);
                            put_field(&mut buf, value);
                        }
                        Op::Delete { key } => {
                            buf.put_u8(2);
                            put_field(&mut buf, key);
                        }
                    }
                }
            }
            Command::Noop => buf.put_u8(NOOP),
            Command::Stream(entry) => {
                buf.put_u8(STREAM);
                entry.encode_into(&mut buf);
            }
        }
        buf.freeze()
    }

    fn encoded_len_hint(&self) -> usize {
        match self {
            Command::Put { key, value } => 9 + key.len() + value.len(),
            Command::Delete { key } => 5 + key.len(),
            Command::Txn { .. } => 256,
            Command::Noop => 1,
            Command::Stream(crate::proxy::entry::StreamEntry::Chunk { bytes, .. }) => {
                14 + bytes.len()
            }
            Command::Stream(_) => 50,
        }
    }

    /// Decodes a payload. Records are checksummed, so a decode failure means
    /// a bug or a record written by an incompatible version.
    pub fn decode(payload: &Bytes) -> Result<Command, DecodeError> {
        let mut buf = payload.clone();
        let cmd = match take_u8(&mut buf)? {
            PUT => Command::Put {
                key: take_field(&mut buf)?,
                value: take_field(&mut buf)?,
            },
            DELETE => Command::Delete {
                key: take_field(&mut buf)?,
            },
            TXN => {
                let n = take_u32(&mut buf)? as usize;
                let mut compares = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    compares.push(match take_u8(&mut buf)? {
                        1 => {
                            let key = take_field(&mut buf)?;
                            let epoch = take_u64(&mut buf)?;
                            let index = take_u64(&mut buf)?;
                            Compare::Version {
                                key,
                                version: Position::new(epoch, index),
                            }
                        }
                        2 => Compare::Exists {
                            key: take_field(&mut buf)?,
                            exists: take_u8(&mut buf)? != 0,
                        },
                        3 => Compare::Value {
                            key: take_field(&mut buf)?,
                            value: take_field(&mut buf)?,
                        },
                        t => return Err(DecodeError::UnknownCompare(t)),
                    });
                }
                let n = take_u32(&mut buf)? as usize;
                let mut ops = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    ops.push(match take_u8(&mut buf)? {
                        1 => Op::Put {
                            key: take_field(&mut buf)?,
                            value: take_field(&mut buf)?,
                        },
                        2 => Op::Delete {
                            key: take_field(&mut buf)?,
                        },
                        t => return Err(DecodeError::UnknownOp(t)),
                    });
                }
                Command::Txn { compares, ops }
            }
            NOOP => Command::Noop,
            STREAM => Command::Stream(crate::proxy::entry::StreamEntry::decode(&mut buf)?),
            t => return Err(DecodeError::UnknownCommand(t)),
        };
        if buf.has_remaining() {
            return Err(DecodeError::Trailing(buf.remaining()));
        }
        Ok(cmd)
    }
}

fn put_field(buf: &mut BytesMut, field: &[u8]) {
    buf.put_u32_le(field.len() as u32);
    buf.put_slice(field);
}

fn take_u8(buf: &mut Bytes) -> Result<u8, DecodeError> {
    if buf.remaining() < 1 {
        return Err(DecodeError::Truncated);
    }
    Ok(buf.get_u8())
}

fn take_u32(buf: &mut Bytes) -> Result<u32, DecodeError> {
    if buf.remaining() < 4 {
        return Err(DecodeError::Truncated);
    }
    Ok(buf.get_u32_le())
}

fn take_u64(buf: &mut Bytes) -> Result<u64, DecodeError> {
    if buf.remaining() < 8 {
        return Err(DecodeError::Truncated);
    }
    Ok(buf.get_u64_le())
}

fn take_field(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = take_u32(buf)? as usize;
    if buf.remaining() < len {
        return Err(DecodeError::FieldTooLong {
            len,
            left: buf.remaining(),
        });
    }
    Ok(buf.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn every_command_round_trips() {
        let cmds = vec![
            Command::Put {
                key: b("k"),
                value: b("v"),
            },
            Command::Put {
                key: b("k"),
                value: Bytes::new(),
            },
            Command::Delete { key: b("gone") },
            Command::Noop,
            Command::Txn {
                compares: vec![
                    Compare::Version {
                        key: b("a"),
                        version: Position::new(3, 9),
                    },
                    Compare::Exists {
                        key: b("b"),
                        exists: false,
                    },
                    Compare::Value {
                        key: b("c"),
                        value: b("x"),
                    },
                ],
                ops: vec![
                    Op::Put {
                        key: b("a"),
                        value: b("1"),
                    },
                    Op::Delete { key: b("c") },
                ],
            },
        ];
        for cmd in cmds {
            let enc = cmd.encode();
            assert_eq!(Command::decode(&enc).unwrap(), cmd);
        }
    }

    #[test]
    fn garbage_is_rejected_not_panicking() {
        for (bad, why) in [
            (&[][..], DecodeError::Truncated),
            (&[9], DecodeError::UnknownCommand(9)),
            (
                &[1, 5, 0, 0, 0, b'a'],
                DecodeError::FieldTooLong { len: 5, left: 1 },
            ),
            (&[4, 0], DecodeError::Trailing(1)),
        ] {
            assert_eq!(Command::decode(&Bytes::copy_from_slice(bad)), Err(why));
        }
    }
}
