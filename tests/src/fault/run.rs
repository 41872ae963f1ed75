//! One run of the suite: start the cluster, run the clients, inject the
//! faults, stop, read the final state, check, report.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::checks::{self, Anomaly, FinalData, Findings};
use super::clients::{Clients, Target, Writer};
use super::cluster::{ClusterOptions, FaultCluster};
use super::firewall::{self, Firewall};
use super::history::{History, Kind, Op, Outcome};
use super::nemesis::{self, Fault, FaultKind, Schedule};
use super::queues::FinalLists;
use super::resp_ops::QUEUES;
use bytes::Bytes;

use crate::client::resp::{Frame, RespClient};
use crate::harness::replica_status::wait_same_data;
use crate::harness::wait::wait_for;
use crate::harness::{dump, replica_status, role_code};

/// Longest wait for the replicas to agree once the clients stop.
const SETTLE: Duration = Duration::from_secs(60);

/// A cluster with clients running against it.
pub struct Run {
    pub cluster: FaultCluster,
    pub firewall: Firewall,
    pub history: Arc<History>,
    clients: Option<Clients>,
    targets: Vec<Target>,
    /// Writers the test asked for ([`Run::writer`]).
    writers: u32,
    options: ClusterOptions,
    seed: u64,
    client_count: usize,
    faults: Vec<Fault>,
    started_ns: u64,
}

impl Run {
    /// Starts the cluster under `dir`, waits until it has formed, and
    /// starts `client_count` clients seeded from `seed`.
    pub async fn start(
        dir: &Path,
        options: ClusterOptions,
        seed: u64,
        client_count: usize,
    ) -> Result<Run, String> {
        firewall::available()?;
        // Before any process starts, so every connection is marked.
        let firewall = Firewall::new(&super::cluster::user_ids())?;
        let cluster = FaultCluster::start(dir, &options).await?;
        for r in &cluster.replicas {
            if let Some((_, upstream)) = &r.resp {
                firewall.exempt(r.uid, upstream.port)?;
            }
        }
        let history = Arc::new(History::new());
        nemesis::wait_recovered(&cluster, &history)
            .await
            .map_err(|e| format!("the cluster did not form: {e}"))?;
        let targets: Vec<Target> = cluster
            .replicas
            .iter()
            .map(|m| Target {
                node: m.name.clone(),
                url: m.url.clone(),
                resp: m.resp.as_ref().map(|(port, _)| format!("127.0.0.1:{port}")),
            })
            .collect();
        let started_ns = history.now_ns();
        let clients = Clients::start(targets.clone(), client_count, seed, history.clone());
        Ok(Run {
            cluster,
            firewall,
            history,
            clients: Some(clients),
            targets,
            writers: 0,
            options,
            seed,
            client_count,
            faults: Vec::new(),
            started_ns,
        })
    }

    /// Acknowledged writes so far.
    pub fn acked_writes(&self) -> usize {
        self.history
            .count(|o| o.kind.writes() && o.outcome == Outcome::Ok)
    }

    /// A client of the test's own that writes to replica `node` when asked
    /// (numbered after the random clients; its operations are in the
    /// history and checked like theirs).
    pub fn writer(&mut self, node: &str) -> Option<Writer> {
        let target = self.targets.iter().position(|t| t.node == node)?;
        let id = (self.client_count as u32) + self.writers;
        self.writers += 1;
        Some(Writer::new(
            id,
            self.targets.clone(),
            target,
            self.history.clone(),
        ))
    }

    /// Records a fault a test injected by hand (for the report's gaps).
    pub fn note_fault(&mut self, fault: Fault) {
        self.faults.push(fault);
    }

    /// Injects faults drawn from `schedule` for `duration` (at most `max`).
    pub async fn faults(&mut self, schedule: &Schedule, duration: Duration, max: usize) {
        let until = self.history.now_ns() + duration.as_nanos() as u64;
        let faults = nemesis::run(
            &mut self.cluster,
            &self.firewall,
            &self.history,
            schedule,
            until,
            max,
        )
        .await;
        self.faults.extend(faults);
    }

    /// Stops the clients, waits for the cluster to settle, reads the final
    /// state and checks everything; the history goes to `history.jsonl`
    /// under `dir`.
    pub async fn finish(mut self, dir: &Path) -> RunReport {
        let _ = self.firewall.heal();
        if let Some(clients) = self.clients.take() {
            clients.stop().await;
        }
        let end_ns = self.history.now_ns();
        let ops = self.history.snapshot();
        let _ = self.history.save(&dir.join("history.jsonl"));
        let mut extra = Vec::new();
        for f in &self.faults {
            if f.recovered_ns.is_none() {
                extra.push(Anomaly {
                    check: "recovery",
                    what: format!(
                        "no recovery within {:?} after {} on {}: {}",
                        nemesis::RECOVERY_DEADLINE,
                        f.kind.name(),
                        f.target,
                        f.stuck.clone().unwrap_or_default()
                    ),
                    ops: vec![],
                });
            }
        }
        let (last, lists) = match self.final_state().await {
            Ok(state) => state,
            Err(e) => {
                extra.push(Anomaly {
                    check: "one_active",
                    what: e,
                    ops: vec![],
                });
                (BTreeMap::new(), BTreeMap::new())
            }
        };
        let mut findings = if last.is_empty() {
            Findings::default()
        } else {
            checks::check_history(&ops, &last, &lists, self.options.sync_standbys > 0, end_ns)
        };
        for replica in &self.cluster.replicas {
            checks::check_quarantine(&replica.data_dir, &ops, &mut findings);
        }
        findings.anomalies.extend(extra);
        RunReport::new(
            &self.options,
            self.seed,
            self.client_count,
            self.started_ns,
            end_ns,
            &ops,
            self.faults,
            findings,
        )
    }

    /// (e) and the final data: waits for recovery, checks that exactly
    /// one replica is active and that it is the one the arbiter names,
    /// waits until every replica holds the same data, and returns it, with
    /// the queues' contents (proxy mode; none otherwise).
    async fn final_state(&self) -> Result<(FinalData, FinalLists), String> {
        nemesis::wait_recovered(&self.cluster, &self.history)
            .await
            .map_err(|e| format!("the cluster did not recover after the run: {e}"))?;
        let (_, status) = self
            .cluster
            .leader_status()
            .await
            .ok_or("no arbiter leads after the run")?;
        let named = status
            .active
            .map(|n| n.as_str().to_string())
            .ok_or("the arbiter names no active after the run")?;
        let mut actives = Vec::new();
        for r in &self.cluster.replicas {
            if role_code(&r.url).await == Some(200) {
                actives.push(r.name.clone());
            }
            let own = replica_status(&r.url).await?;
            if own.writable && r.name != named {
                actives.push(format!("{} (writable)", r.name));
            }
        }
        if actives != [named.clone()] {
            return Err(format!(
                "after the run the arbiter names {named} but these say they are active: {actives:?}"
            ));
        }
        let active = self.cluster.replica(&named).expect("a replica");
        if let Some((_, upstream)) = &active.resp {
            return self.same_upstream_data(&named, &upstream.addr()).await;
        }
        for r in self.cluster.replicas.iter().filter(|r| r.name != named) {
            wait_same_data((&named, &active.url), (&r.name, &r.url), SETTLE).await?;
        }
        let data = dump(&active.url).await?;
        let data = data
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        Ok((data, FinalLists::new()))
    }
}

impl Run {
    /// Proxy mode: waits until every replica's redis-server holds what the
    /// active's does (read directly, database 0: the strings and the
    /// queues), and returns that.
    async fn same_upstream_data(
        &self,
        named: &str,
        active: &str,
    ) -> Result<(FinalData, FinalLists), String> {
        let last = std::cell::RefCell::new(String::new());
        wait_for(SETTLE, "every upstream to hold the active's data", || {
            let last = &last;
            async move {
                let (want, want_lists) = upstream_state(active).await.ok()?;
                for r in &self.cluster.replicas {
                    let Some((_, upstream)) = &r.resp else {
                        continue;
                    };
                    let (have, have_lists) = upstream_state(&upstream.addr()).await.ok()?;
                    if have_lists != want_lists {
                        *last.borrow_mut() = format!(
                            "{}'s upstream's queues differ from {named}'s: {have_lists:?} \
                             against {want_lists:?}",
                            r.name
                        );
                        return None;
                    }
                    if have != want {
                        let differ = want
                            .iter()
                            .filter(|(k, v)| have.get(*k) != Some(*v))
                            .count();
                        *last.borrow_mut() = format!(
                            "{}'s upstream has {} keys, {named}'s {}; {differ} of {named}'s \
                             differ or are missing",
                            r.name,
                            have.len(),
                            want.len()
                        );
                        return None;
                    }
                }
                Some((want, want_lists))
            }
        })
        .await
        .map_err(|e| format!("{e}: {}", last.borrow()))
    }
}

/// Every string key of database 0 of the redis-server at `addr`, and the
/// items of each queue key that holds any (`LRANGE`).
async fn upstream_state(addr: &str) -> Result<(FinalData, FinalLists), String> {
    let mut c = RespClient::connect(addr).await?;
    let mut lists = FinalLists::new();
    for queue in QUEUES {
        let Frame::Array(items) = c.call(&["LRANGE", queue, "0", "-1"]).await? else {
            return Err(format!("LRANGE {queue} gave no array"));
        };
        let items: Vec<String> = items
            .into_iter()
            .filter_map(|i| match i {
                Frame::BulkString(i) => Some(String::from_utf8_lossy(&i).into_owned()),
                _ => None,
            })
            .collect();
        if !items.is_empty() {
            lists.insert(queue.to_string(), items);
        }
    }
    let keys = match c.call(&["KEYS", "*"]).await? {
        Frame::Array(keys) => keys,
        other => return Err(format!("KEYS gave {other:?}")),
    };
    let keys: Vec<Bytes> = keys
        .into_iter()
        .filter_map(|k| match k {
            Frame::BulkString(k) => Some(k),
            _ => None,
        })
        .collect();
    let mut out = FinalData::new();
    for chunk in keys.chunks(1000) {
        let mut args = vec![Bytes::from_static(b"MGET")];
        args.extend(chunk.iter().cloned());
        let Frame::Array(values) = c.call(&args).await? else {
            return Err("MGET gave no array".into());
        };
        for (k, v) in chunk.iter().zip(values) {
            if let Frame::BulkString(v) = v {
                out.insert(
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                );
            }
        }
    }
    Ok((out, lists))
}

/// The write gap of one kind of fault.
#[derive(Debug, Serialize)]
pub struct KindSummary {
    pub kind: FaultKind,
    pub count: usize,
    /// Longest stretch without an acknowledged write, per fault (ms).
    pub gaps_ms: Vec<f64>,
    /// From the heal to a whole cluster (ms).
    pub recovery_ms: Vec<f64>,
}

/// What a run found, ready to print.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// `file` or `etcd`, and `, proxy mode (Redis clients)` in proxy mode.
    pub topology: String,
    pub sync_standbys: u32,
    pub seed: u64,
    pub clients: usize,
    pub seconds: f64,
    pub ops: usize,
    /// Operations by kind (and a Redis compare-and-set's form) and outcome.
    pub outcomes: BTreeMap<String, [usize; 3]>,
    /// Answers by code, for all that were not `ok`.
    pub codes: BTreeMap<String, usize>,
    pub faults: Vec<Fault>,
    pub by_kind: Vec<KindSummary>,
    /// Share of 1-second windows with an acknowledged write.
    pub availability: f64,
    pub findings: Findings,
    /// The smallest history around each anomaly (first few anomalies).
    pub around: Vec<Vec<String>>,
}

impl RunReport {
    // Every part of a run's report is a separate measurement taken by the run;
    // a struct only to pass them here would repeat the report's own fields.
    #[allow(clippy::too_many_arguments)]
    fn new(
        options: &ClusterOptions,
        seed: u64,
        clients: usize,
        start_ns: u64,
        end_ns: u64,
        ops: &[Op],
        faults: Vec<Fault>,
        findings: Findings,
    ) -> RunReport {
        let mut outcomes: BTreeMap<String, [usize; 3]> = BTreeMap::new();
        let mut codes: BTreeMap<String, usize> = BTreeMap::new();
        for op in ops {
            let slot = match op.outcome {
                Outcome::Ok => 0,
                Outcome::Fail => 1,
                Outcome::Unknown => 2,
            };
            outcomes.entry(op.label()).or_default()[slot] += 1;
            if op.code != "ok" {
                *codes.entry(op.code.clone()).or_default() += 1;
            }
        }
        let acks = ack_times(ops);
        let mut kinds: Vec<FaultKind> = faults.iter().map(|f| f.kind).collect();
        kinds.sort();
        kinds.dedup();
        let by_kind = kinds
            .into_iter()
            .map(|kind| {
                let of_kind: Vec<&Fault> = faults.iter().filter(|f| f.kind == kind).collect();
                KindSummary {
                    kind,
                    count: of_kind.len(),
                    gaps_ms: of_kind.iter().map(|f| write_gap_ms(&acks, f)).collect(),
                    recovery_ms: of_kind
                        .iter()
                        .filter_map(|f| f.recovered_ns.map(|r| (r - f.heal_ns) as f64 / 1e6))
                        .collect(),
                }
            })
            .collect();
        let around = findings
            .anomalies
            .iter()
            .take(5)
            .map(|a| checks::around(ops, a, 40))
            .collect();
        RunReport {
            topology: format!(
                "{}{}{}",
                options.topology.name(),
                if options.proxy {
                    ", proxy mode (Redis clients)"
                } else {
                    ""
                },
                options
                    .clock_rate
                    .map(|r| format!(", r1's clocks at rate {r}"))
                    .unwrap_or_default()
            ),
            sync_standbys: options.sync_standbys,
            seed,
            clients,
            seconds: (end_ns - start_ns) as f64 / 1e9,
            ops: ops.len(),
            outcomes,
            codes,
            faults,
            by_kind,
            availability: availability(&acks, start_ns, end_ns),
            findings,
            around,
        }
    }

    /// The table the long form prints.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let f = &self.findings;
        out += &format!(
            "fault suite: topology {}, sync_standbys {}, seed {}, {} clients, {:.1} min, {} operations\n",
            self.topology,
            self.sync_standbys,
            self.seed,
            self.clients,
            self.seconds / 60.0,
            self.ops
        );
        out += "\nfaults by kind          count  write gap p50 / max (ms)  recovery after heal p50 (ms)\n";
        for k in &self.by_kind {
            out += &format!(
                "  {:<22} {:>5}  {:>9.0} / {:<9.0}        {:>9.0}\n",
                k.kind.name(),
                k.count,
                percentile(&k.gaps_ms, 0.5),
                percentile(&k.gaps_ms, 1.0),
                percentile(&k.recovery_ms, 0.5)
            );
        }
        out += "\noperations      ok      failed  unknown\n";
        for (kind, [ok, fail, unknown]) in &self.outcomes {
            out += &format!("  {kind:<10} {ok:>8} {fail:>8} {unknown:>8}\n");
        }
        out += "\nanswers other than ok: ";
        out += &self
            .codes
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        out += "\n\n";
        if !f.history_checked {
            out += "the history was not checked: there is no final state to hold it against \
                    (see the anomalies)\n";
        } else {
            out += &format!(
                "acknowledged adds {} (present at the end {}); unknown adds applied {} / absent {}\n",
                f.acked_adds, f.present_adds, f.unknown_adds_applied, f.unknown_adds_absent
            );
            out += &format!(
                "register keys checked {} (search gave up on {})\n",
                f.register_keys, f.register_gave_up
            );
            if self.outcomes.contains_key(Kind::Push.name()) {
                out += &format!(
                    "queues: acknowledged pushes {} (neither popped nor left at the end {}; \
                     pops of unknown outcome {}); items popped {}, left at the end {}; pops \
                     that took nothing {}\n",
                    f.acked_pushes,
                    f.pushes_unaccounted,
                    f.unknown_pops,
                    f.popped_items,
                    f.items_left,
                    f.empty_pops
                );
            }
        }
        out += &format!("quarantined entries {}\n", f.quarantined_entries);
        out += &format!(
            "availability {:.1}% of 1-s windows had an acknowledged write\n",
            self.availability * 100.0
        );
        out += &format!("anomalies {}\n", f.anomalies.len());
        for (i, a) in f.anomalies.iter().enumerate().take(20) {
            out += &format!("  [{}] {}\n", a.check, a.what);
            if let Some(lines) = self.around.get(i) {
                for line in lines {
                    out += &format!("      {line}\n");
                }
            }
        }
        out
    }
}

/// Completion times of acknowledged writes (that changed the data), sorted.
fn ack_times(ops: &[Op]) -> Vec<u64> {
    let mut t: Vec<u64> = ops
        .iter()
        .filter(|o| o.changed_data())
        .map(|o| o.complete_ns)
        .collect();
    t.sort_unstable();
    t
}

/// The longest stretch without an acknowledged write from the last one
/// before the fault to the first one after the cluster recovered.
fn write_gap_ms(acks: &[u64], fault: &Fault) -> f64 {
    let from = acks
        .partition_point(|t| *t <= fault.start_ns)
        .saturating_sub(1);
    let end = fault.recovered_ns.unwrap_or(fault.heal_ns);
    let to = (acks.partition_point(|t| *t < end) + 1).min(acks.len());
    acks[from..to]
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e6)
        .fold(0.0, f64::max)
}

fn availability(acks: &[u64], start: u64, end: u64) -> f64 {
    let windows = ((end - start) / 1_000_000_000).max(1);
    let with: HashSet<u64> = acks
        .iter()
        .filter(|t| **t >= start && **t < start + windows * 1_000_000_000)
        .map(|t| (t - start) / 1_000_000_000)
        .collect();
    with.len() as f64 / windows as f64
}

/// The `q` quantile (0..=1) of `values`, nearest rank; 0 when empty.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Operations of `kind` with `outcome` in `ops`.
pub fn count(ops: &[Op], kind: Kind, outcome: Outcome) -> usize {
    ops.iter()
        .filter(|o| o.kind == kind && o.outcome == outcome)
        .count()
}
