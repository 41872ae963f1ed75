//! `loadgen`: closed-loop load against understudy replicas and etcd, with
//! latency percentiles, and per-operation histories for failover checks.
//!
//! One invocation measures each `--target` in turn with the same workload
//! and prints one row per target, so a comparison (understudy vs. etcd,
//! sync vs. async mode) comes from one tool in one run:
//!
//! ```text
//! loadgen --target http://127.0.0.1:7001 --target etcd://127.0.0.1:2379 \
//!         --clients 64 --duration 10s --value-size 256
//! ```
//!
//! How it measures:
//! - `--clients` tasks, each with its own connection, each sending its next
//!   operation as soon as the previous one completed (closed loop, so the
//!   rate is what the target sustains at that concurrency, and latency is
//!   not inflated by a queue inside loadgen);
//! - latency from just before a request is sent to when its full answer is
//!   read, per client in an HDR-style histogram, merged at the end;
//! - a warm-up (`--warmup`) whose operations are not counted;
//! - keys `k` + zero-padded number drawn uniformly from `--keys`; values
//!   `c{client}-o{op}-` + filler, so every written value names its write.
//!
//! For failover measurements, `--targets-all` treats the http targets as
//! replicas of one cluster (retry at the next replica, follow redirects)
//! and reports the longest time without an acknowledged write, and
//! `--history FILE` writes one JSON line per operation (format in
//! [`history`]) for a consistency checker.
//!
//! Layout: [`config`] (flags), [`workload`] (keys, values, op choice),
//! [`backend`] (the trait both targets implement), [`http_target`],
//! [`etcd_target`], [`runner`] (the loop), [`histogram`], [`stats`]
//! (per-client counts, write gaps), [`report`] (table and JSON),
//! [`history`] (per-op lines and their clock), [`control`] (stop and
//! pause from outside), [`background`] (a run in the background of a
//! failover test, folded into a [`ledger`] of acknowledged writes that
//! verifies a replica's data, and an [`ack_timeline`] that measures write
//! gaps around events).
//!
//! Left out on purpose: open-loop (fixed-rate) load, deletes and
//! transactions in the mix, TLS, and coordinated-omission correction (not
//! needed in a closed loop, where no request is ever scheduled and missed).

pub mod ack_timeline;
pub mod backend;
pub mod background;
pub mod config;
pub mod control;
pub mod etcd_target;
pub mod histogram;
pub mod history;
pub mod http_target;
pub mod ledger;
pub mod report;
pub mod runner;
pub mod stats;
pub mod workload;

pub use ack_timeline::{AckTimeline, EventGap};
pub use background::BackgroundLoad;
pub use config::{parse_duration, Config, Run, Target};
pub use control::LoadControl;
pub use ledger::{Ledger, Verification, WriteRecord};
pub use report::{format_table, TargetReport};
pub use runner::{run, run_until_stopped};
