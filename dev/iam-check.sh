#!/usr/bin/env bash
# Least privilege, checked offline (part of `make test`): template.yml translated by
# aws-sam-translator, each role's effective policies evaluated by @cloud-copilot/iam-simulate
# against the table in dev/iam/check.mjs, for five deployments: the default, one in a VPC, one
# attached to an existing user pool, one on a registry table an earlier stack retained, and a
# second installation in the same account; and parameter sets the template's Rules refuse
# (subnets without security groups, …). No AWS account or network is involved.
set -euo pipefail
cd "$(dirname "$0")/.."
bash dev/install.sh --lint >/dev/null
. .stack/tools.lint
if [ ! -f dev/iam/node_modules/.package-lock.json ] || ! cmp -s dev/iam/package-lock.json dev/iam/node_modules/.post-signup-lock; then
  npm ci --prefix dev/iam --no-audit --no-fund >/dev/null
  cp dev/iam/package-lock.json dev/iam/node_modules/.post-signup-lock
fi
base='"EksClusterName": "prod", "RabbitMqManagementUrl": "https://b-1234.mq.eu-west-1.amazonaws.com",
      "RabbitMqAmqpUrl": "amqps://b-1234.mq.eu-west-1.amazonaws.com:5671"'
w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
status=0
for scenario in default vpc existing-pool existing-registry second-installation; do
  case $scenario in
    default) params="{$base}" ;;
    # Also: cells with clusters of their own.
    vpc) params="{$base, \"SubnetIds\": \"subnet-0a1,subnet-0b2\", \"SecurityGroupIds\": \"sg-0c3\",
      \"CellClusterArns\": \"arn:aws:eks:eu-west-1:111122223333:cluster/prod-b,arn:aws:eks:eu-west-1:111122223333:cluster/prod-c\"}" ;;
    existing-pool) params="{$base, \"CreateUserPool\": \"false\", \"ExistingUserPoolId\": \"eu-west-1_Existing1\", \"FrontendClientId\": \"4abc5def6ghi7jkl\"}" ;;
    # A second installation in the same account, named acme: its names derive from it.
    second-installation) params="{$base, \"Installation\": \"acme\"}" ;;
    # A new stack on the table an earlier installation retained.
    existing-registry) params="{$base, \"ExistingRegistryTable\": \"post-signup-tenants-2025\",
      \"ExistingRegistryStreamLabel\": \"2025-06-01T00:00:00.000\"}" ;;
  esac
  "$LINT_VENV/bin/python" dev/iam/roles.py template.yml "$params" "$w/$scenario.json"
  node dev/iam/check.mjs "$w/$scenario.json" "$scenario" || status=1
done
# Parameter sets the template's Rules must refuse before anything is created: each names the
# rule that has to say no.
refuse() {
  local rule=$1 params=$2 rc=0
  "$LINT_VENV/bin/python" dev/iam/roles.py template.yml "$params" "$w/refused.json" 2>"$w/refused.err" || rc=$?
  if [ "$rc" = 3 ] && grep -q "rule $rule:" "$w/refused.err"; then
    echo "refused as it must be ($rule): $params"
  else
    echo "NOT refused by $rule (exit $rc): $params" >&2; cat "$w/refused.err" >&2
    status=1
  fi
}
refuse SubnetsNeedSecurityGroups "{$base, \"SubnetIds\": \"subnet-0a1,subnet-0b2\"}"
refuse SecurityGroupsNeedSubnets "{$base, \"SecurityGroupIds\": \"sg-0c3\"}"
refuse AnExistingRegistryNeedsItsStream "{$base, \"ExistingRegistryTable\": \"post-signup-tenants-2025\"}"
refuse OneBrokerNeedsItsUrls "{\"EksClusterName\": \"prod\"}"
exit $status
