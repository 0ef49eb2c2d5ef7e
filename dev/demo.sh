#!/usr/bin/env bash
# `make demo`: on a fresh machine, install what is missing, bring the local stack up, send
# events/post-confirmation.json through the real Lambda runtime path (cargo lambda watch +
# invoke), then show what now exists. No secret value is printed. The stack stays up for you to
# look around (`set -a; . .stack/env; set +a`); `make stack-down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
event=events/post-confirmation.json
sub=$(python3 -c "import json; print(json.load(open('$event'))['request']['userAttributes']['sub'])")

. dev/progress.sh
echo "== 0. The local stack: RabbitMQ, a Kubernetes API server behind EKS-style IAM authentication, and AWS stand-ins"
echo "   (the first run on a machine installs packages and builds Kubernetes from Go modules: about 15 minutes)"
bash dev/stack.sh up
echo
echo "== 1. Compiling the function and tenantctl (the first time takes a few minutes)"
heartbeat "compiling" cargo build --bin post-signup --bin tenantctl
echo
echo "== 2. Cognito confirms a sign-up: $event (sub $sub) goes to the function through the real Lambda runtime"
bash dev/lambda-smoke.sh "$event" | tee /tmp/post-signup-demo.$$
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
echo "- Cognito's PostConfirmation event for sub $sub went through the Lambda runtime to the function,"
echo "  which gave that person a tenant and returned the event unchanged (Cognito requires that)."
grep -h "of Cognito's 5000 ms" /tmp/post-signup-demo.$$ | sed 's/^lambda-smoke: /- Time: /' || true
rm -f /tmp/post-signup-demo.$$
echo "- The tenant: a RabbitMQ user + vhost + permission (that vhost only), its AMQP credentials in a"
echo "  Kubernetes Secret (for its backend) and in Secrets Manager (for the frontend), and its own backend"
echo "  Deployment, applied with a token the function signed itself (no aws-iam-authenticator binary)."
echo "- The trigger recorded the tenant first (its registry item: state, plan, password generation, outcome);"
echo "  the worker, the reconciler and every tenantctl change converge what exists to that record."
echo "- Had anything failed or run late, the tenant would have been handed off to the SQS queue and the"
echo "  person would still have been confirmed; 'tenantctl drain' (or the worker function) finishes it."
echo
echo "The stack is still up: 'set -a; . .stack/env; set +a' to use it (add '. .stack/operator.env' for"
echo "tenantctl reconcile/drain/deprovision), 'make stack-down' to remove it."
