//! Scripted scenarios for the decision core, run on a fake cluster with a
//! fake clock (see [`harness`]): each test states a situation, moves time
//! millisecond by millisecond, and asserts replies, stored states and the
//! reasons recorded.

mod failover;
mod formation;
mod harness;
mod implausible;
mod operations;
mod restart;
mod store_outcomes;
mod switchover;
mod sync_set;
mod with_file_store;
