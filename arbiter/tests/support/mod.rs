//! Shared helpers of the arbiter's HTTP tests.
//!
//! - `test_arbiter`: `TestArbiter`, an in-process arbiter on port 0.
//! - `fake_node`: `FakeNode`, a scripted replica.

#![allow(dead_code)] // each test file uses a different part

mod fake_node;
mod test_arbiter;

pub use fake_node::FakeNode;
#[allow(unused_imports)] // not every test file uses every name
pub use test_arbiter::{fast_options, TestArbiter, CLUSTER, TOKEN};
