//! Operator commands as a script uses them: `arbiter switchover --wait`
//! waits for the outcome and says it with its exit status (0 the target is
//! active, 1 refused or cancelled, 2 unusable arguments, 3 no arbiter
//! there); `arbiter remove NODE` drops a stopped member at once and
//! refuses the active; `arbiter promote NODE --force --accept-data-loss`
//! names a standby when nothing safer is possible, and only then; `arbiter
//! reinit NODE` has a standby discard its data and copy the active's again.

use std::process::Command;
use std::time::Duration;

use understudy_tests::harness::{arbiter_binary, free_port, serial, ActiveNode, Cluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

fn cli(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(arbiter_binary())
        .args(args)
        .output()
        .expect("the arbiter binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Three replicas, one of them the sync standby: the cluster, its active,
/// the sync standby and the third replica.
async fn three_replicas(dir: &TestDir) -> (Cluster, ActiveNode, String, String) {
    let (cluster, active, sync) = Cluster::builder()
        .replicas(["a", "b", "c"])
        .sync_standbys(1)
        .start_with_sync_standby(dir, DEADLINE)
        .await
        .unwrap();
    let other = cluster
        .ids()
        .into_iter()
        .find(|id| *id != active.id && *id != sync)
        .unwrap();
    (cluster, active, sync, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_wait_reports_the_outcome_in_its_exit_status() {
    let _serial = serial().await;
    let dir = TestDir::new("cli-switchover-wait").unwrap();
    let (cluster, active, standby) = Cluster::builder()
        .sync_standbys(1)
        .start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    let url = cluster.arbiter.url();

    let (code, out, err) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || cli(&["switchover", "--wait", "--arbiter", &url])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("done: {standby} is active in epoch")),
        "{out}"
    );
    let now = cluster.wait_for_active(DEADLINE).await.unwrap();
    assert_eq!(now.id, standby);
    assert!(now.epoch > active.epoch);

    // Refused: no such standby.
    let (code, out, err) = cli(&["switchover", "--wait", "--to", "nobody", "--arbiter", &url]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("nobody"), "{err}");

    // Unusable arguments.
    let (code, _, err) = cli(&["switchover", "--arbiter", "not a url"]);
    assert_eq!(code, Some(2), "{err}");

    // No arbiter there.
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = cli(&["switchover", "--wait", "--arbiter", &nobody]);
    assert_eq!(code, Some(3), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_drops_a_stopped_member_and_refuses_the_active() {
    let _serial = serial().await;
    let dir = TestDir::new("cli-remove").unwrap();
    let (mut cluster, active, _, other) = three_replicas(&dir).await;
    let url = cluster.arbiter.url();

    let (code, out, err) = cli(&["remove", &active.id, "--arbiter", &url]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("it is the active"), "{err}");

    cluster.kill(&other).unwrap();
    // Refused while its last heartbeat is recent; accepted once it is not.
    let removed =
        understudy_tests::harness::wait_for(DEADLINE, "the stopped member removed", || {
            let (url, other) = (url.clone(), other.clone());
            async move {
                let (code, out, _) = tokio::task::spawn_blocking(move || {
                    cli(&["remove", &other, "--arbiter", &url])
                })
                .await
                .ok()?;
                (code == Some(0)).then_some(out)
            }
        })
        .await
        .unwrap();
    assert!(removed.contains(&format!("{other} removed")), "{removed}");
    let status = cluster.status().await.unwrap();
    assert!(
        status.replicas.iter().all(|r| r.node_id.as_str() != other),
        "{:?}",
        status.replicas
    );
    assert_eq!(
        status.active.as_ref().map(|n| n.as_str()),
        Some(active.id.as_str())
    );
}

/// The active and its only sync standby die for good: nobody can be
/// promoted without risking acknowledged writes, and the arbiter waits.
/// `arbiter promote NODE` needs `--force --accept-data-loss`, is refused
/// while the dead active's lease may hold, and then names the standby, with
/// the possible loss written into the decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_force_names_a_standby_when_the_only_sync_standby_is_gone() {
    let _serial = serial().await;
    let dir = TestDir::new("cli-promote-force").unwrap();
    let (mut cluster, active, sync, other) = three_replicas(&dir).await;
    let url = cluster.arbiter.url();

    // Refused while the active lives: that is a switchover.
    let (code, out, err) = cli(&[
        "promote",
        &other,
        "--force",
        "--accept-data-loss",
        "--arbiter",
        &url,
    ]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("is alive"), "{err}");

    cluster.kill(&active.id).unwrap();
    cluster.kill(&sync).unwrap();
    // Without both flags: unusable arguments, nothing sent.
    let (code, _, err) = cli(&["promote", &other, "--arbiter", &url]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--force --accept-data-loss"), "{err}");

    let promoted = understudy_tests::harness::wait_for(DEADLINE, "the forced promotion", || {
        let (url, other) = (url.clone(), other.clone());
        async move {
            let (code, out, _) = tokio::task::spawn_blocking(move || {
                cli(&[
                    "promote",
                    &other,
                    "--force",
                    "--accept-data-loss",
                    "--arbiter",
                    &url,
                ])
            })
            .await
            .ok()?;
            (code == Some(0)).then_some(out)
        }
    })
    .await
    .unwrap();
    assert!(
        promoted.contains(&format!("{other} is the active")),
        "{promoted}"
    );
    assert!(promoted.contains("may be lost"), "{promoted}");
    let now = cluster.wait_for_active(DEADLINE).await.unwrap();
    assert_eq!(now.id, other);
    let (code, out, _) = cli(&["status", "--arbiter", &url]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains(&format!("FORCED promotion of {other}")),
        "{out}"
    );
    let put = cluster
        .replica(&other)
        .client()
        .put("after", "forced")
        .await
        .unwrap();
    assert_eq!(put.status, 200, "{}", put.body_text());
}

/// `arbiter reinit NODE` on the sync standby: it leaves the sync set at
/// once, restarts in place (same process id), moves its old log aside,
/// copies the active's data (written before and during), reports the order
/// done, and rejoins the sync set; the active is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinit_has_a_standby_copy_the_active_again_and_rejoin() {
    let _serial = serial().await;
    let dir = TestDir::new("cli-reinit").unwrap();
    let (mut cluster, active, sync, _) = three_replicas(&dir).await;
    let url = cluster.arbiter.url();
    let mut client = cluster.replica(&active.id).client();
    for i in 0..200 {
        let r = client.put(format!("k{i}"), format!("v{i}")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body_text());
    }

    let (code, out, err) = cli(&["reinit", &active.id, "--arbiter", &url]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("it is the active"), "{err}");

    let pid = cluster.replica_mut(&sync).process().pid();
    let (code, out, err) = cli(&["reinit", &sync, "--arbiter", &url]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("ordered to reinitialize") && out.contains("leaves sync set"),
        "{out}"
    );
    // Out of the sync set in the order's own write.
    let status = cluster.status().await.unwrap();
    assert!(
        !status.sync_set.iter().any(|n| n.as_str() == sync),
        "{:?}",
        status.sync_set
    );
    for i in 200..300 {
        let r = client.put(format!("k{i}"), format!("v{i}")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body_text());
    }

    let done = understudy_tests::harness::wait_for(DEADLINE, "the order carried out", || {
        let cluster = &cluster;
        let sync = sync.clone();
        async move {
            let status = cluster.status().await.ok()?;
            status
                .recent_decisions
                .iter()
                .any(|d| {
                    d.reason
                        .contains(&format!("{sync} carried out reinit order"))
                })
                .then_some(())
        }
    })
    .await;
    done.unwrap();
    assert_eq!(
        cluster.replica_mut(&sync).process().pid(),
        pid,
        "restarted in place"
    );
    assert!(cluster.replica_mut(&sync).is_running());
    let kept = cluster.replica(&sync).data_dir().join("discarded");
    let moved: Vec<_> = std::fs::read_dir(&kept).unwrap().flatten().collect();
    assert_eq!(moved.len(), 1, "{}", kept.display());
    assert!(moved[0].path().join("log").is_dir());

    let data = cluster
        .wait_same_data(&active.id, &sync, DEADLINE)
        .await
        .unwrap();
    assert_eq!(data.len(), 300);
    let rejoined = understudy_tests::harness::wait_for(DEADLINE, "a full sync set again", || {
        let cluster = &cluster;
        async move {
            let status = cluster.status().await.ok()?;
            (!status.degraded && status.sync_set.len() == 1).then_some(())
        }
    })
    .await;
    rejoined.unwrap();
}
