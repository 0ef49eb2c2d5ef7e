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
