//! Memory proportional to the data, whatever the write path: a stored key
//! and value must not keep alive the buffer they arrived in (an HTTP
//! request's read buffer on the active, a replication frame of many
//! entries on the standby). Measured from the allocator itself (jemalloc's
//! `stats.allocated`, exported as `understudy_heap_allocated_bytes`), not
//! from RSS, on the active and on the standby, for single-key `PUT`s and
//! for transactions.

use std::time::Duration;

use serde_json::json;
use understudy_tests::client::KvClient;
use understudy_tests::harness::{metric_value, metrics_text, serial, Cluster, TestDir};

const DEADLINE: Duration = Duration::from_secs(60);
const KEYS: usize = 20_000;
const WRITERS: usize = 16;
const VALUE: usize = 256;
/// Key length: `p-0000000000000` (16 bytes).
const KEY: usize = 16;
/// Most heap bytes one stored key and value may take, all structures
/// included: twice the raw bytes (the map's nodes, the entry, the version,
/// allocator rounding are the rest).
const BOUND: usize = 2 * (KEY + VALUE);

async fn heap(url: &str) -> u64 {
    let text = metrics_text(url).await.unwrap();
    metric_value(&text, "understudy_heap_allocated_bytes")
        .unwrap_or_else(|| panic!("no heap metric in {url}/metrics")) as u64
}

/// Writes KEYS keys with prefix `p` through `path`: one PUT each, or
/// transactions of 10 puts.
async fn load(url: &str, prefix: &str, txn: bool) {
    let value = "v".repeat(VALUE);
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, prefix, value) = (url.to_string(), prefix.to_string(), value.clone());
            tokio::spawn(async move {
                let mut c = KvClient::new(&url).unwrap();
                let keys: Vec<String> = (w..KEYS)
                    .step_by(WRITERS)
                    .map(|i| format!("{prefix}-{i:013}"))
                    .collect();
                if txn {
                    for chunk in keys.chunks(10) {
                        let ops: Vec<_> = chunk
                            .iter()
                            .map(|k| json!({"op": "put", "key": k, "value": value}))
                            .collect();
                        let r = c.txn(&json!({ "ops": ops })).await.unwrap();
                        assert_eq!(r.status, 200, "{}", r.body_text());
                    }
                } else {
                    for k in keys {
                        let r = c.put(&k, value.clone()).await.unwrap();
                        assert_eq!(r.status, 200, "{}", r.body_text());
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_value_keeps_no_buffer_larger_than_itself() {
    let _serial = serial().await;
    let dir = TestDir::new("memory-per-value").unwrap();
    let (cluster, active, standby) = Cluster::builder()
        .sync_standbys(1)
        .start_with_sync_standby(&dir, DEADLINE)
        .await
        .unwrap();
    let standby_url = cluster.replica(&standby).url();
    let mut report = Vec::new();
    for (path, txn) in [("PUT", false), ("txn", true)] {
        let before = (heap(&active.url).await, heap(&standby_url).await);
        load(&active.url, path, txn).await;
        cluster
            .wait_same_data(&active.id, &standby, DEADLINE)
            .await
            .unwrap();
        let after = (heap(&active.url).await, heap(&standby_url).await);
        for (who, b, a) in [
            ("active", before.0, after.0),
            ("standby", before.1, after.1),
        ] {
            let per = a.saturating_sub(b) as usize / KEYS;
            report.push(format!("{path} on the {who}: {per} B per value"));
            assert!(
                per <= BOUND,
                "{path} on the {who}: {per} heap bytes per stored {KEY}+{VALUE}-byte key and \
                 value (bound {BOUND}); {}",
                report.join(", ")
            );
        }
    }
    println!("{}", report.join("; "));
}
