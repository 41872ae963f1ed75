#!/usr/bin/env python3
"""How long after each fault on the active the arbiter named a new one.

Reads a fault-suite run directory (`fault-suite --out DIR`): the faults from
report.json and the arbiters' logs, and for each kill, SIGSTOP or partition
of the active prints the time from the fault to the next failover decision
the arbiter took ("epoch N: ..."), by kind. The suite's own table gives the
write gap clients saw; this separates the failover from client timeouts
(a client blocked on a frozen process waits for its own timeout).

    tests/fault-promotions.py RUN_DIR    # the --out directory of a fault-suite run
"""
import datetime
import glob
import json
import statistics
import sys

run = sys.argv[1]
report = json.load(open(f"{run}/report.json"))
decisions = []
for log in glob.glob(f"{run}/arbiter-*.stderr.log"):
    for line in open(log):
        if "kind=failover}" in line and "decision: epoch" in line:
            stamp = datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
            stamp = stamp.replace(tzinfo=datetime.timezone.utc)
            decisions.append(int(stamp.timestamp() * 1e9))
decisions.sort()
by_kind = {}
unmoved = {}
for fault in report["faults"]:
    if fault["kind"] not in ("kill_active", "pause_active", "partition_active"):
        continue
    # Only a failover this fault caused: decided before the cluster was
    # whole again (a SIGSTOP held for less than the lease causes none).
    end = fault["recovered_ns"] or fault["heal_ns"]
    during = [t for t in decisions if fault["start_ns"] <= t <= end]
    if during:
        by_kind.setdefault(fault["kind"], []).append((during[0] - fault["start_ns"]) / 1e6)
    else:
        unmoved.setdefault(fault["kind"], 0)
        unmoved[fault["kind"]] += 1
for kind, ms in sorted(by_kind.items()):
    print(f"{kind}: {len(ms)} faults, new active named after "
          f"p50 {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms"
          f"; {unmoved.get(kind, 0)} healed before any failover")
