//! The replica's side of Redis's replication protocol, spoken to a master:
//! the handshake (`PING`, `AUTH`, `REPLCONF`), `PSYNC` and its answer
//! (`+CONTINUE [replid]` or `+FULLRESYNC replid offset`), the RDB that
//! follows a full resync (`$len` or diskless `$EOF:<mark>`), then the
//! stream. One type owns the socket and its read buffer (the shape of
//! mini-redis's `Connection`); the tap (`tap.rs`) and the RDB fetch
//! (`rdb.rs`) drive it.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use proto_common::tls::{self, MaybeTls, Tls};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::request::encode;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a handshake answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a master may take to start an RDB (it forks first).
const RDB_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest handshake line accepted.
const MAX_LINE: usize = 64 * 1024;

/// What went wrong on a replication link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot connect to {addr}: {why}")]
    Connect { addr: String, why: String },
    #[error("{addr} closed the replication connection")]
    Closed { addr: String },
    #[error("{addr} did not answer {what} within {secs} s")]
    Timeout {
        addr: String,
        what: &'static str,
        secs: u64,
    },
    #[error("{addr} refused {what}: {answer}")]
    Refused {
        addr: String,
        what: String,
        answer: String,
    },
    #[error("{addr} broke the replication protocol: {why}")]
    Protocol { addr: String, why: String },
    #[error("replication link to {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
}

impl LinkError {
    /// A refusal that says "not now" (`-LOADING`, `-NOMASTERLINK`, `-BUSY`):
    /// retrying soon is the fix.
    pub fn is_transient(&self) -> bool {
        matches!(self, LinkError::Refused { answer, .. }
            if answer.starts_with("-LOADING") || answer.starts_with("-NOMASTERLINK")
                || answer.starts_with("-BUSY"))
    }
}

/// A master's answer to `PSYNC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Psync {
    /// The stream continues right after the offset asked for; the master's
    /// replication id, when it says it (it changed if it differs).
    Continue { replid: Option<String> },
    /// An RDB of the master's data at `offset` follows, then the stream
    /// from `offset + 1`.
    FullResync { replid: String, offset: u64 },
}

/// A replication connection to a master.
pub struct Link {
    stream: MaybeTls<TcpStream>,
    buf: BytesMut,
    addr: String,
}

impl Link {
    /// Connects to `addr` (TLS with `tls`).
    pub async fn connect(addr: &str, tls: Option<&Tls>) -> Result<Link, LinkError> {
        let stream = tls::connect(addr, tls, CONNECT_TIMEOUT)
            .await
            .map_err(|why| LinkError::Connect {
                addr: addr.to_string(),
                why,
            })?;
        Ok(Link {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            addr: addr.to_string(),
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The handshake a Redis replica does: `PING`, `AUTH` (with
    /// `password`), `REPLCONF listening-port`, `REPLCONF capa eof capa
    /// psync2`, and `REPLCONF rdb-only 1` for a fetch that wants only the
    /// RDB.
    pub async fn handshake(
        &mut self,
        password: Option<&str>,
        listening_port: u16,
        rdb_only: bool,
    ) -> Result<(), LinkError> {
        let ping = self.call(&["PING"], "PING").await?;
        if ping.starts_with('-') && !ping.starts_with("-NOAUTH") {
            return Err(self.refused("PING", ping));
        }
        if let Some(pw) = password {
            let answer = self.call(&["AUTH", pw], "AUTH").await?;
            if answer.starts_with('-') {
                return Err(self.refused("AUTH", answer));
            }
        }
        let port = listening_port.to_string();
        let mut replconf: Vec<Vec<&str>> = vec![
            vec!["REPLCONF", "listening-port", &port],
            vec!["REPLCONF", "capa", "eof", "capa", "psync2"],
        ];
        if rdb_only {
            replconf.push(vec!["REPLCONF", "rdb-only", "1"]);
        }
        for args in replconf {
            let answer = self.call(&args, "REPLCONF").await?;
            if answer.starts_with('-') {
                return Err(self.refused(&args.join(" "), answer));
            }
        }
        Ok(())
    }

    /// `PSYNC replid offset`: `replid` `None` asks for a full resync;
    /// `next` is the first stream byte wanted (our offset + 1).
    pub async fn psync(&mut self, replid: Option<&str>, next: u64) -> Result<Psync, LinkError> {
        let (id, off) = match replid {
            Some(id) => (id.to_string(), next.to_string()),
            None => ("?".to_string(), "-1".to_string()),
        };
        self.send(&[Bytes::from("PSYNC"), Bytes::from(id), Bytes::from(off)])
            .await?;
        // A master may send newlines to keep the link alive before it answers.
        let answer = loop {
            let line = self.line(RDB_START_TIMEOUT, "PSYNC").await?;
            if !line.is_empty() {
                break line;
            }
        };
        if let Some(rest) = answer.strip_prefix("+FULLRESYNC ") {
            let mut parts = rest.split(' ');
            let replid = parts.next().unwrap_or_default().to_string();
            let offset = parts.next().and_then(|o| o.parse().ok());
            return match offset {
                Some(offset) if replid.len() == 40 => Ok(Psync::FullResync { replid, offset }),
                _ => Err(self.protocol(format!("malformed answer to PSYNC: {answer:?}"))),
            };
        }
        if let Some(rest) = answer.strip_prefix("+CONTINUE") {
            let id = rest.trim();
            return Ok(Psync::Continue {
                replid: (id.len() == 40).then(|| id.to_string()),
            });
        }
        Err(self.refused("PSYNC", answer))
    }

    /// Reads the RDB that follows `+FULLRESYNC` into `sink`; returns its
    /// length in bytes.
    pub async fn read_rdb<W: AsyncWrite + Unpin>(
        &mut self,
        sink: &mut W,
    ) -> Result<u64, LinkError> {
        let header = loop {
            let line = self.line(RDB_START_TIMEOUT, "the RDB").await?;
            if !line.is_empty() {
                break line;
            }
        };
        let Some(spec) = header.strip_prefix('$') else {
            return Err(self.protocol(format!("expected an RDB, got {header:?}")));
        };
        if let Some(mark) = spec.strip_prefix("EOF:") {
            return self.read_until_mark(mark.as_bytes().to_vec(), sink).await;
        }
        let len: u64 = spec
            .parse()
            .map_err(|_| self.protocol(format!("bad RDB length {spec:?}")))?;
        let mut left = len;
        while left > 0 {
            if self.buf.is_empty() {
                self.fill(RDB_START_TIMEOUT, "the RDB").await?;
            }
            let n = (self.buf.len() as u64).min(left) as usize;
            let chunk = self.buf.split_to(n);
            sink.write_all(&chunk).await.map_err(|e| self.io(e))?;
            left -= n as u64;
        }
        Ok(len)
    }

    /// Diskless transfer: the RDB ends with the 40-byte mark it began with.
    async fn read_until_mark<W: AsyncWrite + Unpin>(
        &mut self,
        mark: Vec<u8>,
        sink: &mut W,
    ) -> Result<u64, LinkError> {
        if mark.len() != 40 {
            return Err(self.protocol("an EOF mark that is not 40 bytes".into()));
        }
        let mut total = 0u64;
        loop {
            if let Some(at) = find(&self.buf, &mark) {
                let chunk = self.buf.split_to(at);
                sink.write_all(&chunk).await.map_err(|e| self.io(e))?;
                self.buf.advance(mark.len());
                return Ok(total + at as u64);
            }
            // Keep the last 39 bytes: the mark may straddle two reads.
            let keep = mark.len() - 1;
            if self.buf.len() > keep {
                let n = self.buf.len() - keep;
                let chunk = self.buf.split_to(n);
                sink.write_all(&chunk).await.map_err(|e| self.io(e))?;
                total += n as u64;
            }
            self.fill(RDB_START_TIMEOUT, "the RDB").await?;
        }
    }

    /// The stream bytes buffered so far, taken; waits for at least one
    /// byte when none is buffered.
    pub async fn read_stream(&mut self) -> Result<BytesMut, LinkError> {
        if self.buf.is_empty() {
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| self.io(e))?;
            if n == 0 {
                return Err(LinkError::Closed {
                    addr: self.addr.clone(),
                });
            }
        }
        Ok(self.buf.split())
    }

    /// Sends `REPLCONF ACK offset`.
    pub async fn ack(&mut self, offset: u64) -> Result<(), LinkError> {
        self.send(&[
            Bytes::from("REPLCONF"),
            Bytes::from("ACK"),
            Bytes::from(offset.to_string()),
        ])
        .await
    }

    /// Sends a command (RESP array) without reading an answer.
    pub async fn send(&mut self, argv: &[Bytes]) -> Result<(), LinkError> {
        let raw = encode(argv);
        self.stream.write_all(&raw).await.map_err(|e| self.io(e))?;
        self.stream.flush().await.map_err(|e| self.io(e))
    }

    async fn call(&mut self, args: &[&str], what: &'static str) -> Result<String, LinkError> {
        let argv: Vec<Bytes> = args
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        self.send(&argv).await?;
        self.line(ANSWER_TIMEOUT, what).await
    }

    /// One CRLF-terminated line (without the CRLF).
    async fn line(&mut self, limit: Duration, what: &'static str) -> Result<String, LinkError> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(end + 1);
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                return Ok(String::from_utf8_lossy(text).into_owned());
            }
            if self.buf.len() > MAX_LINE {
                return Err(self.protocol(format!("a line over {MAX_LINE} bytes")));
            }
            self.fill(limit, what).await?;
        }
    }

    async fn fill(&mut self, limit: Duration, what: &'static str) -> Result<(), LinkError> {
        match tokio::time::timeout(limit, self.stream.read_buf(&mut self.buf)).await {
            Err(_) => Err(LinkError::Timeout {
                addr: self.addr.clone(),
                what,
                secs: limit.as_secs(),
            }),
            Ok(Err(e)) => Err(self.io(e)),
            Ok(Ok(0)) => Err(LinkError::Closed {
                addr: self.addr.clone(),
            }),
            Ok(Ok(_)) => Ok(()),
        }
    }

    fn refused(&self, what: &str, answer: String) -> LinkError {
        LinkError::Refused {
            addr: self.addr.clone(),
            what: what.to_string(),
            answer,
        }
    }

    fn protocol(&self, why: String) -> LinkError {
        LinkError::Protocol {
            addr: self.addr.clone(),
            why,
        }
    }

    fn io(&self, source: std::io::Error) -> LinkError {
        LinkError::Io {
            addr: self.addr.clone(),
            source,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
