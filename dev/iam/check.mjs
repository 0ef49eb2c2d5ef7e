// Least privilege, checked offline: every role of the translated template (dev/iam/roles.py)
// evaluated by @cloud-copilot/iam-simulate (pinned in dev/iam/package.json) against the table
// below. Every row is asserted, the allowed ones and the denied ones: a role that can do more
// than its row says, or less than its code needs, fails the run.
// Usage: node dev/iam/check.mjs ROLES_JSON SCENARIO
//   (SCENARIO: default | vpc | existing-pool | existing-registry | second-installation)
import { readFileSync } from "node:fs";
import { runSimulation } from "@cloud-copilot/iam-simulate";

const [rolesPath, scenario] = process.argv.slice(2);
const { roles, names, resource_policies: resourcePolicies } = JSON.parse(readFileSync(rolesPath, "utf8"));
const { account, region, params } = names;
const arn = (logical) => {
  const r = names.resources[logical];
  if (!r) throw new Error(`no resource ${logical} in the translated template`);
  return r.arn;
};
const secret = (name) => `arn:aws:secretsmanager:${region}:${account}:secret:${name}-AbCdEf`;
const sub = "4f8e2d3c-1b2a-4c5d-9e8f-0a1b2c3d4e5f";
// Names derived from the installation's name unless given.
const secretPrefix = params.TenantSecretPrefix || `${params.Installation}/tenants/`;
const adminSecretId = params.RabbitMqAdminSecretId || `${params.Installation}/rabbitmq-admin`;
const tenantSecret = secret(`${secretPrefix}${sub}`);
const adminSecret = secret(adminSecretId);
// The default installation's, seen from a second installation in the same account.
const defaultInstallationAdmin = secret("post-signup/rabbitmq-admin");
const defaultInstallationTenant = secret(`post-signup/tenants/${sub}`);
const second = scenario === "second-installation";
// A cell's admin secret (cells file): named under the admin secret's name.
const cellAdminSecret = secret(`${adminSecretId}/cell-b`);
// A name that only starts like it is not one of them.
const lookalikeSecret = secret(`${adminSecretId}-staging`);
const otherSecret = secret("prod/database-password");
// The registry: the stack's own table, or (existing-registry) the one it was given.
const registry = scenario === "existing-registry"
  ? `arn:aws:dynamodb:${region}:${account}:table/${params.ExistingRegistryTable}`
  : arn("TenantRegistry");
const stream = scenario === "existing-registry"
  ? `${registry}/stream/${params.ExistingRegistryStreamLabel}`
  : `${registry}/stream/2026-01-01T00:00:00.000`;
const otherTable = `arn:aws:dynamodb:${region}:${account}:table/orders`;
const queue = arn("HandoffQueue");
const dlq = arn("HandoffDeadLetterQueue");
const otherQueue = `arn:aws:sqs:${region}:${account}:orders`;
const cluster = `arn:aws:eks:${region}:${account}:cluster/${params.EksClusterName}`;
const otherCluster = `arn:aws:eks:${region}:${account}:cluster/payments`;
// A cell's own cluster: the vpc scenario declares prod-b and prod-c (CellClusterArns).
const cellCluster = `arn:aws:eks:${region}:${account}:cluster/prod-b`;
const pool = scenario === "existing-pool"
  ? `arn:aws:cognito-idp:${region}:${account}:userpool/${params.ExistingUserPoolId}`
  : arn("UserPool");
const otherPool = `arn:aws:cognito-idp:${region}:${account}:userpool/${region}_Other1234`;
const bus = arn("TenantEventBus");
const defaultBus = `arn:aws:events:${region}:${account}:event-bus/default`;
const logs = `arn:aws:logs:${region}:${account}:log-group:/aws/lambda/post-signup-PostSignupFunction-ABC:log-stream:2026/11/30/[$LATEST]abc`;
const vpc = scenario === "vpc";

// [role, action, resource, allowed?]
const A = true, D = false;
const table = [
  // The trigger: writes a tenant's credentials under the prefix, records, hands off. Reads and
  // deletes nothing of a tenant's.
  ["PostSignupFunctionRole", "secretsmanager:GetSecretValue", adminSecret, A],
  ["PostSignupFunctionRole", "secretsmanager:GetSecretValue", cellAdminSecret, A],
  ["PostSignupFunctionRole", "secretsmanager:GetSecretValue", lookalikeSecret, D],
  ["PostSignupFunctionRole", "secretsmanager:GetSecretValue", tenantSecret, D],
  ["PostSignupFunctionRole", "secretsmanager:CreateSecret", tenantSecret, A],
  ["PostSignupFunctionRole", "secretsmanager:PutSecretValue", tenantSecret, A],
  ["PostSignupFunctionRole", "secretsmanager:RestoreSecret", tenantSecret, A],
  ["PostSignupFunctionRole", "secretsmanager:CreateSecret", otherSecret, D],
  ["PostSignupFunctionRole", "secretsmanager:PutSecretValue", adminSecret, D],
  ["PostSignupFunctionRole", "secretsmanager:DeleteSecret", tenantSecret, D],
  ["PostSignupFunctionRole", "secretsmanager:ListSecrets", "*", D],
  // Two installations in one account: neither reads the other's admin secret nor writes,
  // lists or reads under the other's tenant prefix (the second is named `acme`).
  ["PostSignupFunctionRole", "secretsmanager:GetSecretValue", defaultInstallationAdmin, !second],
  ["PostSignupFunctionRole", "secretsmanager:CreateSecret", defaultInstallationTenant, !second],
  ["TenantApiFunctionRole", "secretsmanager:GetSecretValue", defaultInstallationTenant, !second],
  ["PostSignupFunctionRole", "sqs:SendMessage", queue, A],
  ["PostSignupFunctionRole", "sqs:SendMessage", dlq, D],
  ["PostSignupFunctionRole", "sqs:SendMessage", otherQueue, D],
  ["PostSignupFunctionRole", "sqs:ReceiveMessage", queue, D],
  ["PostSignupFunctionRole", "dynamodb:PutItem", registry, A],
  // On a retained table, nothing points at the table the stack would have made.
  ["PostSignupFunctionRole", "dynamodb:PutItem", arn("TenantRegistry"), scenario !== "existing-registry"],
  ["PostSignupFunctionRole", "dynamodb:UpdateItem", registry, A],
  ["PostSignupFunctionRole", "dynamodb:GetItem", registry, A],
  ["PostSignupFunctionRole", "dynamodb:BatchGetItem", registry, A],
  ["PostSignupFunctionRole", "dynamodb:BatchGetItem", otherTable, D],
  ["PostSignupFunctionRole", "dynamodb:DeleteItem", registry, D],
  ["PostSignupFunctionRole", "dynamodb:Scan", registry, D],
  ["PostSignupFunctionRole", "dynamodb:PutItem", otherTable, D],
  ["PostSignupFunctionRole", "eks:DescribeCluster", cluster, A],
  ["PostSignupFunctionRole", "eks:DescribeCluster", cellCluster, vpc],
  ["PostSignupFunctionRole", "eks:DescribeCluster", otherCluster, D],
  ["PostSignupFunctionRole", "cognito-idp:ListUsers", pool, D],
  ["PostSignupFunctionRole", "logs:PutLogEvents", logs, A],
  ["PostSignupFunctionRole", "ec2:CreateNetworkInterface", "*", vpc],
  // The worker: the same writes, fed by the queue; it may not send to it.
  ["HandoffWorkerFunctionRole", "sqs:ReceiveMessage", queue, A],
  ["HandoffWorkerFunctionRole", "sqs:DeleteMessage", queue, A],
  ["HandoffWorkerFunctionRole", "sqs:GetQueueAttributes", queue, A],
  ["HandoffWorkerFunctionRole", "sqs:SendMessage", queue, D],
  ["HandoffWorkerFunctionRole", "sqs:ReceiveMessage", dlq, D],
  ["HandoffWorkerFunctionRole", "sqs:ReceiveMessage", otherQueue, D],
  ["HandoffWorkerFunctionRole", "sqs:DeleteMessage", otherQueue, D],
  ["HandoffWorkerFunctionRole", "secretsmanager:GetSecretValue", adminSecret, A],
  ["HandoffWorkerFunctionRole", "secretsmanager:GetSecretValue", cellAdminSecret, A],
  ["HandoffWorkerFunctionRole", "dynamodb:BatchGetItem", registry, A],
  ["HandoffWorkerFunctionRole", "secretsmanager:CreateSecret", tenantSecret, A],
  ["HandoffWorkerFunctionRole", "secretsmanager:GetSecretValue", tenantSecret, D],
  ["HandoffWorkerFunctionRole", "secretsmanager:DeleteSecret", tenantSecret, D],
  ["HandoffWorkerFunctionRole", "dynamodb:PutItem", registry, A],
  ["HandoffWorkerFunctionRole", "dynamodb:DeleteItem", registry, D],
  ["HandoffWorkerFunctionRole", "dynamodb:Scan", registry, D],
  ["HandoffWorkerFunctionRole", "eks:DescribeCluster", cluster, A],
  ["HandoffWorkerFunctionRole", "eks:DescribeCluster", cellCluster, vpc],
  ["HandoffWorkerFunctionRole", "ec2:CreateNetworkInterface", "*", vpc],
  // The scheduled reconciler: lists and repairs; it removes nothing (pruning is an operator's).
  ["ReconcilerFunctionRole", "cognito-idp:ListUsers", pool, A],
  ["ReconcilerFunctionRole", "cognito-idp:ListUsers", otherPool, D],
  ["ReconcilerFunctionRole", "cognito-idp:AdminDeleteUser", pool, D],
  ["ReconcilerFunctionRole", "cognito-idp:AdminDisableUser", pool, D],
  ["ReconcilerFunctionRole", "dynamodb:Scan", registry, A],
  ["ReconcilerFunctionRole", "dynamodb:BatchGetItem", registry, A],
  ["ReconcilerFunctionRole", "secretsmanager:GetSecretValue", cellAdminSecret, A],
  ["ReconcilerFunctionRole", "secretsmanager:GetSecretValue", otherSecret, D],
  ["ReconcilerFunctionRole", "dynamodb:PutItem", registry, A],
  ["ReconcilerFunctionRole", "dynamodb:DeleteItem", registry, D],
  ["ReconcilerFunctionRole", "secretsmanager:ListSecrets", "*", A],
  ["ReconcilerFunctionRole", "secretsmanager:CreateSecret", tenantSecret, A],
  ["ReconcilerFunctionRole", "secretsmanager:GetSecretValue", tenantSecret, D],
  ["ReconcilerFunctionRole", "secretsmanager:DeleteSecret", tenantSecret, D],
  ["ReconcilerFunctionRole", "sqs:SendMessage", queue, D],
  ["ReconcilerFunctionRole", "sqs:ReceiveMessage", queue, D],
  ["ReconcilerFunctionRole", "eks:DescribeCluster", cluster, A],
  ["ReconcilerFunctionRole", "eks:DescribeCluster", cellCluster, vpc],
  ["ReconcilerFunctionRole", "ec2:CreateNetworkInterface", "*", vpc],
  // GET /tenant: reads a tenant's record and secret …
  ["TenantApiFunctionRole", "secretsmanager:GetSecretValue", tenantSecret, A],
  ["TenantApiFunctionRole", "secretsmanager:GetSecretValue", adminSecret, D],
  ["TenantApiFunctionRole", "secretsmanager:GetSecretValue", cellAdminSecret, D],
  ["TenantApiFunctionRole", "secretsmanager:GetSecretValue", otherSecret, D],
  ["TenantApiFunctionRole", "secretsmanager:PutSecretValue", tenantSecret, D],
  ["TenantApiFunctionRole", "secretsmanager:ListSecrets", "*", D],
  ["TenantApiFunctionRole", "dynamodb:GetItem", registry, A],
  ["TenantApiFunctionRole", "dynamodb:PutItem", registry, D],
  ["TenantApiFunctionRole", "dynamodb:Scan", registry, D],
  ["TenantApiFunctionRole", "dynamodb:GetItem", otherTable, D],
  // … and hands off a signed-in user with no record: the hand-off queue only.
  ["TenantApiFunctionRole", "sqs:SendMessage", queue, A],
  ["TenantApiFunctionRole", "sqs:SendMessage", dlq, D],
  ["TenantApiFunctionRole", "sqs:SendMessage", otherQueue, D],
  ["TenantApiFunctionRole", "sqs:ReceiveMessage", queue, D],
  ["TenantApiFunctionRole", "eks:DescribeCluster", cluster, D],
  ["TenantApiFunctionRole", "eks:DescribeCluster", cellCluster, D],
  ["TenantApiFunctionRole", "cognito-idp:ListUsers", pool, D],
  ["TenantApiFunctionRole", "ec2:CreateNetworkInterface", "*", D],
  // The pipe: the registry's stream in, the tenant bus out.
  ["TenantEventsPipeRole", "dynamodb:GetRecords", stream, A],
  ["TenantEventsPipeRole", "dynamodb:GetShardIterator", stream, A],
  ["TenantEventsPipeRole", "events:PutEvents", bus, A],
  ["TenantEventsPipeRole", "events:PutEvents", defaultBus, D],
  ["TenantEventsPipeRole", "dynamodb:PutItem", registry, D],
  ["TenantEventsPipeRole", "dynamodb:GetItem", registry, D],
  // … and what the bus refused to its own dead-letter queue, nothing else.
  ["TenantEventsPipeRole", "sqs:SendMessage", arn("TenantEventsDeadLetterQueue"), A],
  ["TenantEventsPipeRole", "sqs:SendMessage", queue, D],
  ["TenantEventsPipeRole", "sqs:SendMessage", dlq, D],
  // The schedule: invokes the reconciler, nothing else.
  ["ReconcilerFunctionScheduleRole", "lambda:InvokeFunction", arn("ReconcilerFunction"), A],
  ["ReconcilerFunctionScheduleRole", "lambda:InvokeFunction", arn("PostSignupFunction"), D],
];

// Every role of the template is in the table (a new role must be judged too).
const judged = new Set(table.map((r) => r[0]));
const unjudged = Object.keys(roles).filter((r) => !judged.has(r));
const missing = [...judged].filter((r) => !roles[r]);

let failed = 0;
for (const [role, action, resource, allowed] of table) {
  if (!roles[role]) continue;
  const simulation = {
    identityPolicies: roles[role].policies,
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    resourcePolicy: undefined,
    request: {
      action,
      principal: roles[role].arn,
      resource: { resource, accountId: account },
      contextVariables: {},
    },
  };
  const response = await runSimulation(simulation, {});
  if (response.resultType === "error") {
    failed++;
    console.log(`not ok - ${scenario}: ${role} ${action} ${resource}: the simulator refused the request: ${JSON.stringify(response.errors)}`);
    continue;
  }
  const got = response.overallResult === "Allowed";
  if (got !== allowed) {
    failed++;
    console.log(`not ok - ${scenario}: ${role} ${action} on ${resource}: ${response.overallResult}, expected ${allowed ? "Allowed" : "denied"}`);
  }
}
// Resource policies: the alarm topic and its key. CloudWatch of this account may publish
// alarms (encrypting with the key); CloudWatch acting for another account may not, nor may
// another account. [policy, principal, action, resource, source account, allowed?]
const topic = arn("AlarmTopic");
const key = arn("AlarmTopicKey");
const otherAccount = "444455556666";
const resourceTable = [
  ["AlarmTopicPolicy", "cloudwatch.amazonaws.com", "sns:Publish", topic, account, A],
  ["AlarmTopicPolicy", "cloudwatch.amazonaws.com", "sns:Publish", topic, otherAccount, D],
  ["AlarmTopicPolicy", `arn:aws:iam::${otherAccount}:root`, "sns:Publish", topic, otherAccount, D],
  ["AlarmTopicPolicy", "cloudwatch.amazonaws.com", "sns:SetTopicAttributes", topic, account, D],
  ["AlarmTopicKey", "cloudwatch.amazonaws.com", "kms:GenerateDataKey", key, account, A],
  ["AlarmTopicKey", "cloudwatch.amazonaws.com", "kms:Decrypt", key, account, A],
  ["AlarmTopicKey", "cloudwatch.amazonaws.com", "kms:Decrypt", key, otherAccount, D],
  ["AlarmTopicKey", "cloudwatch.amazonaws.com", "kms:ScheduleKeyDeletion", key, account, D],
  ["AlarmTopicKey", `arn:aws:iam::${otherAccount}:root`, "kms:Decrypt", key, otherAccount, D],
];
for (const [policy, principal, action, resource, sourceAccount, allowed] of resourceTable) {
  if (!resourcePolicies?.[policy]) {
    failed++;
    console.log(`not ok - ${scenario}: no resource policy ${policy} in the translated template`);
    continue;
  }
  const service = !principal.startsWith("arn:");
  const response = await runSimulation({
    identityPolicies: [],
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    resourcePolicy: resourcePolicies[policy],
    request: {
      action,
      principal,
      resource: { resource, accountId: account },
      contextVariables: service ? { "aws:SourceAccount": sourceAccount } : {},
    },
  }, {});
  if (response.resultType === "error") {
    failed++;
    console.log(`not ok - ${scenario}: ${policy} ${principal} ${action}: the simulator refused the request: ${JSON.stringify(response.errors)}`);
    continue;
  }
  const got = response.overallResult === "Allowed";
  if (got !== allowed) {
    failed++;
    console.log(`not ok - ${scenario}: ${policy}: ${principal} (for ${sourceAccount}) ${action} on ${resource}: ${response.overallResult}, expected ${allowed ? "Allowed" : "denied"}`);
  }
}
for (const r of unjudged) { failed++; console.log(`not ok - ${scenario}: role ${r} is in the template but not in the table`); }
for (const r of missing) { failed++; console.log(`not ok - ${scenario}: role ${r} is in the table but not in the template`); }
const rows = table.length + resourceTable.length;
const allowedRows = table.filter((r) => r[3]).length + resourceTable.filter((r) => r[5]).length;
console.log(`iam (${scenario}): ${rows - failed} of ${rows} rows as expected (${allowedRows} allowed, ${rows - allowedRows} denied), ${Object.keys(roles).length} roles, ${Object.keys(resourcePolicies ?? {}).length} resource policies`);
process.exit(failed ? 1 : 0);
