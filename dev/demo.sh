#!/usr/bin/env bash
# `make demo`: on a fresh machine, install what is missing, bring the local stack up, run the
# functions for real (dev/functions.sh), and have a person sign up: the stack's Cognito calls the
# PostConfirmation trigger during ConfirmSignUp, and the person's access token gets their tenant
# from GET /tenant. Then show what now exists. No secret value is printed. The stack and the
# example page stay up for you to look around; `make stack-down` removes them.
set -euo pipefail
cd "$(dirname "$0")/.."

. dev/progress.sh
echo "== 0. The local stack: RabbitMQ, a Kubernetes API server behind EKS-style IAM authentication, and AWS stand-ins"
echo "   (the first run on a machine installs packages and builds Kubernetes from Go modules: about 15 minutes)"
bash dev/stack.sh up
echo
echo "== 1. Compiling the function and tenantctl (the first time takes a few minutes)"
heartbeat "compiling" cargo build --bin post-signup --bin tenantctl
echo
echo "== 2. The functions, run for real: the trigger (behind the Lambda runtime emulator, registered as the"
echo "   user pool's PostConfirmation trigger), the frontend's GET /tenant, and the example page"
bash dev/functions.sh up
set -a; . .stack/env; . .stack/functions.env; set +a
echo
echo "== 2b. A person signs up: SignUp, then ConfirmSignUp, during which Cognito calls the trigger; then the"
echo "   frontend's call, GET /tenant with the person's access token"
. .stack/tools.base
"$STACK_VENV/bin/python" dev/signup.py | tee /tmp/post-signup-demo.$$
sub=$(sed -n 's/^SUB=//p' /tmp/post-signup-demo.$$)
python3 - .stack/functions/trigger.log <<'PY' | tee -a /tmp/post-signup-demo.$$ || true
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
last = lambda msg: next((l for l in reversed(lines) if l.get("message") == msg), None)
start, done = last("provisioning"), last("tenant provisioned")
if start and done:
    cold = start["cold_start_ms"]
    how = f"a cold start of {cold:.0f} ms included" if cold > 0 else "a warm container"
    print(f"demo: the trigger: {cold + done['wall_ms']:.0f} ms of Cognito's 5000 ms ({how})")
PY
echo
echo "== 3. The tenant's record (the registry: the intent) beside what it now has (tenantctl status; keys only, never values)"
set -a; . .stack/env; set +a
cargo run -q --bin tenantctl -- status --sub "$sub" 2>/dev/null
echo
echo "== 4. Seen directly: RabbitMQ (management API), Kubernetes (kubectl), Secrets Manager (aws cli)"
. .stack/tools.base
curl -sf -u "$RABBITMQ_ADMIN_USERNAME:$RABBITMQ_ADMIN_PASSWORD" "$RABBITMQ_MANAGEMENT_URL/api/permissions" |
  python3 -c "import json,sys; [print(f\"rabbitmq  user {p['user']} on vhost {p['vhost']}: configure={p['configure']} write={p['write']} read={p['read']}\") for p in json.load(sys.stdin) if p['user']=='$sub']"
"$STACK_KUBECTL" get deployment,secret -n "$TENANT_NAMESPACE" -l "post-signup/tenant=$sub" -o name | sed 's/^/kubernetes /'
"$STACK_VENV/bin/aws" --region "$AWS_REGION" secretsmanager describe-secret --secret-id "$TENANT_SECRET_PREFIX$sub" \
  --query '{name: Name, tags: Tags}' --output json | python3 -c "import json,sys; d=json.load(sys.stdin); print('secrets manager', d['name'], d['tags'])"
echo
echo "== What you just saw"
echo "- The person signed up and confirmed; Cognito called the PostConfirmation trigger (the function, through"
echo "  the Lambda runtime) with sub $sub, which gave them a tenant and returned the event unchanged."
echo "- Their frontend then asked GET /tenant with their own access token (verified against the pool's keys)"
echo "  and got their broker, vhost and credentials: only theirs, chosen by the token, never by the request."
grep -h "of Cognito's 5000 ms" /tmp/post-signup-demo.$$ | sed 's/^demo: /- Time: /' || true
rm -f /tmp/post-signup-demo.$$
echo "- The tenant: a RabbitMQ user + vhost + permission (that vhost only), its AMQP credentials in a"
echo "  Kubernetes Secret (for its backend) and in Secrets Manager (for the frontend), and its own backend"
echo "  Deployment, applied with a token the function signed itself (no aws-iam-authenticator binary)."
echo "- The trigger recorded the tenant first (its registry item: state, plan, password generation, outcome);"
echo "  the worker, the reconciler and every tenantctl change converge what exists to that record."
echo "- Had anything failed or run late, the tenant would have been handed off to the SQS queue and the"
echo "  person would still have been confirmed; 'tenantctl drain' (or the worker function) finishes it."
echo
echo "Try it in a browser: open $STACK_FRONTEND_URL (the example frontend: sign up with any email and"
echo "password, any confirmation code works here; it waits for the tenant, then round-trips a message over"
echo "Web-STOMP through the tenant's own vhost). From another machine: ssh -L for ports of that page, the API"
echo "($STACK_API_URL), the AWS stand-in ($AWS_ENDPOINT_URL) and Web-STOMP ($RABBITMQ_WEB_STOMP_URL)."
echo
echo "The stack is still up: 'set -a; . .stack/env; set +a' to use it (add '. .stack/operator.env' for"
echo "tenantctl reconcile/drain/deprovision), 'make stack-down' to remove it."
