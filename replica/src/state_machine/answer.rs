//! Handing a write's outcome to the task that waits for it, once its entry
//! is applied. The lease is not checked here: the task answers its client
//! through the role's guard (`role::ActiveGuard::check`), at the moment of
//! the answer.

use std::sync::Arc;
use std::time::Instant;

use proto_common::Position;

use crate::metrics::Metrics;
use crate::pending::{Responder, WriteAck};
use crate::state::Outcome;

/// Hands applied writes' outcomes to their waiting tasks.
#[derive(Clone)]
pub struct Answerer {
    metrics: Arc<Metrics>,
}

impl Answerer {
    pub fn new(metrics: Arc<Metrics>) -> Answerer {
        Answerer { metrics }
    }

    /// Hands over a batch of applied writes' outcomes.
    pub fn answer(&self, batch: Vec<(Responder, Position, Outcome, Option<Instant>)>) {
        for (r, position, outcome, received) in batch {
            if let Some(t) = received {
                self.metrics
                    .write_latency
                    .observe(t.elapsed().as_secs_f64());
            }
            let _ = r.send(Ok(WriteAck { position, outcome }));
        }
    }
}
