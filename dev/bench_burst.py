"""A burst of simultaneous cold sign-ups, one `tenantctl provision --event` process each (the
trigger exactly, as Lambda's concurrency would run it), against the local stack: how many finish
inside the trigger, how many are handed off, how many are only recorded (hand-off failed, the
record is the durable intent), how many people see the failure message (must be 0), how many
tenants are missing after the drain and the reconciler's pass over the recorded ones (must be 0),
and how long each process takes (each must answer within Cognito's 5 s)."""
import argparse
import json
import os
import subprocess
import tempfile
import time
import uuid

from benchlib import OPERATOR, STACK, fresh_queue, percentile, signup_event

ap = argparse.ArgumentParser()
ap.add_argument("--tenantctl", required=True)
ap.add_argument("--count", type=int, default=50)
ap.add_argument("--no-registry", action="store_true",
                help="the peer: a registry table that does not exist, so no record is ever written (the trigger before the registry)")
args = ap.parse_args()

queue = fresh_queue()
env = {**os.environ, **STACK, "HANDOFF_QUEUE_URL": queue}
if args.no_registry:
    env["REGISTRY_TABLE"] = f"missing-{uuid.uuid4().hex}"
work = tempfile.mkdtemp()
subs = [str(uuid.uuid4()) for _ in range(args.count)]
procs = []
for sub in subs:
    path = os.path.join(work, sub + ".json")
    with open(path, "w") as f:
        json.dump(signup_event(args.tenantctl, sub), f)
    procs.append((sub, time.perf_counter(), subprocess.Popen(
        [args.tenantctl, "provision", "--event", path], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
walls, inside, handed, recorded, lost = [], 0, 0, 0, []
for sub, t0, p in procs:
    out, err = p.communicate()
    walls.append((time.perf_counter() - t0) * 1e3)
    if p.returncode != 0:
        lost.append(sub)
    elif "handed off" in err:
        handed += 1
    elif "recorded, so the reconciler finishes it" in err:
        recorded += 1
    else:
        inside += 1
drain = subprocess.run([args.tenantctl, "drain"], env={**os.environ, **OPERATOR, "HANDOFF_QUEUE_URL": queue},
                       capture_output=True, text=True)
summary = json.loads(drain.stdout) if drain.stdout.strip() else {}


def status(sub):
    st = subprocess.run([args.tenantctl, "status", "--sub", sub], env={**os.environ, **OPERATOR},
                        capture_output=True, text=True)
    return json.loads(st.stdout) if st.returncode == 0 else {}


incomplete = [sub for sub in subs if not status(sub).get("complete")]
after_drain = len(incomplete)
# What the scheduled reconciler does for a confirmed user whose recorded tenant is unfinished
# (the bench's users are synthetic, so it is asked per tenant): converge it to its record.
for sub in incomplete:
    if status(sub).get("record"):
        subprocess.run([args.tenantctl, "provision", "--sub", sub], env={**os.environ, **OPERATOR},
                       capture_output=True, text=True)
missing = [sub for sub in incomplete if not status(sub).get("complete")]
result = {"bench": "burst", "registry": not args.no_registry, "count": args.count, "inside_trigger": inside, "handed_off": handed,
          "recorded_only": recorded, "failure_messages": len(lost), "drained": summary.get("provisioned"),
          "incomplete_after_drain": after_drain, "missing_after_reconcile": len(missing),
          "wall_ms_p50": round(percentile(walls, 50)), "wall_ms_p95": round(percentile(walls, 95)),
          "wall_ms_max": round(max(walls)), "over_5s": sum(w > 5000 for w in walls)}
print(json.dumps(result))
print(f"burst of {args.count} ({'with the registry' if not args.no_registry else 'no registry: the trigger before it'}): {inside} finished inside the trigger, {handed} handed off, {recorded} recorded only, "
      f"{len(lost)} shown the failure message; after drain {after_drain} incomplete, after the reconciler's pass "
      f"{len(missing)} without a tenant; wall p50 {result['wall_ms_p50']} ms, "
      f"p95 {result['wall_ms_p95']} ms, max {result['wall_ms_max']} ms ({result['over_5s']} over 5 s)")
