#!/usr/bin/env python3
"""How long after each fault on the active the arbiter named a new one.

Reads a fault-suite run directory (`fault-suite --out DIR`): the faults from
report.json and the arbiters' logs, and for each kill, SIGSTOP or partition
of the active prints the time from the fault to the next failover decision
the arbiter took ("epoch N: ..."), by kind. The suite's own table gives the
write gap clients saw; this separates the failover from client timeouts
(a client blocked on a frozen process waits for its own timeout).

    tests/fault-promotions.py /tmp/understudy-fault-file-7
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
for fault in report["faults"]:
    if fault["kind"] not in ("kill_active", "pause_active", "partition_active"):
        continue
    later = [t for t in decisions if t >= fault["start_ns"]]
    if later:
        by_kind.setdefault(fault["kind"], []).append((later[0] - fault["start_ns"]) / 1e6)
for kind, ms in sorted(by_kind.items()):
    print(f"{kind}: {len(ms)} faults, new active named after "
          f"p50 {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms")
