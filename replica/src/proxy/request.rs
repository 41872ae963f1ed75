//! Client requests on the RESP port, read as Redis reads them: an array of
//! bulk strings (`*N` then `$len` bodies), or an inline command (a line of
//! space-separated words, quotes allowed). Sizes are checked before a body
//! is buffered: a count or length Redis would refuse is a protocol error,
//! answered with Redis's own words, after which the connection closes.
//!
//! Each request keeps the bytes it arrived as, so it can be passed to the
//! upstream unchanged (an inline one is re-encoded as an array).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// Longest inline request, and longest count or length line (Redis's
/// `PROTO_INLINE_MAX_SIZE`).
const MAX_INLINE: usize = 64 * 1024;
/// Largest argument count (Redis: `INT_MAX`).
const MAX_ARGS: i64 = i32::MAX as i64;
/// Before `AUTH`: at most this many arguments and this long a body (as Redis).
const UNAUTHENTICATED_ARGS: i64 = 10;
const UNAUTHENTICATED_BULK: i64 = 16 * 1024;

/// One command from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its arguments, name first; never empty.
    pub argv: Vec<Bytes>,
    /// The request as RESP (what the upstream is sent).
    pub raw: Bytes,
}

impl Request {
    /// A request made here (not read from a client).
    pub fn new<A: AsRef<[u8]>>(argv: impl IntoIterator<Item = A>) -> Request {
        let argv: Vec<Bytes> = argv
            .into_iter()
            .map(|a| Bytes::copy_from_slice(a.as_ref()))
            .collect();
        let raw = encode(&argv);
        Request { argv, raw }
    }

    /// The command's name, lowercased.
    pub fn name(&self) -> Name {
        Name::of(&self.argv[0])
    }

    /// Whether argument `i` is `word`, ignoring case.
    pub fn arg_is(&self, i: usize, word: &str) -> bool {
        self.argv
            .get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()))
    }
}

/// A command's name, lowercased as Redis matches it; on the stack when
/// short and ASCII, as every Redis command's is (this is made for every
/// request).
pub enum Name {
    Short([u8; 32], u8),
    Long(String),
}

impl Name {
    pub fn of(raw: &[u8]) -> Name {
        if raw.len() <= 32 && raw.is_ascii() {
            let mut b = [0u8; 32];
            b[..raw.len()].copy_from_slice(raw);
            b.make_ascii_lowercase();
            Name::Short(b, raw.len() as u8)
        } else {
            Name::Long(String::from_utf8_lossy(raw).to_lowercase())
        }
    }
}

impl std::ops::Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Name::Short(b, n) => std::str::from_utf8(&b[..*n as usize]).expect("ASCII"),
            Name::Long(s) => s,
        }
    }
}

/// Encodes `argv` as a RESP array of bulk strings.
pub fn encode(argv: &[Bytes]) -> Bytes {
    let len = argv.iter().map(|a| a.len() + 16).sum::<usize>() + 16;
    let mut out = BytesMut::with_capacity(len);
    out.put_slice(format!("*{}\r\n", argv.len()).as_bytes());
    for a in argv {
        out.put_slice(format!("${}\r\n", a.len()).as_bytes());
        out.put_slice(a);
        out.put_slice(b"\r\n");
    }
    out.freeze()
}

/// A request Redis would refuse: the error to answer, then close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ERR Protocol error: {0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn of(what: &str) -> ProtocolError {
        ProtocolError(what.to_string())
    }
}

/// Reads requests with Redis's limits.
#[derive(Debug)]
pub struct RequestDecoder {
    /// Longest argument (the upstream's `proto-max-bulk-len`).
    max_bulk: i64,
    /// The client has authenticated (larger requests allowed).
    pub authenticated: bool,
}

impl RequestDecoder {
    pub fn new(max_bulk: u64, authenticated: bool) -> RequestDecoder {
        RequestDecoder {
            max_bulk: max_bulk.min(i64::MAX as u64) as i64,
            authenticated,
        }
    }

    fn multibulk(&self, src: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        let Some((count, mut pos)) = number(src, 0, "too big mbulk count string")? else {
            return Ok(None);
        };
        let count = count.ok_or_else(|| ProtocolError::of("invalid multibulk length"))?;
        if count > MAX_ARGS {
            return Err(ProtocolError::of("invalid multibulk length"));
        }
        if count > UNAUTHENTICATED_ARGS && !self.authenticated {
            return Err(ProtocolError::of("unauthenticated multibulk length"));
        }
        if count <= 0 {
            src.advance(pos);
            return Ok(None);
        }
        // First pass: every length checked, the whole request present?
        let mut spans = Vec::with_capacity((count as usize).min(1024));
        for _ in 0..count {
            if pos >= src.len() {
                return Ok(None);
            }
            if src[pos] != b'$' {
                return Err(ProtocolError(format!(
                    "expected '$', got '{}'",
                    src[pos] as char
                )));
            }
            let Some((len, body)) = number(src, pos, "too big bulk count string")? else {
                return Ok(None);
            };
            let len = len
                .filter(|l| *l >= 0 && *l <= self.max_bulk)
                .ok_or_else(|| ProtocolError::of("invalid bulk length"))?;
            if len > UNAUTHENTICATED_BULK && !self.authenticated {
                return Err(ProtocolError::of("unauthenticated bulk length"));
            }
            let end = body as u64 + len as u64 + 2;
            if (src.len() as u64) < end {
                // Make room once for the rest of a large argument.
                src.reserve((end as usize).saturating_sub(src.len()));
                return Ok(None);
            }
            spans.push((body, len as usize));
            pos = end as usize;
        }
        let raw = src.split_to(pos).freeze();
        let argv = spans
            .into_iter()
            .map(|(at, len)| raw.slice(at..at + len))
            .collect();
        Ok(Some(Request { argv, raw }))
    }

    fn inline(&self, src: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        let Some(newline) = src.iter().position(|b| *b == b'\n') else {
            if src.len() > MAX_INLINE {
                return Err(ProtocolError::of("too big inline request"));
            }
            return Ok(None);
        };
        let line = src.split_to(newline + 1);
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let argv =
            split_args(text).ok_or_else(|| ProtocolError::of("unbalanced quotes in request"))?;
        if argv.is_empty() {
            return Ok(None);
        }
        let raw = encode(&argv);
        Ok(Some(Request { argv, raw }))
    }
}

impl Decoder for RequestDecoder {
    type Item = Request;
    type Error = RequestError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Request>, RequestError> {
        loop {
            if src.is_empty() {
                return Ok(None);
            }
            let before = src.len();
            let got = if src[0] == b'*' {
                self.multibulk(src)?
            } else {
                self.inline(src)?
            };
            match got {
                Some(r) => return Ok(Some(r)),
                // An empty request was consumed: look for the next one.
                None if src.len() < before => continue,
                None => return Ok(None),
            }
        }
    }
}

/// What ends reading a client's requests.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("reading from the client: {0}")]
    Io(#[from] std::io::Error),
}

/// The decimal after the type byte of the line at `pos`: `(value, where the
/// next line starts)`; `value` is `None` when it is not a number.
fn number(
    src: &[u8],
    pos: usize,
    too_long: &str,
) -> Result<Option<(Option<i64>, usize)>, ProtocolError> {
    let rest = &src[pos..];
    let Some(cr) = rest.iter().take(MAX_INLINE + 1).position(|b| *b == b'\r') else {
        if rest.len() > MAX_INLINE {
            return Err(ProtocolError::of(too_long));
        }
        return Ok(None);
    };
    if rest.len() < cr + 2 {
        return Ok(None);
    }
    Ok(Some((super::frame::decimal(&rest[1..cr]), pos + cr + 2)))
}

/// Splits an inline request into words as Redis's `sdssplitargs` does:
/// whitespace separates, `"…"` takes escapes (`\n \r \t \b \a \\ \" \xHH`),
/// `'…'` takes `\'`. `None` for unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Some(out);
        }
        let mut word = Vec::new();
        let mut done = false;
        while !done {
            if i >= n {
                break;
            }
            match line[i] {
                b'"' => {
                    i += 1;
                    loop {
                        if i >= n {
                            return None;
                        }
                        match line[i] {
                            b'\\'
                                if i + 3 < n
                                    && line[i + 1] == b'x'
                                    && line[i + 2].is_ascii_hexdigit()
                                    && line[i + 3].is_ascii_hexdigit() =>
                            {
                                let hex = std::str::from_utf8(&line[i + 2..i + 4]).ok()?;
                                word.push(u8::from_str_radix(hex, 16).ok()?);
                                i += 4;
                            }
                            b'\\' if i + 1 < n => {
                                word.push(match line[i + 1] {
                                    b'n' => b'\n',
                                    b'r' => b'\r',
                                    b't' => b'\t',
                                    b'b' => 8,
                                    b'a' => 7,
                                    c => c,
                                });
                                i += 2;
                            }
                            b'"' => {
                                i += 1;
                                // A closing quote must end the word.
                                if i < n && !line[i].is_ascii_whitespace() {
                                    return None;
                                }
                                done = true;
                                break;
                            }
                            c => {
                                word.push(c);
                                i += 1;
                            }
                        }
                    }
                }
                b'\'' => {
                    i += 1;
                    loop {
                        if i >= n {
                            return None;
                        }
                        match line[i] {
                            b'\\' if i + 1 < n && line[i + 1] == b'\'' => {
                                word.push(b'\'');
                                i += 2;
                            }
                            b'\'' => {
                                i += 1;
                                if i < n && !line[i].is_ascii_whitespace() {
                                    return None;
                                }
                                done = true;
                                break;
                            }
                            c => {
                                word.push(c);
                                i += 1;
                            }
                        }
                    }
                }
                c if c.is_ascii_whitespace() => done = true,
                c => {
                    word.push(c);
                    i += 1;
                }
            }
        }
        out.push(Bytes::from(word));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], authenticated: bool) -> Result<Vec<Vec<String>>, ProtocolError> {
        let mut d = RequestDecoder::new(512 << 20, authenticated);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf) {
                Ok(Some(r)) => out.push(
                    r.argv
                        .iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect(),
                ),
                Ok(None) => return Ok(out),
                Err(RequestError::Protocol(e)) => return Err(e),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn names_are_lowercased_on_the_stack_or_not_at_all_lengths() {
        assert_eq!(&*Name::of(b"GeT"), "get");
        assert!(matches!(Name::of(b"GeT"), Name::Short(..)));
        let long = "X".repeat(40);
        assert_eq!(&*Name::of(long.as_bytes()), "x".repeat(40));
        assert_eq!(&*Name::of("ÉCHO".as_bytes()), "écho");
        assert_eq!(&*Name::of(b""), "");
    }

    #[test]
    fn arrays_and_inline_commands_are_read_as_redis_reads_them() {
        assert_eq!(
            decode_all(
                b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n\r\nset a \"b c\"\n",
                true
            ),
            Ok(vec![
                vec!["GET".to_string(), "k".into()],
                vec!["PING".into()],
                vec!["set".into(), "a".into(), "b c".into()],
            ])
        );
        assert_eq!(
            decode_all(b"*0\r\n*1\r\n$4\r\nPING\r\n", true),
            Ok(vec![vec!["PING".to_string()]])
        );
        assert_eq!(
            split_args(b"set k \"a\\x41\\n\" 'it\\'s'"),
            Some(vec![
                Bytes::from_static(b"set"),
                Bytes::from_static(b"k"),
                Bytes::from_static(b"aA\n"),
                Bytes::from_static(b"it's"),
            ])
        );
    }

    #[test]
    fn a_request_arriving_in_pieces_is_kept_until_whole() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let mut d = RequestDecoder::new(512 << 20, true);
        let mut buf = BytesMut::new();
        for (i, b) in input.iter().enumerate() {
            buf.put_u8(*b);
            let got = d.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == input.len() - 1, "after byte {i}");
            if let Some(r) = got {
                assert_eq!(&r.raw[..], &input[..]);
                assert_eq!(&*r.name(), "set");
            }
        }
    }

    #[test]
    fn sizes_redis_refuses_are_protocol_errors_at_once() {
        assert_eq!(
            decode_all(b"*1\r\n$1099511627776\r\n", true),
            Err(ProtocolError::of("invalid bulk length"))
        );
        assert_eq!(
            decode_all(b"*3000000000\r\n", true),
            Err(ProtocolError::of("invalid multibulk length"))
        );
        assert_eq!(
            decode_all(b"*11\r\n", false),
            Err(ProtocolError::of("unauthenticated multibulk length"))
        );
        assert_eq!(
            decode_all(b"*1\r\n$16385\r\n", false),
            Err(ProtocolError::of("unauthenticated bulk length"))
        );
        assert_eq!(
            decode_all(b"*1\r\n+x\r\n", true),
            Err(ProtocolError::of("expected '$', got '+'"))
        );
        assert_eq!(
            decode_all(b"set k \"open\n", true),
            Err(ProtocolError::of("unbalanced quotes in request"))
        );
        let long = vec![b'a'; MAX_INLINE + 2];
        assert_eq!(
            decode_all(&long, true),
            Err(ProtocolError::of("too big inline request"))
        );
    }
}
