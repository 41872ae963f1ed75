//! The fault suite: concurrent clients against a real cluster under
//! injected faults, their complete history, and checkers of it.

pub mod checks;
pub mod clients;
pub mod cluster;
pub mod firewall;
pub mod history;
pub mod linearizable;
pub mod nemesis;
pub mod queues;
pub mod resp_ops;
pub mod run;
