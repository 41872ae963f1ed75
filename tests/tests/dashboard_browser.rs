//! The arbiter's dashboard in a real headless Chromium (over WebDriver), as
//! an operator sees it: it shows the active; the active is killed with -9;
//! the page shows the new active, the dead node as down, and a failover in
//! the timeline with its write gap; `arbiter status` agrees. A screenshot
//! of the page after the failover is kept in
//! `target/test-artifacts/dashboard-failover.png`.

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use fantoccini::Locator;
use understudy_tests::harness::browser::Browser;
use understudy_tests::harness::{arbiter_binary, serial, wait_for, Cluster, ProxyCluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);

/// Where the screenshot goes: the workspace's target directory.
fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("test-artifacts")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_shows_a_failover_with_its_write_gap() {
    let _serial = serial().await;
    let dir = TestDir::new("dashboard-browser").unwrap();
    let (mut cluster, active, standby) = Cluster::builder()
        .heartbeat_ms(100)
        .lease_ms(1000)
        .sync_standbys(1)
        .start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    let arbiter_url = cluster.arbiter.url();
    let browser = Browser::start(dir.path()).await.unwrap();
    browser
        .client
        .goto(&format!("{arbiter_url}/"))
        .await
        .unwrap();
    let shown = wait_for(DEADLINE, "the page to show the active", || {
        let browser = &browser;
        let want = active.id.clone();
        async move { (browser.text_of("active").await? == want).then_some(()) }
    })
    .await;
    shown.unwrap();

    cluster.replica_mut(&active.id).process().kill().unwrap();

    // The page, polled as a user would look at it: the new active, the
    // old one down, and the failover in the timeline with its gap.
    let last = RefCell::new(String::new());
    let seen = wait_for(DEADLINE, "the page to show the failover", || {
        let (browser, last, standby, old) = (&browser, &last, &standby, &active.id);
        async move {
            let now_active = browser.text_of("active").await?;
            let replicas = browser.text_of("replicas").await?;
            let timeline = browser.text_of("timeline").await?;
            *last.borrow_mut() =
                format!("active {now_active}\nreplicas:\n{replicas}\ntimeline:\n{timeline}");
            let old_down = replicas
                .lines()
                .any(|l| l.starts_with(old.as_str()) && l.contains("down: no heartbeat"));
            let gap = browser
                .client
                .find(Locator::Css("#timeline tr.failover td.gap"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (now_active == *standby
                && old_down
                && timeline.contains("failover")
                && gap.ends_with(" ms"))
            .then_some(gap)
        }
    })
    .await;
    let png = artifact("dashboard-failover.png");
    browser.screenshot(&png).await.unwrap();
    let gap = seen.unwrap_or_else(|e| panic!("{e}; the page showed:\n{}", last.borrow()));
    eprintln!(
        "dashboard shows the failover, write gap {gap}; screenshot {}",
        png.display()
    );
    let gap_ms: u64 = gap.trim_end_matches(" ms").parse().unwrap();
    assert!(
        (1000..5000).contains(&gap_ms),
        "a kill costs the lease wait (1 s × 1.1) and a heartbeat: {gap_ms} ms"
    );
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);

    // The CLI agrees with the page.
    let out = Command::new(arbiter_binary())
        .args(["status", "--arbiter", &arbiter_url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("active {standby}")), "{text}");
    browser.close().await;
}

/// Proxy mode, as an operator sees it: each replica's redis-server and
/// disk use on the page; the active's redis-server killed, the page shows
/// that replica unhealthy with the reason and its redis-server down, then
/// the standby active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_shows_a_dead_redis_server_with_the_reason() {
    let _serial = serial().await;
    let dir = TestDir::new("dashboard-browser-proxy").unwrap();
    let (mut cluster, active, standby) = ProxyCluster::start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    let arbiter_url = cluster.cluster.arbiter.url();
    let browser = Browser::start(dir.path()).await.unwrap();
    browser
        .client
        .goto(&format!("{arbiter_url}/"))
        .await
        .unwrap();
    let last = RefCell::new(String::new());
    let healthy = wait_for(DEADLINE, "the page to show both redis-servers up", || {
        let (browser, last) = (&browser, &last);
        async move {
            let replicas = browser.text_of("replicas").await?;
            *last.borrow_mut() = replicas.clone();
            let rows: Vec<&str> = replicas
                .lines()
                .filter(|l| l.contains("redis up"))
                .collect();
            (rows.len() == 2
                && rows
                    .iter()
                    .all(|l| l.contains("disk ") && l.contains(" MiB")))
            .then_some(())
        }
    })
    .await;
    healthy.unwrap_or_else(|e| panic!("{e}; the page showed:\n{}", last.borrow()));

    let killed_at = std::time::Instant::now();
    cluster
        .redis
        .get_mut(&active.id)
        .unwrap()
        .process()
        .kill()
        .unwrap();
    let seen = wait_for(DEADLINE, "the page to show the dead redis-server", || {
        let (browser, last, old) = (&browser, &last, &active.id);
        async move {
            let replicas = browser.text_of("replicas").await?;
            *last.borrow_mut() = replicas.clone();
            replicas
                .lines()
                .any(|l| {
                    l.starts_with(old.as_str())
                        && l.contains("unhealthy")
                        && l.contains("upstream")
                        && l.contains("redis DOWN")
                })
                .then_some(())
        }
    })
    .await;
    let after = killed_at.elapsed();
    let png = artifact("dashboard-proxy-upstream-down.png");
    browser.screenshot(&png).await.unwrap();
    seen.unwrap_or_else(|e| panic!("{e}; the page showed:\n{}", last.borrow()));
    eprintln!(
        "the page shows {}'s redis-server down {} ms after the kill; screenshot {}",
        active.id,
        after.as_millis(),
        png.display()
    );
    let promoted = wait_for(DEADLINE, "the page to show the standby active", || {
        let (browser, standby) = (&browser, &standby);
        async move { (browser.text_of("active").await? == *standby).then_some(()) }
    })
    .await;
    promoted.unwrap();
    browser.close().await;
}
