//! One Redis client's session (DESIGN.md, "Proxy mode"). On the active,
//! the session starts on the shared lane (`lane.rs`) and takes an upstream
//! connection of its own before its first command that needs one, so
//! everything Redis keeps per connection (`SELECT`, `MULTI`/`WATCH`,
//! blocking commands, `SUBSCRIBE`, `CLIENT` settings, RESP3 after `HELLO
//! 3`) is Redis's own.
//! The client's requests go to it as they came; its replies come back as
//! the bytes Redis wrote, held by the reply gate until the stream is
//! committed up to an offset that covers them: the answer to a `ROLE` the
//! session sends behind each batch of requests (Redis runs it after them),
//! or, when no `ROLE` can follow (inside `MULTI`, subscribed, `CLIENT
//! REPLY OFF`, a reply that Redis holds), the offset probe's, asked once
//! the replies are in (`probe.rs`). Replies that reveal nothing (`+QUEUED`,
//! `MULTI`, `WATCH`, `-BUSY`) need no offset; nor do commands that show no
//! data (`PING`, `CLIENT INFO`, `SLOWLOG RESET`), which need only the term
//! and have no `ROLE` behind them.
//!
//! Kept here: credentials (`AUTH`, `HELLO … AUTH`: the cluster token, the
//! client tokens, the client password; the read-only token runs only what
//! Redis does not flag as writing), and the refusals of what would break
//! the arrangement. On a standby the session is passed, byte for byte, to
//! the active's RESP port, marked as forwarded; a replica that receives a
//! forwarded session and is not the active refuses it at once (no second
//! hop).
//!
//! Two tasks per session on the active: the requests' (client → upstream,
//! and a *slot* per request saying what reply to expect) and the replies'
//! (upstream → offset → gate → client, in slot order). Modes the requests'
//! side tracks, to know what comes back: `CLIENT REPLY OFF|SKIP` (no
//! reply), RESP2 subscribed (frames pass as they come; leaving it is
//! confirmed by a `PING` barrier), RESP3 (push frames pass as they come,
//! subscriptions are confirmed by them), inside `MULTI` (a command refused
//! here aborts the transaction).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use proto_common::auth::{constant_time_eq, Grant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::config::StandbyReads;
use super::core::ProxyCore;
use super::follow::{self, Ask};
use super::frame::{self, Scan};
use super::gate::ReplyGate;
use super::lane::{LaneRead, LaneWrite};
use super::request::{Request, RequestDecoder, RequestError};
use super::table::{CommandInfo, Lookup};
use super::upstream::{SessionRead, SessionWrite};
use crate::idle_poll::{Busy, IdlePoll};
use crate::node::Node;
use crate::role::ActiveGuard;

/// Slots in flight per session before the requests' side waits.
const MAX_SLOTS: usize = 4096;
/// Most replies one slot stands for: the replies' side starts on a long
/// pipeline's replies while the rest is still being read.
const RUN: usize = 128;
/// Commands Redis does not flag `readonly` that change neither data nor the
/// server: what a read-only client may run besides reads.
const HARMLESS: [&str; 30] = [
    "ping",
    "echo",
    "select",
    "hello",
    "auth",
    "quit",
    "reset",
    "info",
    "role",
    "command",
    "command|count",
    "command|docs",
    "command|getkeys",
    "command|getkeysandflags",
    "command|info",
    "command|list",
    "time",
    "lastsave",
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    "wait",
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "ssubscribe",
    "sunsubscribe",
];
/// Longest a new session on the active waits for the upstream to be ready.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// The command a standby opens a forwarded session with.
pub const FORWARDED: &str = "UNDERSTUDY";

/// What the replies' side must do for one request, in order.
#[derive(Debug)]
enum Slot {
    /// Answer this, in turn.
    Local(Bytes),
    /// The upstream's next `count` replies, of one kind; `blocking` (one
    /// reply): Redis may hold it (a blocking command), so what is held
    /// before it is released first.
    Reply {
        kind: Kind,
        blocking: bool,
        count: usize,
    },
    /// The reply to the `ROLE` the session sent behind a batch: its offset
    /// covers every reply before it (DESIGN.md, "Proxy mode").
    Role,
    /// A reply whose bytes the requests' side needs (mode changes: `HELLO`,
    /// `RESET`; neither reveals data).
    Watch(oneshot::Sender<Bytes>),
    /// RESP2 subscribed mode begins: frames pass as they come.
    Subscribed,
    /// The `PING` barrier behind an unsubscribe: says whether the
    /// connection is still subscribed.
    Barrier(Bytes, oneshot::Sender<bool>),
    /// A reply to a command the session sent on its own: dropped.
    Discard,
    /// Close once everything before is written (after `QUIT`).
    Close,
    /// Hand the connection back once everything before is written: it
    /// follows the stream (`SYNC`, `PSYNC`).
    Follow,
    /// The session leaves the shared lane: every reply before this came
    /// from it (say so: Redis has run those commands), the rest come from
    /// this connection of its own.
    Switch(SessionRead, oneshot::Sender<()>),
}

/// The requests' side's end of the slots. Replies of one kind that follow
/// one another go as one slot: a pipelined batch of `GET`s costs the
/// channel one send, not one each.
struct Slots {
    tx: mpsc::Sender<Slot>,
    /// Replies not yet sent as a slot: their kind and how many.
    run: Option<(Kind, usize)>,
}

impl Slots {
    /// Sends `slot` behind the replies already counted.
    async fn send(&mut self, slot: Slot) -> Result<(), Closed> {
        self.flush().await?;
        self.tx.send(slot).await.map_err(Closed::from)
    }

    /// One more reply of `kind` is due; `blocking`: Redis may hold it, so
    /// it goes as a slot of its own.
    async fn reply(&mut self, kind: Kind, blocking: bool) -> Result<(), Closed> {
        if blocking {
            return self
                .send(Slot::Reply {
                    kind,
                    blocking: true,
                    count: 1,
                })
                .await;
        }
        match &mut self.run {
            Some((k, n)) if *k == kind && *n < RUN => *n += 1,
            _ => {
                self.flush().await?;
                self.run = Some((kind, 1));
            }
        }
        Ok(())
    }

    /// Sends the replies counted so far: before the requests' side waits
    /// for anything.
    async fn flush(&mut self) -> Result<(), Closed> {
        if let Some((kind, count)) = self.run.take() {
            let slot = Slot::Reply {
                kind,
                blocking: false,
                count,
            };
            self.tx.send(slot).await?;
        }
        Ok(())
    }
}

/// What an upstream reply may reveal, which decides how it is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The command may have changed data: gated; if it cannot be
    /// released, its outcome is unknown.
    Write,
    /// The command reads: gated; if it cannot be released, retry.
    Read,
    /// The reply reveals no data and no effect (`MULTI`'s `+OK`, a queued
    /// command's `+QUEUED`, `WATCH`, `SCRIPT KILL`, `CONFIG`): released in turn
    /// without an offset. These are also what Redis runs while a script is
    /// busy, when no offset can be read.
    Inert,
    /// The command reveals no data (`PING`, `CLIENT LIST`, `SLOWLOG LEN`):
    /// no `ROLE` behind it, released in turn under the active's term. Redis
    /// sees only the client's command: `CLIENT INFO` shows no `ROLE` waiting
    /// in the query buffer, `SLOWLOG` no `ROLE` behind a `SLOWLOG RESET`.
    Quiet,
}

impl Kind {
    /// Whether the reply needs the stream committed up to its offset.
    fn needs_offset(self) -> bool {
        matches!(self, Kind::Write | Kind::Read)
    }
}

/// Commands whose replies reveal no data and no effect of another client:
/// [`Kind::Quiet`]. Not `SLOWLOG GET`, which shows other clients' commands
/// with their arguments, before their effects are committed.
fn reveals_no_data(req: &Request, name: &str) -> bool {
    match name {
        "ping" | "echo" | "time" | "select" => true,
        "client" => [
            "id", "info", "list", "getname", "setname", "setinfo", "help",
        ]
        .iter()
        .any(|sub| req.arg_is(1, sub)),
        "slowlog" => ["len", "reset", "help"]
            .iter()
            .any(|sub| req.arg_is(1, sub)),
        _ => false,
    }
}

/// Session-level state both sides agree on.
struct Modes {
    protocol: u8,
    in_multi: bool,
    /// A command of the transaction was refused here: `EXEC` aborts with
    /// this error.
    multi_refused: Option<String>,
    subscribed: bool,
    /// `CLIENT REPLY OFF` (true) or `SKIP` pending for the next command.
    reply_off: bool,
    skip_next: bool,
    /// A reply that needs an offset was asked for since the last `ROLE`.
    unprobed: bool,
    /// The last command sent was `CLIENT CACHING`, which applies to the
    /// next command on the connection: a `ROLE` may not be that one.
    caching_next: bool,
    /// The connection subscribed to something in RESP3 (where subscribed
    /// clients run any command): on a switch to RESP2 it may be in RESP2's
    /// subscribed mode.
    resp3_subscribed: bool,
    /// `REPLCONF rdb-only 1`: a `SYNC` wants the RDB alone.
    rdb_only: bool,
    /// The client asked to follow the stream (`SYNC`, `PSYNC`): the
    /// session ends and its connection is served as a follower.
    follow: Option<Ask>,
}

/// What a client may do, and who it is.
pub struct Client {
    pub core: Arc<ProxyCore>,
    pub node: Arc<Node>,
    pub peer: SocketAddr,
    grant: Option<Grant>,
    /// The session came from a standby (it is never forwarded again).
    forwarded: bool,
}

impl Client {
    pub fn new(core: Arc<ProxyCore>, node: Arc<Node>, peer: SocketAddr) -> Client {
        let grant = open_grant(&core, &node);
        Client {
            core,
            node,
            peer,
            grant,
            forwarded: false,
        }
    }

    /// Serves the session until the client leaves, the role changes, or
    /// `stop`.
    pub async fn serve<S>(self, stream: S, stop: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut read, write) = tokio::io::split(stream);
        let mut write = BufWriter::new(write);
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut decoder = RequestDecoder::new(self.core.max_bulk(), self.grant.is_some());
        // Until the first command, the session does not know whether it is
        // a forwarded one: read it first.
        let first = match next_request(&mut read, &mut buf, &mut decoder).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => return protocol_error(&mut write, e).await,
        };
        let mut client = self;
        let mut pending = vec![first];
        if pending[0].arg_is(0, FORWARDED) {
            let marker = pending.remove(0);
            match client.accept_forwarded(&marker) {
                Ok(()) => decoder.authenticated = client.grant.is_some(),
                Err(why) => {
                    refuse(&mut write, why).await;
                    return;
                }
            }
        }
        match client.node.roles.writer() {
            Ok(guard) => {
                client
                    .relay(Some(guard), read, write, buf, decoder, pending, stop)
                    .await
            }
            Err(e)
                if e.is_standby()
                    && !client.forwarded
                    && client.core.settings.standby_reads == StandbyReads::Local =>
            {
                client.local(read, write, buf, decoder, pending, stop).await
            }
            Err(e) if e.is_standby() && !client.forwarded => {
                client.forward(read, write, buf, pending, stop).await
            }
            Err(e) => {
                let why = if client.forwarded {
                    format!(
                        "TRYAGAIN this replica received a forwarded session but is not the active \
                         ({e}); retry"
                    )
                } else {
                    format!("TRYAGAIN {e}")
                };
                refuse(&mut write, &why).await;
            }
        }
    }

    /// `UNDERSTUDY FORWARDED <cluster token>`: a standby passing a client's
    /// session on. The client authenticates anew, here.
    fn accept_forwarded(&mut self, marker: &Request) -> Result<(), &'static str> {
        let token = marker.argv.get(2).cloned().unwrap_or_default();
        let ok = marker.arg_is(1, "FORWARDED")
            && match &self.node.settings.token {
                Some(t) => t.matches(&token),
                None => true,
            };
        if !ok {
            return Err("ERR this command is for understudy replicas only");
        }
        self.forwarded = true;
        self.grant = open_grant(&self.core, &self.node);
        Ok(())
    }

    /// A standby's session with `standby_reads = "local"`: served by its
    /// own upstream, a Redis replica fed committed effects only, so replies
    /// need no gate (they may be behind the active's; writes get Redis's
    /// `READONLY`). Only once that upstream is known to hold a prefix of the
    /// committed history: a demoted active's may hold effects the cluster
    /// never committed until the feed has refilled it.
    async fn local<R, W>(
        self,
        read: R,
        mut write: BufWriter<W>,
        buf: BytesMut,
        decoder: RequestDecoder,
        pending: Vec<Request>,
        stop: CancellationToken,
    ) where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        if !self.core.feed.in_step() {
            refuse(
                &mut write,
                "TRYAGAIN this standby's upstream is not yet following the committed \
                     history (it is being resynced); retry in a moment, or use the active",
            )
            .await;
            return;
        }
        self.relay(None, read, write, buf, decoder, pending, stop)
            .await
    }

    /// A session on this replica's own upstream: requests to it, replies
    /// through the gate of `guard`'s term (the active), or as they come (a
    /// standby's local reads: `None`).
    #[allow(clippy::too_many_arguments)] // the session's halves, handed over once
    async fn relay<R, W>(
        mut self,
        guard: Option<ActiveGuard>,
        mut read: R,
        write: BufWriter<W>,
        mut buf: BytesMut,
        mut decoder: RequestDecoder,
        mut pending: Vec<Request>,
        stop: CancellationToken,
    ) where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        // The tap of this term must follow the upstream first (a promotion
        // makes it a master and starts the tap in the background).
        let ready = match &guard {
            Some(g) => self.core.ready(g.epoch(), READY_WAIT).await,
            None => true,
        };
        if !ready {
            let mut write = write;
            refuse(
                &mut write,
                "TRYAGAIN this replica became the active and its upstream is not ready yet; \
                     retry in a moment",
            )
            .await;
            return;
        }
        // On the active a session starts on the shared lane, and takes a
        // connection of its own before its first command that needs one.
        let lane = match &guard {
            Some(g) => self.core.lane(g.epoch()).await,
            None => None,
        };
        let (mut up_write, up_read) = match lane {
            Some(lane) => {
                let (w, r) = lane.join();
                (Up::Shared(w), UpRead::Shared(r))
            }
            None => match self.core.session_upstream().await {
                Ok(u) => {
                    let (r, w) = u.into_split();
                    (Up::Own(BufWriter::new(w)), UpRead::Own(r))
                }
                Err(e) => {
                    let mut write = write;
                    refuse(
                        &mut write,
                        &format!("TRYAGAIN this replica's upstream cannot be reached: {e}"),
                    )
                    .await;
                    return;
                }
            },
        };
        let (tx, slot_rx) = mpsc::channel(MAX_SLOTS);
        let mut slots = Slots { tx, run: None };
        let gate = ReplyGate::new(self.core.committed_offset());
        let gated = guard.is_some();
        let done = stop.child_token();
        let replies = tokio::spawn(replies(
            slot_rx,
            up_read,
            write,
            gate,
            self.core.probe(),
            guard,
            self.core.max_bulk(),
            done.clone(),
            self.node.clone(),
        ));
        let mut modes = Modes::reset();
        'session: loop {
            if pending.is_empty() {
                // The batch is read: a ROLE behind it gives the offset that
                // covers its replies; send it, then wait for more.
                if gated && modes.unprobed && modes.role_may_follow() {
                    if up_write.role().await.is_err() || slots.send(Slot::Role).await.is_err() {
                        break;
                    }
                    modes.unprobed = false;
                }
                if slots.flush().await.is_err() || up_write.flush().await.is_err() {
                    break;
                }
                let got = tokio::select! {
                    _ = done.cancelled() => break,
                    r = next_request(&mut read, &mut buf, &mut decoder) => r,
                };
                match got {
                    Ok(Some(r)) => pending.push(r),
                    Ok(None) => break,
                    Err(e) => {
                        let _ = slots.send(Slot::Local(protocol_reply(&e))).await;
                        let _ = slots.send(Slot::Close).await;
                        break;
                    }
                }
                // Everything else already buffered joins the batch.
                while let Ok(Some(r)) = decoder.decode(&mut buf) {
                    pending.push(r);
                }
            }
            for req in std::mem::take(&mut pending) {
                let step = self.step(&req, &mut modes, &mut up_write, &mut slots).await;
                decoder.authenticated = self.grant.is_some();
                match step {
                    Ok(true) => {}
                    Ok(false) | Err(_) => break 'session,
                }
            }
        }
        // Replies already counted still go to a client that only stopped
        // writing.
        let _ = slots.flush().await;
        drop(slots);
        // The client is gone (or the session ends): the upstream sees its
        // connection close as Redis would have seen the client's, so a
        // blocked command is unblocked and nothing is kept for it.
        up_write.shutdown().await;
        let back = replies.await.ok().flatten();
        if let (Some(ask), Some(write)) = (modes.follow.take(), back) {
            let (core, node) = (self.core.clone(), self.node.clone());
            follow::serve(&core, &node, ask, modes.rdb_only, read, write, stop).await;
        }
    }

    /// Handles one request on the active. `Ok(false)`: the session ends.
    async fn step(
        &mut self,
        req: &Request,
        modes: &mut Modes,
        up: &mut Up,
        slots: &mut Slots,
    ) -> Result<bool, Closed> {
        let lowered = req.name();
        let name: &str = &lowered;
        let local = |b: Bytes| Slot::Local(b);
        // Credentials and refusals: answered here, in turn.
        if name == "quit" {
            slots.send(local(Bytes::from_static(b"+OK\r\n"))).await?;
            slots.send(Slot::Close).await?;
            return Ok(false);
        }
        // With no understudy credential, `AUTH` is for the upstream's own
        // users and goes to it like any command.
        if name == "auth" && !self.redis_auth() {
            let reply = self.auth(req);
            slots.send(local(reply)).await?;
            return Ok(true);
        }
        if self.grant.is_none() && name != "hello" {
            slots
                .send(local(error("NOAUTH Authentication required.")))
                .await?;
            return Ok(true);
        }
        // A refused setting set to the value it already has changes
        // nothing (Redis's own test suite sets `save ""` on every server
        // it uses; understudy's upstreams run with it).
        let unchanged = name == "config"
            && req.arg_is(1, "set")
            && config_set_refused(req)
            && self.core.config_unchanged(&req.argv[2..]).await;
        // Redis's flags for the command, looked up once.
        let core = self.core.clone();
        let command = match core.table.lookup(name, &req.argv) {
            Lookup::Found(info) => Some(info),
            Lookup::Invalid(_) => None,
        };
        let no_multi = command.is_some_and(|info| info.flags.no_multi);
        if modes.in_multi && no_multi {
            // Redis refuses it while queueing, whatever understudy would.
            return self.not_in_multi(modes, slots).await;
        }
        if let Some(why) = self.refusal(req, name, unchanged, command) {
            if modes.in_multi {
                // Queued, and refused with the whole transaction at `EXEC`,
                // as Redis aborts one whose command it cannot run then
                // (`-EXECABORT … because of: -OOM …`): a client that stops
                // at the first error does not stay inside `MULTI`.
                modes.multi_refused.get_or_insert_with(|| {
                    format!("EXECABORT Transaction discarded because of: {why}")
                });
                slots
                    .send(local(Bytes::from_static(b"+QUEUED\r\n")))
                    .await?;
                return Ok(true);
            }
            slots.send(local(error(&why))).await?;
            return Ok(true);
        }
        match name {
            "sync" | "psync" => return self.follow(req, name, modes, slots).await,
            "replconf" => {
                if let Some(reply) = replconf(req, modes) {
                    slots.send(local(reply)).await?;
                }
                return Ok(true);
            }
            "client" if req.arg_is(1, "kill") && kills_replicas(req) => {
                // The upstream's replicas (the tap reconnects), and the
                // clients that follow the stream here.
                self.core.drop_followers();
            }
            _ => {}
        }
        if matches!(up, Up::Shared(_)) && !may_share(name, command) {
            self.leave_lane(up, slots).await?;
        }
        // In RESP2 subscribed mode frames pass as they come; leaving it is
        // confirmed by a PING barrier before anything else is sent.
        if modes.subscribed {
            send(up, &req.raw).await?;
            if matches!(
                name,
                "unsubscribe" | "punsubscribe" | "sunsubscribe" | "reset"
            ) {
                modes.subscribed = barrier(up, slots).await?;
                if name == "reset" {
                    *modes = Modes::reset();
                    self.grant = open_grant(&self.core, &self.node);
                    self.reauthenticate(up, slots).await?;
                }
            }
            if name == "quit" {
                return Ok(false);
            }
            return Ok(true);
        }
        // Commands that change what comes back.
        match name {
            "hello" => return self.hello(req, modes, up, slots).await,
            "reset" => {
                send(up, &req.raw).await?;
                up.flush().await?;
                let (tx, rx) = oneshot::channel();
                slots.send(Slot::Watch(tx)).await?;
                let _ = rx.await;
                *modes = Modes::reset();
                self.grant = open_grant(&self.core, &self.node);
                // RESET logs the upstream connection out: in again.
                self.reauthenticate(up, slots).await?;
                return Ok(true);
            }
            "client" if req.arg_is(1, "reply") => {
                send(up, &req.raw).await?;
                if req.arg_is(2, "on") {
                    // Clears a pending `SKIP` too, and is answered.
                    modes.reply_off = false;
                    modes.skip_next = false;
                    slots.reply(Kind::Inert, false).await?;
                } else if req.arg_is(2, "off") {
                    modes.reply_off = true;
                } else if req.arg_is(2, "skip") {
                    // Redis ignores it while replies are off.
                    modes.skip_next = !modes.reply_off;
                } else {
                    slots.reply(Kind::Inert, false).await?;
                }
                return Ok(true);
            }
            _ => {}
        }
        if modes.protocol == 2 && is_subscribe(name) {
            send(up, &req.raw).await?;
            slots.send(Slot::Subscribed).await?;
            modes.subscribed = true;
            return Ok(true);
        }
        if modes.protocol == 2 && is_unsubscribe(name) && !modes.in_multi {
            // Outside subscribed mode Redis still answers once for each
            // channel named (once when none is).
            send(up, &req.raw).await?;
            for _ in 0..req.argv.len().saturating_sub(1).max(1) {
                slots.reply(Kind::Inert, false).await?;
            }
            return Ok(true);
        }
        if name == "exec" && modes.in_multi {
            if let Some(why) = modes.multi_refused.take() {
                // The whole transaction is discarded, not run without the
                // refused command.
                send(up, &Request::new(["DISCARD"]).raw).await?;
                slots.send(Slot::Discard).await?;
                slots.send(Slot::Local(error(&why))).await?;
                modes.in_multi = false;
                return Ok(true);
            }
        }
        let kind = kind(req, name, modes, command);
        let blocking = command.is_some_and(|info| info.flags.blocking);
        send(up, &req.raw).await?;
        modes.caching_next = name == "client" && req.arg_is(1, "caching");
        // What comes back.
        let silent = modes.reply_off
            || std::mem::take(&mut modes.skip_next)
            || (modes.protocol == 3 && (is_subscribe(name) || is_unsubscribe(name)));
        modes.resp3_subscribed |= modes.protocol == 3 && is_subscribe(name);
        match name {
            // MULTI inside MULTI is refused and changes nothing.
            "multi" => modes.in_multi = true,
            "exec" | "discard" => {
                modes.in_multi = false;
                modes.multi_refused = None;
            }
            _ => {}
        }
        if !silent {
            modes.unprobed |= kind.needs_offset();
            slots.reply(kind, blocking).await?;
        }
        Ok(true)
    }

    /// A command Redis flags `no-multi`, sent inside `MULTI`: refused while
    /// queueing, and the transaction aborts, as in Redis.
    async fn not_in_multi(&mut self, modes: &mut Modes, slots: &mut Slots) -> Result<bool, Closed> {
        modes.multi_refused.get_or_insert_with(|| {
            "EXECABORT Transaction discarded because of previous errors.".into()
        });
        slots
            .send(Slot::Local(error(
                "ERR Command not allowed inside a transaction",
            )))
            .await?;
        Ok(true)
    }

    /// `SYNC` or `PSYNC`: once every reply before it is written, the
    /// session ends and the connection follows the committed stream
    /// (`follow.rs`). Not in RESP2's subscribed mode, as in Redis (nor
    /// inside a transaction: both are flagged `no-multi`).
    async fn follow(
        &mut self,
        req: &Request,
        name: &str,
        modes: &mut Modes,
        slots: &mut Slots,
    ) -> Result<bool, Closed> {
        if modes.subscribed {
            let why = format!(
                "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / \
                 QUIT / RESET are allowed in this context"
            );
            slots.send(Slot::Local(error(&why))).await?;
            return Ok(true);
        }
        modes.follow = Some(Ask::of(req));
        slots.send(Slot::Follow).await?;
        Ok(false)
    }

    /// Takes the session off the shared lane onto a connection of its own,
    /// once Redis has run everything it sent on the lane (so the next
    /// command runs after them, as on one connection).
    async fn leave_lane(&self, up: &mut Up, slots: &mut Slots) -> Result<(), Closed> {
        up.flush().await?;
        let own = match self.core.session_upstream().await {
            Ok(s) => s,
            Err(e) => {
                let why = format!("TRYAGAIN this replica's upstream cannot be reached: {e}");
                slots.send(Slot::Local(error(&why))).await?;
                slots.send(Slot::Close).await?;
                return Err(Closed);
            }
        };
        let (read, write) = own.into_split();
        let (ran, all_ran) = oneshot::channel();
        slots.send(Slot::Switch(read, ran)).await?;
        all_ran.await.map_err(|_| Closed)?;
        *up = Up::Own(BufWriter::new(write));
        Ok(())
    }

    /// `HELLO [ver [AUTH user pass] [SETNAME name]]`: credentials here, the
    /// rest to the upstream (which switches the connection's protocol).
    async fn hello(
        &mut self,
        req: &Request,
        modes: &mut Modes,
        up: &mut Up,
        slots: &mut Slots,
    ) -> Result<bool, Closed> {
        let mut upstream_args: Vec<Bytes> = vec![Bytes::from_static(b"HELLO")];
        if self.redis_auth() {
            // No understudy credential: `AUTH` is for the upstream's users.
            upstream_args = req.argv.clone();
        } else if let Some(v) = req.argv.get(1) {
            upstream_args.push(v.clone());
        }
        let mut i = if self.redis_auth() { req.argv.len() } else { 2 };
        while i < req.argv.len() {
            if req.arg_is(i, "auth") && i + 2 < req.argv.len() {
                match self.password_grant(&req.argv[i + 2]) {
                    Some(g) => self.grant = Some(g),
                    None => {
                        self.rejected("HELLO AUTH");
                        slots
                            .send(Slot::Local(error(
                                "WRONGPASS invalid username-password pair or user is disabled.",
                            )))
                            .await?;
                        return Ok(true);
                    }
                }
                i += 3;
            } else if req.arg_is(i, "setname") && i + 1 < req.argv.len() {
                upstream_args.push(req.argv[i].clone());
                upstream_args.push(req.argv[i + 1].clone());
                i += 2;
            } else {
                upstream_args.extend(req.argv[i..].iter().cloned());
                break;
            }
        }
        if self.grant.is_none() {
            slots.send(Slot::Local(error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"))).await?;
            return Ok(true);
        }
        send(up, &Request::new(upstream_args).raw).await?;
        up.flush().await?;
        let (tx, rx) = oneshot::channel();
        slots.send(Slot::Watch(tx)).await?;
        let reply = rx.await.map_err(|_| Closed)?;
        if !reply.starts_with(b"-") {
            if let Some(v) = req.argv.get(1) {
                let was = modes.protocol;
                modes.protocol = if v.as_ref() == b"3" { 3 } else { 2 };
                if was == 3 && modes.protocol == 2 && modes.resp3_subscribed {
                    // Subscriptions made in RESP3 stay: the connection may
                    // now be in RESP2's subscribed mode.
                    modes.resp3_subscribed = false;
                    if barrier(up, slots).await? {
                        modes.subscribed = true;
                        slots.send(Slot::Subscribed).await?;
                    }
                }
            }
        }
        Ok(true)
    }

    /// Logs the session's upstream connection in again (after `RESET`).
    async fn reauthenticate(&self, up: &mut Up, slots: &mut Slots) -> Result<(), Closed> {
        if let Some(pw) = &self.core.settings.upstream_password {
            send(up, &Request::new(["AUTH", pw.as_str()]).raw).await?;
            slots.send(Slot::Discard).await?;
        }
        Ok(())
    }

    /// Why this command is not run, if it is not (DESIGN.md, "Proxy mode":
    /// only what would break the arrangement, and what the client's
    /// credential does not allow).
    fn refusal(
        &self,
        req: &Request,
        name: &str,
        unchanged_config: bool,
        command: Option<&CommandInfo>,
    ) -> Option<String> {
        let why = |what: &str, reason: &str| {
            Some(format!(
                "ERR {what} is not allowed through understudy: {reason}"
            ))
        };
        let replication = "the upstream's replication and persistence are understudy's to \
                           control (it keeps every replica's upstream in step); run it on the \
                           redis-server directly if you must";
        match name {
            "replicaof" | "slaveof" | "failover" => return why(&name.to_uppercase(), replication),
            "shutdown" => {
                return why(
                    "SHUTDOWN",
                    "stopping the upstream is a failure of this replica; stop the replica and \
                     its redis-server instead",
                )
            }
            "debug" if !debug_harmless(req) => {
                let sub = req
                    .argv
                    .get(1)
                    .map(|s| String::from_utf8_lossy(s).to_uppercase())
                    .unwrap_or_default();
                return why(
                    format!("DEBUG {sub}").trim_end(),
                    "it can change the upstream's data or replication behind understudy's back, \
                     or stop the upstream",
                );
            }
            "monitor" => {
                return why(
                    "MONITOR",
                    "it shows commands before their effects are committed",
                )
            }
            "config" if req.arg_is(1, "set") && config_set_refused(req) && !unchanged_config => {
                let keys: Vec<String> = req
                    .argv
                    .iter()
                    .skip(2)
                    .step_by(2)
                    .filter(|k| refused_setting(k))
                    .map(|k| String::from_utf8_lossy(k).to_ascii_lowercase())
                    .collect();
                return why(&format!("CONFIG SET {}", keys.join(" ")), replication);
            }
            _ => {}
        }
        if self.grant == Some(Grant::ReadOnly) && !Self::read_only_may_run(command) {
            return Some(
                "NOPERM this connection authenticated with the read-only client token, which \
                 runs only commands Redis flags read-only; AUTH with the read-write client \
                 token to run it"
                    .into(),
            );
        }
        None
    }

    /// Whether the read-only token may run the command: Redis flags it
    /// `readonly` (and not `write`, `may_replicate` or `admin`), or it is
    /// one of the connection's own ([`HARMLESS`]; `EXEC` runs what was
    /// queued, each checked when it was). A command the table does not know
    /// is answered by the upstream.
    fn read_only_may_run(command: Option<&CommandInfo>) -> bool {
        match command {
            Some(info) => {
                let f = &info.flags;
                !(f.write || f.may_replicate || f.admin)
                    && (f.readonly || HARMLESS.contains(&info.name.as_str()))
            }
            None => true,
        }
    }

    /// Whether `AUTH` is Redis's own: understudy requires no credential,
    /// so a client authenticates as one of the upstream's users (`ACL`).
    fn redis_auth(&self) -> bool {
        open_grant(&self.core, &self.node).is_some()
    }

    /// `AUTH [user] password`.
    fn auth(&mut self, req: &Request) -> Bytes {
        let password = match req.argv.len() {
            2 => &req.argv[1],
            3 => &req.argv[2],
            _ => return error("ERR wrong number of arguments for 'auth' command"),
        };
        if let Some(grant) = self.password_grant(password) {
            self.grant = Some(grant);
            Bytes::from_static(b"+OK\r\n")
        } else if !self.node.settings.access.required()
            && self.core.settings.client_password.is_none()
        {
            error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
        } else {
            self.rejected("AUTH");
            error("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }

    /// What a password allows: the cluster token, the read-write client
    /// token and the client password everything, the read-only token reads.
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

    /// A standby's session: everything to the active, marked forwarded, and
    /// the active's bytes back.
    async fn forward<R, W>(
        self,
        mut read: R,
        mut write: BufWriter<W>,
        buf: BytesMut,
        pending: Vec<Request>,
        stop: CancellationToken,
    ) where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let Some(addr) = self.core.active_resp() else {
            let why = self
                .node
                .role()
                .not_writable()
                .unwrap_or_else(|| "this replica is not the active".into());
            refuse(
                &mut write,
                &format!("TRYAGAIN {why}; no active is known right now — retry shortly"),
            )
            .await;
            return;
        };
        let tls = self.node.settings.tls.clone();
        let upstream = match proto_common::tls::connect(
            &addr,
            tls.as_deref(),
            std::time::Duration::from_secs(2),
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                refuse(
                    &mut write,
                    &format!("TRYAGAIN the active at {addr} cannot be reached ({e}); retry"),
                )
                .await;
                return;
            }
        };
        let (mut up_read, mut up_write) = tokio::io::split(upstream);
        let token = self
            .node
            .settings
            .token
            .as_ref()
            .map(|t| t.secret().to_string())
            .unwrap_or_default();
        let mut opening = Request::new([FORWARDED, "FORWARDED", &token]).raw.to_vec();
        for r in &pending {
            opening.extend_from_slice(&r.raw);
        }
        opening.extend_from_slice(&buf);
        if up_write.write_all(&opening).await.is_err() {
            return;
        }
        let mut write = write.into_inner();
        let to_active = async {
            let _ = tokio::io::copy(&mut read, &mut up_write).await;
            let _ = up_write.shutdown().await;
        };
        let to_client = async {
            let _ = tokio::io::copy(&mut up_read, &mut write).await;
            let _ = write.shutdown().await;
        };
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = async { tokio::join!(to_active, to_client) } => {}
        }
    }
}

impl Modes {
    fn reset() -> Modes {
        Modes {
            protocol: 2,
            in_multi: false,
            multi_refused: None,
            subscribed: false,
            reply_off: false,
            skip_next: false,
            unprobed: false,
            caching_next: false,
            resp3_subscribed: false,
            rdb_only: false,
            follow: None,
        }
    }

    /// Whether a `ROLE` sent now is answered in turn: not while the
    /// connection is subscribed (RESP2), queueing a transaction, or not
    /// replying.
    fn role_may_follow(&self) -> bool {
        !(self.subscribed || self.in_multi || self.reply_off || self.skip_next || self.caching_next)
    }
}

/// Where a session's requests go.
enum Up {
    /// A connection of its own.
    Own(BufWriter<SessionWrite>),
    /// The shared lane (`lane.rs`), until a command needs its own.
    Shared(LaneWrite),
}

impl Up {
    async fn send(&mut self, raw: &[u8]) -> Result<(), Closed> {
        match self {
            Up::Own(w) => w.write_all(raw).await.map_err(|_| Closed),
            Up::Shared(l) => l.send(raw).await.map_err(|_| Closed),
        }
    }

    /// A `ROLE` behind what was sent (on the lane, one behind the round).
    async fn role(&mut self) -> Result<(), Closed> {
        match self {
            Up::Own(w) => w
                .write_all(b"*1\r\n$4\r\nROLE\r\n")
                .await
                .map_err(|_| Closed),
            Up::Shared(l) => {
                l.role();
                Ok(())
            }
        }
    }

    async fn flush(&mut self) -> Result<(), Closed> {
        match self {
            Up::Own(w) => w.flush().await.map_err(|_| Closed),
            Up::Shared(l) => l.flush().await.map_err(|_| Closed),
        }
    }

    /// The client is gone: its own connection is closed, as Redis would
    /// have seen the client's close (a blocked command is unblocked).
    async fn shutdown(&mut self) {
        match self {
            Up::Own(w) => {
                let _ = w.shutdown().await;
            }
            Up::Shared(l) => {
                let _ = l.flush().await;
            }
        }
    }
}

/// Where a session's replies come from.
enum UpRead {
    Own(SessionRead),
    Shared(LaneRead),
}

impl AsyncRead for UpRead {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpRead::Own(r) => std::pin::Pin::new(r).poll_read(cx, buf),
            UpRead::Shared(r) => std::pin::Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// A reply written to the client only once it may be (in order).
enum Held {
    /// Bytes with no effect to wait for: a reply made here, or a push
    /// frame kept in its place among the replies.
    Local(Bytes),
    /// The upstream's replies (as many as the count, read together), and
    /// what they may reveal.
    Upstream(Bytes, Kind, usize),
}

/// The replies' side of an active session.
#[allow(clippy::too_many_arguments)] // the session's halves and its gate, handed over once
async fn replies<W>(
    mut slots: mpsc::Receiver<Slot>,
    mut upstream: UpRead,
    mut client: BufWriter<W>,
    mut gate: ReplyGate,
    probe: Arc<super::probe::Probe>,
    guard: Option<ActiveGuard>,
    max_bulk: u64,
    done: CancellationToken,
    node: Arc<Node>,
) -> Option<BufWriter<W>>
where
    W: AsyncWrite + Unpin,
{
    let mut frames = Frames {
        buf: BytesMut::with_capacity(16 * 1024),
        max_bulk,
        stash: None,
    };
    let mut out = Release {
        held: Vec::new(),
        gate: &mut gate,
        probe: &probe,
        guard: guard.as_ref(),
        idle_poll: &node.idle_poll,
        in_flight: None,
    };
    // `Ok(true)`: the connection is handed back (`Slot::Follow`).
    let result: Result<bool, Closed> = async {
        loop {
            // Nothing more to take at once: what is held is released (one
            // probe for all of it), and the client gets it.
            let slot = match slots.try_recv() {
                Ok(s) => s,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    out.release(&mut client, None).await?;
                    return Ok(false);
                }
                Err(mpsc::error::TryRecvError::Empty) => {
                    out.release(&mut client, None).await?;
                    client.flush().await.map_err(|_| Closed)?;
                    tokio::select! {
                        s = slots.recv() => match s { Some(s) => s, None => return Ok(false) },
                        // Push frames (RESP3) arrive between replies; a reply
                        // may arrive before its slot: it waits for it.
                        f = frames.next(&mut upstream, &mut client), if frames.stash.is_none() => {
                            let f = f?;
                            if f.first() == Some(&b'>') {
                                client.write_all(&f).await.map_err(|_| Closed)?;
                            } else {
                                frames.stash = Some(f);
                            }
                            continue;
                        }
                    }
                }
            };
            match slot {
                Slot::Local(bytes) => out.held.push(Held::Local(bytes)),
                Slot::Reply {
                    kind,
                    blocking,
                    count,
                } => {
                    if blocking && !frames.has_reply() {
                        // Redis may hold it: what is held goes first.
                        out.release(&mut client, None).await?;
                    }
                    out.note_sent(kind, blocking);
                    let mut left = count;
                    while left > 0 {
                        let (f, n) = frames
                            .replies(&mut upstream, &mut client, &mut out.held, left)
                            .await?;
                        out.held.push(Held::Upstream(f, kind, n));
                        left -= n;
                    }
                }
                Slot::Role => {
                    let f = frames
                        .reply(&mut upstream, &mut client, &mut out.held)
                        .await?;
                    let offset = super::probe::role_offset(&f);
                    out.release(&mut client, offset).await?;
                }
                Slot::Watch(tx) => {
                    let f = frames
                        .reply(&mut upstream, &mut client, &mut out.held)
                        .await?;
                    let _ = tx.send(f.clone());
                    out.held.push(Held::Upstream(f, Kind::Inert, 1));
                }
                Slot::Discard => {
                    frames
                        .reply(&mut upstream, &mut client, &mut out.held)
                        .await?;
                }
                Slot::Subscribed => {
                    // Frames pass as they come until the count drops to 0
                    // and a barrier (or a close) says so.
                    out.release(&mut client, None).await?;
                    client.flush().await.map_err(|_| Closed)?;
                    let mut barrier: Option<(Bytes, oneshot::Sender<bool>)> = None;
                    loop {
                        tokio::select! {
                            s = slots.recv(), if barrier.is_none() => match s {
                                Some(Slot::Barrier(nonce, tx)) => barrier = Some((nonce, tx)),
                                Some(Slot::Local(b)) => {
                                    client.write_all(&b).await.map_err(|_| Closed)?;
                                    client.flush().await.map_err(|_| Closed)?;
                                }
                                Some(Slot::Close) | None => return Ok(false),
                                Some(_) => return Err(Closed),
                            },
                            f = frames.next(&mut upstream, &mut client) => {
                                let f = f?;
                                if let Some((nonce, _)) = &barrier {
                                    if let Some(still) = barrier_reply(&f, nonce) {
                                        let (_, tx) = barrier.take().expect("set");
                                        let _ = tx.send(still);
                                        client.flush().await.map_err(|_| Closed)?;
                                        if still { continue } else { break }
                                    }
                                }
                                client.write_all(&f).await.map_err(|_| Closed)?;
                            }
                        }
                    }
                }
                Slot::Barrier(nonce, tx) => {
                    // Outside subscribed mode: the PING's plain answer.
                    let f = frames
                        .reply(&mut upstream, &mut client, &mut out.held)
                        .await?;
                    let still = barrier_reply(&f, &nonce).unwrap_or(false);
                    let _ = tx.send(still);
                }
                Slot::Close => {
                    out.release(&mut client, None).await?;
                    client.flush().await.map_err(|_| Closed)?;
                    return Err(Closed);
                }
                Slot::Follow => {
                    out.release(&mut client, None).await?;
                    client.flush().await.map_err(|_| Closed)?;
                    return Ok(true);
                }
                Slot::Switch(own, ran) => {
                    // Every frame the lane handed this session was a reply
                    // to a slot before this one.
                    if frames.stash.is_some() || !frames.buf.is_empty() {
                        return Err(Closed);
                    }
                    upstream = UpRead::Own(own);
                    let _ = ran.send(());
                }
            }
        }
    }
    .await;
    if result == Ok(true) {
        return Some(client);
    }
    if result.is_err() {
        // The upstream closed after replies already read: they still go.
        let _ = out.release(&mut client, None).await;
    }
    let _ = client.flush().await;
    let _ = client.shutdown().await;
    done.cancel();
    None
}

/// Replies waiting to be written, and what releases them.
struct Release<'a> {
    held: Vec<Held>,
    gate: &'a mut ReplyGate,
    probe: &'a super::probe::Probe,
    /// The active's term; `None`: replies need no gate (a standby's local
    /// reads).
    guard: Option<&'a ActiveGuard>,
    idle_poll: &'a IdlePoll,
    /// Marks a gated command in flight, from when it was sent until its
    /// reply is released (`idle_poll_us`: keeps a CPU awake for the
    /// wake-ups on its way, as for a write on the embedded store).
    in_flight: Option<Busy<'a>>,
}

impl<'a> Release<'a> {
    /// A command whose reply will be gated went to the upstream (a blocking
    /// one may wait for long, and is not a write on its way).
    fn note_sent(&mut self, kind: Kind, blocking: bool) {
        if self.guard.is_some() && kind.needs_offset() && !blocking && self.in_flight.is_none() {
            self.in_flight = Some(self.idle_poll.busy());
        }
    }

    /// Writes what is held, once the stream is committed up to an offset
    /// that covers every upstream reply among it (`covering`: the session's
    /// own `ROLE`'s, read behind them; else the probe's) and the term may
    /// answer; else answers each upstream reply with why it cannot be
    /// released, and ends the session.
    async fn release<W: AsyncWrite + Unpin>(
        &mut self,
        client: &mut BufWriter<W>,
        covering: Option<u64>,
    ) -> Result<(), Closed> {
        if self.held.is_empty() {
            return Ok(());
        }
        // Inert replies, and errors saying the command did not run
        // (`-BUSY`, `-EXECABORT`), reveal nothing and go at once, as from
        // a redis-server:
        // waiting for the script to end could wait for the `SCRIPT KILL`
        // this client would send next. Quiet ones need only the term.
        let needs_offset = self
            .held
            .iter()
            .any(|h| matches!(h, Held::Upstream(b, kind, _) if kind.needs_offset() && !not_run(b)));
        let gated = needs_offset
            || self
                .held
                .iter()
                .any(|h| matches!(h, Held::Upstream(_, Kind::Quiet, _)));
        let released = match self.guard {
            Some(guard) if gated => {
                client.flush().await.map_err(|_| Closed)?;
                let offset = match covering {
                    Some(o) => Ok(o),
                    None if !needs_offset => Ok(0),
                    None => self.probe.offset().await,
                };
                match offset {
                    Ok(offset) => self
                        .gate
                        .release(offset, guard)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(why) => Err(why.to_string()),
                }
            }
            _ => Ok(()),
        };
        let failed = released.is_err();
        for h in self.held.drain(..) {
            let (bytes, n) = match (h, &released) {
                (Held::Local(b), _) => (b, 1),
                (Held::Upstream(b, _, _), Ok(())) | (Held::Upstream(b, Kind::Inert, _), Err(_)) => {
                    (b, 1)
                }
                (Held::Upstream(_, Kind::Write, n), Err(why)) => (
                    error(&format!(
                        "UNKNOWN outcome unknown: {why}; read it back before retrying"
                    )),
                    n,
                ),
                (Held::Upstream(_, _, n), Err(why)) => (error(&format!("TRYAGAIN {why}")), n),
            };
            // An error stands for each of the replies it replaces.
            for _ in 0..n {
                client.write_all(&bytes).await.map_err(|_| Closed)?;
            }
        }
        self.in_flight = None;
        if failed {
            client.flush().await.map_err(|_| Closed)?;
            return Err(Closed);
        }
        Ok(())
    }
}

/// Frames read from the upstream.
struct Frames {
    buf: BytesMut,
    max_bulk: u64,
    /// A reply read before its slot arrived.
    stash: Option<Bytes>,
}

impl Frames {
    /// The next whole frame. Whatever the client is owed is flushed before
    /// waiting for the upstream.
    async fn next<U: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        up: &mut U,
        client: &mut BufWriter<W>,
    ) -> Result<Bytes, Closed> {
        if let Some(f) = self.stash.take() {
            return Ok(f);
        }
        loop {
            match frame::scan(&self.buf, self.max_bulk).map_err(|_| Closed)? {
                Scan::Complete(n) => return Ok(self.buf.split_to(n).freeze()),
                Scan::Incomplete => {
                    client.flush().await.map_err(|_| Closed)?;
                    if up.read_buf(&mut self.buf).await.map_err(|_| Closed)? == 0 {
                        return Err(Closed);
                    }
                }
            }
        }
    }

    /// Up to `want` replies, as many as are read in a row, in one piece,
    /// and how many. A push frame, or an error saying a command did not
    /// run (released on its own), ends the piece; when one comes first, the
    /// next reply alone (`reply`).
    async fn replies<U: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        up: &mut U,
        client: &mut BufWriter<W>,
        held: &mut Vec<Held>,
        want: usize,
    ) -> Result<(Bytes, usize), Closed> {
        if self.stash.is_none() {
            let stops = |f: &[u8]| f[0] == b'>' || not_run(f);
            if let Ok((n @ 1.., end)) = frame::run(&self.buf, want, self.max_bulk, stops) {
                return Ok((self.buf.split_to(end).freeze(), n));
            }
        }
        Ok((self.reply(up, client, held).await?, 1))
    }

    /// Whether a whole reply (not a push frame) is already read.
    fn has_reply(&self) -> bool {
        if self.stash.is_some() {
            return true;
        }
        let mut at = 0;
        while let Ok(Scan::Complete(n)) = frame::scan(&self.buf[at..], self.max_bulk) {
            if self.buf[at] != b'>' {
                return true;
            }
            at += n;
        }
        false
    }

    /// The next reply. Push frames (RESP3) read on the way keep their
    /// place: behind the replies still held, else straight to the client
    /// (Redis writes an invalidation caused by a client's own write after
    /// that write's reply, and one caused by an eviction before it).
    async fn reply<U: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        up: &mut U,
        client: &mut BufWriter<W>,
        held: &mut Vec<Held>,
    ) -> Result<Bytes, Closed> {
        loop {
            let f = self.next(up, client).await?;
            if f.first() == Some(&b'>') {
                if held.is_empty() {
                    client.write_all(&f).await.map_err(|_| Closed)?;
                } else {
                    held.push(Held::Local(f));
                }
                continue;
            }
            return Ok(f);
        }
    }
}

/// Whether an error reply says the command did not run, so it reveals
/// nothing: `-BUSY` (a script runs) and `-EXECABORT` (the transaction was
/// discarded).
fn not_run(reply: &[u8]) -> bool {
    reply.starts_with(b"-BUSY ") || reply.starts_with(b"-EXECABORT ")
}

/// The session's other side is gone.
#[derive(Debug, PartialEq, Eq)]
struct Closed;

impl<T> From<mpsc::error::SendError<T>> for Closed {
    fn from(_: mpsc::error::SendError<T>) -> Closed {
        Closed
    }
}

async fn send(up: &mut Up, raw: &[u8]) -> Result<(), Closed> {
    up.send(raw).await
}

/// Sends a `PING` barrier and says whether the connection is in RESP2's
/// subscribed mode (Redis answers `["pong", nonce]` there).
async fn barrier(up: &mut Up, slots: &mut Slots) -> Result<bool, Closed> {
    let nonce = Bytes::from(format!(
        "understudy-barrier-{}",
        hex::encode(proto_common::auth::new_nonce())
    ));
    send(up, &Request::new([&b"PING"[..], &nonce]).raw).await?;
    up.flush().await?;
    let (tx, rx) = oneshot::channel();
    slots.send(Slot::Barrier(nonce, tx)).await?;
    rx.await.map_err(|_| Closed)
}

/// The barrier PING's answer: `Some(true)` subscribed (`["pong", nonce]`),
/// `Some(false)` not (the nonce as a bulk string), `None` not it.
fn barrier_reply(frame: &[u8], nonce: &[u8]) -> Option<bool> {
    let bulk = |b: &[u8]| {
        let mut v = format!("${}\r\n", b.len()).into_bytes();
        v.extend_from_slice(b);
        v.extend_from_slice(b"\r\n");
        v
    };
    let n = bulk(nonce);
    if frame == n.as_slice() {
        return Some(false);
    }
    let mut array = b"*2\r\n$4\r\npong\r\n".to_vec();
    array.extend_from_slice(&n);
    (frame == array.as_slice()).then_some(true)
}

/// Whether the command may run on the shared lane: it neither changes
/// nor reads the connection's state (its database, transaction,
/// protocol, name, subscriptions, user), Redis does not hold its reply
/// (blocking commands, `WAIT`), it is no admin command, and no script
/// or function: while one runs too long Redis answers other clients
/// `-BUSY` at once, which those behind it on the lane would not get
/// (nor could a `SCRIPT KILL` reach it). Anything Redis may refuse as
/// given goes to a connection of its own too.
fn may_share(name: &str, command: Option<&CommandInfo>) -> bool {
    let connection = matches!(
        name,
        "select"
            | "multi"
            | "exec"
            | "discard"
            | "watch"
            | "unwatch"
            | "client"
            | "hello"
            | "reset"
            | "auth"
            | "acl"
            | "wait"
            | "waitaof"
            | "script"
            | "function"
            | "eval"
            | "evalsha"
            | "eval_ro"
            | "evalsha_ro"
            | "fcall"
            | "fcall_ro"
            | "readonly"
            | "readwrite"
            | "asking"
    ) || is_subscribe(name)
        || is_unsubscribe(name);
    !connection && command.is_some_and(|info| !info.flags.blocking && !info.flags.admin)
}

/// What the command's reply may reveal. Inside `MULTI` a command is
/// only queued (`+QUEUED`, or an error that it was not). Otherwise a
/// write is anything Redis does not flag `readonly` (`EXEC` ran what was
/// queued; Redis 7.0 flags `EVAL`, `FCALL` and `PUBLISH` neither `write`
/// nor `may_replicate`), for the error a client gets when its reply
/// cannot be released.
fn kind(req: &Request, name: &str, modes: &Modes, command: Option<&CommandInfo>) -> Kind {
    let inert = match name {
        "multi" | "discard" | "watch" | "unwatch" | "auth" => true,
        "script" | "function" => req.arg_is(1, "kill") || req.arg_is(1, "stats"),
        // Settings, not data: and no `ROLE` behind a lone `CONFIG SET`,
        // since Redis trims the tracking table (`tracking-table-max-keys`)
        // before the connection's next command and, for a `NOLOOP`
        // client, drops the invalidations that come of it.
        "config" => true,
        "exec" => false,
        _ => modes.in_multi,
    };
    if inert {
        return Kind::Inert;
    }
    if reveals_no_data(req, name) {
        return Kind::Quiet;
    }
    match command {
        Some(info) if info.flags.readonly => Kind::Read,
        Some(_) => Kind::Write,
        None => Kind::Read,
    }
}

/// `REPLCONF` from a client, answered here (nothing of it reaches the
/// upstream, whose replicas are understudy's): `rdb-only` is noted for a
/// `SYNC` to come; `ACK` and `GETACK` get no reply, as from Redis.
fn replconf(req: &Request, modes: &mut Modes) -> Option<Bytes> {
    if req.arg_is(1, "ack") || req.arg_is(1, "getack") {
        return None;
    }
    if req.argv.len() % 2 == 0 {
        return Some(error("ERR syntax error"));
    }
    for pair in req.argv[1..].chunks(2) {
        let option = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
        match option.as_str() {
            "rdb-only" => modes.rdb_only = pair[1].as_ref() == b"1",
            "rdb-filter-only" if !pair[1].is_empty() => {
                return Some(error(
                    "ERR REPLCONF rdb-filter-only is not supported through understudy: the RDB \
                     is served whole (fetch the whole RDB, or ask the redis-server directly)",
                ))
            }
            "listening-port" | "ip-address" | "capa" | "rdb-filter-only" => {}
            _ => {
                return Some(error(&format!(
                    "ERR Unrecognized REPLCONF option: {option}"
                )))
            }
        }
    }
    Some(Bytes::from_static(b"+OK\r\n"))
}

/// Whether `CLIENT KILL` (new style) kills replicas: `TYPE replica` or
/// `TYPE slave` among its filters.
fn kills_replicas(req: &Request) -> bool {
    req.argv.get(2..).is_some_and(|args| {
        args.chunks(2).any(|f| {
            f.len() == 2
                && f[0].eq_ignore_ascii_case(b"type")
                && (f[1].eq_ignore_ascii_case(b"replica") || f[1].eq_ignore_ascii_case(b"slave"))
        })
    })
}

fn is_subscribe(name: &str) -> bool {
    matches!(name, "subscribe" | "psubscribe" | "ssubscribe")
}

fn is_unsubscribe(name: &str) -> bool {
    matches!(name, "unsubscribe" | "punsubscribe" | "sunsubscribe")
}

/// `DEBUG` subcommands that only show the upstream's state or tune how it
/// runs, without changing data outside the replication stream or stopping
/// it: what Redis's own tests use to look inside (`OBJECT`, `PROTOCOL`,
/// `DIGEST`, `SLEEP`, `SET-ACTIVE-EXPIRE`, `PAUSE-CRON`, ...). The rest (`RELOAD` and
/// `LOADAOF` load data from disk, `POPULATE` writes keys and `REPLICATE`
/// sends replicas a command, none of it through the stream;
/// `CHANGE-REPL-ID` breaks the history; `SEGFAULT`, `PANIC`, `RESTART`
/// and the like stop the upstream) is refused.
fn debug_harmless(req: &Request) -> bool {
    const HARMLESS: [&str; 21] = [
        "help",
        "pause-cron",
        "mallctl",
        "mallctl-str",
        "log",
        "error",
        "object",
        "sdslen",
        "listpack",
        "quicklist",
        "digest",
        "digest-value",
        "protocol",
        "sleep",
        "set-active-expire",
        "quicklist-packed-threshold",
        "structsize",
        "htstats",
        "htstats-key",
        "stringmatch-test",
        "replybuffer",
    ];
    req.argv.get(1).is_some_and(|sub| {
        let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
        HARMLESS.contains(&sub.as_str())
    })
}

/// `CONFIG SET` of a replication or persistence setting, or of the
/// upstream's password.
fn config_set_refused(req: &Request) -> bool {
    req.argv
        .iter()
        .skip(2)
        .step_by(2)
        .any(|k| refused_setting(k))
}

/// A replication or persistence setting, or the upstream's password. Not
/// refused: how often the upstream pings its replicas, whether it sends a
/// full resync's RDB from disk or straight from memory (the tap follows
/// either), and how many good replicas it wants before it takes a write
/// (`min-replicas-to-write`, `min-replicas-max-lag`: the tap is its one
/// replica and acknowledges once a second, as a Redis replica does; too
/// few and Redis answers `NOREPLICAS`, which changes nothing).
fn refused_setting(key: &[u8]) -> bool {
    let k = String::from_utf8_lossy(key).to_ascii_lowercase();
    if matches!(
        k.as_str(),
        "repl-ping-replica-period" | "repl-ping-slave-period" | "repl-diskless-sync"
    ) {
        return false;
    }
    k.starts_with("repl")
        || k.starts_with("replica")
        || k.starts_with("slave")
        || k.starts_with("master")
        || k.starts_with("appendf")
        || matches!(
            k.as_str(),
            "save" | "appendonly" | "dir" | "dbfilename" | "requirepass"
        )
}

/// A credential-free session's grant: everything when no credential is
/// configured, else nothing until `AUTH`.
fn open_grant(core: &ProxyCore, node: &Node) -> Option<Grant> {
    let open = !node.settings.access.required() && core.settings.client_password.is_none();
    open.then_some(Grant::ReadWrite)
}

fn error(text: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(text.len() + 3);
    b.extend_from_slice(b"-");
    b.extend_from_slice(text.replace(['\r', '\n'], " ").as_bytes());
    b.extend_from_slice(b"\r\n");
    b.freeze()
}

fn protocol_reply(e: &RequestError) -> Bytes {
    match e {
        RequestError::Protocol(p) => error(&p.to_string()),
        RequestError::Io(_) => Bytes::new(),
    }
}

async fn protocol_error<W: AsyncWrite + Unpin>(write: &mut BufWriter<W>, e: RequestError) {
    answer_once(write, &protocol_reply(&e)).await;
}

/// Answers a session that ends at once with why (`-ERR`, `TRYAGAIN`).
async fn refuse<W: AsyncWrite + Unpin>(write: &mut BufWriter<W>, text: &str) {
    answer_once(write, &error(text)).await;
}

/// Writes `reply` and flushes; the session ends after it, so a client that
/// has gone changes nothing.
async fn answer_once<W: AsyncWrite + Unpin>(write: &mut BufWriter<W>, reply: &[u8]) {
    let _ = write.write_all(reply).await;
    let _ = write.flush().await;
}

/// The next request from the client.
async fn next_request<R: AsyncRead + Unpin>(
    read: &mut R,
    buf: &mut BytesMut,
    decoder: &mut RequestDecoder,
) -> Result<Option<Request>, RequestError> {
    loop {
        if let Some(r) = decoder.decode(buf)? {
            return Ok(Some(r));
        }
        if read.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_barrier_tells_subscribed_from_not() {
        let nonce = b"understudy-barrier-1";
        assert_eq!(
            barrier_reply(b"$20\r\nunderstudy-barrier-1\r\n", nonce),
            Some(false)
        );
        assert_eq!(
            barrier_reply(
                b"*2\r\n$4\r\npong\r\n$20\r\nunderstudy-barrier-1\r\n",
                nonce
            ),
            Some(true)
        );
        assert_eq!(barrier_reply(b"+PONG\r\n", nonce), None);
    }

    #[test]
    fn replication_and_persistence_settings_are_refused() {
        let set = |k: &str| Request::new(["CONFIG", "SET", k, "x"]);
        for k in [
            "replicaof",
            "repl-backlog-size",
            "save",
            "appendonly",
            "dir",
            "masterauth",
        ] {
            assert!(config_set_refused(&set(k)), "{k}");
        }
        for k in [
            "maxmemory",
            "hz",
            "notify-keyspace-events",
            "repl-ping-replica-period",
            "repl-diskless-sync",
            "min-replicas-to-write",
            "min-slaves-to-write",
            "min-replicas-max-lag",
        ] {
            assert!(!config_set_refused(&set(k)), "{k}");
        }
    }
}
