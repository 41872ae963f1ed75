//! The replication port under hostile or broken peers. A raw client plays a
//! bad standby against a real active; a raw server plays a bad active
//! against a real standby. Every case must end with the connection closed,
//! the reason in the log, and nothing applied.

mod support;

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use proto_common::auth::{self, Token};
use proto_common::record;
use proto_common::wire::{Challenge, Envelope, Frame, Hello, RefuseCode, ReplCodec, Welcome};
use proto_common::{Epoch, LogIndex, NodeId, Position};
use support::{eventually, TestNode};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

const WAIT: Duration = Duration::from_secs(10);

// ---- log capture -----------------------------------------------------------

static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.get().unwrap().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        LOGS.set(Mutex::new(Vec::new())).unwrap();
        tracing_subscriber::fmt()
            .with_writer(|| Capture)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
    });
}

/// Waits until some log line contains every one of `parts`.
async fn logged(parts: &[&str]) {
    let found = || {
        let logs = LOGS.get().unwrap().lock().unwrap();
        String::from_utf8_lossy(&logs)
            .lines()
            .any(|l| parts.iter().all(|p| l.contains(p)))
    };
    eventually(WAIT, &format!("a log line with {parts:?}"), found).await;
}

// ---- a raw standby against a real active ------------------------------------

type Raw = Framed<TcpStream, ReplCodec>;

async fn connect(active: &TestNode) -> Raw {
    let stream = TcpStream::connect(&active.repl_addr).await.unwrap();
    Framed::new(stream, ReplCodec::default())
}

async fn challenge(raw: &mut Raw) -> (Epoch, Challenge) {
    match raw.next().await {
        Some(Ok(Envelope {
            epoch,
            frame: Frame::Challenge(c),
        })) => (epoch, c),
        other => panic!("expected a challenge, got {other:?}"),
    }
}

fn hello(c: &Challenge, id: &str, token: &Token, cluster: &str) -> Hello {
    let nonce = hex::decode(&c.nonce).unwrap();
    Hello {
        cluster: cluster.into(),
        node_id: NodeId::new(id).unwrap(),
        proof: hex::encode(token.proof("standby", &nonce, cluster, id)),
        nonce: hex::encode(auth::new_nonce()),
        position: Position::ZERO,
        base: Position::ZERO,
        epochs: vec![],
    }
}

async fn expect_refusal_then_close(raw: &mut Raw, code: RefuseCode) {
    match raw.next().await {
        Some(Ok(Envelope {
            frame: Frame::Refuse(r),
            ..
        })) => assert_eq!(r.code, code, "{}", r.reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        raw.next().await.is_none(),
        "connection not closed after refusal"
    );
}

async fn active_with_data(name: &str) -> TestNode {
    let a = TestNode::start(name, |_| {}).await;
    a.make_active(3, &[]).await;
    for i in 0..10 {
        a.put(&format!("k{i}"), "v").await.unwrap();
    }
    a
}

#[tokio::test]
async fn a_standby_with_a_wrong_token_is_refused() {
    capture_logs();
    let a = active_with_data("act-token").await;
    let mut raw = connect(&a).await;
    let (epoch, c) = challenge(&mut raw).await;
    let wrong = Token::new("not-the-cluster-token-at-all").unwrap();
    let h = hello(&c, "sb-token", &wrong, "understudy");
    raw.send(Envelope {
        epoch,
        frame: Frame::Hello(h),
    })
    .await
    .unwrap();
    expect_refusal_then_close(&mut raw, RefuseCode::BadProof).await;
    logged(&[
        "standby connection closed",
        "sb-token did not prove it holds the cluster token",
    ])
    .await;
    assert!(a.repl.followers.report(LogIndex(0)).is_empty());
}

#[tokio::test]
async fn a_standby_of_another_cluster_is_refused() {
    capture_logs();
    let a = active_with_data("act-cluster").await;
    let mut raw = connect(&a).await;
    let (epoch, c) = challenge(&mut raw).await;
    let h = hello(&c, "sb-cluster", &Token::loopback_only(), "other");
    raw.send(Envelope {
        epoch,
        frame: Frame::Hello(h),
    })
    .await
    .unwrap();
    expect_refusal_then_close(&mut raw, RefuseCode::WrongCluster).await;
    logged(&["standby connection closed", "belongs to cluster \"other\""]).await;
}

#[tokio::test]
async fn a_standby_that_saw_a_newer_epoch_deposes_the_active() {
    capture_logs();
    let a = active_with_data("act-deposed").await;
    let mut raw = connect(&a).await;
    let (epoch, c) = challenge(&mut raw).await;
    let h = hello(&c, "sb-newer", &Token::loopback_only(), "understudy");
    raw.send(Envelope {
        epoch: Epoch(epoch.0 + 1),
        frame: Frame::Hello(h),
    })
    .await
    .unwrap();
    expect_refusal_then_close(&mut raw, RefuseCode::StaleEpoch).await;
    assert!(
        a.node.role().state.term().is_none(),
        "still active after learning a newer epoch"
    );
    let err = a.put("after", "deposed").await.unwrap_err();
    assert!(err.to_string().contains("sb-newer"), "{err}");
}

/// A hello claiming the largest epoch there is: refused with `code`, and
/// the active stays active in its epoch and keeps taking writes.
async fn hello_with_the_largest_epoch_changes_nothing(name: &str, token: &Token, code: RefuseCode) {
    capture_logs();
    let a = active_with_data(name).await;
    let before = a.node.role().seen;
    let mut raw = connect(&a).await;
    let (_, c) = challenge(&mut raw).await;
    raw.send(Envelope {
        epoch: Epoch(u64::MAX),
        frame: Frame::Hello(hello(&c, "intruder", token, "understudy")),
    })
    .await
    .unwrap();
    expect_refusal_then_close(&mut raw, code).await;
    let role = a.node.role();
    assert_eq!(
        role.state.writable_epoch(),
        Some(before),
        "the active was deposed"
    );
    assert_eq!(role.seen, before, "the forged epoch was believed");
    assert_eq!(
        a.node.node_state().seen_epoch,
        before,
        "the forged epoch was saved"
    );
    a.put("after", "the forged hello").await.unwrap();
}

#[tokio::test]
async fn unauthenticated_hello_cannot_depose_the_active() {
    let garbage = Token::new("not-the-cluster-token-at-all").unwrap();
    hello_with_the_largest_epoch_changes_nothing("act-forged", &garbage, RefuseCode::BadProof)
        .await;
    logged(&["intruder", "did not prove it holds the cluster token"]).await;
}

#[tokio::test]
async fn an_authenticated_hello_with_an_implausible_epoch_cannot_depose_the_active() {
    hello_with_the_largest_epoch_changes_nothing(
        "act-implausible",
        &Token::loopback_only(),
        RefuseCode::Protocol,
    )
    .await;
    logged(&["intruder", "epoch 18446744073709551615 is implausible"]).await;
}

#[tokio::test]
async fn garbage_and_oversize_frames_close_the_connection_and_change_nothing() {
    capture_logs();
    let a = active_with_data("act-garbage").await;
    let before = a.dump();
    // Garbage instead of a hello.
    let mut stream = TcpStream::connect(&a.repl_addr).await.unwrap();
    let local = stream.local_addr().unwrap().to_string();
    stream
        .write_all(&[0x0c, 0, 0, 0, 0x7f, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9])
        .await
        .unwrap();
    let mut raw = Framed::new(stream, ReplCodec::default());
    let _ = challenge(&mut raw).await;
    assert!(
        raw.next().await.is_none(),
        "garbage did not close the connection"
    );
    logged(&[&local, "standby connection closed", "unreadable hello"]).await;
    // An oversize length prefix.
    let mut stream = TcpStream::connect(&a.repl_addr).await.unwrap();
    let local = stream.local_addr().unwrap().to_string();
    let mut buf = BytesMut::new();
    buf.put_u32_le(1 << 30);
    stream.write_all(&buf).await.unwrap();
    let mut raw = Framed::new(stream, ReplCodec::default());
    let _ = challenge(&mut raw).await;
    assert!(
        raw.next().await.is_none(),
        "oversize frame did not close the connection"
    );
    logged(&[&local, "exceeds the limit"]).await;
    assert_eq!(a.dump(), before);
    assert!(a.node.role().state.term().is_some());
}

// ---- a raw active against a real standby ------------------------------------

/// Serves one standby connection as a fake active: a valid handshake (unless
/// told otherwise), then `frames`. Returns whether the standby closed.
async fn fake_active(
    listener: TcpListener,
    id: &'static str,
    challenge_epoch: Epoch,
    token: Token,
    frames: Vec<Envelope>,
) -> bool {
    let (stream, _) = listener.accept().await.unwrap();
    let mut raw = Framed::new(stream, ReplCodec::default());
    let nonce = auth::new_nonce();
    let c = Challenge {
        cluster: "understudy".into(),
        node_id: NodeId::new(id).unwrap(),
        nonce: hex::encode(nonce),
    };
    raw.send(Envelope {
        epoch: challenge_epoch,
        frame: Frame::Challenge(c),
    })
    .await
    .unwrap();
    let hello = match raw.next().await {
        Some(Ok(Envelope {
            frame: Frame::Hello(h),
            ..
        })) => h,
        _ => return true, // closed before saying hello
    };
    let their_nonce = hex::decode(&hello.nonce).unwrap();
    let proof = token.proof("active", &their_nonce, "understudy", id);
    let w = Welcome {
        proof: hex::encode(proof),
        client_url: "http://127.0.0.1:1".into(),
        upstream: None,
        resp: None,
    };
    if raw
        .send(Envelope {
            epoch: challenge_epoch,
            frame: Frame::Welcome(w),
        })
        .await
        .is_err()
    {
        return true;
    }
    for f in frames {
        if raw.send(f).await.is_err() {
            return true;
        }
    }
    // The standby must close; acks may still arrive before it does.
    loop {
        match tokio::time::timeout(WAIT, raw.next()).await {
            Ok(None) | Ok(Some(Err(_))) => return true,
            Ok(Some(Ok(Envelope {
                frame: Frame::Ack { .. },
                ..
            }))) => continue,
            Ok(Some(Ok(_))) => continue,
            Err(_) => return false,
        }
    }
}

fn records(from: u64, n: u64, epoch: u64) -> Bytes {
    let mut buf = BytesMut::new();
    for i in from..from + n {
        let cmd = replica::command::Command::Put {
            key: format!("x{i}").into(),
            value: "v".into(),
        };
        record::encode(&mut buf, Position::new(epoch, i), &cmd.encode());
    }
    buf.freeze()
}

async fn standby_against(
    id: &'static str,
    seen: u64,
    challenge_epoch: u64,
    token: Token,
    frames: impl FnOnce(Position) -> Vec<Envelope>,
) -> (TestNode, bool) {
    capture_logs();
    let b = TestNode::start(&format!("sb-{id}"), |_| {}).await;
    b.node.note_epoch(Epoch(seen)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let info = proto_common::heartbeat::ActiveInfo {
        node_id: NodeId::new(id).unwrap(),
        client_url: "http://127.0.0.1:1".into(),
        repl_addr: listener.local_addr().unwrap().to_string(),
    };
    let start = b.node.reader.last();
    let fake = tokio::spawn(fake_active(
        listener,
        id,
        Epoch(challenge_epoch),
        token,
        frames(start),
    ));
    b.repl.follow(info, Epoch(seen)).await.unwrap();
    let closed = tokio::time::timeout(WAIT, fake).await.unwrap().unwrap();
    (b, closed)
}

#[tokio::test]
async fn a_standby_refuses_an_active_from_an_older_epoch() {
    let (b, closed) = standby_against("fa-old", 5, 4, Token::loopback_only(), |_| vec![]).await;
    assert!(closed);
    logged(&["fa-old", "frame from epoch 4, but epoch 5 has been seen"]).await;
    assert_eq!(b.node.reader.last(), Position::ZERO);
}

#[tokio::test]
async fn a_standby_drops_entries_in_a_frame_of_an_older_epoch() {
    let (b, closed) = standby_against("fa-stale", 5, 5, Token::loopback_only(), |last| {
        vec![Envelope {
            epoch: Epoch(4),
            frame: Frame::Entries {
                prev: last,
                commit: LogIndex(0),
                records: records(1, 3, 4),
            },
        }]
    })
    .await;
    assert!(closed);
    logged(&["fa-stale", "frame from epoch 4, but epoch 5 has been seen"]).await;
    assert_eq!(
        b.node.reader.last(),
        Position::ZERO,
        "entries from a stale frame were written"
    );
}

#[tokio::test]
async fn a_standby_refuses_entries_with_a_bad_checksum() {
    let (b, closed) = standby_against("fa-crc", 2, 2, Token::loopback_only(), |last| {
        let mut bad = BytesMut::from(&records(1, 3, 2)[..]);
        let n = bad.len();
        bad[n - 2] ^= 0x40; // inside the last record's payload
        vec![Envelope {
            epoch: Epoch(2),
            frame: Frame::Entries {
                prev: last,
                commit: LogIndex(3),
                records: bad.freeze(),
            },
        }]
    })
    .await;
    assert!(closed);
    logged(&["fa-crc", "bad entries", "checksum mismatch"]).await;
    // Not even the two good records before the bad one were written.
    assert_eq!(b.node.reader.last(), Position::ZERO);
    assert!(b.dump().is_empty());
}

#[tokio::test]
async fn a_standby_refuses_an_active_that_cannot_prove_the_token() {
    let wrong = Token::new("a-token-the-standby-does-not-know").unwrap();
    let (b, closed) = standby_against("fa-proof", 1, 1, wrong, |last| {
        vec![Envelope {
            epoch: Epoch(1),
            frame: Frame::Entries {
                prev: last,
                commit: LogIndex(2),
                records: records(1, 2, 1),
            },
        }]
    })
    .await;
    assert!(closed);
    logged(&["fa-proof", "did not prove it holds the cluster token"]).await;
    assert_eq!(b.node.reader.last(), Position::ZERO);
}

#[tokio::test]
async fn a_standby_closes_on_an_oversize_frame() {
    capture_logs();
    let b = TestNode::start("sb-fa-big", |o| o.max_frame_bytes = Some(1 << 23)).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let info = proto_common::heartbeat::ActiveInfo {
        node_id: NodeId::new("fa-big").unwrap(),
        client_url: "http://127.0.0.1:1".into(),
        repl_addr: listener.local_addr().unwrap().to_string(),
    };
    let fake = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        buf.put_u32_le(1 << 24); // over the standby's 8 MiB limit
        stream.write_all(&buf).await.unwrap();
        let mut rest = [0u8; 16];
        // The standby closes without reading the body.
        matches!(
            tokio::io::AsyncReadExt::read(&mut stream, &mut rest).await,
            Ok(0) | Err(_)
        )
    });
    b.repl.follow(info, Epoch(1)).await.unwrap();
    assert!(tokio::time::timeout(WAIT, fake).await.unwrap().unwrap());
    logged(&["fa-big", "exceeds the limit"]).await;
    assert_eq!(b.node.reader.last(), Position::ZERO);
}

#[tokio::test]
async fn an_unauthenticated_challenge_cannot_raise_the_standbys_epoch() {
    let wrong = Token::new("a-token-the-standby-does-not-know").unwrap();
    let (b, closed) = standby_against("fa-forged", 2, 1 << 40, wrong, |_| vec![]).await;
    assert!(closed);
    logged(&["fa-forged", "did not prove it holds the cluster token"]).await;
    assert_eq!(
        b.node.role().seen,
        Epoch(2),
        "the forged epoch was believed"
    );
    assert_eq!(
        b.node.node_state().seen_epoch,
        Epoch(2),
        "the forged epoch was saved"
    );
}

#[tokio::test]
async fn a_standby_refuses_an_implausible_epoch_even_from_a_proven_active() {
    let (b, closed) = standby_against("fa-huge", 2, u64::MAX, Token::loopback_only(), |last| {
        vec![Envelope {
            epoch: Epoch(u64::MAX),
            frame: Frame::Entries {
                prev: last,
                commit: LogIndex(1),
                records: records(1, 1, 2),
            },
        }]
    })
    .await;
    assert!(closed);
    logged(&["fa-huge", "is implausible"]).await;
    assert_eq!(b.node.role().seen, Epoch(2));
    assert_eq!(b.node.reader.last(), Position::ZERO);
}

#[tokio::test]
async fn a_standby_gives_up_on_an_active_that_never_welcomes_it() {
    capture_logs();
    let b = TestNode::start("sb-fa-mute", |_| {}).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let info = proto_common::heartbeat::ActiveInfo {
        node_id: NodeId::new("fa-mute").unwrap(),
        client_url: "http://127.0.0.1:1".into(),
        repl_addr: listener.local_addr().unwrap().to_string(),
    };
    // Challenges, reads the hello, then says nothing more.
    let mute = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut raw = Framed::new(stream, ReplCodec::default());
        let c = Challenge {
            cluster: "understudy".into(),
            node_id: NodeId::new("fa-mute").unwrap(),
            nonce: hex::encode(auth::new_nonce()),
        };
        raw.send(Envelope {
            epoch: Epoch(1),
            frame: Frame::Challenge(c),
        })
        .await
        .unwrap();
        assert!(matches!(
            raw.next().await,
            Some(Ok(Envelope {
                frame: Frame::Hello(_),
                ..
            }))
        ));
        // The standby must hang up on its own.
        while let Some(Ok(_)) = raw.next().await {}
    });
    b.repl.follow(info, Epoch(1)).await.unwrap();
    tokio::time::timeout(WAIT, mute).await.unwrap().unwrap();
    logged(&["fa-mute", "no welcome within"]).await;
}

#[tokio::test]
async fn a_hello_describing_an_impossible_log_is_refused() {
    capture_logs();
    let a = active_with_data("act-impossible").await;
    let mut raw = connect(&a).await;
    let (epoch, c) = challenge(&mut raw).await;
    let mut h = hello(&c, "sb-impossible", &Token::loopback_only(), "understudy");
    h.position = Position::new(epoch.0 + 5, 3); // an entry from an epoch it never saw
    raw.send(Envelope {
        epoch,
        frame: Frame::Hello(h),
    })
    .await
    .unwrap();
    expect_refusal_then_close(&mut raw, RefuseCode::Protocol).await;
    logged(&["sb-impossible", "describes an impossible log"]).await;
    assert_eq!(a.node.role().state.writable_epoch(), Some(epoch));
}
