//! `strict = true` (DESIGN.md, "Strict mode"): with the
//! only standby gone, the active acknowledges nothing; once the standby is
//! back and caught up, writes resume with no operator action.
//!
//! The standby is killed with -9. Writes sent before the arbiter removed it
//! from the sync set wait, then are answered "outcome unknown" (they are on
//! the active's disk and commit when a standby returns); every write after
//! that is refused at once with `no_sync_standby`. Either way: never a 200.

use std::collections::BTreeMap;
use std::time::Duration;

use understudy_tests::client::KvClient;
use understudy_tests::harness::{serial, wait_for, Cluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);
const WRITES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_acknowledges_nothing_without_a_sync_standby() {
    let _serial = serial().await;
    let dir = TestDir::new("strict-mode").unwrap();
    let mut cluster = Cluster::builder()
        .sync_standbys(1)
        .arbiter_args(["--strict"])
        .start(&dir)
        .await
        .unwrap();
    let (active, standby) = cluster
        .wait_active_with_sync_standby(DEADLINE)
        .await
        .unwrap();
    let url = cluster.replica(&active.id).url();
    let mut client = KvClient::new(&url)
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    let first = client.put("before", "the kill").await.unwrap();
    assert_eq!(first.status, 200, "{}", first.body_text());

    cluster.kill(&standby).unwrap();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let mut acknowledged = Vec::new();
    for i in 0..WRITES {
        let r = client.put(format!("k{i}"), "v").await.unwrap();
        if r.status == 200 {
            acknowledged.push(i);
        }
        let code = r.error_code().unwrap_or_else(|| r.status.to_string());
        *answers.entry(code).or_default() += 1;
    }
    println!("{WRITES} writes with the only standby dead: {answers:?}");
    assert!(
        acknowledged.is_empty(),
        "strict mode acknowledged writes {acknowledged:?} with no sync standby: {answers:?}"
    );
    assert!(
        answers
            .keys()
            .all(|c| c == "no_sync_standby" || c == "outcome_unknown"),
        "{answers:?}"
    );
    assert!(answers.contains_key("no_sync_standby"), "{answers:?}");
    let refused = client.put("refused", "v").await.unwrap();
    let body = refused.error_body().unwrap();
    assert_eq!(refused.status, 503);
    assert!(body.retryable, "{body:?}");
    assert!(
        body.message.contains("strict mode") && body.message.contains("sync_standbys=1"),
        "{}",
        body.message
    );

    // The standby comes back: the arbiter adds it once it has caught up,
    // and writes resume by themselves.
    cluster.restart(&standby).await.unwrap();
    let resumed = wait_for(DEADLINE, "a write acknowledged again", || {
        let mut client = KvClient::new(&url).unwrap();
        async move {
            let r = client.put("after", "the return").await.ok()?;
            (r.status == 200).then_some(r)
        }
    })
    .await
    .unwrap();
    let version = resumed.write_version().unwrap();
    assert!(version.epoch.0 >= active.epoch, "{version}");
    cluster
        .wait_same_data(&active.id, &standby, DEADLINE)
        .await
        .unwrap();
    let data = cluster.dump(&standby).await.unwrap();
    assert_eq!(data.get("before").map(|v| &v[..]), Some(&b"the kill"[..]));
    assert_eq!(data.get("after").map(|v| &v[..]), Some(&b"the return"[..]));
}
