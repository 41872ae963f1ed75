//! The conformance suite every [`StateMachine`] passes (in the style of
//! openraft's `testing/log/suite.rs`): the embedded store in this crate's
//! unit tests, the upstream machine against a real redis-server in
//! `replica/tests/proxy_conformance.rs`.
//!
//! Each case gets a fresh [`Subject`] from the factory: the machine, how
//! to write a key and how a reader reads one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto_common::{Epoch, LogIndex, Position};
use tokio::sync::oneshot;

use super::StateMachine;
use crate::command::Command;
use crate::pending::PendingEntry;
use crate::pending::WriteResult;

/// How long a case waits for something asynchronous.
const WAIT: Duration = Duration::from_secs(10);

type Read = Pin<Box<dyn Future<Output = Option<Bytes>> + Send>>;
/// Makes the command that sets a key to a value.
type SetFn = Box<dyn Fn(&str, &str) -> Command + Send + Sync>;
/// Reads a key as a reader of the state would.
type GetFn = Box<dyn Fn(&str) -> Read + Send + Sync>;

/// One machine under test.
pub struct Subject {
    pub machine: Arc<dyn StateMachine>,
    /// The command that sets `key` to `value`.
    pub set: SetFn,
    /// What a reader of this state sees at `key`.
    pub get: GetFn,
}

impl Subject {
    /// The embedded store's subject.
    pub fn kv(machine: Arc<super::KvMachine>) -> Subject {
        let reader = machine.clone();
        Subject {
            machine,
            set: Box::new(|k, v| Command::Put {
                key: Bytes::copy_from_slice(k.as_bytes()),
                value: Bytes::copy_from_slice(v.as_bytes()),
            }),
            get: Box::new(move |k| {
                let value = reader.read(k.as_bytes());
                Box::pin(async move { value })
            }),
        }
    }
}

/// Runs every case, each on a fresh subject from `make`.
pub async fn run<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Subject>,
{
    applies_in_order_and_reports_the_last_position(make().await).await;
    answers_only_once_the_effect_is_visible(make().await).await;
    many_small_calls_apply_like_one_large_one(make().await).await;
}

fn pos(index: u64) -> Position {
    Position {
        epoch: Epoch(1),
        index: LogIndex(index),
    }
}

fn entry(index: u64, command: Command) -> PendingEntry {
    PendingEntry {
        position: pos(index),
        command,
        responder: None,
        received: None,
    }
}

fn waited_entry(index: u64, command: Command) -> (PendingEntry, oneshot::Receiver<WriteResult>) {
    let (tx, rx) = oneshot::channel();
    let e = PendingEntry {
        position: pos(index),
        command,
        responder: Some(tx),
        received: None,
    };
    (e, rx)
}

async fn wait_applied(s: &Subject, p: Position) {
    let mut watch = s.machine.watch_applied();
    tokio::time::timeout(WAIT, watch.wait_for(|a| *a >= p))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "not applied up to {p} within {WAIT:?} (at {})",
                s.machine.applied()
            )
        })
        .unwrap();
}

async fn applies_in_order_and_reports_the_last_position(s: Subject) {
    let entries = vec![
        entry(1, Command::Noop),
        entry(2, (s.set)("k", "one")),
        entry(3, (s.set)("k", "two")),
        entry(4, (s.set)("other", "x")),
        entry(5, Command::Noop),
    ];
    s.machine.apply(entries);
    wait_applied(&s, pos(5)).await;
    assert_eq!(s.machine.applied(), pos(5));
    assert_eq!((s.get)("k").await.as_deref(), Some(&b"two"[..]));
    assert_eq!((s.get)("other").await.as_deref(), Some(&b"x"[..]));
}

async fn answers_only_once_the_effect_is_visible(s: Subject) {
    let mut waiting = Vec::new();
    let mut batch = Vec::new();
    for i in 1..=20u64 {
        let (e, rx) = waited_entry(i, (s.set)(&format!("key{i}"), &format!("v{i}")));
        batch.push(e);
        waiting.push((i, rx));
    }
    s.machine.apply(batch);
    for (i, rx) in waiting {
        let ack = tokio::time::timeout(WAIT, rx)
            .await
            .expect("no answer")
            .expect("the responder was dropped")
            .expect("the write failed");
        assert_eq!(ack.position, pos(i));
        assert!(s.machine.applied() >= pos(i), "answered before applied");
        let seen = (s.get)(&format!("key{i}")).await;
        assert_eq!(
            seen.as_deref(),
            Some(format!("v{i}").as_bytes()),
            "answered before visible"
        );
    }
}

async fn many_small_calls_apply_like_one_large_one(s: Subject) {
    for i in 1..=50u64 {
        s.machine
            .apply(vec![entry(i, (s.set)("counter", &i.to_string()))]);
    }
    wait_applied(&s, pos(50)).await;
    assert_eq!((s.get)("counter").await.as_deref(), Some(&b"50"[..]));
}
