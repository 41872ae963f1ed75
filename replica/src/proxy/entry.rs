//! What a proxy-mode log entry holds (DESIGN.md, "Proxy mode"): a piece of
//! the upstream's own replication stream, or where the stream begins.
//!
//! Offsets are Redis's replication offsets: the number of stream bytes a
//! master has produced. A chunk holds the bytes `(from, from + len]`; a
//! replica that has applied it is at offset `from + len`. Chunks always end
//! on a command boundary (the tap cuts them so).
//!
//! ```text
//! Chunk = 1, from:u64, bytes:u32-prefixed
//! Begin = 2, kind:u8 (1 formation, 2 promotion), offset:u64, replid:40 bytes
//! Rdb   = 3, offset:u64, replid:40 bytes, bytes:u32-prefixed
//! ```
//!
//! A formation's RDB, when it is small, is logged right after its `Begin`
//! (`Rdb`): every replica then holds the history's first state itself and
//! can fill its upstream from its own log, even if the first active's
//! machine is lost before any standby's upstream was filled.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A Redis replication id: 40 hexadecimal characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplId([u8; 40]);

impl ReplId {
    /// Parses a replication id as Redis prints it.
    pub fn parse(text: &str) -> Option<ReplId> {
        let b = text.as_bytes();
        (b.len() == 40 && b.iter().all(u8::is_ascii_hexdigit)).then(|| {
            let mut id = [0u8; 40];
            id.copy_from_slice(b);
            ReplId(id)
        })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("checked on parse")
    }
}

impl std::fmt::Display for ReplId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for ReplId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", &self.as_str()[..8])
    }
}

/// Why the stream begins (again) at an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeginKind {
    /// The cluster's first active took its upstream's data as it was (an
    /// RDB snapshot of it is kept beside the log).
    Formation,
    /// A promoted replica made its upstream a master: the same history
    /// continues under a new replication id (Redis keeps the old one as its
    /// second id up to this offset).
    Promotion,
}

/// One proxy-mode entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEntry {
    /// Stream bytes `(from, from + bytes.len()]`.
    Chunk { from: u64, bytes: Bytes },
    /// From `offset` on, the stream's replication id is `replid`.
    Begin {
        kind: BeginKind,
        replid: ReplId,
        offset: u64,
    },
    /// An RDB of the data at `(replid, offset)` (Redis's own bytes).
    Rdb {
        replid: ReplId,
        offset: u64,
        bytes: Bytes,
    },
}

const CHUNK: u8 = 1;
const BEGIN: u8 = 2;
const RDB: u8 = 3;

/// A proxy-mode payload that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("proxy-mode entry: {0}")]
pub struct EntryError(&'static str);

impl StreamEntry {
    /// The offset after this entry (where a replica that applied it is).
    pub fn end(&self) -> u64 {
        match self {
            StreamEntry::Chunk { from, bytes } => from + bytes.len() as u64,
            StreamEntry::Begin { offset, .. } | StreamEntry::Rdb { offset, .. } => *offset,
        }
    }

    pub fn encode_into(&self, buf: &mut BytesMut) {
        match self {
            StreamEntry::Chunk { from, bytes } => {
                buf.reserve(13 + bytes.len());
                buf.put_u8(CHUNK);
                buf.put_u64_le(*from);
                buf.put_u32_le(bytes.len() as u32);
                buf.put_slice(bytes);
            }
            StreamEntry::Begin {
                kind,
                replid,
                offset,
            } => {
                buf.put_u8(BEGIN);
                buf.put_u8(match kind {
                    BeginKind::Formation => 1,
                    BeginKind::Promotion => 2,
                });
                buf.put_u64_le(*offset);
                buf.put_slice(&replid.0);
            }
            StreamEntry::Rdb {
                replid,
                offset,
                bytes,
            } => {
                buf.reserve(53 + bytes.len());
                buf.put_u8(RDB);
                buf.put_u64_le(*offset);
                buf.put_slice(&replid.0);
                buf.put_u32_le(bytes.len() as u32);
                buf.put_slice(bytes);
            }
        }
    }

    pub fn decode(buf: &mut Bytes) -> Result<StreamEntry, EntryError> {
        let need = |buf: &Bytes, n: usize| {
            if buf.remaining() < n {
                Err(EntryError("truncated"))
            } else {
                Ok(())
            }
        };
        need(buf, 1)?;
        match buf.get_u8() {
            CHUNK => {
                need(buf, 12)?;
                let from = buf.get_u64_le();
                let len = buf.get_u32_le() as usize;
                need(buf, len)?;
                Ok(StreamEntry::Chunk {
                    from,
                    bytes: buf.split_to(len),
                })
            }
            BEGIN => {
                need(buf, 1 + 8 + 40)?;
                let kind = match buf.get_u8() {
                    1 => BeginKind::Formation,
                    2 => BeginKind::Promotion,
                    _ => return Err(EntryError("unknown begin kind")),
                };
                let offset = buf.get_u64_le();
                let id = buf.split_to(40);
                let replid = ReplId::parse(std::str::from_utf8(&id).unwrap_or_default())
                    .ok_or(EntryError("a replication id that is not 40 hex digits"))?;
                Ok(StreamEntry::Begin {
                    kind,
                    replid,
                    offset,
                })
            }
            RDB => {
                need(buf, 8 + 40 + 4)?;
                let offset = buf.get_u64_le();
                let id = buf.split_to(40);
                let replid = ReplId::parse(std::str::from_utf8(&id).unwrap_or_default())
                    .ok_or(EntryError("a replication id that is not 40 hex digits"))?;
                let len = buf.get_u32_le() as usize;
                need(buf, len)?;
                Ok(StreamEntry::Rdb {
                    replid,
                    offset,
                    bytes: buf.split_to(len),
                })
            }
            _ => Err(EntryError("unknown entry tag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let id = ReplId::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
        for e in [
            StreamEntry::Chunk {
                from: 1_000,
                bytes: Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"),
            },
            StreamEntry::Begin {
                kind: BeginKind::Promotion,
                replid: id.clone(),
                offset: 77,
            },
            StreamEntry::Rdb {
                replid: id.clone(),
                offset: 77,
                bytes: Bytes::from_static(b"REDIS0010\xff"),
            },
        ] {
            let mut buf = BytesMut::new();
            e.encode_into(&mut buf);
            let mut bytes = buf.freeze();
            assert_eq!(StreamEntry::decode(&mut bytes).unwrap(), e);
            assert!(bytes.is_empty());
        }
        assert_eq!(ReplId::parse("xyz"), None);
        for bad in [&[][..], &[1, 0], &[2, 9, 0, 0, 0, 0, 0, 0, 0, 0], &[7]] {
            assert!(StreamEntry::decode(&mut Bytes::copy_from_slice(bad)).is_err());
        }
    }
}
