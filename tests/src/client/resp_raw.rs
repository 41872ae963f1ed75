//! A Redis connection that keeps the bytes the server wrote, for proxy-mode
//! tests that compare replies exactly: RESP3 after `HELLO 3` (maps, sets,
//! doubles, push frames), RESP2's null array `*-1` (which a decoded
//! frame cannot tell from a null bulk string), inline commands, replies
//! that arrive without a request (pub/sub messages), and a connection the
//! server closes after a protocol error.
//!
//! [`Value`] is a reply decoded just enough to compare it: every RESP2 and
//! RESP3 type, its text form (`show`) stable across servers.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on one reply.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One connection; replies are read whole, one frame at a time.
pub struct RawResp {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawResp {
    pub async fn connect(addr: &str) -> Result<RawResp, String> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(RawResp {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
        })
    }

    /// Sends one command as an array of bulk strings (no reply read).
    pub async fn send<S: AsRef<[u8]>>(&mut self, args: &[S]) -> Result<(), String> {
        self.send_raw(&encode(args)).await
    }

    /// Writes bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| format!("writing: {e}"))
    }

    /// Sends one command and reads one reply.
    pub async fn call<S: AsRef<[u8]>>(&mut self, args: &[S]) -> Result<Value, String> {
        self.send(args).await?;
        self.reply().await
    }

    /// The next whole frame, decoded (at most 10 s).
    pub async fn reply(&mut self) -> Result<Value, String> {
        let bytes = self.frame().await?;
        Ok(parse(&bytes)?.expect("a whole frame").0)
    }

    /// The next whole frame as the bytes the server wrote (at most 10 s).
    pub async fn frame(&mut self) -> Result<Bytes, String> {
        match self.frame_within(TIMEOUT).await? {
            Some(f) => Ok(f),
            None => Err(format!("no reply within {TIMEOUT:?}")),
        }
    }

    /// The next whole frame, or `None` if none is complete within `limit`.
    pub async fn frame_within(&mut self, limit: Duration) -> Result<Option<Bytes>, String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some((_, n)) = parse(&self.buf)? {
                return Ok(Some(self.buf.split_to(n).freeze()));
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf));
            match read.await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err("the server closed the connection".into()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("reading: {e}")),
            }
        }
    }

    /// Writes each request as it is and reads one whole frame after each:
    /// the frames as the server wrote them.
    pub async fn exchange(&mut self, requests: &[&[u8]]) -> Result<Vec<Bytes>, String> {
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            self.send_raw(r).await?;
            out.push(self.frame().await?);
        }
        Ok(out)
    }

    /// Whether the server closed the connection: reads until end of file
    /// (true) or until a byte arrives or 10 s pass (false).
    pub async fn is_closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let read = tokio::time::timeout(TIMEOUT, self.stream.read_buf(&mut self.buf)).await;
        matches!(read, Ok(Ok(0)) | Ok(Err(_)))
    }
}

/// `args` as a RESP array of bulk strings.
pub fn encode<S: AsRef<[u8]>>(args: &[S]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A reply, RESP2 or RESP3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// RESP2 `$-1`.
    NullBulk,
    /// RESP2 `*-1`.
    NullArray,
    /// RESP3 `_`.
    Null,
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Set(Vec<Value>),
    Push(Vec<Value>),
    Bool(bool),
    Double(String),
    BigNumber(String),
    Verbatim(String),
}

impl Value {
    /// The text of a simple or bulk string.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Simple(s) | Value::Verbatim(s) => Some(s.clone()),
            Value::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The items of an array, set or push frame.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::Set(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }

    /// A stable text form: `OK`, `"v"`, `(nil)`, `(nil array)`, `_`, `42`,
    /// `-ERR …`, `[a, b]`, `{k: v}`, `~{a, b}`, `>[…]`, `#t`, `,1.5`.
    pub fn show(&self) -> String {
        let list = |v: &[Value]| v.iter().map(Value::show).collect::<Vec<_>>().join(", ");
        match self {
            Value::Simple(s) => s.clone(),
            Value::Error(e) => format!("-{e}"),
            Value::Int(i) => i.to_string(),
            Value::Bulk(b) => format!("{:?}", String::from_utf8_lossy(b)),
            Value::NullBulk => "(nil)".into(),
            Value::NullArray => "(nil array)".into(),
            Value::Null => "_".into(),
            Value::Array(v) => format!("[{}]", list(v)),
            Value::Map(kv) => format!(
                "{{{}}}",
                kv.iter()
                    .map(|(k, v)| format!("{}: {}", k.show(), v.show()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::Set(v) => format!("~{{{}}}", list(v)),
            Value::Push(v) => format!(">[{}]", list(v)),
            Value::Bool(b) => format!("#{}", if *b { "t" } else { "f" }),
            Value::Double(d) => format!(",{d}"),
            Value::BigNumber(n) => format!("({n}"),
            Value::Verbatim(s) => format!("={s:?}"),
        }
    }
}

/// Decodes the first frame of `buf`: the value and its length in bytes,
/// `None` while incomplete. An attribute (`|`) is read and dropped with
/// the value it annotates.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, String> {
    let mut pos = 0;
    match value(buf, &mut pos)? {
        Some(v) => Ok(Some((v, pos))),
        None => Ok(None),
    }
}

fn value(buf: &[u8], pos: &mut usize) -> Result<Option<Value>, String> {
    let Some(end) = buf[*pos..].windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    if end == 0 {
        return Err("an empty RESP line".into());
    }
    let kind = buf[*pos];
    let line = String::from_utf8_lossy(&buf[*pos + 1..*pos + end]).into_owned();
    *pos += end + 2;
    let number = |l: &str| {
        l.parse::<i64>()
            .map_err(|_| format!("{:?}: not a length", l))
    };
    let items = |n: i64, pos: &mut usize| -> Result<Option<Vec<Value>>, String> {
        let mut out = Vec::with_capacity(n.clamp(0, 1024) as usize);
        for _ in 0..n {
            match value(buf, pos)? {
                Some(v) => out.push(v),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    };
    Ok(Some(match kind {
        b'+' => Value::Simple(line),
        b'-' => Value::Error(line),
        b':' => Value::Int(number(&line)?),
        b'_' => Value::Null,
        b'#' => Value::Bool(line == "t"),
        b',' => Value::Double(line),
        b'(' => Value::BigNumber(line),
        b'$' | b'=' | b'!' => {
            let n = number(&line)?;
            if n < 0 {
                return Ok(Some(Value::NullBulk));
            }
            let n = n as usize;
            if buf.len() < *pos + n + 2 {
                return Ok(None);
            }
            let body = buf[*pos..*pos + n].to_vec();
            *pos += n + 2;
            match kind {
                b'$' => Value::Bulk(body),
                b'=' => Value::Verbatim(String::from_utf8_lossy(&body).into_owned()),
                _ => Value::Error(String::from_utf8_lossy(&body).into_owned()),
            }
        }
        b'*' | b'~' | b'>' => {
            let n = number(&line)?;
            if n < 0 {
                return Ok(Some(Value::NullArray));
            }
            let Some(v) = items(n, pos)? else {
                return Ok(None);
            };
            match kind {
                b'*' => Value::Array(v),
                b'~' => Value::Set(v),
                _ => Value::Push(v),
            }
        }
        b'%' | b'|' => {
            let n = number(&line)?;
            let Some(v) = items(n * 2, pos)? else {
                return Ok(None);
            };
            if kind == b'|' {
                return value(buf, pos);
            }
            let mut kv = Vec::with_capacity(v.len() / 2);
            let mut it = v.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                kv.push((k, v));
            }
            Value::Map(kv)
        }
        other => return Err(format!("unknown RESP type byte {other:#04x}")),
    }))
}

/// Reads frames until `buf` is empty (test helper for several frames).
pub fn parse_all(mut buf: &[u8]) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    while buf.has_remaining() {
        match parse(buf)? {
            Some((v, n)) => {
                out.push(v);
                buf = &buf[n..];
            }
            None => return Err("an incomplete frame at the end".into()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_and_resp3_frames_decode_and_show() {
        let all = parse_all(
            b"+OK\r\n$-1\r\n*-1\r\n_\r\n*2\r\n:1\r\n$1\r\nx\r\n%1\r\n+a\r\n,1.5\r\n~1\r\n#t\r\n\
              >2\r\n$7\r\nmessage\r\n$2\r\nhi\r\n|1\r\n+k\r\n+v\r\n:7\r\n",
        )
        .unwrap();
        let shown: Vec<String> = all.iter().map(Value::show).collect();
        assert_eq!(
            shown,
            [
                "OK",
                "(nil)",
                "(nil array)",
                "_",
                "[1, \"x\"]",
                "{a: ,1.5}",
                "~{#t}",
                ">[\"message\", \"hi\"]",
                "7"
            ]
        );
        assert_eq!(parse(b"*2\r\n:1\r\n").unwrap(), None);
        assert_eq!(parse(b"$5\r\nhel").unwrap(), None);
    }
}
