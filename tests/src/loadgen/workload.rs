//! What each client sends: which key, read or write, and which value.
//!
//! Everything is a pure function of `(seed, client, op number)`, so a run
//! can be repeated and, more importantly, a checker can tell from a value
//! alone which write produced it: a written value starts with
//! `c{client}-o{op}-` and is filled up to `--value-size` with letters that
//! also depend on the pair (see [`value_for`]). Op numbers count every
//! operation a client issues from 0, warm-up included, reads included, so
//! `(client, op)` is unique within one target's run.

use bytes::Bytes;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// Read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Put,
    Get,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::Get => "get",
        }
    }
}

/// One operation to send.
#[derive(Clone, Debug)]
pub struct Op {
    /// Read or write.
    pub kind: OpKind,
    /// The client's op number, part of the value's identity.
    pub seq: u64,
    /// The key, `k` + zero-padded number.
    pub key: String,
    /// The value to write; empty for reads.
    pub value: Bytes,
}

/// One client's deterministic stream of operations.
#[derive(Debug)]
pub struct Workload {
    /// The client id, written into every value.
    client: u32,
    /// Chooses keys and read/write; seeded from `(seed, client)`.
    rng: Xoshiro256PlusPlus,
    /// Size of the key space.
    keys: u64,
    /// Key length in bytes.
    key_size: usize,
    /// Value length in bytes.
    value_size: usize,
    /// Fraction of reads.
    get_ratio: f64,
    /// The next op number.
    next_seq: u64,
    /// `--fill`: keys in order, this client's first key and the stride.
    fill: Option<(u64, u64)>,
}

impl Workload {
    pub fn new(
        seed: u64,
        client: u32,
        keys: u64,
        key_size: usize,
        value_size: usize,
        get_ratio: f64,
    ) -> Workload {
        // seed_from_u64 runs SplitMix64 over the input, so adjacent client
        // ids give unrelated streams.
        let stream = seed ^ (u64::from(client)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Workload {
            client,
            rng: Xoshiro256PlusPlus::seed_from_u64(stream),
            keys,
            key_size,
            value_size,
            get_ratio,
            next_seq: 0,
            fill: None,
        }
    }

    /// Writes keys `client`, `client + clients`, ... in order instead of
    /// random reads and writes (`--fill`).
    pub fn filling(mut self, clients: u64) -> Workload {
        self.fill = Some((u64::from(self.client), clients));
        self.get_ratio = 0.0;
        self
    }

    /// The next operation.
    pub fn next_op(&mut self) -> Op {
        let seq = self.next_seq;
        self.next_seq += 1;
        let is_get = self.get_ratio > 0.0 && self.rng.random_bool(self.get_ratio);
        let n = match self.fill {
            Some((first, stride)) => (first + seq * stride) % self.keys.max(1),
            None => self.rng.random_range(0..self.keys),
        };
        let key = key_name(n, self.key_size);
        if is_get {
            Op {
                kind: OpKind::Get,
                seq,
                key,
                value: Bytes::new(),
            }
        } else {
            Op {
                kind: OpKind::Put,
                seq,
                key,
                value: value_for(self.client, seq, self.value_size),
            }
        }
    }
}

/// `k` followed by `n` zero-padded to `key_size` bytes in all (longer if
/// `n` has too many digits; `Config::validate` prevents that).
pub fn key_name(n: u64, key_size: usize) -> String {
    format!("k{n:0width$}", width = key_size.saturating_sub(1))
}

/// The value written by `client` as its op `seq`: `c{client}-o{seq}-`
/// then letters `a..z` starting at `(client + seq) % 26`, to `size` bytes.
/// Never shorter than the prefix, which is what identifies the write.
pub fn value_for(client: u32, seq: u64, size: usize) -> Bytes {
    let mut value = format!("c{client}-o{seq}-").into_bytes();
    let start = (u64::from(client) + seq) % 26;
    let mut letter = start as u8;
    while value.len() < size {
        value.push(b'a' + letter);
        letter = (letter + 1) % 26;
    }
    Bytes::from(value)
}

/// `(client, seq)` of a value written by [`value_for`]; `None` for a value
/// loadgen did not write.
pub fn parse_value_id(value: &[u8]) -> Option<(u32, u64)> {
    let rest = value.strip_prefix(b"c")?;
    let dash = rest.iter().position(|&b| b == b'-')?;
    let client = std::str::from_utf8(&rest[..dash]).ok()?.parse().ok()?;
    let rest = rest[dash + 1..].strip_prefix(b"o")?;
    let dash = rest.iter().position(|&b| b == b'-')?;
    let seq = std::str::from_utf8(&rest[..dash]).ok()?.parse().ok()?;
    Some((client, seq))
}

/// The id a history shows for a value: `c{client}-o{seq}`.
pub fn value_id(client: u32, seq: u64) -> String {
    format!("c{client}-o{seq}")
}

/// FNV-1a (64 bit) of a value: a cheap fingerprint for histories, so a
/// checker can spot a value that has the right prefix but wrong contents.
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_to_size() {
        assert_eq!(key_name(42, 16), "k000000000000042");
        assert_eq!(key_name(42, 16).len(), 16);
        assert_eq!(key_name(99_999, 6), "k99999");
        assert_eq!(key_name(7, 1), "k7");
    }

    #[test]
    fn values_name_their_write() {
        let v = value_for(3, 17, 32);
        assert_eq!(&v[..], b"c3-o17-uvwxyzabcdefghijklmnopqrs");
        assert_eq!(parse_value_id(&v), Some((3, 17)));
        assert_eq!(value_id(3, 17), "c3-o17");
        // Too small a size never cuts the identifying prefix.
        assert_eq!(&value_for(12, 3456, 4)[..], b"c12-o3456-");
        for bad in [&b""[..], b"x3-o1-", b"c3-o17", b"c-o1-", b"cX-o1-"] {
            assert_eq!(parse_value_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn workloads_repeat_per_seed_and_client() {
        let ops = |seed, client| {
            let mut w = Workload::new(seed, client, 1000, 8, 20, 0.5);
            (0..50)
                .map(|_| w.next_op())
                .map(|o| (o.kind, o.key, o.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(ops(1, 0), ops(1, 0));
        assert_ne!(ops(1, 0), ops(1, 1));
        assert_ne!(ops(1, 0), ops(2, 0));
        let mixed = ops(1, 0);
        assert!(mixed.iter().any(|o| o.0 == OpKind::Get));
        assert!(mixed.iter().any(|o| o.0 == OpKind::Put));

        let mut writes_only = Workload::new(1, 0, 10, 3, 8, 0.0);
        for seq in 0..20 {
            let op = writes_only.next_op();
            assert_eq!((op.kind, op.seq), (OpKind::Put, seq));
            assert!(op.key.len() == 3 && op.key.as_str() < "k10");
            assert_eq!(parse_value_id(&op.value), Some((0, seq)));
        }
    }

    #[test]
    fn checksum_is_fnv1a() {
        assert_eq!(checksum(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(checksum(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
