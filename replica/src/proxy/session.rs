//! One Redis client connection: its state (authenticated? which database?
//! inside `MULTI`?) and the commands the replica answers itself — `AUTH`,
//! `HELLO 2`, `PING`, `SELECT`, `QUIT`, `RESET`, `MULTI`/`EXEC`/`DISCARD`,
//! `INFO`, `ROLE`. Everything else goes to [`super::dispatch`]: read,
//! logged, forwarded or refused.
//!
//! Requests are handled one at a time, in order, so a pipelining client
//! gets its replies in order and each command sees the effects of the ones
//! before it; replies are flushed once no request is left in the buffer.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};

use proto_common::auth::{constant_time_eq, Grant};
use redis_protocol::resp2::types::BytesFrame;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use super::client::{Multi, Session};
use super::dispatch::{self, Kind};
use super::info;
use super::resp::{error, ok, Reply, Request, RespCodec};

/// What the connection does after a reply.
enum Next {
    Continue,
    Close,
}

impl Session {
    /// Serves the connection until the client leaves or sends garbage.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(mut self, stream: S) {
        let limits = &self.node.settings.limits;
        let codec = RespCodec::new(1 << 20, limits.max_value_bytes);
        let mut framed = Framed::new(stream, codec);
        loop {
            let request = match framed.next().await {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    // Garbage: one error, then the connection closes.
                    let _ = framed.send(Reply::Frame(error(format!("ERR {e}")))).await;
                    return;
                }
                None => return,
            };
            let (reply, next) = match request {
                Request::TooLarge(why) => (Reply::Frame(error(why)), Next::Continue),
                Request::Command(argv) => self.handle(argv).await,
            };
            if framed.feed(reply).await.is_err() {
                return;
            }
            if matches!(next, Next::Close) {
                let _ = framed.flush().await;
                return;
            }
            if framed.read_buffer().is_empty() && framed.flush().await.is_err() {
                return;
            }
        }
    }

    async fn handle(&mut self, argv: Vec<Bytes>) -> (Reply, Next) {
        let name = String::from_utf8_lossy(&argv[0]).to_lowercase();
        if name == "quit" {
            return (ok().into(), Next::Close);
        }
        if self.grant.is_none() && name != "auth" && name != "hello" {
            return (
                error("NOAUTH Authentication required.").into(),
                Next::Continue,
            );
        }
        if self.multi.is_some() && !matches!(name.as_str(), "exec" | "discard" | "multi" | "reset")
        {
            return (self.queue(argv).into(), Next::Continue);
        }
        let reply = match name.as_str() {
            "auth" => self.auth(&argv).into(),
            "hello" => self.hello(&argv).into(),
            "ping" => match argv.len() {
                1 => BytesFrame::SimpleString(Bytes::from_static(b"PONG")).into(),
                2 => BytesFrame::BulkString(argv[1].clone()).into(),
                _ => error("ERR wrong number of arguments for 'ping' command").into(),
            },
            "select" => self.select(&argv).into(),
            "reset" => {
                self.db = 0;
                self.multi = None;
                BytesFrame::SimpleString(Bytes::from_static(b"RESET")).into()
            }
            "multi" => {
                if self.multi.is_some() {
                    error("ERR MULTI calls can not be nested").into()
                } else {
                    self.multi = Some(Multi::default());
                    ok().into()
                }
            }
            "discard" => match self.multi.take() {
                Some(_) => ok().into(),
                None => error("ERR DISCARD without MULTI").into(),
            },
            "exec" => match self.multi.take() {
                None => error("ERR EXEC without MULTI").into(),
                Some(m) if m.refused => {
                    error("EXECABORT Transaction discarded because of previous errors.").into()
                }
                Some(m) => dispatch::exec(self, m.queued).await,
            },
            "info" => info::info(self, &argv).await,
            "role" => info::role(self).into(),
            _ => dispatch::command(self, argv).await,
        };
        (reply, Next::Continue)
    }

    /// `AUTH [user] password`: the cluster token or the client password.
    fn auth(&mut self, argv: &[Bytes]) -> BytesFrame {
        let password = match argv.len() {
            2 => &argv[1],
            3 if argv[1].as_ref() == b"default" => &argv[2],
            3 => return error("WRONGPASS invalid username-password pair or user is disabled."),
            _ => return error("ERR wrong number of arguments for 'auth' command"),
        };
        if let Some(grant) = self.password_grant(password) {
            self.grant = Some(grant);
            ok()
        } else if !self.node.settings.access.required()
            && self.core.settings.client_password.is_none()
        {
            error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
        } else {
            self.rejected("AUTH");
            error("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }

    /// What a password allows: the cluster token and the read-write client
    /// token or the client password everything, the read-only token reads.
    fn password_grant(&self, given: &[u8]) -> Option<Grant> {
        let client = self
            .core
            .settings
            .client_password
            .as_ref()
            .is_some_and(|p| constant_time_eq(given, p.as_bytes()));
        if client {
            return Some(Grant::ReadWrite);
        }
        self.node.settings.access.grant(given)
    }

    fn rejected(&self, what: &str) {
        self.node.metrics.credential_rejected(
            "resp",
            Some(self.peer),
            what,
            "a Redis client sent a wrong password",
        );
    }

    /// `HELLO [2 [AUTH user pass] [SETNAME name]]`: RESP2 only.
    fn hello(&mut self, argv: &[Bytes]) -> BytesFrame {
        if let Some(v) = argv.get(1) {
            if v.as_ref() != b"2" {
                return error("NOPROTO sorry, this protocol version is not supported.");
            }
        }
        let mut i = 2;
        while i < argv.len() {
            let opt = String::from_utf8_lossy(&argv[i]).to_uppercase();
            match opt.as_str() {
                "AUTH" if i + 2 < argv.len() => {
                    let Some(grant) = self.password_grant(&argv[i + 2]) else {
                        self.rejected("HELLO AUTH");
                        return error(
                            "WRONGPASS invalid username-password pair or user is disabled.",
                        );
                    };
                    self.grant = Some(grant);
                    i += 3;
                }
                "SETNAME" if i + 1 < argv.len() => i += 2,
                _ => return error(format!("ERR Syntax error in HELLO option '{opt}'")),
            }
        }
        if self.grant.is_none() {
            return error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        }
        let role = if self.node.role().state.term().is_some() {
            "master"
        } else {
            "replica"
        };
        let s = |t: &str| BytesFrame::BulkString(Bytes::copy_from_slice(t.as_bytes()));
        BytesFrame::Array(vec![
            s("server"),
            s("understudy"),
            s("version"),
            s(env!("CARGO_PKG_VERSION")),
            s("proto"),
            BytesFrame::Integer(2),
            s("mode"),
            s("standalone"),
            s("role"),
            s(role),
            s("modules"),
            BytesFrame::Array(vec![]),
        ])
    }

    fn select(&mut self, argv: &[Bytes]) -> BytesFrame {
        if argv.len() != 2 {
            return error("ERR wrong number of arguments for 'select' command");
        }
        match dispatch::database(&argv[1], self.core.settings.marker_db) {
            Ok(db) => {
                self.db = db;
                ok()
            }
            Err(e) => error(e),
        }
    }

    /// Queues a command inside `MULTI`, refusing now what would fail later.
    fn queue(&mut self, argv: Vec<Bytes>) -> BytesFrame {
        let refusal = match dispatch::classify(&self.core, &argv) {
            Kind::Refused(why) => Some(why),
            Kind::Local(name) if name == "select" => argv
                .get(1)
                .filter(|_| argv.len() == 2)
                .map(|a| dispatch::database(a, self.core.settings.marker_db).err())
                .unwrap_or(Some(
                    "ERR wrong number of arguments for 'select' command".into(),
                )),
            Kind::Local(name) if name == "watch" || name == "unwatch" => Some(format!(
                "ERR {} inside MULTI is not allowed",
                name.to_uppercase()
            )),
            Kind::Local(name) if !matches!(name.as_str(), "ping" | "info" | "role") => {
                Some("ERR Command not allowed inside a transaction".into())
            }
            Kind::Local(_) => Some(
                "ERR this command is answered by understudy itself and cannot be queued in a \
                 transaction; send it outside MULTI"
                    .into(),
            ),
            Kind::NoMulti => Some("ERR Command not allowed inside a transaction".into()),
            Kind::Read | Kind::Write => None,
        };
        let multi = self.multi.as_mut().expect("in MULTI");
        match refusal {
            Some(why) => {
                multi.refused = true;
                error(why)
            }
            None => {
                multi.queued.push(argv);
                BytesFrame::SimpleString(Bytes::from_static(b"QUEUED"))
            }
        }
    }
}
