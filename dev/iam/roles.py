#!/usr/bin/env python3
"""Every IAM role of template.yml as deployed, offline: the template translated by
aws-sam-translator (pinned with the SAM CLI in dev/requirements-lint.txt), its conditions and
intrinsic functions resolved for the given parameters, each role's policies (inline and managed)
written out as plain JSON policy documents for dev/iam/check.mjs to evaluate.

Usage: roles.py TEMPLATE PARAMS_JSON OUT_JSON
Resources get names and ARNs as CloudFormation would make them, in a fixed account and region.
A managed policy the template (or SAM) attaches that is not known here fails the run: nothing is
evaluated as narrower than it is.
"""
import json
import os
import re
import sys

import yaml
from samtranslator.translator.transform import transform

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cfn_yaml import CfnLoader  # noqa: E402  (dev/cfn_yaml.py, shared with the stack's Pipe)

ACCOUNT, REGION, PARTITION, STACK = "111122223333", "eu-west-1", "aws", "post-signup"

# AWS managed policies SAM may attach, as AWS publishes them.
MANAGED = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole": [
        {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], "Resource": "*"}],
    "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole": [
        {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                                       "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces",
                                       "ec2:DescribeSubnets", "ec2:DeleteNetworkInterface",
                                       "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"], "Resource": "*"}],
    "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole": [
        {"Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                                       "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], "Resource": "*"}],
}


class NoManagedPolicies:
    def load(self):
        return {}


def physical_name(logical):
    return f"{STACK}-{logical}-ABCDEF123456"


def arn_of(logical, resource, resolver=None):
    kind = resource["Type"]
    props = resource.get("Properties", {})
    name = physical_name(logical)
    if "Name" in props and resolver is not None:
        name = resolver.resolve(props["Name"])
    return {
        "AWS::DynamoDB::Table": f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{name}",
        "AWS::SQS::Queue": f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{name}",
        "AWS::Cognito::UserPool": f"arn:{PARTITION}:cognito-idp:{REGION}:{ACCOUNT}:userpool/{REGION}_AbCdEf123",
        "AWS::Events::EventBus": f"arn:{PARTITION}:events:{REGION}:{ACCOUNT}:event-bus/{name}",
        "AWS::IAM::Role": f"arn:{PARTITION}:iam::{ACCOUNT}:role/{name}",
        "AWS::Lambda::Function": f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{name}",
        "AWS::SNS::Topic": f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{name}",
        "AWS::KMS::Key": f"arn:{PARTITION}:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    }.get(kind, f"arn:{PARTITION}:unknown:{REGION}:{ACCOUNT}:{name}")


def ref_of(logical, resource):
    kind = resource["Type"]
    if kind == "AWS::SQS::Queue":
        return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{physical_name(logical)}"
    if kind in ("AWS::Cognito::UserPool",):
        return f"{REGION}_AbCdEf123"
    if kind in ("AWS::SNS::Topic",):
        return arn_of(logical, resource)
    return physical_name(logical)


class Resolver:
    def __init__(self, template, params):
        self.t = template
        self.params = {}
        for name, spec in template.get("Parameters", {}).items():
            value = params.get(name, spec.get("Default"))
            if value is None:
                sys.exit(f"roles: parameter {name} has no value and no default")
            if spec.get("Type") == "CommaDelimitedList" or spec.get("Type", "").startswith("List<"):
                value = [v for v in str(value).split(",") if v] if isinstance(value, str) else value
            self.params[name] = value
        self.pseudo = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": PARTITION,
                       "AWS::StackName": STACK, "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": None,
                       "AWS::StackId": f"arn:{PARTITION}:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK}/"
                                       "6e1c2f70-0a1b-11f0-9c3d-0a1b2c3d4e5f"}
        self.conditions = {}

    def condition(self, name):
        if name not in self.conditions:
            self.conditions[name] = bool(self.resolve(self.t["Conditions"][name]))
        return self.conditions[name]

    def ref(self, name):
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        return ref_of(name, self.t["Resources"][name])

    def sub(self, text, extra):
        def one(m):
            key = m.group(1)
            if key in extra:
                return str(extra[key])
            if "." in key:
                logical, attr = key.split(".", 1)
                return str(self.getatt(logical, attr))
            return str(self.ref(key))
        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def getatt(self, logical, attr):
        resource = self.t["Resources"][logical]
        if attr == "Arn":
            return arn_of(logical, resource, self)
        if attr == "StreamArn":
            return arn_of(logical, resource, self) + "/stream/2026-01-01T00:00:00.000"
        return f"{physical_name(logical)}.{attr}"

    def resolve(self, v):
        if isinstance(v, list):
            out = [self.resolve(x) for x in v]
            return [x for x in out if x is not None]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, arg), = v.items()
            if k == "Ref":
                return self.ref(arg)
            if k == "Fn::Sub":
                if isinstance(arg, list):
                    return self.sub(arg[0], {n: self.resolve(x) for n, x in arg[1].items()})
                return self.sub(arg, {})
            if k == "Fn::GetAtt":
                return self.getatt(*(arg if isinstance(arg, list) else arg.split(".", 1)))
            if k == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if k == "Fn::Join":
                return arg[0].join(str(x) for x in self.resolve(arg[1]))
            if k == "Fn::Equals":
                a, b = self.resolve(arg[0]), self.resolve(arg[1])
                return str(a) == str(b)
            if k == "Fn::Not":
                return not self.resolve(arg[0])
            if k == "Fn::And":
                return all(self.resolve(x) for x in arg)
            if k == "Fn::Or":
                return any(self.resolve(x) for x in arg)
            if k == "Condition":
                return self.condition(arg)
            # Rule functions (the Rules section), on lists of strings.
            if k == "Fn::EachMemberEquals":
                return all(str(x) == str(self.resolve(arg[1])) for x in self.resolve(arg[0]))
            if k == "Fn::EachMemberIn":
                allowed = [str(x) for x in self.resolve(arg[1])]
                return all(str(x) in allowed for x in self.resolve(arg[0]))
            if k == "Fn::Contains":
                return str(self.resolve(arg[1])) in [str(x) for x in self.resolve(arg[0])]
            if k == "Fn::Split":
                return str(self.resolve(arg[1])).split(arg[0])
            if k == "Fn::Select":
                return self.resolve(arg[1])[int(self.resolve(arg[0]))]
        return {k: r for k, r in ((k, self.resolve(x)) for k, x in v.items()) if r is not None}


def refused_by_rules(template, r):
    """The Rules as CloudFormation applies them before it creates anything: each rule whose
    RuleCondition holds must pass every assertion. Returns the failures' descriptions."""
    refused = []
    for name, rule in template.get("Rules", {}).items():
        if "RuleCondition" in rule and not r.resolve(rule["RuleCondition"]):
            continue
        for assertion in rule["Assertions"]:
            if not r.resolve(assertion["Assert"]):
                refused.append(f"{name}: {assertion.get('AssertDescription', 'assertion failed')}")
    return refused


def main():
    template_path, params_json, out_path = sys.argv[1:4]
    with open(template_path) as f:
        sam = yaml.load(f, Loader=CfnLoader)
    params = json.loads(params_json)
    # As `sam package` leaves it: code in S3 (the translator accepts nothing else).
    sam.setdefault("Globals", {}).setdefault("Function", {})["CodeUri"] = "s3://artifacts/post-signup.zip"
    for res in sam["Resources"].values():
        if res["Type"] == "AWS::Serverless::Function" and "CodeUri" in res.get("Properties", {}):
            res["Properties"]["CodeUri"] = "s3://artifacts/post-signup.zip"
    pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": PARTITION,
              "AWS::StackName": STACK,
              "AWS::StackId": f"arn:{PARTITION}:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK}/"
                              "6e1c2f70-0a1b-11f0-9c3d-0a1b2c3d4e5f"}
    os.environ["AWS_DEFAULT_REGION"] = REGION  # the translator asks boto3 for a region
    cfn = transform(sam, {**params, **pseudo}, NoManagedPolicies())
    r = Resolver(cfn, params)
    refused = refused_by_rules(sam, Resolver(sam, params))
    if refused:
        print("\n".join(f"refused by the template's rule {x}" for x in refused), file=sys.stderr)
        sys.exit(3)
    roles = {}
    for logical, res in cfn["Resources"].items():
        if res["Type"] != "AWS::IAM::Role":
            continue
        if "Condition" in res and not r.condition(res["Condition"]):
            continue
        props = r.resolve(res["Properties"])
        policies = [{"name": p["PolicyName"], "policy": p["PolicyDocument"]} for p in props.get("Policies", [])]
        for arn in props.get("ManagedPolicyArns", []):
            if arn not in MANAGED:
                sys.exit(f"roles: {logical} has managed policy {arn}, unknown here: add its document")
            policies.append({"name": arn, "policy": {"Version": "2012-10-17", "Statement": MANAGED[arn]}})
        roles[logical] = {"arn": arn_of(logical, res, r), "policies": policies}
    # Resource policies: the key's and the topic's (who may publish alarms through them).
    resource_policies = {}
    for logical, res in cfn["Resources"].items():
        if "Condition" in res and not r.condition(res["Condition"]):
            continue
        if res["Type"] == "AWS::KMS::Key":
            resource_policies[logical] = r.resolve(res["Properties"]["KeyPolicy"])
        elif res["Type"] == "AWS::SNS::TopicPolicy":
            resource_policies[logical] = r.resolve(res["Properties"]["PolicyDocument"])
    names = {
        "account": ACCOUNT, "region": REGION, "partition": PARTITION,
        "resources": {logical: {"arn": arn_of(logical, res, r), "ref": ref_of(logical, res)}
                      for logical, res in cfn["Resources"].items()},
        "params": r.params,
    }
    with open(out_path, "w") as f:
        json.dump({"roles": roles, "names": names, "resource_policies": resource_policies}, f, indent=1)


if __name__ == "__main__":
    main()
