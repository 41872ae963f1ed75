//! What the clients were told about every write, kept compactly, and the
//! two questions failover tests and benchmarks ask of it:
//!
//! - **Was an acknowledged write lost?** [`Ledger::verify`] compares the
//!   data a replica serves with the writes. Keys may be written more than
//!   once (loadgen draws keys at random), so "present" means the key holds
//!   a value that no acknowledged write *provably* replaced: its value must
//!   come from a write W sent to that key (acknowledged, or without a final
//!   answer, "in doubt") such that no acknowledged write to the key started
//!   after W ended. An acknowledged write that is missing, or overwritten
//!   by an older one, or a value nobody sent, is a problem. This is the
//!   last-write-wins rule of a linearizable register, so it holds for any
//!   interleaving of concurrent clients; it needs the load quiesced (every
//!   operation that may have touched the data already recorded).
//! - **How long were writes impossible?** [`Ledger::timeline`] gives the
//!   time of every acknowledgement with its epoch (see `ack_timeline`).
//!
//! One record is about 56 bytes, so a benchmark of a million writes keeps
//! its ledger in memory.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use proto_common::Position;

use super::ack_timeline::AckTimeline;
use super::config::Config;
use super::history::HistoryRecord;
use super::workload::{key_name, parse_value_id, value_for, value_id};

/// Problems described in full by [`Verification`]; the rest are counted.
const MAX_DESCRIBED: usize = 20;

/// One write as its client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteRecord {
    /// The client that sent it.
    pub client: u32,
    /// The client's op number: with `client`, names the value.
    pub seq: u64,
    /// The key's number (`k` + zero-padded number).
    pub key: u64,
    /// Just before the first attempt, ns since the UNIX epoch.
    pub start_ns: u64,
    /// Just after the final answer.
    pub end_ns: u64,
    /// Answered 2xx: the write is acknowledged.
    pub acked: bool,
    /// HTTP status of the final answer (0: none).
    pub status: u16,
    /// `X-Data-Version` of the final answer; for an ack, the epoch is the
    /// epoch of the active that wrote it.
    pub version: Option<Position>,
    /// Index in [`Ledger::urls`] of the replica that gave the final answer.
    pub answered_by: u16,
}

impl WriteRecord {
    /// `c{client}-o{seq}`.
    pub fn value_id(&self) -> String {
        value_id(self.client, self.seq)
    }
}

/// Every write of a load, in the order their records arrived.
#[derive(Clone, Debug)]
pub struct Ledger {
    /// Key length, to rebuild key names.
    key_size: usize,
    /// Value length, to rebuild values.
    value_size: usize,
    /// Replica URLs seen in answers; records hold an index.
    urls: Vec<String>,
    /// The writes.
    writes: Vec<WriteRecord>,
    /// Acknowledged writes per epoch.
    acks_by_epoch: BTreeMap<u64, u64>,
    /// History records folded in, reads included.
    records: u64,
}

impl Ledger {
    /// An empty ledger for keys and values of these sizes.
    pub fn new(key_size: usize, value_size: usize) -> Ledger {
        Ledger {
            key_size,
            value_size,
            urls: Vec::new(),
            writes: Vec::new(),
            acks_by_epoch: BTreeMap::new(),
            records: 0,
        }
    }

    /// An empty ledger for the load `config` describes.
    pub fn for_config(config: &Config) -> Ledger {
        Ledger::new(config.key_size, config.value_size)
    }

    /// Folds in one history record (reads are only counted).
    pub fn record(&mut self, r: &HistoryRecord) {
        self.records += 1;
        if r.op != "put" {
            return;
        }
        let Some(key) = r.key.strip_prefix('k').and_then(|n| n.parse().ok()) else {
            return;
        };
        let answered_by = match self.urls.iter().position(|u| *u == r.url) {
            Some(i) => i as u16,
            None => {
                self.urls.push(r.url.clone());
                (self.urls.len() - 1) as u16
            }
        };
        let acked = r.error.is_none() && (200..300).contains(&r.status);
        let version = r.version.as_deref().and_then(|v| v.parse().ok());
        if let (true, Some(Position { epoch, .. })) = (acked, version) {
            *self.acks_by_epoch.entry(epoch.0).or_default() += 1;
        }
        self.writes.push(WriteRecord {
            client: r.client,
            seq: r.seq,
            key,
            start_ns: r.start_ns,
            end_ns: r.end_ns,
            acked,
            status: r.status,
            version,
            answered_by,
        });
    }

    /// History records folded in so far, reads included.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Every write, in arrival order.
    pub fn writes(&self) -> &[WriteRecord] {
        &self.writes
    }

    /// The URL a record's `answered_by` names.
    pub fn url(&self, index: u16) -> &str {
        &self.urls[index as usize]
    }

    /// Acknowledged writes.
    pub fn acked_count(&self) -> u64 {
        self.writes.iter().filter(|w| w.acked).count() as u64
    }

    /// Acknowledged writes whose answer carried an epoch above `epoch`.
    pub fn acks_after_epoch(&self, epoch: u64) -> u64 {
        self.acks_by_epoch
            .range(epoch.saturating_add(1)..)
            .map(|(_, n)| n)
            .sum()
    }

    /// Acknowledged writes per epoch.
    pub fn acks_by_epoch(&self) -> &BTreeMap<u64, u64> {
        &self.acks_by_epoch
    }

    /// The name of key number `n`.
    pub fn key_name(&self, n: u64) -> String {
        key_name(n, self.key_size)
    }

    /// The acknowledgements in time order.
    pub fn timeline(&self) -> AckTimeline {
        let acks: Vec<(u64, u64)> = self
            .writes
            .iter()
            .filter(|w| w.acked)
            .map(|w| (w.end_ns, w.version.map_or(0, |v| v.epoch.0)))
            .collect();
        AckTimeline::new(acks)
    }

    /// Checks `data` (every key and value a replica serves) against the
    /// writes; see the module docs for the rule. Keys this load never wrote
    /// are counted, not judged.
    pub fn verify(&self, data: &BTreeMap<String, Bytes>) -> Verification {
        let mut by_key: HashMap<u64, Vec<&WriteRecord>> = HashMap::new();
        for w in &self.writes {
            by_key.entry(w.key).or_default().push(w);
        }
        let mut v = Verification {
            acked_writes: 0,
            in_doubt_writes: 0,
            keys_written: by_key.len() as u64,
            keys_holding_in_doubt_writes: 0,
            foreign_keys: 0,
            problem_count: 0,
            problems: Vec::new(),
        };
        for writes in by_key.values() {
            let key = self.key_name(writes[0].key);
            v.acked_writes += writes.iter().filter(|w| w.acked).count() as u64;
            v.in_doubt_writes += writes.iter().filter(|w| !w.acked).count() as u64;
            if let Err(problem) = self.check_key(&key, writes, data.get(&key), &mut v) {
                v.problem(problem);
            }
        }
        v.foreign_keys = data
            .keys()
            .filter(|k| {
                k.strip_prefix('k')
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_none_or(|n| !by_key.contains_key(&n) || self.key_name(n) != **k)
            })
            .count() as u64;
        v
    }

    fn check_key(
        &self,
        key: &str,
        writes: &[&WriteRecord],
        stored: Option<&Bytes>,
        v: &mut Verification,
    ) -> Result<(), String> {
        let latest_acked = writes.iter().filter(|w| w.acked).max_by_key(|w| w.start_ns);
        let Some(stored) = stored else {
            return match latest_acked {
                Some(w) => Err(format!(
                    "{key} is missing; write {} was acknowledged (version {}, by {})",
                    w.value_id(),
                    describe_version(w.version),
                    self.url(w.answered_by)
                )),
                None => Ok(()),
            };
        };
        let Some((client, seq)) = parse_value_id(stored) else {
            return Err(format!(
                "{key} holds {:?}, which no client sent",
                String::from_utf8_lossy(&stored[..stored.len().min(40)])
            ));
        };
        let Some(holder) = writes.iter().find(|w| w.client == client && w.seq == seq) else {
            return Err(format!(
                "{key} holds {}, which was never sent to this key",
                value_id(client, seq)
            ));
        };
        if *stored != value_for(client, seq, self.value_size) {
            return Err(format!(
                "{key} holds {} with the wrong contents",
                value_id(client, seq)
            ));
        }
        if !holder.acked {
            v.keys_holding_in_doubt_writes += 1;
            return Ok(());
        }
        match latest_acked {
            Some(later) if later.start_ns > holder.end_ns => Err(format!(
                "{key} holds {} (acknowledged, version {}), but the later write {} was \
                 acknowledged too (version {}, by {}, started {} ms after the first one's \
                 answer): it was lost",
                holder.value_id(),
                describe_version(holder.version),
                later.value_id(),
                describe_version(later.version),
                self.url(later.answered_by),
                (later.start_ns - holder.end_ns) / 1_000_000
            )),
            _ => Ok(()),
        }
    }
}

fn describe_version(version: Option<Position>) -> String {
    version.map_or_else(|| "?".to_string(), |p| p.to_string())
}

/// The outcome of [`Ledger::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    /// Acknowledged writes checked.
    pub acked_writes: u64,
    /// Writes without a final success answer.
    pub in_doubt_writes: u64,
    /// Distinct keys written.
    pub keys_written: u64,
    /// Keys whose value came from a write the client never saw succeed.
    pub keys_holding_in_doubt_writes: u64,
    /// Keys in the data that this load did not write.
    pub foreign_keys: u64,
    /// Problems found (lost or invented writes).
    pub problem_count: u64,
    /// The first problems, described.
    pub problems: Vec<String>,
}

impl Verification {
    fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_DESCRIBED {
            self.problems.push(text);
        }
    }

    /// No acknowledged write was lost and nothing unsent appeared.
    pub fn is_ok(&self) -> bool {
        self.problem_count == 0
    }

    /// One paragraph for messages.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} acknowledged writes to {} keys checked ({} writes in doubt, {} keys hold one; \
             {} other keys): {} problems",
            self.acked_writes,
            self.keys_written,
            self.in_doubt_writes,
            self.keys_holding_in_doubt_writes,
            self.foreign_keys,
            self.problem_count
        );
        for p in &self.problems {
            text.push_str("\n  - ");
            text.push_str(p);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(client: u32, seq: u64, key: u64, start: u64, end: u64, status: u16) -> HistoryRecord {
        HistoryRecord {
            target: "t".into(),
            client,
            seq,
            op: "put",
            key: key_name(key, 6),
            value_id: Some(value_id(client, seq)),
            checksum: None,
            start_ns: start,
            end_ns: end,
            status,
            error: (status != 200).then(|| "timeout".to_string()),
            version: (status == 200).then(|| format!("{}.{}", 1 + start / 100, end)),
            key_version: None,
            url: format!("http://r{}", client % 2),
            attempts: 1,
            counted: true,
        }
    }

    fn data(entries: &[(u64, u32, u64)]) -> BTreeMap<String, Bytes> {
        entries
            .iter()
            .map(|&(key, c, s)| (key_name(key, 6), value_for(c, s, 20)))
            .collect()
    }

    #[test]
    fn last_write_wins_and_lost_acks_are_found() {
        let mut ledger = Ledger::new(6, 20);
        // Key 1: c0-o0 acked [0,10], then c1-o0 acked [20,30]: must hold c1-o0.
        ledger.record(&put(0, 0, 1, 0, 10, 200));
        ledger.record(&put(1, 0, 1, 20, 30, 200));
        // Key 2: two concurrent acked writes: either may win.
        ledger.record(&put(0, 1, 2, 40, 60, 200));
        ledger.record(&put(1, 1, 2, 50, 70, 200));
        // Key 3: only a write in doubt.
        ledger.record(&put(0, 2, 3, 80, 90, 0));
        assert_eq!(ledger.acked_count(), 4);
        assert_eq!(ledger.acks_after_epoch(0), 4);

        let good = data(&[(1, 1, 0), (2, 0, 1), (3, 0, 2)]);
        let v = ledger.verify(&good);
        assert!(v.is_ok(), "{}", v.summary());
        assert_eq!(v.keys_holding_in_doubt_writes, 1);
        assert!(ledger.verify(&data(&[(1, 1, 0), (2, 1, 1)])).is_ok());

        let mut bad = data(&[(1, 0, 0), (9, 5, 5)]);
        let v = ledger.verify(&bad);
        assert_eq!(v.problem_count, 2, "{}", v.summary());
        assert!(v
            .problems
            .iter()
            .any(|p| p.contains("c1-o0") && p.contains("lost")));
        assert!(v
            .problems
            .iter()
            .any(|p| p.starts_with("k00002 is missing")));
        assert_eq!(v.foreign_keys, 1);

        bad.insert(key_name(2, 6), Bytes::from_static(b"c0-o1-zzzzzzzzzzzzzz"));
        let v = ledger.verify(&bad);
        assert!(v.problems.iter().any(|p| p.contains("wrong contents")));
    }
}
