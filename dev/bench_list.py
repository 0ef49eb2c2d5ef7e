"""`tenantctl list` over a registry of N tenants (a table of the bench's own, filled with
BatchWriteItem): the whole list, and a filtered one, as an operator runs them. The registry
alone answers: no broker or cluster call, however many tenants."""
import argparse
import json
import os
import statistics
import subprocess
import time
import uuid

from benchlib import OPERATOR, client, fresh_table

ap = argparse.ArgumentParser()
ap.add_argument("--tenantctl", required=True)
ap.add_argument("--count", type=int, default=10000)
args = ap.parse_args()

table = fresh_table()
ddb = client("dynamodb")
now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
t = time.perf_counter()
items = []
for i in range(args.count):
    state = "suspended" if i % 10 == 0 else "active"
    items.append({"PutRequest": {"Item": {
        "sub": {"S": str(uuid.uuid4())}, "state": {"S": state}, "plan": {"S": "business" if i % 4 == 0 else "starter"},
        "generation": {"N": "0"}, "cell": {"S": "default"}, "retain_data": {"BOOL": False},
        "origin": {"S": "bench"}, "created_at": {"S": now}, "version": {"N": "1"},
        "converged_version": {"N": "1"}, "outcome": {"S": "provisioned"}, "event_seq": {"N": "1"}}}})
for start in range(0, len(items), 25):
    ddb.batch_write_item(RequestItems={table: items[start:start + 25]})
fill_s = time.perf_counter() - t

env = {**os.environ, **OPERATOR, "REGISTRY_TABLE": table}


def timed(extra, runs=3):
    times, rows = [], 0
    for _ in range(runs):
        t = time.perf_counter()
        out = subprocess.run([args.tenantctl, "list", "--output", "json", *extra], env=env,
                             check=True, capture_output=True, text=True)
        times.append((time.perf_counter() - t) * 1e3)
        rows = len(json.loads(out.stdout))
    return statistics.median(times), rows


def raw_scan():
    """The peer: the same pages read by boto3 alone (what the registry itself costs)."""
    t = time.perf_counter()
    n = 0
    for page in ddb.get_paginator("scan").paginate(TableName=table, PaginationConfig={"PageSize": 1000}):
        n += len(page["Items"])
    return (time.perf_counter() - t) * 1e3, n


scan_ms = statistics.median(raw_scan()[0] for _ in range(3))
whole_ms, whole = timed([])
filtered_ms, filtered = timed(["--state", "suspended", "--plan", "business"])
print(json.dumps({"bench": "list", "tenants": args.count, "fill_s": round(fill_s, 1),
                  "list_ms_median": round(whole_ms), "rows": whole, "boto3_scan_ms_median": round(scan_ms),
                  "filtered_ms_median": round(filtered_ms), "filtered_rows": filtered}))
print(f"list: {whole} tenants in {whole_ms:.0f} ms (median of 3 processes), the same pages by boto3 alone "
      f"{scan_ms:.0f} ms ({whole_ms / scan_ms:.2f}x); "
      f"--state suspended --plan business: {filtered} rows in {filtered_ms:.0f} ms")
