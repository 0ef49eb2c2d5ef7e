"""The reconciler's check at scale: a user pool of N confirmed users whose tenants all exist is
compared with what exists (bulk listings, not per-user probes). The tenants are made by a first
reconcile run (itself a measure of repair throughput); the second run, which finds nothing to
do, is the figure. Runs in an installation of its own (pool, namespace, secret prefix)."""
import argparse
import json
import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from benchlib import OPERATOR, ROOT, STACK, client, fresh_table

ap = argparse.ArgumentParser()
ap.add_argument("--tenantctl", required=True)
ap.add_argument("--sizes", default="100,1000")
args = ap.parse_args()


def installation(n):
    tag = uuid.uuid4().hex[:10]
    ns = f"bench-{tag}"
    for name in ["namespace.yaml", "rbac.yaml", "rbac-operator.yaml"]:
        text = open(os.path.join(ROOT, "deploy", name)).read()
        text = text.replace("namespace: tenants", f"namespace: {ns}").replace("name: tenants", f"name: {ns}")
        subprocess.run([STACK["STACK_KUBECTL"], "--kubeconfig", STACK["KUBECONFIG"], "apply", "-f", "-"],
                       input=text, text=True, check=True, capture_output=True)
    idp = client("cognito-idp")
    pool = idp.create_user_pool(PoolName=ns)["UserPool"]["Id"]

    def user(i):
        name = f"user{i}"
        idp.admin_create_user(UserPoolId=pool, Username=name)
        idp.admin_set_user_password(UserPoolId=pool, Username=name, Password="Correct-Horse-9", Permanent=True)

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(user, range(n)))
    return {"USER_POOL_ID": pool, "TENANT_NAMESPACE": ns, "TENANT_SECRET_PREFIX": f"post-signup/{ns}/",
            "REGISTRY_TABLE": fresh_table()}


def reconcile(env):
    t = time.perf_counter()
    out = subprocess.run([args.tenantctl, "reconcile", "--output", "json"], env=env, capture_output=True, text=True)
    ms = (time.perf_counter() - t) * 1e3
    if out.returncode != 0:
        raise SystemExit(f"reconcile failed: {out.stderr[-2000:]}")
    return ms, json.loads(out.stdout)


rows = []
for n in (int(x) for x in args.sizes.split(",")):
    env = {**os.environ, **OPERATOR, **installation(n)}
    repair_ms, first = reconcile(env)
    check_ms, second = reconcile(env)
    assert second["complete"] == n and second["repaired"] == 0, second
    rows.append({"users": n, "first_run_repaired": first["repaired"], "first_run_ms": round(repair_ms),
                 "check_ms": round(check_ms), "check_inner_ms": second["elapsed_ms"]})
    print(f"reconcile {n} users: first run provisioned {first['repaired']} tenants in {repair_ms / 1000:.1f} s "
          f"({first['repaired'] / (repair_ms / 1000):.1f}/s); check with all present {check_ms:.0f} ms "
          f"(process; {second['elapsed_ms']:.0f} ms inside)")
print(json.dumps({"bench": "reconcile", "rows": rows}))
if len(rows) >= 2:
    a, b = rows[-2], rows[-1]
    per_user = (b["check_inner_ms"] - a["check_inner_ms"]) / (b["users"] - a["users"])
    pages = 100_000 / 60
    print(f"reconcile: ~{per_user:.2f} ms per extra user here; 100,000 users is {pages:.0f} ListUsers pages "
          f"(60 a page; Cognito allows ~5-10 ListUsers calls/s by default), so about "
          f"{pages / 10 / 60:.0f}-{pages / 5 / 60:.0f} min of paging plus bulk listings of 100,000 objects")
