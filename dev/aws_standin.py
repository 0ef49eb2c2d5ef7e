#!/usr/bin/env python3
"""The stack's AWS stand-in: moto (Secrets Manager, EKS, SQS, Cognito, DynamoDB and its Streams)
behind two small shims.

- DescribeCluster: moto answers with a made-up endpoint and CA. The shim rewrites exactly those
  two fields, for the stack's own clusters only, to the real kube-apiserver's endpoint and CA, so
  the function's DescribeCluster path runs for real.
- Atomic writes: DynamoDB writes are serialised, as DynamoDB applies a conditional write
  atomically (moto's threads do not).
- Arrival order: at most a few requests inside moto at once, admitted first-come, first-served,
  and a listen backlog that takes a burst's connections, so a burst is answered as a queue
  (ArrivalOrder).
- Faults, for tests: `POST /_standin/faults` with
  {"target": "secretsmanager.CreateSecret", "match": "<text in the request body>", "count": 1,
   "status": 400, "error": "ThrottlingException", "delay_ms": 0}
  makes the next `count` matching requests wait `delay_ms` and then (if `status` is set) answer
  with that AWS JSON-protocol error instead of reaching moto; {"clear": true, "match": "..."}
  ends the faults of that match. Matching on body text (a test's own
  tenant or secret id) keeps tests that run in parallel out of each other's way.
- Cognito triggers: moto confirms users but calls no Lambda trigger. On ConfirmSignUp,
  AdminConfirmSignUp (both with `PostConfirmation_ConfirmSignUp`, as Cognito sends) and
  ConfirmForgotPassword (`PostConfirmation_ConfirmForgotPassword`) that moto accepted, for a
  pool whose LambdaConfig names a PostConfirmation
  function, the stand-in invokes that function as Cognito does: synchronously, with the real
  PostConfirmation event, 5 s per attempt, at most 3 attempts when the function times out, and
  the function's error message returned to the caller (`UserLambdaValidationException`). The
  user stays confirmed either way, as with Cognito. Functions run outside (`dev/functions.sh`,
  behind cargo lambda's Lambda API emulator) and are registered with
  `POST /_standin/functions {"arn": "<function ARN>", "url": "<its Invoke URL>"}`; a pool that
  names an unregistered function gets `UnexpectedLambdaException`, as when Lambda is unreachable.
- The template's EventBridge Pipe (registry stream → filter → input template → bus), which
  AWS runs and moto does not: `POST /_standin/pipes` (dev/pipe_standin.py).
Everything else is moto, unchanged.

Usage: aws_standin.py --listen IP:PORT (--cluster NAME --endpoint URL --ca-file PEM)... --seed FILE --out FILE
The seed file lists what to create once the server is up (the admin secret, the cluster, the
hand-off queue and its dead-letter queue, the user pool, the registry table); --out receives the
created ids.
"""
import argparse
import base64
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from io import BytesIO

import boto3
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler, make_server

from pipe_standin import PipeShim


class DescribeClusterShim:
    def __init__(self, app, clusters):
        """clusters: name -> (endpoint, base64 CA), each a real kube-apiserver of the stack."""
        self.app = app
        self.clusters = clusters
        self.path = re.compile(r"^/clusters/([^/]+)/?$")

    def __call__(self, environ, start_response):
        m = self.path.match(environ.get("PATH_INFO", ""))
        if environ.get("REQUEST_METHOD") != "GET" or not m or m.group(1) not in self.clusters:
            return self.app(environ, start_response)
        endpoint, ca_data = self.clusters[m.group(1)]
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        if captured["status"].startswith("200"):
            doc = json.loads(body)
            doc["cluster"]["endpoint"] = endpoint
            doc["cluster"]["certificateAuthority"] = {"data": ca_data}
            body = json.dumps(doc).encode()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(captured["status"], headers)
        return [body]


class AtomicWritesShim:
    """DynamoDB checks a write's condition and applies it atomically; moto, served by threads,
    does not (seen: two UpdateItems conditioned on the same version both succeeded). Writes are
    serialised here, so the registry's optimistic concurrency is tested against the semantics
    DynamoDB has."""

    WRITES = {f"DynamoDB_20120810.{op}" for op in
              ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")}

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "") not in self.WRITES:
            return self.app(environ, start_response)
        with self.lock:
            return list(self.app(environ, start_response))


class ArrivalOrder:
    """DynamoDB and Secrets Manager serve a burst of requests in parallel, each in milliseconds;
    moto is one Python process whose threads share one interpreter lock. With a thread per
    connection, 200 requests at once are served round-robin and most of them answer at about
    the end of the burst, past their callers' deadlines, where a real service would have
    answered them at once. Here at most `n` requests are inside moto at a time, admitted roughly in
    arrival order (a Semaphore's waiters are woken first-come, first-served), so the stand-in
    answers a burst as a queue does: the first early, the last late. Only moto is gated: the
    shims that call the stand-in back (the Cognito trigger, the Pipe) hold no place while they
    wait, nor does a long poll."""

    def __init__(self, app, n):
        self.app = app
        self.places = threading.Semaphore(n)

    # Requests that wait inside moto by design (a long poll sleeps until a message arrives or
    # its WaitTimeSeconds pass) hold no place: four of them would stop every other request.
    WAITING = {"AmazonSQS.ReceiveMessage"}

    def __call__(self, environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "") in self.WAITING:
            return self.app(environ, start_response)
        with self.places:
            return list(self.app(environ, start_response))


def moto_modules_listed_once():
    """moto's dispatcher lists its own package folder (a listdir and ~150 isdir calls) on every
    request, under its one lock: a constant, listed once here."""
    import moto.backends as backends

    listed = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: listed


class FaultShim:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.rules = []

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == "/_standin/faults" and environ.get("REQUEST_METHOD") == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            rule = json.loads(environ["wsgi.input"].read(length) or b"{}")
            rule.setdefault("count", 1)
            with self.lock:
                if rule.get("clear"):
                    # {"clear": true, "match": "..."}: the fault is over for that text.
                    self.rules = [r for r in self.rules if r.get("match") != rule.get("match")]
                else:
                    self.rules.append(rule)
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b"{}"]
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not self.rules or not target:
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = BytesIO(body)
        text = body.decode("utf-8", "replace")
        hit = None
        with self.lock:
            for rule in self.rules:
                if rule["count"] > 0 and rule.get("target") == target and rule.get("match", "") in text:
                    rule["count"] -= 1
                    hit = dict(rule)
                    break
        if hit is None:
            return self.app(environ, start_response)
        if hit.get("delay_ms"):
            time.sleep(hit["delay_ms"] / 1000)
        if not hit.get("status"):
            return self.app(environ, start_response)
        error = hit.get("error", "ServiceUnavailable")
        payload = json.dumps({"__type": error, "message": "injected by the stack's fault shim"}).encode()
        status = f"{hit['status']} Injected"
        start_response(status, [("Content-Type", "application/x-amz-json-1.1"),
                                ("x-amzn-query-error", f"{error};Sender"),
                                ("Content-Length", str(len(payload)))])
        return [payload]


class CognitoTriggerShim:
    # What Cognito calls PostConfirmation on, and the trigger source each sends: an
    # administrator's confirmation is a sign-up's (Cognito has no AdminConfirmSignUp source).
    TARGETS = {"AWSCognitoIdentityProviderService.ConfirmSignUp": "client",
               "AWSCognitoIdentityProviderService.AdminConfirmSignUp": "admin",
               "AWSCognitoIdentityProviderService.ConfirmForgotPassword": "forgot"}
    SOURCES = {"client": "PostConfirmation_ConfirmSignUp",
               "admin": "PostConfirmation_ConfirmSignUp",
               "forgot": "PostConfirmation_ConfirmForgotPassword"}
    ATTEMPT_TIMEOUT_S = 5
    MAX_ATTEMPTS = 3

    def __init__(self, app, endpoint, region):
        self.app = app
        self.endpoint = endpoint
        self.region = region
        self.functions = {}
        self.client_pools = {}
        self.lock = threading.Lock()
        self._idp = None

    @property
    def idp(self):
        # The stand-in's own Cognito, through its public API (created on first use: the server
        # must be listening).
        if self._idp is None:
            self._idp = boto3.client("cognito-idp", endpoint_url=self.endpoint, region_name=self.region,
                                     aws_access_key_id="standin", aws_secret_access_key="standin")
        return self._idp

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == "/_standin/functions" and environ.get("REQUEST_METHOD") == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            spec = json.loads(environ["wsgi.input"].read(length) or b"{}")
            with self.lock:
                if spec.get("url"):
                    self.functions[spec["arn"]] = spec["url"]
                else:
                    self.functions.pop(spec.get("arn"), None)
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b"{}"]
        kind = self.TARGETS.get(environ.get("HTTP_X_AMZ_TARGET", ""))
        if kind is None:
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = BytesIO(body)
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        answer = b"".join(self.app(environ, capture))
        if captured["status"].startswith("200"):
            try:
                error = self.post_confirmation(kind, json.loads(body or b"{}"))
            except Exception as e:  # the stand-in's own failure: say so, as Cognito would
                error = ("UnexpectedLambdaException", f"PostConfirmation invocation failed: {e}")
            if error is not None:
                typ, message = error
                answer = json.dumps({"__type": typ, "message": message}).encode()
                captured["status"] = "400 Bad Request"
                # moto's own headers stay (CORS among them: browsers must read the error too).
                captured["headers"] = [(k, v) for k, v in captured["headers"]
                                       if k.lower() not in ("content-type", "x-amzn-errortype")]
                captured["headers"] += [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", typ)]
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(answer))))
        start_response(captured["status"], headers)
        return [answer]

    def pool_of_client(self, client_id):
        with self.lock:
            if client_id in self.client_pools:
                return self.client_pools[client_id]
        # Every page: a stack that has run the tests a few times holds more than one page of pools.
        for pools in self.idp.get_paginator("list_user_pools").paginate(MaxResults=60):
            for pool in pools["UserPools"]:
                for clients in self.idp.get_paginator("list_user_pool_clients").paginate(
                        UserPoolId=pool["Id"], MaxResults=60):
                    for c in clients["UserPoolClients"]:
                        with self.lock:
                            self.client_pools[c["ClientId"]] = pool["Id"]
        with self.lock:
            return self.client_pools.get(client_id)

    def post_confirmation(self, kind, request):
        """Runs the pool's PostConfirmation trigger, if any. None, or (error type, message)."""
        if kind in ("client", "forgot"):
            pool_id, client_id = self.pool_of_client(request.get("ClientId")), request.get("ClientId")
        else:
            pool_id, client_id = request.get("UserPoolId"), "CLIENT_ID_NOT_APPLICABLE"
        if not pool_id:
            return None
        arn = self.idp.describe_user_pool(UserPoolId=pool_id)["UserPool"].get("LambdaConfig", {}).get("PostConfirmation")
        if not arn:
            return None
        user = self.idp.admin_get_user(UserPoolId=pool_id, Username=request["Username"])
        attributes = {a["Name"]: a["Value"] for a in user.get("UserAttributes", [])}
        attributes["cognito:user_status"] = "CONFIRMED"
        event = {
            "version": "1", "region": self.region, "userPoolId": pool_id, "userName": user["Username"],
            "callerContext": {"awsSdkVersion": "aws-sdk-unknown-unknown", "clientId": client_id},
            "triggerSource": self.SOURCES[kind],
            "request": {"userAttributes": attributes, "clientMetadata": request.get("ClientMetadata") or {}},
            "response": {},
        }
        with self.lock:
            url = self.functions.get(arn)
        if url is None:
            # The caller (a person, on a page) sees this text: no ARN in it. The log says which.
            print(f"aws-standin: no function registered for {arn}: dev/functions.sh up starts it",
                  file=sys.stderr, flush=True)
            return ("UnexpectedLambdaException",
                    "PostConfirmation invocation failed due to error ResourceNotFoundException.")
        data = json.dumps(event).encode()
        for attempt in range(1, self.MAX_ATTEMPTS + 1):
            req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.ATTEMPT_TIMEOUT_S) as response:
                    payload = response.read()
                    function_error = response.headers.get("X-Amz-Function-Error")
                    status = response.status
            except urllib.error.HTTPError as e:
                payload, function_error, status = e.read(), e.headers.get("X-Amz-Function-Error") or "Unhandled", e.code
            except (TimeoutError, urllib.error.URLError) as e:
                timed_out = isinstance(e, TimeoutError) or isinstance(getattr(e, "reason", None), TimeoutError)
                if timed_out and attempt < self.MAX_ATTEMPTS:
                    print(f"aws-standin: PostConfirmation attempt {attempt} timed out; retrying", file=sys.stderr, flush=True)
                    continue
                reason = "TimeoutError" if timed_out else "ServiceException"
                return ("UnexpectedLambdaException", f"PostConfirmation invocation failed due to error {reason}.")
            try:
                doc = json.loads(payload or b"null")
            except ValueError:
                doc = None
            if function_error or status >= 300 or (isinstance(doc, dict) and "errorMessage" in doc and "errorType" in doc):
                message = doc.get("errorMessage", "") if isinstance(doc, dict) else ""
                return ("UserLambdaValidationException", f"PostConfirmation failed with error {message}.")
            return None
        return None


def seed(url, region, spec):
    kw = dict(endpoint_url=url, region_name=region, aws_access_key_id="seed", aws_secret_access_key="seed")
    sm = boto3.client("secretsmanager", **kw)
    for s in spec.get("secrets", []):
        sm.create_secret(Name=s["name"], SecretString=json.dumps(s["value"]))
    eks = boto3.client("eks", **kw)
    for c in spec.get("clusters", []):
        eks.create_cluster(
            name=c["name"],
            roleArn=c["role_arn"],
            resourcesVpcConfig={"subnetIds": [], "securityGroupIds": []},
        )
    out = {}
    sqs = boto3.client("sqs", **kw)
    for q in spec.get("queues", []):
        dlq = sqs.create_queue(QueueName=q["name"] + "-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        url_ = sqs.create_queue(QueueName=q["name"], Attributes={
            "VisibilityTimeout": str(q.get("visibility_timeout", 30)),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": q.get("max_receive_count", 3)}),
        })["QueueUrl"]
        out[q["name"]] = {"url": url_, "dlq_url": dlq}
    idp = boto3.client("cognito-idp", **kw)
    for p in spec.get("user_pools", []):
        lambda_config = {"PostConfirmation": p["post_confirmation"]} if p.get("post_confirmation") else {}
        pool_id = idp.create_user_pool(PoolName=p["name"], LambdaConfig=lambda_config,
                                       AutoVerifiedAttributes=["email"])["UserPool"]["Id"]
        out[p["name"]] = {"id": pool_id}
        for c in p.get("clients", []):
            client = idp.create_user_pool_client(
                UserPoolId=pool_id, ClientName=c, GenerateSecret=False,
                ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"])
            out[p["name"]].setdefault("clients", {})[c] = client["UserPoolClient"]["ClientId"]
    ddb = boto3.client("dynamodb", **kw)
    for t in spec.get("tables", []):
        out[t["name"]] = {"stream_arn": create_registry_table(ddb, t["name"])}
    return out


def transactions_roll_back_only_what_they_touch():
    """moto rolls a failed TransactWriteItems back by deep-copying every table it touches before
    it starts: with a registry of a few thousand items one placement's transaction took ~130 ms
    here, where DynamoDB's take ~10-20 ms, and the benchmark of what placement adds measured
    moto's copy. Here only the items the transaction names (and the stream records it adds) are
    kept and put back on failure: the same outcome, for the tables this project has (a hash key
    only; others keep moto's whole-table copy). Writes are serialised (AtomicWritesShim), so no
    other write sees the half-applied transaction."""
    import moto.dynamodb.models as models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    original = DynamoDBBackend.transact_write_items
    real_copy = models.copy

    class TablesUncopied:
        @staticmethod
        def deepcopy(x, *rest, **kw):
            return x if isinstance(x, Table) else real_copy.deepcopy(x, *rest, **kw)

    def transact_write_items(self, transact_items):
        saved = []
        for entry in transact_items:
            op_type, op = next(iter(entry.items()))
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue
            if table.range_key_attr is not None:
                return original(self, transact_items)
            key = op["Item"] if op_type == "Put" else op.get("Key", {})
            if table.hash_key_attr not in key:
                continue
            h = DynamoType(key[table.hash_key_attr])
            before = real_copy.deepcopy(table.items[h]) if h in table.items else None
            shard = table.stream_shard
            saved.append((table, h, before, len(shard.items) if shard is not None else None))
        models.copy = TablesUncopied
        try:
            return original(self, transact_items)
        except Exception:
            for table, h, before, streamed in reversed(saved):
                if before is None:
                    table.items.pop(h, None)
                else:
                    table.items[h] = before
                if streamed is not None:
                    del table.stream_shard.items[streamed:]
            raise
        finally:
            models.copy = real_copy

    DynamoDBBackend.transact_write_items = transact_write_items


def create_registry_table(ddb, name):
    """The tenant registry as template.yml declares it: key `sub`, on demand, with a stream of
    new and old images (the lifecycle events' source). Tests make tables of their own with it."""
    table = ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "sub", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "sub", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return table["TableDescription"]["LatestStreamArn"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--region", required=True)
    # Repeated, in step: one --cluster, --endpoint and --ca-file per cluster of the stack.
    ap.add_argument("--cluster", required=True, action="append")
    ap.add_argument("--endpoint", required=True, action="append")
    ap.add_argument("--ca-file", required=True, action="append")
    ap.add_argument("--seed", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--template", required=True, help="template.yml: the Pipe it runs (dev/pipe_standin.py)")
    args = ap.parse_args()
    if not len(args.cluster) == len(args.endpoint) == len(args.ca_file):
        ap.error("give one --endpoint and one --ca-file per --cluster")
    clusters = {}
    for name, endpoint, ca_file in zip(args.cluster, args.endpoint, args.ca_file):
        with open(ca_file, "rb") as f:
            clusters[name] = (endpoint, base64.b64encode(f.read()).decode())
    transactions_roll_back_only_what_they_touch()
    moto_modules_listed_once()
    app = PipeShim(FaultShim(CognitoTriggerShim(AtomicWritesShim(DescribeClusterShim(
        ArrivalOrder(DomainDispatcherApplication(create_backend_app), 4), clusters)),
        f"http://{args.listen}", args.region)), f"http://{args.listen}", args.region, args.template)
    host, port = args.listen.rsplit(":", 1)
    # A burst of sign-ups opens hundreds of connections at once; with werkzeug's backlog of 128
    # the rest are dropped and retried by the kernel a second later, which an AWS endpoint never
    # does to its clients.
    ThreadedWSGIServer.request_queue_size = 4096
    # No access log: a line per request was ~30 % of the stand-in's CPU (1.01 s against 0.72 s
    # for the same 40 sign-ups); errors are still logged.
    WSGIRequestHandler.log_request = lambda self, code="-", size="-": None
    server = make_server(host, int(port), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with open(args.seed) as f:
        created = seed(f"http://{args.listen}", args.region, json.load(f))
    with open(args.out + ".tmp", "w") as f:
        json.dump(created, f)
    os.replace(args.out + ".tmp", args.out)
    print(f"aws-standin: listening on http://{args.listen}, seeded", file=sys.stderr, flush=True)
    thread.join()


if __name__ == "__main__":
    main()
