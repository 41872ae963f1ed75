//! `arbiter switchover --wait` waits for the outcome and says it with its
//! exit status, as a script needs: 0 the target is active, 1 refused or
//! cancelled, 2 unusable arguments, 3 no arbiter there.

use std::process::Command;
use std::time::Duration;

use understudy_tests::harness::{arbiter_binary, free_port, serial, Cluster, TestDir};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_wait_reports_the_outcome_in_its_exit_status() {
    let _serial = serial().await;
    let dir = TestDir::new("cli-switchover-wait").unwrap();
    let cluster = Cluster::builder()
        .sync_standbys(1)
        .start(&dir)
        .await
        .unwrap();
    let (active, standby) = cluster
        .wait_active_with_sync_standby(DEADLINE)
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
