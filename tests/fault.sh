#!/usr/bin/env bash
# The fault suite's long form: builds release binaries and runs
# `fault-suite` (tests/src/bin/fault-suite.rs), which prints a table of
# faults by kind with their write gaps, operations by outcome, anomalies
# and availability. Needs root (processes run as their own users; network
# partitions are iptables rules scoped to them).
#
#   tests/fault.sh --minutes 30 --seed 7 --topology etcd
#   tests/fault.sh --minutes 30 --proxy   # replicas fronting redis-servers, Redis clients
#   tests/fault.sh --minutes 5 --proxy --faults restart_all   # one kind of fault only
#   tests/fault.sh --help          # every flag
#
# Exit status: 0 no anomaly, 1 anomalies (the table names them), 2 the run
# could not be done.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/prereqs.sh test
cargo build --release --workspace --bins
exec target/release/fault-suite "$@"
