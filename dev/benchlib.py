"""Helpers shared by the stack benchmarks: the stack's environment, AWS clients of the stand-in,
and sign-up events (the same fixture the tests use, with a fresh sub)."""
import json
import os
import subprocess
import uuid

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_env(name):
    env = {}
    with open(os.path.join(ROOT, ".stack", name)) as f:
        for line in f:
            if line.startswith("export ") and "=" in line:
                k, v = line[len("export "):].rstrip("\n").split("=", 1)
                env[k] = v
    return env


STACK = load_env("env")
OPERATOR = {**STACK, **load_env("operator.env")}


def client(service):
    return boto3.client(service, endpoint_url=STACK["AWS_ENDPOINT_URL"], region_name=STACK["AWS_REGION"],
                        aws_access_key_id="bench", aws_secret_access_key="bench")


def fresh_queue():
    return client("sqs").create_queue(QueueName=f"bench-{uuid.uuid4()}")["QueueUrl"]


def fresh_table():
    """A registry table of the bench's own, as the stack seeds one (key `sub`, a stream)."""
    name = f"bench-{uuid.uuid4().hex}"
    client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "sub", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "sub", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return name


def signup_event(tenantctl, sub):
    """The one fixture builder: `tenantctl event --sub`."""
    out = subprocess.run([tenantctl, "event", "--sub", sub], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def fresh_namespace():
    """A tenant namespace of the bench's own, with the shipped namespace and RBAC, so a burst's
    hundreds of backends never fill the stack's `tenants` namespace (its quota would then keep
    the tests' backends from rolling). Remove it with `drop_namespace`."""
    ns = f"bench-{uuid.uuid4().hex[:10]}"
    text = ""
    for name in ("namespace.yaml", "rbac.yaml", "rbac-operator.yaml"):
        with open(os.path.join(ROOT, "deploy", name)) as f:
            text += "\n---\n" + f.read().replace("namespace: tenants", f"namespace: {ns}").replace("name: tenants", f"name: {ns}")
    subprocess.run([STACK["STACK_KUBECTL"], "--kubeconfig", STACK["KUBECONFIG"], "apply", "-f", "-"],
                   input=text, text=True, check=True, capture_output=True)
    return ns


def drop_namespace(ns):
    """Removes the namespace and waits until it is gone: deleting a burst's hundreds of backends
    keeps the control plane busy for a minute or more, which would slow the next run down."""
    subprocess.run([STACK["STACK_KUBECTL"], "--kubeconfig", STACK["KUBECONFIG"], "delete", "namespace", ns,
                    "--wait=true", "--timeout=300s"], check=True, capture_output=True)
