#!/usr/bin/env bash
# `make demo`: on a fresh machine, install what is missing, bring the local stack up, send
# events/post-confirmation.json through the real Lambda runtime path (cargo lambda watch +
# invoke), then show what now exists. No secret value is printed. The stack stays up for you to
# look around (`set -a; . .stack/env; set +a`); `make stack-down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
event=events/post-confirmation.json
sub=$(python3 -c "import json; print(json.load(open('$event'))['request']['userAttributes']['sub'])")

bash dev/stack.sh up
echo
echo "== 1. Cognito confirms a sign-up: $event (sub $sub) goes to the function"
bash dev/lambda-smoke.sh "$event"
echo
echo "== 2. What the tenant now has (tenantctl status; keys only, never values)"
set -a; . .stack/env; set +a
cargo run -q --bin tenantctl -- status --sub "$sub" 2>/dev/null
echo
echo "== 3. Seen directly: RabbitMQ (management API), Kubernetes (kubectl), Secrets Manager (aws cli)"
. .stack/tools.base
curl -sf -u "$RABBITMQ_ADMIN_USERNAME:$RABBITMQ_ADMIN_PASSWORD" "$RABBITMQ_MANAGEMENT_URL/api/permissions" |
  python3 -c "import json,sys; [print(f\"rabbitmq  user {p['user']} on vhost {p['vhost']}: configure={p['configure']} write={p['write']} read={p['read']}\") for p in json.load(sys.stdin) if p['user']=='$sub']"
"$STACK_KUBECTL" get deployment,secret -n "$TENANT_NAMESPACE" -l "post-signup/tenant=$sub" -o name | sed 's/^/kubernetes /'
"$STACK_VENV/bin/aws" --region "$AWS_REGION" secretsmanager describe-secret --secret-id "$TENANT_SECRET_PREFIX$sub" \
  --query '{name: Name, tags: Tags}' --output json | python3 -c "import json,sys; d=json.load(sys.stdin); print('secrets manager', d['name'], d['tags'])"
echo
echo "Done. The stack is still up: 'set -a; . .stack/env; set +a' to use it, 'make stack-down' to remove it."
