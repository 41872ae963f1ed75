//! Two clusters with different names share one etcd (DESIGN.md, "The state
//! store": every key of a cluster lives under `/<cluster>/`), each
//! with its own arbiter and real replicas — `alpha` with two, `beta` with
//! one. `arbiter_etcd_election.rs` checks the separation at the arbiter
//! level (keys, state, leader); this test checks what clients see:
//!
//! - each cluster forms its own active, and each arbiter lists only its own
//!   replicas;
//! - a write to one cluster is invisible in the other, even under the same
//!   key;
//! - `kill -9` of alpha's active fails alpha over (new epoch) while beta,
//!   under a write load the whole time, keeps its active and epoch and
//!   takes writes without a pause.

mod arbiter_etcd_support;
mod etcd_support;

use std::collections::BTreeSet;
use std::time::Duration;

use arbiter_etcd_support::{single_leader, EtcdArbiter};
use etcd_support::{outcomes_between, start_replicas, wait_active, RoleWatch, ARBITER_FLAGS};
use etcd_support::{CLIENTS, DEADLINE};
use understudy_tests::client::KvClient;
use understudy_tests::harness::{dump, serial, EtcdCluster, TestDir};
use understudy_tests::loadgen::background::failover_load_config;
use understudy_tests::loadgen::BackgroundLoad;

/// Longest pause of beta's writes allowed while alpha fails over: far
/// below beta's own lease (1 s), which a pause caused by alpha could only
/// come from.
const BETA_GAP_BOUND: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_on_one_etcd_stay_apart() {
    let _serial = serial().await;
    let dir = TestDir::new("etcd-two-clusters").expect("test dir");
    let etcd = EtcdCluster::start(1, dir.path())
        .await
        .expect("etcd starts");
    let alpha_arbiter =
        EtcdArbiter::spawn(&dir, "arb-alpha", "alpha", &etcd.etcd_url(), ARBITER_FLAGS);
    let beta_arbiter =
        EtcdArbiter::spawn(&dir, "arb-beta", "beta", &etcd.etcd_url(), ARBITER_FLAGS);
    single_leader(&[&alpha_arbiter], DEADLINE).await;
    single_leader(&[&beta_arbiter], DEADLINE).await;
    let mut alpha = start_replicas(&dir, "alpha", &["a1", "a2"], &alpha_arbiter.url).await;
    let beta = start_replicas(&dir, "beta", &["b1"], &beta_arbiter.url).await;

    let alpha_active = {
        let r: Vec<_> = alpha.iter().collect();
        wait_active(&[&alpha_arbiter], &r, 0, true, DEADLINE)
            .await
            .unwrap()
    };
    let beta_active = {
        let r: Vec<_> = beta.iter().collect();
        wait_active(&[&beta_arbiter], &r, 0, false, DEADLINE)
            .await
            .unwrap()
    };
    let listed = |status: &arbiter::ClusterStatus| {
        status
            .replicas
            .iter()
            .map(|r| r.node_id.to_string())
            .collect::<BTreeSet<_>>()
    };
    let (sa, sb) = (
        alpha_arbiter.status().await.unwrap(),
        beta_arbiter.status().await.unwrap(),
    );
    assert_eq!(listed(&sa), BTreeSet::from(["a1".into(), "a2".into()]));
    assert_eq!(listed(&sb), BTreeSet::from(["b1".into()]));
    assert_eq!(
        (sa.cluster.as_str(), sb.cluster.as_str()),
        ("alpha", "beta")
    );

    // Same key, different clusters, different values; a key of one only.
    let mut to_alpha = KvClient::new(&alpha_active.url).unwrap();
    let mut to_beta = KvClient::new(&beta_active.url).unwrap();
    for (to, key, value) in [
        ("alpha", "shared", "from-alpha"),
        ("alpha", "only-alpha", "a"),
        ("beta", "shared", "from-beta"),
    ] {
        let client = if to == "alpha" {
            &mut to_alpha
        } else {
            &mut to_beta
        };
        let put = client.put(key, value).await.unwrap();
        assert!(put.is_success(), "{to} {key}: {}", put.body_text());
    }
    let shared = to_beta.get("shared").await.unwrap();
    assert_eq!((shared.status, &shared.body[..]), (200, &b"from-beta"[..]));
    let shared = to_alpha.get("shared").await.unwrap();
    assert_eq!((shared.status, &shared.body[..]), (200, &b"from-alpha"[..]));
    let missing = to_beta.get("only-alpha").await.unwrap();
    assert_eq!(missing.status, 404, "{}", missing.body_text());

    // beta under load; alpha's active dies.
    let beta_pairs: Vec<(String, String)> = beta
        .iter()
        .map(|r| (r.config().node_id.clone(), r.url()))
        .collect();
    let beta_urls: Vec<String> = beta_pairs.iter().map(|(_, u)| u.clone()).collect();
    let load = BackgroundLoad::start(failover_load_config(&beta_urls, CLIENTS, &[])).unwrap();
    load.wait_acks(300, DEADLINE).await.unwrap();
    let watch = RoleWatch::start(&beta_pairs, Duration::from_millis(20));
    let killed_ns = load.now_ns();
    alpha
        .iter_mut()
        .find(|r| r.config().node_id == alpha_active.id)
        .expect("alpha's active")
        .kill()
        .expect("kill -9 alpha's active");
    let alpha_after = {
        let r: Vec<_> = alpha.iter().collect();
        wait_active(&[&alpha_arbiter], &r, alpha_active.epoch, false, DEADLINE)
            .await
            .unwrap()
    };
    load.wait_acks(300, DEADLINE).await.unwrap();
    let roles = watch.stop().await;
    let (report, ledger) = load.stop(DEADLINE).await.unwrap();
    let end_ns = ledger
        .writes()
        .iter()
        .map(|w| w.end_ns)
        .max()
        .unwrap_or(killed_ns);
    let gap_ns = ledger.timeline().longest_gap_between(killed_ns, end_ns);
    let (acked, failed) = outcomes_between(&ledger, killed_ns, end_ns);
    let beta_now = beta_arbiter.status().await.unwrap();
    println!(
        "alpha: {} (epoch {}) killed, {} active in epoch {}; beta meanwhile: {acked} writes \
         acknowledged, {} failed, longest write gap {:.1} ms, active {:?} epoch {} (was {} in \
         {}); role watch: {}; {} ops, errors {:?}",
        alpha_active.id,
        alpha_active.epoch,
        alpha_after.id,
        alpha_after.epoch,
        failed.len(),
        gap_ns as f64 / 1e6,
        beta_now.active.as_ref().map(|a| a.to_string()),
        beta_now.epoch,
        beta_active.id,
        beta_active.epoch,
        roles.summary(),
        report.ops,
        report.errors_by_kind
    );
    assert_ne!(alpha_after.id, alpha_active.id, "alpha failed over");
    assert_eq!(
        (
            beta_now.active.as_ref().map(|a| a.to_string()),
            beta_now.epoch.0
        ),
        (Some(beta_active.id.clone()), beta_active.epoch),
        "beta keeps its active and epoch"
    );
    let changes = roles.changes();
    assert!(changes.is_empty(), "beta's replica changed: {changes:#?}");
    assert!(failed.is_empty(), "beta writes failed: {failed:#?}");
    assert!(
        gap_ns < BETA_GAP_BOUND.as_nanos() as u64,
        "beta's writes paused {:.1} ms while alpha failed over",
        gap_ns as f64 / 1e6
    );

    // Neither cluster holds the other's data.
    let beta_data = dump(&beta_active.url).await.unwrap();
    let verification = ledger.verify(&beta_data);
    assert!(verification.is_ok(), "{}", verification.summary());
    let alpha_data = dump(&alpha_after.url).await.unwrap();
    let alpha_keys: Vec<&String> = alpha_data.keys().collect();
    assert_eq!(
        alpha_keys,
        ["only-alpha", "shared"],
        "alpha holds its own two keys and none of beta's load"
    );
    assert_eq!(&alpha_data["shared"][..], b"from-alpha");
    assert_eq!(&beta_data["shared"][..], b"from-beta");
    assert!(!beta_data.contains_key("only-alpha"));
}
