//! One unauthenticated packet must not take a cluster down.
//!
//! A client without the cluster token connects to the active's replication
//! port, reads the challenge, and sends one `Hello` whose envelope claims
//! epoch 2^64−1, with a garbage proof. Before the fix this deposed the
//! active, saved the epoch, and sent the arbiter into a loop wrapping the
//! epoch to 0. Now: the hello is refused, the active stays active in its
//! epoch, the arbiter's state does not move, and writes keep working.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use proto_common::auth;
use proto_common::wire::{Envelope, Frame, Hello, RefuseCode, ReplCodec};
use proto_common::{Epoch, NodeId, Position};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use understudy_tests::client::KvClient;
use understudy_tests::harness::{serial, Cluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_hello_cannot_depose_the_active() {
    let _serial = serial().await;
    let dir = TestDir::new("forged-hello").unwrap();
    let cluster = Cluster::builder()
        .sync_standbys(1)
        .with_token()
        .start(&dir)
        .await
        .unwrap();
    let (active, _) = cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    let before = cluster.status().await.unwrap();
    let repl_addr = before
        .replicas
        .iter()
        .find(|r| r.node_id.as_str() == active.id)
        .map(|r| r.repl_addr.clone())
        .unwrap();

    let stream = TcpStream::connect(&repl_addr).await.unwrap();
    let mut raw = Framed::new(stream, ReplCodec::default());
    let challenge = match raw.next().await {
        Some(Ok(Envelope {
            frame: Frame::Challenge(c),
            ..
        })) => c,
        other => panic!("expected a challenge, got {other:?}"),
    };
    raw.send(Envelope {
        epoch: Epoch(u64::MAX),
        frame: Frame::Hello(Hello {
            cluster: challenge.cluster.clone(),
            node_id: NodeId::new("intruder").unwrap(),
            proof: hex::encode([0x5a; 32]),
            nonce: hex::encode(auth::new_nonce()),
            position: Position::ZERO,
            base: Position::ZERO,
            epochs: vec![],
        }),
    })
    .await
    .unwrap();
    match raw.next().await {
        Some(Ok(Envelope {
            frame: Frame::Refuse(r),
            ..
        })) => assert_eq!(r.code, RefuseCode::BadProof, "{}", r.reason),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Three leases later: same active, same epoch, the arbiter's state
    // untouched, and every write acknowledged.
    let mut client = KvClient::new(&active.url).unwrap();
    let lease = Duration::from_millis(before.params.lease_ms);
    let until = Instant::now() + 3 * lease;
    let mut writes = 0;
    while Instant::now() < until {
        let r = client.put(format!("after-{writes}"), "v").await.unwrap();
        assert_eq!(r.status, 200, "write {writes}: {}", r.body_text());
        writes += 1;
    }
    let after = cluster.status().await.unwrap();
    assert_eq!(after.epoch, before.epoch);
    assert_eq!(after.active, before.active);
    assert!(
        after.state_version <= before.state_version + 2,
        "the arbiter wrote its state {} times",
        after.state_version - before.state_version
    );
    println!(
        "after the forged hello: {writes} writes acknowledged in {} ms, epoch {}, state version {} -> {}",
        (3 * lease).as_millis(),
        after.epoch,
        before.state_version,
        after.state_version
    );
}
