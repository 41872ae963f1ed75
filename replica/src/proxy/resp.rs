//! RESP2 on the client port: requests in, replies out.
//!
//! A request is an array of bulk strings. Its declared sizes are checked
//! *before* it is buffered (check, then parse, like the replication codec):
//! a request with more than `max_args` arguments or a bulk string over
//! `max_bulk` is read past without being kept, and answered with an error —
//! the connection goes on. Anything that is not an array of bulk strings
//! (inline commands, a bad length, a stray byte) is garbage: the connection
//! gets one error and is closed. Whole requests are then parsed by the
//! `redis-protocol` crate, and replies are encoded by it.

use bytes::{Buf, Bytes, BytesMut};
use redis_protocol::resp2::types::{BytesFrame, Resp2Frame};
use tokio_util::codec::{Decoder, Encoder};

/// Longest header line (`*N` / `$N`) accepted, CRLF included.
const MAX_HEADER: usize = 24;

/// One request from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A command: its arguments, name first.
    Command(Vec<Bytes>),
    /// A request over a limit, read past; the text is the error to answer.
    TooLarge(String),
}

/// Decodes requests with limits and encodes replies.
#[derive(Debug)]
pub struct RespCodec {
    max_args: usize,
    max_bulk: usize,
    /// Reading past an oversize request.
    skipping: Option<Skip>,
}

#[derive(Debug)]
struct Skip {
    /// Bulk strings still to come after the current one.
    args_left: u64,
    /// Bytes of the current bulk string still to come, CRLF included.
    bulk_left: u64,
    /// The error to answer once it has been read past.
    reason: String,
}

impl RespCodec {
    pub fn new(max_args: usize, max_bulk: usize) -> RespCodec {
        RespCodec {
            max_args,
            max_bulk,
            skipping: None,
        }
    }

    /// Reads past the rest of an oversize request; `true` once it is gone.
    fn skip(&mut self, src: &mut BytesMut) -> Result<bool, std::io::Error> {
        let skip = self.skipping.as_mut().expect("skipping");
        loop {
            if skip.bulk_left > 0 {
                let n = (src.len() as u64).min(skip.bulk_left);
                src.advance(n as usize);
                skip.bulk_left -= n;
                if skip.bulk_left > 0 {
                    return Ok(false);
                }
            }
            if skip.args_left == 0 {
                return Ok(true);
            }
            match header(src, 0, b'$')? {
                None => return Ok(false),
                Some((len, used)) => {
                    src.advance(used);
                    skip.args_left -= 1;
                    skip.bulk_left = bulk_span(len)?;
                }
            }
        }
    }
}

/// Parses a header line `<prefix><integer>\r\n` at `at`: the integer and
/// the bytes the line takes; `None` when it has not fully arrived.
fn header(src: &[u8], at: usize, prefix: u8) -> Result<Option<(i64, usize)>, std::io::Error> {
    let Some(&first) = src.get(at) else {
        return Ok(None);
    };
    if first != prefix {
        return Err(garbage(format!(
            "expected '{}' at byte {at} of the request, found {:?}",
            prefix as char, first as char
        )));
    }
    let window = &src[at..src.len().min(at + MAX_HEADER)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if window.len() >= MAX_HEADER {
            return Err(garbage("a length line longer than 24 bytes".into()));
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&window[1..end])
        .map_err(|_| garbage("a length that is not a number".into()))?;
    let n: i64 = text
        .parse()
        .map_err(|_| garbage(format!("length {text:?} is not a number")))?;
    Ok(Some((n, end + 2)))
}

/// The bytes a bulk string of `len` takes after its header.
fn bulk_span(len: i64) -> Result<u64, std::io::Error> {
    if len < 0 {
        return Err(garbage(format!(
            "a bulk string of length {len} in a request"
        )));
    }
    Ok(len as u64 + 2)
}

fn garbage(what: String) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "Protocol error: {what}; requests must be RESP arrays of bulk strings (inline \
             commands are not supported)"
        ),
    )
}

impl Decoder for RespCodec {
    type Item = Request;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Request>, std::io::Error> {
        loop {
            if self.skipping.is_some() {
                if !self.skip(src)? {
                    return Ok(None);
                }
                let reason = self.skipping.take().expect("skipping").reason;
                return Ok(Some(Request::TooLarge(reason)));
            }
            if src.is_empty() {
                return Ok(None);
            }
            let Some((n, mut at)) = header(src, 0, b'*')? else {
                return Ok(None);
            };
            if n <= 0 {
                // An empty or null array: nothing to do, as in Redis.
                src.advance(at);
                continue;
            }
            if n as u64 > self.max_args as u64 {
                src.advance(at);
                self.skipping = Some(Skip {
                    args_left: n as u64,
                    bulk_left: 0,
                    reason: format!(
                        "ERR request has {n} arguments, more than the {} allowed",
                        self.max_args
                    ),
                });
                continue;
            }
            let mut complete = true;
            for i in 0..n as u64 {
                let Some((len, used)) = header(src, at, b'$')? else {
                    complete = false;
                    break;
                };
                let span = bulk_span(len)?;
                if len as u64 > self.max_bulk as u64 {
                    src.advance(at + used);
                    self.skipping = Some(Skip {
                        args_left: n as u64 - i - 1,
                        bulk_left: span,
                        reason: format!(
                            "ERR argument {} is {len} bytes, more than the {} allowed \
                             (max_value_bytes)",
                            i + 1,
                            self.max_bulk
                        ),
                    });
                    break;
                }
                at += used + span as usize;
                if at > src.len() {
                    complete = false;
                    break;
                }
            }
            if self.skipping.is_some() {
                continue;
            }
            if !complete {
                src.reserve(at.saturating_sub(src.len()));
                return Ok(None);
            }
            let parsed = redis_protocol::resp2::decode::decode_bytes_mut(src)
                .map_err(|e| garbage(e.to_string()))?;
            let Some((frame, _, _)) = parsed else {
                return Err(garbage("a request that does not parse".into()));
            };
            let BytesFrame::Array(items) = frame else {
                return Err(garbage("a request that is not an array".into()));
            };
            let mut argv = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    BytesFrame::BulkString(b) => argv.push(b),
                    other => {
                        return Err(garbage(format!("an argument of kind {:?}", other.kind())))
                    }
                }
            }
            return Ok(Some(Request::Command(argv)));
        }
    }
}

/// Replies are frames, or replies already encoded (an upstream's reply
/// relayed as it came).
#[derive(Debug, Clone)]
pub enum Reply {
    Frame(BytesFrame),
    Encoded(Bytes),
}

impl From<BytesFrame> for Reply {
    fn from(f: BytesFrame) -> Reply {
        Reply::Frame(f)
    }
}

impl Encoder<Reply> for RespCodec {
    type Error = std::io::Error;

    fn encode(&mut self, reply: Reply, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        match reply {
            Reply::Frame(f) => encode_into(&f, dst),
            Reply::Encoded(b) => {
                dst.extend_from_slice(&b);
                Ok(())
            }
        }
    }
}

/// Encodes one frame at the end of `dst`.
pub fn encode_into(frame: &BytesFrame, dst: &mut BytesMut) -> Result<(), std::io::Error> {
    redis_protocol::resp2::encode::extend_encode(dst, frame, false)
        .map(|_| ())
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// One frame, encoded.
pub fn encode(frame: &BytesFrame) -> Bytes {
    let mut buf = BytesMut::new();
    encode_into(frame, &mut buf).expect("frames built here encode");
    buf.freeze()
}

/// An error reply; `text` starts with its code (`ERR`, `TRYAGAIN`, ...).
pub fn error(text: impl Into<String>) -> BytesFrame {
    let text: String = text.into();
    // A reply line may not hold a line break.
    BytesFrame::Error(text.replace(['\r', '\n'], " ").into())
}

pub fn ok() -> BytesFrame {
    BytesFrame::SimpleString(Bytes::from_static(b"OK"))
}

pub fn bulk(b: impl Into<Bytes>) -> BytesFrame {
    BytesFrame::BulkString(b.into())
}

/// A command frame for an upstream: an array of bulk strings.
pub fn command<I, B>(args: I) -> BytesFrame
where
    I: IntoIterator<Item = B>,
    B: Into<Bytes>,
{
    BytesFrame::Array(
        args.into_iter()
            .map(|a| BytesFrame::BulkString(a.into()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut RespCodec, input: &[u8]) -> Vec<Result<Request, String>> {
        let mut src = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match codec.decode(&mut src) {
                Ok(Some(r)) => out.push(Ok(r)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }

    fn cmd(parts: &[&str]) -> Request {
        Request::Command(
            parts
                .iter()
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect(),
        )
    }

    #[test]
    fn pipelined_requests_decode_in_order() {
        let mut c = RespCodec::new(16, 64);
        let got = decode_all(
            &mut c,
            b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*0\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
        );
        assert_eq!(
            got,
            vec![
                Ok(cmd(&["PING"])),
                Ok(cmd(&["SET", "k", ""])),
                Ok(cmd(&["GET", "k"]))
            ]
        );
    }

    #[test]
    fn a_request_arriving_byte_by_byte_decodes_once_complete() {
        let mut c = RespCodec::new(16, 64);
        let input = b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n";
        let mut src = BytesMut::new();
        for (i, b) in input.iter().enumerate() {
            src.extend_from_slice(&[*b]);
            let r = c.decode(&mut src).unwrap();
            if i + 1 < input.len() {
                assert_eq!(r, None, "decoded early at byte {i}");
            } else {
                assert_eq!(r, Some(cmd(&["GET", "hello"])));
            }
        }
    }

    #[test]
    fn an_oversize_bulk_is_read_past_and_the_next_request_decodes() {
        let mut c = RespCodec::new(16, 8);
        let mut input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 2000]);
        input.extend_from_slice(b"\r\n*1\r\n$4\r\nPING\r\n");
        // Fed in small pieces: the big value is never buffered whole.
        let mut src = BytesMut::new();
        let mut out = Vec::new();
        for chunk in input.chunks(5) {
            src.extend_from_slice(chunk);
            while let Some(r) = c.decode(&mut src).unwrap() {
                out.push(r);
            }
            assert!(
                src.len() < 64,
                "buffered {} bytes of a refused value",
                src.len()
            );
        }
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(matches!(&out[0], Request::TooLarge(t) if t.contains("argument 3 is 2000 bytes")));
        assert_eq!(out[1], cmd(&["PING"]));
    }

    #[test]
    fn too_many_arguments_are_read_past() {
        let mut c = RespCodec::new(2, 64);
        let got = decode_all(
            &mut c,
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n*1\r\n$4\r\nPING\r\n",
        );
        assert!(matches!(&got[0], Ok(Request::TooLarge(t)) if t.contains("3 arguments")));
        assert_eq!(got[1], Ok(cmd(&["PING"])));
    }

    #[test]
    fn garbage_is_an_error_that_names_the_problem() {
        for bad in [
            &b"PING\r\n"[..],
            b"*1\r\n:5\r\n",
            b"*1\r\n$-1\r\n",
            b"*x\r\n",
            b"*11111111111111111111111111\r\n",
        ] {
            let got = decode_all(&mut RespCodec::new(16, 64), bad);
            let last = got.last().unwrap();
            assert!(
                matches!(last, Err(e) if e.contains("Protocol error")),
                "{:?}: {got:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn replies_encode_as_resp2() {
        assert_eq!(&encode(&ok())[..], b"+OK\r\n");
        assert_eq!(&encode(&error("ERR a\r\nb"))[..], b"-ERR a  b\r\n");
        assert_eq!(&encode(&BytesFrame::Null)[..], b"$-1\r\n");
        assert_eq!(
            &encode(&command(["GET", "k"]))[..],
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
    }
}
