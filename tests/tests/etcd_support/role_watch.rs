//! [`RoleWatch`]: every replica's own `/v1/status`, polled in the
//! background for the whole of a fault (all replicas at once in each
//! round), and [`RoleLog`], what it saw: did a replica change role or
//! epoch, were two ever active and writable in the same round?

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_common::heartbeat::Role;
use tokio::task::JoinHandle;
use understudy_tests::harness::replica_status;

/// One replica's own view in one polling round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub role: Role,
    pub epoch: u64,
    pub writable: bool,
}

/// One polling round: when (ms since the watch started) and every
/// replica's view (`None`: no answer).
#[derive(Clone, Debug)]
pub struct Round {
    pub at_ms: u64,
    pub views: Vec<Option<View>>,
}

/// Polls replicas' `/v1/status` in the background until stopped.
pub struct RoleWatch {
    /// Node ids, in the order of the views.
    ids: Vec<String>,
    /// Set by `stop`.
    stop: Arc<AtomicBool>,
    /// The poller; returns every round.
    task: JoinHandle<Vec<Round>>,
}

impl RoleWatch {
    /// Starts polling `(id, url)` pairs, all replicas concurrently in each
    /// round, a round every `every` at most.
    pub fn start(replicas: &[(String, String)], every: Duration) -> RoleWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let urls: Vec<String> = replicas.iter().map(|(_, url)| url.clone()).collect();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let started = Instant::now();
                let mut rounds = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let next = Instant::now() + every;
                    let views = futures::future::join_all(urls.iter().map(|url| async move {
                        replica_status(url).await.ok().map(|s| View {
                            role: s.role,
                            epoch: s.epoch.0,
                            writable: s.writable,
                        })
                    }))
                    .await;
                    rounds.push(Round {
                        at_ms: started.elapsed().as_millis() as u64,
                        views,
                    });
                    tokio::time::sleep_until(next.into()).await;
                }
                rounds
            }
        });
        RoleWatch {
            ids: replicas.iter().map(|(id, _)| id.clone()).collect(),
            stop,
            task,
        }
    }

    /// Stops polling and returns what was seen.
    pub async fn stop(self) -> RoleLog {
        self.stop.store(true, Ordering::SeqCst);
        let rounds = self.task.await.expect("the role watch did not panic");
        RoleLog {
            ids: self.ids,
            rounds,
        }
    }
}

/// Everything a [`RoleWatch`] saw.
#[derive(Clone, Debug)]
pub struct RoleLog {
    /// Node ids, in the order of the views.
    pub ids: Vec<String>,
    /// Every round, in order.
    pub rounds: Vec<Round>,
}

impl RoleLog {
    /// Rounds in which two or more replicas said they were active and
    /// writable, described.
    pub fn both_active(&self) -> Vec<String> {
        self.rounds
            .iter()
            .filter(|r| {
                r.views
                    .iter()
                    .flatten()
                    .filter(|v| v.role == Role::Active && v.writable)
                    .count()
                    > 1
            })
            .map(|r| format!("at {} ms: {}", r.at_ms, self.describe(r)))
            .collect()
    }

    /// Every change of a replica's role or epoch between two of its
    /// answers, described (a round without an answer changes nothing).
    pub fn changes(&self) -> Vec<String> {
        let mut changes = Vec::new();
        for (i, id) in self.ids.iter().enumerate() {
            let mut last: Option<&View> = None;
            for round in &self.rounds {
                let Some(view) = &round.views[i] else {
                    continue;
                };
                if let Some(before) = last {
                    if (before.role, before.epoch) != (view.role, view.epoch) {
                        changes.push(format!(
                            "at {} ms {id}: {} epoch {} -> {} epoch {}",
                            round.at_ms, before.role, before.epoch, view.role, view.epoch
                        ));
                    }
                }
                last = Some(view);
            }
        }
        changes
    }

    /// Rounds in which replica `i` did not answer.
    pub fn silent_rounds(&self, i: usize) -> usize {
        self.rounds.iter().filter(|r| r.views[i].is_none()).count()
    }

    /// One line for messages.
    pub fn summary(&self) -> String {
        let silent: Vec<String> = (0..self.ids.len())
            .map(|i| format!("{} silent {}", self.ids[i], self.silent_rounds(i)))
            .collect();
        format!(
            "{} rounds over {} ms ({})",
            self.rounds.len(),
            self.rounds.last().map_or(0, |r| r.at_ms),
            silent.join(", ")
        )
    }

    fn describe(&self, round: &Round) -> String {
        self.ids
            .iter()
            .zip(&round.views)
            .map(|(id, v)| match v {
                Some(v) => format!("{id} {} epoch {} writable {}", v.role, v.epoch, v.writable),
                None => format!("{id} no answer"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}
