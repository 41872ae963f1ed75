//! Real replicas behind two etcd-backed arbiters: the replicas take both
//! arbiter URLs, follow the follower's 307 to the leader, and keep their
//! roles through an arbiter failover — the active renews its grant with
//! whichever arbiter leads, so a `kill -9` of the leading arbiter causes
//! no replica failover (no new epoch), only a pause of writes while the
//! active's lease is not renewed.

mod arbiter_etcd_support;

use std::time::{Duration, Instant};

use arbiter_etcd_support::{single_leader, EtcdArbiter, TTL_S};
use proto_common::heartbeat::Role;
use understudy_tests::harness::{
    free_port, wait_for, wait_until, EtcdCluster, ReplicaConfig, ReplicaProcess, TestDir,
};

async fn replica(dir: &TestDir, id: &str, arbiters: &str) -> ReplicaProcess {
    ReplicaConfig::new(dir, id)
        .args([
            "--repl-listen".to_string(),
            format!("127.0.0.1:{}", free_port()),
            "--arbiter".to_string(),
            arbiters.to_string(),
            "--cluster".to_string(),
            "c1".to_string(),
        ])
        .start()
        .await
        .unwrap_or_else(|e| panic!("replica {id}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_keep_their_roles_across_a_kill_9_of_the_leading_arbiter() {
    let dir = TestDir::new("arbiter-etcd-replicas").expect("test dir");
    let etcd = EtcdCluster::start(1, dir.path())
        .await
        .expect("etcd starts");
    let fast = ["--initial-wait-ms", "500"];
    let mut a = EtcdArbiter::spawn(&dir, "arb-a", "c1", &etcd.etcd_url(), &fast);
    let mut b = EtcdArbiter::spawn(&dir, "arb-b", "c1", &etcd.etcd_url(), &fast);
    let first = single_leader(&[&a, &b], Duration::from_secs(20)).await;
    let (old, new) = if first == 0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };

    // Replicas list the *follower* first: their first heartbeat is
    // redirected to the leader.
    let urls = format!("{},{}", new.url, old.url);
    let r1 = replica(&dir, "r1", &urls).await;
    let r2 = replica(&dir, "r2", &urls).await;
    let old_ref = &*old;
    let (active, epoch) = wait_for(
        Duration::from_secs(20),
        "an active and its standby in sync",
        || async {
            let s = old_ref.status().await?;
            let heard = s.replicas.iter().all(|r| r.last_heartbeat_age_ms.is_some());
            (heard && s.replicas.len() == 2 && !s.sync_set.is_empty())
                .then(|| (s.active.clone(), s.epoch))
                .and_then(|(a, e)| Some((a?, e)))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let active_url = if active.as_str() == "r1" {
        r1.url()
    } else {
        r2.url()
    };
    let mut client = understudy_tests::client::KvClient::new(&active_url).unwrap();
    let put = client.put("before", "1").await.expect("write before");
    assert!(put.is_success(), "{}", put.body_text());

    let killed_at = Instant::now();
    old.process.kill().expect("kill -9 the leading arbiter");
    let new_ref = &*new;
    let status = wait_for(
        Duration::from_secs(TTL_S + 15),
        "the new leader hears both replicas, the active reporting itself active",
        || async {
            let s = new_ref.status().await.filter(|s| s.is_leader)?;
            let fresh = s
                .replicas
                .iter()
                .all(|r| r.last_heartbeat_age_ms.is_some_and(|age| age < 500));
            let active_renewed = s
                .replicas
                .iter()
                .any(|r| r.node_id == active && r.reported_role == Some(Role::Active));
            (fresh && active_renewed).then_some(s)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "replicas renewing with the new arbiter leader {} ms after kill -9 of the old one",
        killed_at.elapsed().as_millis()
    );
    assert_eq!(status.active.as_ref(), Some(&active), "the same active");
    assert_eq!(status.epoch, epoch, "no new epoch: no replica failover");

    // The active takes writes again under the new leader's grants.
    wait_until(
        Duration::from_secs(10),
        "a write on the active succeeds",
        || {
            let url = active_url.clone();
            async move {
                let mut c = understudy_tests::client::KvClient::new(&url).unwrap();
                c.put("after", "2").await.is_ok_and(|r| r.is_success())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let still = new.status().await.unwrap();
    assert_eq!((still.active, still.epoch), (Some(active), epoch));
}
