//! Answering the client that waits for a write, once its entry is applied.
//!
//! The lease is checked again right before answering (lease.rs): a process
//! that was paused past its lease acknowledges nothing; the client learns
//! that the outcome is unknown and reads the write back.

use std::sync::Arc;
use std::time::Instant;

use proto_common::Position;

use crate::commit::{WriteAck, WriteError};
use crate::lease::Lease;
use crate::log::group_commit::Responder;
use crate::metrics::Metrics;
use crate::state::Outcome;

/// Answers waiting clients for a state machine.
#[derive(Clone)]
pub struct Answerer {
    lease: Arc<Lease>,
    metrics: Arc<Metrics>,
}

impl Answerer {
    pub fn new(lease: Arc<Lease>, metrics: Arc<Metrics>) -> Answerer {
        Answerer { lease, metrics }
    }

    /// Answers a batch of applied writes. `leading`: they were committed by
    /// this replica as the active, so the lease must still hold.
    pub fn answer(
        &self,
        leading: bool,
        batch: Vec<(Responder, Position, Outcome, Option<Instant>)>,
    ) {
        if batch.is_empty() {
            return;
        }
        let lease_ok = !leading || self.lease.is_valid();
        if leading && lease_ok {
            if let Some(left) = self.lease.remaining_nanos() {
                self.metrics
                    .observe_lease_margin(left, self.lease.length_nanos());
            }
        }
        for (r, position, outcome, received) in batch {
            if let Some(t) = received {
                self.metrics
                    .write_latency
                    .observe(t.elapsed().as_secs_f64());
            }
            let answer = if lease_ok {
                Ok(WriteAck { position, outcome })
            } else {
                Err(WriteError::Indeterminate(format!(
                    "the lease ended before write {position} could be acknowledged; it is \
                     committed here but a failover may be under way — read it back"
                )))
            };
            let _ = r.send(answer);
        }
    }
}
