//! Where one RESP frame ends, without decoding it: replies from an upstream
//! (RESP2 and RESP3) are passed to clients as the bytes Redis wrote, so the
//! proxy only needs each frame's length. Declared sizes are checked before
//! anything is buffered for them (check, then take).
//!
//! `+ - : _ # , (` are one line; `$ ! =` a length-prefixed body (`$-1` is
//! RESP2's null); `* ~ >` hold N frames (`*-1` is RESP2's null array), `%`
//! N pairs; `|` (an attribute) holds N pairs and is followed by the frame it
//! annotates, which belongs to the same reply.

/// Longest header or simple line accepted, CRLF included. Redis sends
/// error and status lines of any length; 64 KiB is far beyond any it writes.
const MAX_LINE: usize = 64 * 1024;

/// How far a buffer holds a frame.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Scan {
    /// The first `n` bytes are one whole frame.
    Complete(usize),
    /// More bytes are needed.
    Incomplete,
}

/// A byte sequence that is not RESP.
#[derive(Debug, PartialEq, Eq, Clone, thiserror::Error)]
pub enum FrameError {
    #[error("unknown RESP type byte {0:#04x}")]
    UnknownType(u8),
    #[error("invalid length {0:?} in a RESP header")]
    BadLength(String),
    #[error("a RESP line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("a RESP body of {len} bytes is over the limit of {limit}")]
    TooLarge { len: u64, limit: u64 },
    #[error("a RESP body is not followed by CRLF")]
    MissingCrlf,
}

/// How many whole frames, up to `want`, begin `buf` one after another, and
/// where the last of them ends: replies taken in one piece. A frame `stops`
/// says yes to ends the run before it. An error only when it comes first
/// (otherwise the frames before it are taken, and the next call meets it).
pub fn run(
    buf: &[u8],
    want: usize,
    max_body: u64,
    stops: impl Fn(&[u8]) -> bool,
) -> Result<(usize, usize), FrameError> {
    let (mut n, mut end) = (0, 0);
    while n < want {
        match scan(&buf[end..], max_body) {
            Ok(Scan::Complete(len)) if !stops(&buf[end..end + len]) => {
                end += len;
                n += 1;
            }
            Ok(_) => break,
            Err(e) if n == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok((n, end))
}

/// Finds the end of the first frame in `buf`; bodies over `max_body` bytes
/// are refused.
pub fn scan(buf: &[u8], max_body: u64) -> Result<Scan, FrameError> {
    let mut pos = 0;
    // Frames still to be read before the first one is complete.
    let mut pending: u64 = 1;
    while pending > 0 {
        let Some((kind, line, next)) = line(buf, pos)? else {
            return Ok(Scan::Incomplete);
        };
        pending -= 1;
        pos = next;
        match kind {
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => {}
            b'$' | b'!' | b'=' => {
                let len = length(line)?;
                if len < 0 {
                    if kind != b'$' || len != -1 {
                        return Err(FrameError::BadLength(text(line)));
                    }
                    continue;
                }
                let len = len as u64;
                if len > max_body {
                    return Err(FrameError::TooLarge {
                        len,
                        limit: max_body,
                    });
                }
                let end = pos as u64 + len + 2;
                if (buf.len() as u64) < end {
                    return Ok(Scan::Incomplete);
                }
                let end = end as usize;
                if &buf[end - 2..end] != b"\r\n" {
                    return Err(FrameError::MissingCrlf);
                }
                pos = end;
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = length(line)?;
                if n < 0 {
                    if kind != b'*' || n != -1 {
                        return Err(FrameError::BadLength(text(line)));
                    }
                    continue;
                }
                let n = n as u64;
                pending += match kind {
                    b'%' => n * 2,
                    // The attribute's pairs, then the frame it annotates.
                    b'|' => n * 2 + 1,
                    _ => n,
                };
            }
            other => return Err(FrameError::UnknownType(other)),
        }
    }
    Ok(Scan::Complete(pos))
}

/// A line's type byte, the text after it, and where the next line starts.
type Line<'a> = (u8, &'a [u8], usize);

/// The line starting at `pos`.
fn line(buf: &[u8], pos: usize) -> Result<Option<Line<'_>>, FrameError> {
    let rest = &buf[pos..];
    let window = &rest[..rest.len().min(MAX_LINE)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(0) => Err(FrameError::UnknownType(b'\r')),
        Some(end) => Ok(Some((rest[0], &rest[1..end], pos + end + 2))),
        None if rest.len() >= MAX_LINE => Err(FrameError::LineTooLong),
        None => Ok(None),
    }
}

/// A header's length: a decimal, possibly negative.
fn length(text_: &[u8]) -> Result<i64, FrameError> {
    decimal(text_)
        .filter(|n| *n >= -1)
        .ok_or_else(|| FrameError::BadLength(text(text_)))
}

/// A decimal as Redis reads one in the protocol (`string2ll`): an optional
/// `-`, then `0` alone or digits without a leading zero, nothing else (no
/// `+`, no spaces), at most 20 characters, within `i64`. A length Redis
/// would refuse must be refused here too: a request passed on with one
/// would make the upstream close a connection other clients share.
pub fn decimal(text: &[u8]) -> Option<i64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    if text == b"0" {
        return Some(0);
    }
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(v)
    } else {
        i64::try_from(v).ok()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(32)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 512 << 20;

    #[test]
    fn decimals_are_read_as_redis_reads_them() {
        for (text, want) in [
            (&b"0"[..], Some(0)),
            (b"7", Some(7)),
            (b"-1", Some(-1)),
            (b"1099511627776", Some(1 << 40)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"-9223372036854775808", Some(i64::MIN)),
            (b"9223372036854775808", None),
            (b"-9223372036854775809", None),
            (b"99999999999999999999", None),
            (b"04", None),
            (b"-0", None),
            (b"00", None),
            (b"+4", None),
            (b" 4", None),
            (b"4 ", None),
            (b"-", None),
            (b"", None),
            (b"4x", None),
        ] {
            assert_eq!(decimal(text), want, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn a_run_takes_whole_frames_up_to_the_count_or_a_stop() {
        let buf = b"+OK\r\n:1\r\n-BUSY x\r\n$3\r\nab";
        let busy = |f: &[u8]| f.starts_with(b"-BUSY");
        assert_eq!(run(buf, 5, MAX, |_| false), Ok((3, 18)));
        assert_eq!(run(buf, 2, MAX, |_| false), Ok((2, 9)));
        assert_eq!(run(buf, 5, MAX, busy), Ok((2, 9)));
        assert_eq!(run(&buf[9..], 5, MAX, busy), Ok((0, 0)));
        assert_eq!(run(b"+OK\r\n?x\r\n", 5, MAX, |_| false), Ok((1, 5)));
        assert!(run(b"?x\r\n", 5, MAX, |_| false).is_err());
    }

    fn whole(frame: &[u8]) {
        assert_eq!(
            scan(frame, MAX),
            Ok(Scan::Complete(frame.len())),
            "{:?}",
            String::from_utf8_lossy(frame)
        );
        for cut in 0..frame.len() {
            assert_eq!(
                scan(&frame[..cut], MAX),
                Ok(Scan::Incomplete),
                "a prefix of {cut} bytes of {:?}",
                String::from_utf8_lossy(frame)
            );
        }
        let mut two = frame.to_vec();
        two.extend_from_slice(b"+OK\r\n");
        assert_eq!(scan(&two, MAX), Ok(Scan::Complete(frame.len())));
    }

    #[test]
    fn resp2_frames_end_where_they_end() {
        whole(b"+OK\r\n");
        whole(b"-ERR wrong\r\n");
        whole(b":42\r\n");
        whole(b"$5\r\nhello\r\n");
        whole(b"$0\r\n\r\n");
        whole(b"$-1\r\n");
        whole(b"*-1\r\n");
        whole(b"*0\r\n");
        whole(b"*2\r\n$3\r\nfoo\r\n*2\r\n:1\r\n$-1\r\n");
        // A body that holds CRLF and type bytes.
        whole(b"$6\r\n+a\r\n:1\r\n");
    }

    #[test]
    fn resp3_frames_end_where_they_end() {
        whole(b"_\r\n");
        whole(b"#t\r\n");
        whole(b",3.14\r\n");
        whole(b"(12345678901234567890\r\n");
        whole(b"!3\r\nerr\r\n");
        whole(b"=7\r\ntxt:abc\r\n");
        whole(b"%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n:2\r\n");
        whole(b"~2\r\n:1\r\n:2\r\n");
        whole(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n");
        // An attribute and the reply it annotates are one frame.
        whole(b"|1\r\n+key\r\n+val\r\n:7\r\n");
    }

    #[test]
    fn bad_input_is_refused_not_waited_for() {
        assert_eq!(scan(b"?x\r\n", MAX), Err(FrameError::UnknownType(b'?')));
        assert!(matches!(
            scan(b"$abc\r\n", MAX),
            Err(FrameError::BadLength(_))
        ));
        assert!(matches!(
            scan(b"*-2\r\n", MAX),
            Err(FrameError::BadLength(_))
        ));
        assert!(matches!(
            scan(b"%-1\r\n", MAX),
            Err(FrameError::BadLength(_))
        ));
        assert_eq!(
            scan(b"$1099511627776\r\n", MAX),
            Err(FrameError::TooLarge {
                len: 1 << 40,
                limit: MAX
            })
        );
        assert_eq!(scan(b"$2\r\nabcd", MAX), Err(FrameError::MissingCrlf));
        let long = vec![b'+'; MAX_LINE + 1];
        assert_eq!(scan(&long, MAX), Err(FrameError::LineTooLong));
    }
}
