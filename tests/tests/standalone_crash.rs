//! kill -9 under load loses no acknowledged write.
//!
//! 64 writer tasks, each with its own connection, write to one standalone
//! replica as fast as it acknowledges. Half of each writer's writes create
//! a new key; half overwrite one of its 8 own keys. The replica is killed
//! with SIGKILL while they are mid-flight, restarted on the same data dir,
//! and everything it holds is read back. Three rounds, killed at different
//! moments, accumulating.
//!
//! What must hold after every restart:
//! - every write answered 200 is there: a new key with its value; an
//!   overwritten key with the last acknowledged value *or* a value of a
//!   later attempt whose answer never came (each key has one writer, who
//!   sends one request at a time, so nothing else can be there);
//! - nothing else is there: no key or value that was never sent.
//!
//! A write whose answer never came is "in doubt" until the restart shows
//! whether it survived; from then on the restarted state is the truth
//! (a write that was not recovered must never reappear).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use understudy_tests::client::KvClient;
use understudy_tests::harness::{log_files, wait_until, ReplicaConfig, ReplicaProcess, TestDir};

const WRITERS: usize = 64;
const KEYS_PER_WRITER: u64 = 8;
/// Acknowledged writes in each round before the kill: well into a long
/// run, right after the restart, in between. About 2 MB of log in all, so
/// the log rolls over to new 1 MiB segments under load.
const KILL_AFTER_ACKS: [u64; 3] = [6000, 40, 4000];
/// Bound on the wait for a round's acknowledgements.
const ROUND_DEADLINE: Duration = Duration::from_secs(60);
/// Largest list page the replica serves by default.
const PAGE: usize = 1000;

/// The value of write `seq` to `key`: names both, so any stored value
/// says which attempt it came from.
fn value_of(key: &str, seq: u64) -> String {
    format!("{key}#{seq}#{}", "p".repeat(100))
}

/// The attempt a stored value came from, if it has the shape of one.
fn seq_of(key: &str, value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let seq: u64 = text
        .strip_prefix(key)?
        .strip_prefix('#')?
        .split('#')
        .next()?
        .parse()
        .ok()?;
    (text == value_of(key, seq)).then_some(seq)
}

/// What one key may hold.
#[derive(Debug, Default)]
struct KeyLedger {
    /// The last acknowledged write, once there is one: the key must exist.
    acked: Option<u64>,
    /// Writes after `acked` whose answers never came: may or may not exist.
    in_doubt: BTreeSet<u64>,
    /// Writes in doubt that the restart showed lost: must never appear.
    lost: BTreeSet<u64>,
}

impl KeyLedger {
    /// Checks what the store holds for this key, then makes it the truth.
    fn check_and_settle(&mut self, key: &str, stored: Option<&Bytes>) -> Result<(), String> {
        let seq = match stored {
            None if self.acked.is_some() => {
                return Err(format!(
                    "{key}: missing; write #{} was acknowledged",
                    self.acked.unwrap()
                ))
            }
            None => None,
            Some(value) => Some(seq_of(key, value).ok_or_else(|| {
                format!(
                    "{key}: holds {:?}, which no writer sent",
                    String::from_utf8_lossy(value)
                )
            })?),
        };
        if let Some(seq) = seq {
            let allowed = self.acked == Some(seq) || self.in_doubt.contains(&seq);
            if !allowed {
                return Err(format!(
                    "{key}: holds write #{seq}; acknowledged last: {:?}, in doubt: {:?}, lost: {:?}",
                    self.acked, self.in_doubt, self.lost
                ));
            }
            self.acked = Some(seq);
        }
        self.lost
            .extend(self.in_doubt.iter().filter(|s| Some(**s) != seq));
        self.in_doubt.clear();
        Ok(())
    }
}

/// One writer's keys and what it knows about them; survives the rounds.
#[derive(Debug)]
struct Writer {
    id: usize,
    /// Sequence number of the next write (unique per writer, all rounds).
    next_seq: u64,
    /// Every key this writer ever sent a write to.
    keys: BTreeMap<String, KeyLedger>,
}

/// How a writer's round ended.
#[derive(Debug, Default)]
struct RoundEnd {
    /// Writes acknowledged in the round.
    acked: u64,
    /// Whether the last write was in flight when the replica died.
    in_doubt: bool,
    /// An answer that should never come (not 200), if one came.
    unexpected: Option<String>,
}

impl Writer {
    fn new(id: usize) -> Writer {
        Writer {
            id,
            next_seq: 0,
            keys: BTreeMap::new(),
        }
    }

    /// Even writes overwrite one of the writer's fixed keys, odd ones
    /// create a new key.
    fn key_for(&self, seq: u64) -> String {
        if seq % 2 == 0 {
            format!("w{:02}/k{}", self.id, (seq / 2) % KEYS_PER_WRITER)
        } else {
            format!("w{:02}/u{seq:07}", self.id)
        }
    }

    /// Writes until the replica stops answering.
    async fn run(mut self, url: String, acked_total: Arc<AtomicU64>) -> (Writer, RoundEnd) {
        let mut client = KvClient::new(&url)
            .unwrap()
            .with_timeout(Duration::from_secs(30));
        let mut end = RoundEnd::default();
        loop {
            let seq = self.next_seq;
            self.next_seq += 1;
            let key = self.key_for(seq);
            let result = client.put(&key, value_of(&key, seq)).await;
            let ledger = self.keys.entry(key.clone()).or_default();
            match result {
                Ok(r) if r.status == 200 => {
                    ledger.acked = Some(seq);
                    ledger.in_doubt.clear();
                    end.acked += 1;
                    acked_total.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r) => {
                    ledger.in_doubt.insert(seq);
                    end.unexpected = Some(format!("PUT {key}: {} {}", r.status, r.body_text()));
                    return (self, end);
                }
                Err(e) if e.never_sent() => return (self, end),
                Err(_) => {
                    ledger.in_doubt.insert(seq);
                    end.in_doubt = true;
                    return (self, end);
                }
            }
        }
    }
}

/// Every key and value the replica holds.
async fn read_all(client: &mut KvClient) -> BTreeMap<String, Bytes> {
    let mut all = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let r = client.list("", after.as_deref(), Some(PAGE)).await.unwrap();
        assert_eq!(r.status, 200, "list: {}", r.body_text());
        let page = r.list_page().unwrap();
        for item in &page.items {
            all.insert(item.key.clone(), item.value.clone());
        }
        match (page.more, page.items.last()) {
            (true, Some(last)) => after = Some(last.key.clone()),
            _ => return all,
        }
    }
}

/// Checks the replica against every writer's ledger and settles what was
/// in doubt. Returns (keys checked, in-doubt writes that survived).
async fn verify(replica: &ReplicaProcess, writers: &mut [Writer]) -> (usize, usize) {
    let mut client = replica.client();
    let mut stored = read_all(&mut client).await;
    // Spot-check the single-key read path against the list.
    for writer in writers.iter().step_by(7) {
        for key in writer.keys.keys().take(4) {
            let r = client.get(key).await.unwrap();
            match stored.get(key) {
                Some(value) => assert_eq!((r.status, &r.body), (200, value), "GET {key}"),
                None => assert_eq!(r.status, 404, "GET {key}: {}", r.body_text()),
            }
        }
    }
    let mut errors = Vec::new();
    let (mut checked, mut survived) = (0, 0);
    for writer in writers.iter_mut() {
        for (key, ledger) in writer.keys.iter_mut() {
            let value = stored.remove(key);
            if value.is_some() && ledger.acked.is_none() && !ledger.in_doubt.is_empty() {
                survived += 1;
            }
            if let Err(e) = ledger.check_and_settle(key, value.as_ref()) {
                errors.push(e);
            }
            checked += 1;
        }
    }
    for key in stored.keys() {
        errors.push(format!("{key}: stored, but no writer ever wrote it"));
    }
    assert!(
        errors.is_empty(),
        "{} problems after the restart, first ones:\n{}",
        errors.len(),
        errors[..errors.len().min(20)].join("\n")
    );
    (checked, survived)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_acknowledged_write() {
    let dir = TestDir::new("standalone-crash").unwrap();
    let mut replica = ReplicaConfig::new(&dir, "a").start().await.unwrap();
    let mut writers: Vec<Writer> = (0..WRITERS).map(Writer::new).collect();
    let mut in_flight_at_kills = 0;

    for (round, kill_after) in KILL_AFTER_ACKS.into_iter().enumerate() {
        let started = Instant::now();
        let acked = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = writers
            .drain(..)
            .map(|w| tokio::spawn(w.run(replica.url(), acked.clone())))
            .collect();
        let reached = wait_until(ROUND_DEADLINE, "acknowledged writes", || {
            let n = acked.load(Ordering::Relaxed);
            async move { n >= kill_after }
        })
        .await;
        let at_kill = acked.load(Ordering::Relaxed);
        replica.kill().unwrap();
        if let Err(timeout) = reached {
            assert!(
                at_kill >= kill_after.min(100),
                "round {round}: only {at_kill} writes acknowledged: {timeout}"
            );
        }

        let mut round_acked = 0;
        for task in tasks {
            let (writer, end) = task.await.expect("writer task");
            if let Some(answer) = end.unexpected {
                panic!("round {round}: writer {} got {answer}", writer.id);
            }
            round_acked += end.acked;
            in_flight_at_kills += usize::from(end.in_doubt);
            writers.push(writer);
        }
        let load_time = started.elapsed();

        let restart = Instant::now();
        replica.restart().await.unwrap();
        let (checked, survived) = verify(&replica, &mut writers).await;
        eprintln!(
            "round {round}: {round_acked} writes acknowledged in {load_time:?}, killed after \
             {at_kill}; restarted in {:?}; {checked} keys checked, {survived} in-doubt new keys \
             survived",
            restart.elapsed()
        );
    }
    let segments = log_files::segment_files(replica.data_dir()).unwrap().len();
    assert!(segments >= 2, "the load filled only {segments} log segment");
    assert!(
        in_flight_at_kills > 0,
        "no write was in flight at any kill: the kills did not hit a loaded replica"
    );

    // The restarted replica takes writes.
    let mut client = replica.client();
    for i in 0..20 {
        let key = format!("after/{i}");
        let r = client.put(&key, format!("v{i}")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body_text());
        let r = client.get(&key).await.unwrap();
        assert_eq!((r.status, r.body_text()), (200, format!("v{i}")));
    }

    // A clean stop keeps everything too.
    let status = replica.terminate(Duration::from_secs(20)).await.unwrap();
    assert!(status.success(), "SIGTERM: {status:?}");
    replica.restart().await.unwrap();
    let mut client = replica.client();
    let stored = read_all(&mut client).await;
    for i in 0..20 {
        assert_eq!(stored[&format!("after/{i}")], Bytes::from(format!("v{i}")));
    }
    let acked: usize = writers
        .iter()
        .flat_map(|w| w.keys.iter())
        .filter(|(key, ledger)| {
            let value = ledger.acked.map(|seq| Bytes::from(value_of(key, seq)));
            value.is_some() && stored.get(*key) == value.as_ref()
        })
        .count();
    let expected = writers
        .iter()
        .flat_map(|w| w.keys.values())
        .filter(|l| l.acked.is_some())
        .count();
    assert_eq!(
        acked, expected,
        "keys with their last acknowledged value after SIGTERM"
    );
}
