//! The clients' operations as a Redis client sends them (proxy mode), and
//! what each reply means for the history.
//!
//! - `add`, `write`: `SET`; `read`, `read_at`: `GET` (a standby forwards
//!   both to the active, so both are linearizable).
//! - `cas`, in two forms a client alternates: `EVAL` of [`CAS_SCRIPT`]
//!   (compare and set in one script: `1` applied, `0` not), or a `WATCH`
//!   transaction (`WATCH`, `GET`, compared here; `UNWATCH` when it does
//!   not match, else `MULTI`, `SET`, `EXEC`: an `EXEC` answered null did
//!   not apply, since the key changed after the `GET`).
//! - `push`: `RPUSH` of a unique item to one of [`QUEUES`]; `pop`:
//!   `BLPOP` of all of them with a [`POP_TIMEOUT_S`] timeout (null: none).
//!
//! Outcomes, as the proxy documents them: `-TRYAGAIN` is a definite
//! refusal, `-UNKNOWN` an unknown outcome, any other error or no reply at
//! all an unknown outcome for a command that may write (a failed read).
//! A `WATCH` transaction that fails before its `EXEC` was sent did not
//! apply, whatever the failure: Redis discards a transaction whose
//! connection closes, and the proxy closes the upstream connection with
//! the client's session. After any error the connection is dropped (the
//! proxy closes the session after `TRYAGAIN` and `UNKNOWN`, and the state
//! of a transaction broken off is not worth guessing).

use std::time::Duration;

use tokio::time::Instant;

use super::history::{Form, Kind, Outcome};
use crate::client::resp::{Frame, RespClient};

/// The queue keys pushes and pops use.
pub const QUEUES: [&str; 3] = ["q/0", "q/1", "q/2"];

/// How long a `BLPOP` waits for an item (seconds, as Redis takes it).
pub const POP_TIMEOUT_S: &str = "1";

/// Compare-and-set as one script. `KEYS[1]`: the register; `ARGV[1]`:
/// `1` when a value is expected, `0` when the key must be absent;
/// `ARGV[2]`: the expected value; `ARGV[3]`: the new one. A missing key
/// is `false` to Lua.
pub const CAS_SCRIPT: &str = "local v = redis.call('GET', KEYS[1]) \
     local want = false \
     if ARGV[1] == '1' then want = ARGV[2] end \
     if v == want then redis.call('SET', KEYS[1], ARGV[3]) return 1 end \
     return 0";

/// One operation to send.
pub struct RespRequest<'a> {
    pub kind: Kind,
    pub form: Option<Form>,
    /// The key; for a pop, the queues to wait on, in the order given.
    pub keys: Vec<&'a str>,
    /// The value a write sends (a push's item).
    pub value: &'a str,
    /// A compare-and-set's expected value (`None`: absent).
    pub expect: Option<&'a str>,
}

/// What an operation came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub outcome: Outcome,
    /// `ok`, the error's first word, or the transport failure; a failure
    /// of a `WATCH` transaction before `EXEC` says so.
    pub code: String,
    /// As [`super::history::Op::read`].
    pub read: Option<Option<String>>,
    /// As [`super::history::Op::applied`].
    pub applied: Option<bool>,
    /// The queue a pop took its item from.
    pub popped_from: Option<String>,
    /// Whether the connection may carry the next operation.
    pub reusable: bool,
}

impl Answer {
    fn ok() -> Answer {
        Answer {
            outcome: Outcome::Ok,
            code: "ok".into(),
            read: None,
            applied: None,
            popped_from: None,
            reusable: true,
        }
    }

    fn failed(outcome: Outcome, code: String) -> Answer {
        Answer {
            outcome,
            code,
            reusable: false,
            ..Answer::ok()
        }
    }

    /// The command was sent and no reply came (`code`: `timeout` or
    /// `resp_lost`).
    fn lost(kind: Kind, code: &str) -> Answer {
        let outcome = if kind.writes() {
            Outcome::Unknown
        } else {
            Outcome::Fail
        };
        Answer::failed(outcome, code.into())
    }

    /// The connection could not be made: nothing was sent.
    pub fn not_sent() -> Answer {
        Answer::failed(Outcome::Fail, "resp_not_sent".into())
    }
}

/// Why a call had no reply.
fn lost_code(failure: &str) -> &'static str {
    if failure == "timeout" {
        "timeout"
    } else {
        "resp_lost"
    }
}

/// One call, bounded by `deadline`; `Err` names the failure (`timeout`,
/// or what broke the connection).
async fn call(conn: &mut RespClient, args: &[&str], deadline: Instant) -> Result<Frame, String> {
    match tokio::time::timeout_at(deadline, conn.call(args)).await {
        Ok(result) => result,
        Err(_) => Err("timeout".into()),
    }
}

/// Runs `request` on `conn`; every reply must come within `timeout` of
/// the start.
pub async fn perform(
    conn: &mut RespClient,
    request: &RespRequest<'_>,
    timeout: Duration,
) -> Answer {
    let deadline = Instant::now() + timeout;
    if request.kind == Kind::Cas && request.form == Some(Form::Watch) {
        return watch_cas(conn, request, deadline).await;
    }
    let key = request.keys.first().copied().unwrap_or_default();
    let mut args = match request.kind {
        Kind::Add | Kind::Write => vec!["SET", key, request.value],
        Kind::Read | Kind::ReadAt | Kind::Final => vec!["GET", key],
        Kind::Push => vec!["RPUSH", key, request.value],
        Kind::Pop => {
            let mut args = vec!["BLPOP"];
            args.extend(&request.keys);
            args.push(POP_TIMEOUT_S);
            args
        }
        Kind::Cas => vec![
            "EVAL",
            CAS_SCRIPT,
            "1",
            key,
            if request.expect.is_some() { "1" } else { "0" },
        ],
    };
    if request.kind == Kind::Cas {
        args.extend([request.expect.unwrap_or_default(), request.value]);
    }
    match call(conn, &args, deadline).await {
        Ok(frame) => judge(request.kind, &frame),
        Err(e) => Answer::lost(request.kind, lost_code(&e)),
    }
}

/// What a reply to a single command (not a `WATCH` transaction) means.
pub fn judge(kind: Kind, frame: &Frame) -> Answer {
    if let Frame::Error(e) = frame {
        return refused(kind, e);
    }
    let mut answer = Answer::ok();
    match (kind, frame) {
        (Kind::Add | Kind::Write, Frame::SimpleString(s)) if s.as_ref() == b"OK" => {}
        (Kind::Read | Kind::ReadAt | Kind::Final, Frame::BulkString(v)) => {
            answer.read = Some(Some(text(v)));
        }
        (Kind::Read | Kind::ReadAt | Kind::Final | Kind::Pop, Frame::Null) => {
            answer.read = Some(None);
        }
        (Kind::Cas, Frame::Integer(n @ (0 | 1))) => answer.applied = Some(*n == 1),
        (Kind::Push, Frame::Integer(_)) => {}
        (Kind::Pop, Frame::Array(pair)) => match pair.as_slice() {
            [Frame::BulkString(key), Frame::BulkString(item)] => {
                answer.popped_from = Some(text(key));
                answer.read = Some(Some(text(item)));
            }
            _ => return unexpected(kind, frame),
        },
        _ => return unexpected(kind, frame),
    }
    answer
}

/// An error reply: `TRYAGAIN` was not done, `UNKNOWN` may have been, and
/// so may anything else that writes.
fn refused(kind: Kind, error: &str) -> Answer {
    let word = error.split_whitespace().next().unwrap_or("").to_string();
    let outcome = match word.as_str() {
        "TRYAGAIN" => Outcome::Fail,
        "UNKNOWN" => Outcome::Unknown,
        _ if kind.writes() => Outcome::Unknown,
        _ => Outcome::Fail,
    };
    Answer::failed(outcome, word)
}

/// A reply of the wrong shape: maybe done, for a command that writes.
fn unexpected(kind: Kind, frame: &Frame) -> Answer {
    let outcome = if kind.writes() {
        Outcome::Unknown
    } else {
        Outcome::Fail
    };
    Answer::failed(outcome, format!("unexpected reply {frame:?}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `WATCH` form of compare-and-set.
async fn watch_cas(conn: &mut RespClient, request: &RespRequest<'_>, deadline: Instant) -> Answer {
    let key = request.keys.first().copied().unwrap_or_default();
    // Until EXEC is sent nothing is applied, however a step fails.
    let step = |reply: Result<Frame, String>, want: &[u8]| match reply {
        Ok(Frame::SimpleString(s)) if s.as_ref() == want => Ok(()),
        other => Err(broken_before_exec(other)),
    };
    if let Err(answer) = step(call(conn, &["WATCH", key], deadline).await, b"OK") {
        return answer;
    }
    let current = match call(conn, &["GET", key], deadline).await {
        Ok(Frame::BulkString(v)) => Some(text(&v)),
        Ok(Frame::Null) => None,
        other => return broken_before_exec(other),
    };
    if current.as_deref() != request.expect {
        // Not applied, as the GET showed: nothing was queued.
        let unwatched = call(conn, &["UNWATCH"], deadline).await;
        let mut answer = Answer::ok();
        answer.read = Some(current);
        answer.applied = Some(false);
        answer.reusable = step(unwatched, b"OK").is_ok();
        return answer;
    }
    if let Err(answer) = step(call(conn, &["MULTI"], deadline).await, b"OK") {
        return answer;
    }
    let queued = call(conn, &["SET", key, request.value], deadline).await;
    if let Err(answer) = step(queued, b"QUEUED") {
        return answer;
    }
    let mut answer = match call(conn, &["EXEC"], deadline).await {
        Ok(Frame::Error(e)) => refused(Kind::Cas, &e),
        Ok(Frame::Null) => Answer {
            applied: Some(false),
            ..Answer::ok()
        },
        Ok(Frame::Array(replies)) if matches!(replies.as_slice(), [Frame::SimpleString(s)] if s.as_ref() == b"OK") => {
            Answer {
                applied: Some(true),
                ..Answer::ok()
            }
        }
        Ok(other) => unexpected(Kind::Cas, &other),
        Err(e) => Answer::lost(Kind::Cas, lost_code(&e)),
    };
    answer.read = Some(current);
    answer
}

/// A step of a `WATCH` transaction before `EXEC` that did not answer as
/// it should: not applied.
fn broken_before_exec(reply: Result<Frame, String>) -> Answer {
    let what = match reply {
        Ok(Frame::Error(e)) => e.split_whitespace().next().unwrap_or("").to_string(),
        Ok(other) => format!("unexpected reply {other:?}"),
        Err(e) => lost_code(&e).to_string(),
    };
    Answer::failed(Outcome::Fail, format!("{what} before EXEC"))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn bulk(s: &str) -> Frame {
        Frame::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn a_pop_names_its_item_and_queue_or_took_none() {
        let answer = judge(Kind::Pop, &Frame::Array(vec![bulk("q/1"), bulk("3.7")]));
        assert_eq!(answer.outcome, Outcome::Ok);
        assert_eq!(answer.read, Some(Some("3.7".into())));
        assert_eq!(answer.popped_from.as_deref(), Some("q/1"));
        let none = judge(Kind::Pop, &Frame::Null);
        assert_eq!((none.outcome, none.read), (Outcome::Ok, Some(None)));
    }

    #[test]
    fn a_script_answers_applied_or_not() {
        assert_eq!(judge(Kind::Cas, &Frame::Integer(1)).applied, Some(true));
        assert_eq!(judge(Kind::Cas, &Frame::Integer(0)).applied, Some(false));
        assert_eq!(
            judge(Kind::Cas, &Frame::Integer(2)).outcome,
            Outcome::Unknown
        );
    }

    #[test]
    fn errors_map_as_the_proxy_documents_them() {
        let e = |s: &str| Frame::Error(s.into());
        for kind in [Kind::Write, Kind::Cas, Kind::Push, Kind::Pop] {
            assert_eq!(judge(kind, &e("TRYAGAIN no active")).outcome, Outcome::Fail);
            assert_eq!(
                judge(kind, &e("UNKNOWN outcome unknown: lease")).outcome,
                Outcome::Unknown
            );
            assert_eq!(judge(kind, &e("ERR something")).outcome, Outcome::Unknown);
            assert_eq!(Answer::lost(kind, "timeout").outcome, Outcome::Unknown);
        }
        assert_eq!(
            judge(Kind::Read, &e("ERR something")).outcome,
            Outcome::Fail
        );
        assert!(!judge(Kind::Read, &e("TRYAGAIN x")).reusable);
    }
}
