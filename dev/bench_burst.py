"""A burst of simultaneous cold sign-ups, one `tenantctl provision --event` process each (the
trigger exactly, as Lambda's concurrency would run it), against the local stack: how many finish
inside the trigger, how many are handed off, how many are only recorded (hand-off failed, the
record is the durable intent), how many neither (not failed either: finished from the pool), how many people see an error (must be 0), how many
tenants are missing after the drain and the reconciler's pass over the recorded ones (must be 0),
and how long each process takes (each must answer within Cognito's 5 s). With --cells N (1 or 2):
the stack's brokers as N cells (3.10, then 4.0 on Khepri) in a registry table of the run's own,
with where the tenants landed and the seconds from the burst's last answer until every tenant
was complete (the drain finishing what was handed off)."""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

from benchlib import OPERATOR, STACK, drop_namespace, fresh_namespace, fresh_queue, fresh_table, percentile, signup_event

ap = argparse.ArgumentParser()
ap.add_argument("--tenantctl", required=True)
ap.add_argument("--count", type=int, default=50)
ap.add_argument("--no-registry", action="store_true",
                help="the peer: a registry table that does not exist, so no record is ever written (the trigger before the registry)")
ap.add_argument("--simultaneous", action="store_true",
                help="every process's cold start first (two at a time, each measured), then all invoked at "
                     "once (tenantctl provision --barrier): each answer is its cold start + its invocation, as "
                     "for Lambda containers that each have a CPU of their own. Without it, 200 cold starts "
                     "share this machine's cores and arrive at the brokers spread over seconds.")
ap.add_argument("--cells", type=int, choices=[1, 2],
                help="place tenants over this many cells: the stack's 3.10 broker, then its 4.0 (Khepri)")
ap.add_argument("--pool", type=int, default=0,
                help="with --cells: each cell keeps this many vhosts made ahead, filled (tenantctl "
                     "pool-refill) before the burst, so sign-ups claim one instead of creating it")
ap.add_argument("--logs", help="a folder to write each process's log to (<sub>.log), to see where the time went")
args = ap.parse_args()

queue = fresh_queue()
namespace = fresh_namespace()
env = {**os.environ, **STACK, "HANDOFF_QUEUE_URL": queue, "TENANT_NAMESPACE": namespace}
if args.no_registry:
    env["REGISTRY_TABLE"] = f"missing-{uuid.uuid4().hex}"
if args.cells:
    brokers = [("a-3-10", "3_10"), ("b-4-0-khepri", "4_0")][:args.cells]
    cells = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    cells.write("cells:\n" + "".join(
        f"  - name: {name}\n    management_url: {STACK[f'RABBITMQ_{b}_MANAGEMENT_URL']}\n"
        f"    amqp_url: {STACK[f'RABBITMQ_{b}_AMQP_URL']}\n"
        f"    admin_secret_id: {STACK['RABBITMQ_ADMIN_SECRET_ID']}\n"
        f"    capacity: {{vhosts: 100000, connections: 100000000}}\n"
        + (f"    pool: {{size: {args.pool}, queue_types: [quorum]}}\n" if args.pool else "")
        for name, b in brokers))
    cells.close()
    env["CELLS_PATH"] = cells.name
    env["REGISTRY_TABLE"] = fresh_table()
operator = {**os.environ, **OPERATOR, **{k: env[k] for k in ("CELLS_PATH", "REGISTRY_TABLE", "TENANT_NAMESPACE") if k in env}}
work = tempfile.mkdtemp()


def pool_vhosts():
    """The vhosts made ahead on the run's brokers (by name), to remove the run's own after it."""
    out = set()
    for _, b in (brokers if args.cells else []):
        listed = subprocess.run(["curl", "-s", "-u",
                                 f"{STACK['RABBITMQ_ADMIN_USERNAME']}:{STACK['RABBITMQ_ADMIN_PASSWORD']}",
                                 f"{STACK[f'RABBITMQ_{b}_MANAGEMENT_URL']}/api/vhosts?columns=name"],
                                capture_output=True, text=True, check=True)
        out |= {(b, v["name"]) for v in json.loads(listed.stdout) if v["name"].startswith("pool-")}
    return out


pooled_before = pool_vhosts()
pool_fill_s = None
if args.pool:
    if not args.cells:
        raise SystemExit("bench: --pool needs --cells")
    t = time.perf_counter()
    fill = subprocess.run([args.tenantctl, "pool-refill", "--min-age", "0", "--max", str(args.pool)],
                          env=operator, capture_output=True, text=True)
    pool_fill_s = round(time.perf_counter() - t, 1)
    if fill.returncode != 0:
        raise SystemExit(f"bench: the pool was not filled: {fill.stderr[-2000:]}")
    print(f"bench: pools filled in {pool_fill_s} s: {fill.stdout.strip()[:400]}", file=sys.stderr)
subs = [str(uuid.uuid4()) for _ in range(args.count)]
walls, inside, inside_outcome_later, handed, recorded, unrecorded, lost = [], 0, 0, 0, 0, 0, []
procs = []
paths = {}
for sub in subs:
    paths[sub] = os.path.join(work, sub + ".json")
    with open(paths[sub], "w") as f:
        json.dump(signup_event(args.tenantctl, sub), f)


def spawn(sub, barrier=False):
    cmd = [args.tenantctl, "provision", "--event", paths[sub]] + (["--barrier"] if barrier else [])
    return subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE if barrier else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ready(sub):
    """Starts one process and waits for its cold start to end (its `tenantctl: ready`)."""
    p = spawn(sub, barrier=True)
    before = []
    for line in p.stderr:
        if line.startswith("tenantctl: ready"):
            return sub, p, before
        before.append(line)
    raise SystemExit(f"bench: {sub}'s process ended before its cold start did: {''.join(before)[-2000:]}")


def finish(entry):
    """Each process's own answer time (a thread each: collecting them in order would count a
    process's wait for the ones before it)."""
    sub, t0, p, before = entry
    out, err = p.communicate()
    return sub, (time.perf_counter() - t0) * 1e3, p.returncode, "".join(before) + err


if args.simultaneous:
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        started = list(pool.map(ready, subs))
    t0 = time.perf_counter()
    for _, p, _ in started:
        p.stdin.write("go\n")
        p.stdin.flush()
    procs = [(sub, t0, p, before) for sub, p, before in started]
else:
    procs = [(sub, time.perf_counter(), spawn(sub), []) for sub in subs]

with concurrent.futures.ThreadPoolExecutor(max_workers=len(procs)) as pool:
    finished = list(pool.map(finish, procs))
# tenantctl's last line for each way a sign-up can end other than inside the trigger (whole
# lines: "neither recorded nor handed off" also contains "handed off").
HANDED_OFF = "tenantctl: not finished in time; handed off to the queue"
RECORDED_ONLY = "tenantctl: not finished and not handed off; recorded"
UNRECORDED = "tenantctl: neither recorded nor handed off"
# The trigger's warning when the world is finished but the record's outcome write was not.
OUTCOME_LATE = "outcome not recorded in time"
inits = []
for sub, wall, code, err in finished:
    if args.simultaneous:
        # The answer Cognito waits for: the cold start (run before, on a core to itself) and
        # the invocation, released at once with all the others.
        timing = next((json.loads(l.split("timing ", 1)[1]) for l in err.splitlines()
                       if l.startswith("tenantctl: timing ")), None)
        if timing is None:
            raise SystemExit(f"bench: no timing from {sub}: {err[-2000:]}")
        inits.append(timing["init_ms"])
        wall = timing["init_ms"] + wall
    walls.append(wall)
    if args.logs:
        os.makedirs(args.logs, exist_ok=True)
        with open(os.path.join(args.logs, sub + ".log"), "w") as f:
            f.write(err)
    if code != 0:
        if not lost:
            print(f"bench: first failure message ({sub}):\n{err[-3000:]}", file=sys.stderr)
        lost.append(sub)
    elif HANDED_OFF in err:
        handed += 1
        if handed == 1:
            print(f"bench: the first hand-off's log ({sub}):\n{err[-2500:]}", file=sys.stderr)
    elif RECORDED_ONLY in err:
        recorded += 1
    elif UNRECORDED in err:
        # Not failed either: the confirmed user is the intent (GET /tenant, the reconciler).
        unrecorded += 1
    else:
        inside += 1
        if OUTCOME_LATE in err:
            # Finished in the world; the record's "converged" mark is left to the reconciler.
            inside_outcome_later += 1
burst_end = time.perf_counter()
handed_subs = [sub for sub, wall, code, err in finished if code == 0 and HANDED_OFF in err]


def status(sub):
    st = subprocess.run([args.tenantctl, "status", "--sub", sub], env=operator,
                        capture_output=True, text=True)
    return json.loads(st.stdout) if st.returncode == 0 else {}


# Why sign-ups were handed off (what did not finish in time), from a sample of their records
# before the drain finishes them; the sample's time is not counted in complete_after_s.
reasons = {}
for sub in handed_subs[:20]:
    detail = (status(sub).get("record") or {}).get("outcome_detail") or "?"
    reasons[detail] = reasons.get(detail, 0) + 1
sampled_s = time.perf_counter() - burst_end


# The worker, as Lambda's event source runs it, keeps polling: drain passes until every tenant
# is complete or 120 s have passed (each pass ends when the queue answers empty). A pass also
# tops up the pools (sign-ups that saw a pool below half asked for it), so when every sign-up
# finished inside the trigger there is nothing of the tenants' to drain: they were complete at
# their answers, and a drain would time the pools' top-up instead (checked below all the same).
summary, passes, incomplete, after_drain = {}, 0, list(subs), 0
drain_end = burst_end + sampled_s
if inside == args.count:
    incomplete = [sub for sub in subs if not status(sub).get("complete")]
while incomplete and time.perf_counter() - burst_end < 120:
    drain = subprocess.run([args.tenantctl, "drain"], env={**operator, "HANDOFF_QUEUE_URL": queue},
                           capture_output=True, text=True)
    passes += 1
    pass_summary = json.loads(drain.stdout) if drain.stdout.strip() else {}
    if drain.returncode != 0:
        print(f"bench: the drain failed: {drain.stderr[-2000:]}", file=sys.stderr)
    for failure in pass_summary.get("failures", [])[:5]:
        print(f"bench: the drain left: {failure}", file=sys.stderr)
    for k, v in pass_summary.items():
        if isinstance(v, int):
            summary[k] = summary.get(k, 0) + v
    drain_end = time.perf_counter()
    incomplete = [sub for sub in incomplete if not status(sub).get("complete")]
    if passes == 1:
        after_drain = len(incomplete)
# Every tenant complete (each checked part by part, untimed) when the last drain pass ended.
complete_after_s = round(drain_end - burst_end - sampled_s, 1) if not incomplete else None
placed = {}
claimed = 0
if args.cells:
    listed = subprocess.run([args.tenantctl, "list", "--output", "json"], env=operator,
                            capture_output=True, text=True)
    for row in json.loads(listed.stdout or "[]"):
        placed[row["cell"]] = placed.get(row["cell"], 0) + 1
    if args.pool:
        claimed = sum(1 for sub in subs if (status(sub).get("record") or {}).get("vhost"))
# What the scheduled reconciler does for a confirmed user whose recorded tenant is unfinished
# (the bench's users are synthetic, so it is asked per tenant): converge it to its record; and
# for a confirmed user with no record (neither recorded nor handed off), record and provision it.
for sub in incomplete:
    subprocess.run([args.tenantctl, "provision", "--sub", sub], env=operator,
                   capture_output=True, text=True)
missing = [sub for sub in incomplete if not status(sub).get("complete")]
drop_namespace(namespace)


def remove_broker_parts(sub):
    """The run's vhosts and users go, so the next run meets the brokers as this one did (a
    broker's vhost creation slows down as vhosts accumulate)."""
    bases = ([STACK[f"RABBITMQ_{b}_MANAGEMENT_URL"] for _, b in brokers] if args.cells
             else [STACK["RABBITMQ_MANAGEMENT_URL"]])
    for base in bases:
        for what in ("vhosts", "users"):
            subprocess.run(["curl", "-s", "-o", "/dev/null", "-X", "DELETE", "-u",
                            f"{STACK['RABBITMQ_ADMIN_USERNAME']}:{STACK['RABBITMQ_ADMIN_PASSWORD']}",
                            f"{base}/api/{what}/{sub}"], check=False)


with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    list(pool.map(remove_broker_parts, subs))
    # The run's vhosts made ahead: claimed by its tenants, or left ready.
    def remove_pooled(entry):
        b, name = entry
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-X", "DELETE", "-u",
                        f"{STACK['RABBITMQ_ADMIN_USERNAME']}:{STACK['RABBITMQ_ADMIN_PASSWORD']}",
                        f"{STACK[f'RABBITMQ_{b}_MANAGEMENT_URL']}/api/vhosts/{name}"], check=False)
    list(pool.map(remove_pooled, sorted(pool_vhosts() - pooled_before)))
result = {"bench": "burst", "registry": not args.no_registry, "cells": args.cells, "placed": placed,
          "pool": args.pool, "pool_fill_s": pool_fill_s, "claimed": claimed,
          "handoff_reasons_sample": reasons,
          "simultaneous": args.simultaneous,
          "init_ms_p50": round(percentile(inits, 50)) if inits else None,
          "complete_after_s": complete_after_s, "count": args.count, "inside_trigger": inside, "inside_outcome_recorded_later": inside_outcome_later, "handed_off": handed,
          "recorded_only": recorded, "unrecorded": unrecorded, "failure_messages": len(lost), "drained": summary.get("provisioned"),
          "incomplete_after_drain": after_drain, "drain_passes": passes, "missing_after_reconcile": len(missing),
          "wall_ms_p50": round(percentile(walls, 50)), "wall_ms_p95": round(percentile(walls, 95)),
          "wall_ms_max": round(max(walls)), "over_5s": sum(w > 5000 for w in walls)}
print(json.dumps(result))
what = (f"over {args.cells} cell{'s' if args.cells > 1 else ''} {placed}"
        + (f", pool {args.pool} per cell (filled in {pool_fill_s} s), {claimed} claimed" if args.pool else ", no pool")
        if args.cells
        else 'with the registry' if not args.no_registry else 'no registry: the trigger before it')
if args.simultaneous:
    what += f", invoked at once after their cold starts (cold start p50 {result['init_ms_p50']} ms, counted in each answer)"
print(f"burst of {args.count} ({what}): {inside} finished inside the trigger ({inside_outcome_later} of them with "
      f"the record's outcome left to the reconciler), {handed} handed off, {recorded} recorded only, "
      f"{unrecorded} neither recorded nor handed off (not failed: finished from the pool), {len(lost)} shown an error; after drain {after_drain} incomplete, after the reconciler's pass "
      f"{len(missing)} without a tenant; wall p50 {result['wall_ms_p50']} ms, "
      f"p95 {result['wall_ms_p95']} ms, max {result['wall_ms_max']} ms ({result['over_5s']} over 5 s); "
      f"every tenant complete {complete_after_s} s after the burst's last answer "
      f"({passes} drain pass{'' if passes == 1 else 'es'})")
