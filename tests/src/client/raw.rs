//! Requests written byte for byte, for what [`super::KvClient`] cannot
//! send on purpose: chunked bodies, a `Content-Length` that lies, broken
//! request lines.
//!
//! One request per connection: the bytes are written, the write side is
//! left open (a half-closed socket is a different test), and the answer is
//! read until the server closes or the declared body has arrived. Answers
//! come back as a [`KvResponse`], so the same accessors apply.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::response::KvResponse;

/// Sends `request` (a complete HTTP/1.1 request) to `addr` (`host:port`)
/// and reads one answer, all within `timeout`. `Ok(None)` when the server
/// closed the connection without answering.
pub async fn raw_request(
    addr: &str,
    request: &[u8],
    timeout: Duration,
) -> io::Result<Option<KvResponse>> {
    match tokio::time::timeout(timeout, exchange(addr, request)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no complete answer from {addr} within {timeout:?}"),
        )),
    }
}

/// A request with `Transfer-Encoding: chunked`, its body sent in chunks of
/// `chunk` bytes.
pub fn chunked_request(
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
    chunk: usize,
) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: {content_type}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for piece in body.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

async fn exchange(addr: &str, request: &[u8]) -> io::Result<Option<KvResponse>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(request).await?;
    let mut data = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Some(response) = parse(&data)? {
            return Ok(Some(response));
        }
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            // A reset after the answer arrived is fine; before it, it is
            // the same as a close without an answer.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return match parse_at_eof(&data)? {
                Some(response) => Ok(Some(response)),
                None if data.is_empty() => Ok(None),
                None => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the connection closed inside an answer: {:?}",
                        String::from_utf8_lossy(&data)
                    ),
                )),
            };
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// The answer in `data` if it is complete (head, and a body of the
/// declared length or the whole chunked body).
fn parse(data: &[u8]) -> io::Result<Option<KvResponse>> {
    let Some((status, headers, body_at)) = parse_head(data)? else {
        return Ok(None);
    };
    let body = &data[body_at..];
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    if chunked {
        return Ok(dechunk(body).map(|b| KvResponse::new(status, headers, b)));
    }
    let length = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match length {
        Some(n) if body.len() >= n => Ok(Some(KvResponse::new(
            status,
            headers,
            Bytes::copy_from_slice(&body[..n]),
        ))),
        _ => Ok(None),
    }
}

/// At end of stream an answer without a length ends where the data ends.
fn parse_at_eof(data: &[u8]) -> io::Result<Option<KvResponse>> {
    if let Some(response) = parse(data)? {
        return Ok(Some(response));
    }
    let Some((status, headers, body_at)) = parse_head(data)? else {
        return Ok(None);
    };
    if headers.contains_key("content-length") || headers.contains_key("transfer-encoding") {
        return Ok(None);
    }
    let body = Bytes::copy_from_slice(&data[body_at..]);
    Ok(Some(KvResponse::new(status, headers, body)))
}

fn parse_head(data: &[u8]) -> io::Result<Option<(StatusCode, HeaderMap, usize)>> {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let head = std::str::from_utf8(&data[..end]).map_err(|_| bad("answer head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let code = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(&format!("bad header line {line:?}")))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| bad(&format!("bad header name {name:?}")))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| bad(&format!("bad header value {value:?}")))?;
        headers.append(name, value);
    }
    Ok(Some((code, headers, end + 4)))
}

/// The body of a complete chunked encoding, `None` while incomplete.
fn dechunk(mut data: &[u8]) -> Option<Bytes> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(Bytes::from(out));
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_when_complete() {
        let text = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 5\r\nx-data-version: 1.2\r\n\r\nhello";
        assert!(parse(&text[..text.len() - 1]).unwrap().is_none());
        let r = parse(text).unwrap().unwrap();
        assert_eq!(r.status, 413);
        assert_eq!(r.data_version.as_deref(), Some("1.2"));
        assert_eq!(r.body, Bytes::from_static(b"hello"));

        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            parse(chunked).unwrap().unwrap().body,
            Bytes::from_static(b"abcde")
        );
        assert!(parse(&chunked[..chunked.len() - 3]).unwrap().is_none());

        let no_length = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n";
        assert!(parse(no_length).unwrap().is_none());
        assert_eq!(parse_at_eof(no_length).unwrap().unwrap().status, 400);
    }

    #[test]
    fn chunked_requests_end_with_a_zero_chunk() {
        let r = chunked_request("POST", "/v1/txn", "application/json", b"abcde", 2);
        let text = String::from_utf8(r).unwrap();
        assert!(text.contains("Transfer-Encoding: chunked\r\n"));
        assert!(text.ends_with("\r\n\r\n2\r\nab\r\n2\r\ncd\r\n1\r\ne\r\n0\r\n\r\n"));
        assert!(!text.contains("Content-Length"));
    }
}
