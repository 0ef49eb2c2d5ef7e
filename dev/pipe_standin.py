"""The template's EventBridge Pipe, run by the stack's AWS stand-in (AWS runs it; moto does not).

What runs is read from template.yml when the stand-in starts — the `AWS::Pipes::Pipe` resource
(plain CloudFormation, which the SAM transform passes through unchanged): its source parameters
(batch size, retry limit, maximum record age, dead-letter target), its filter patterns (matched
by moto's own EventBridge pattern matcher), its target's source, detail type and input
template (rendered as Pipes renders it: a variable's string value is inserted as it is, so an
unquoted string makes text that is not JSON, and the target refuses it). Nothing of the Pipe is
copied here: a template change that breaks the transform breaks the tests.

`POST /_standin/pipes {"source": "<stream ARN>"}` runs the Pipe over that registry stream: the
first call makes the source's own bus (a rule on it delivers every event of the Pipe's source to
a queue of its own) and starts at TRIM_HORIZON; each call carries every record written since the
last one, synchronously, and answers {"queue_url", "delivered", "filtered", "failed",
"dead_lettered"}. Tests read what the *bus* delivered from that queue. A record whose
transformed input is not a JSON object fails its PutEvents as EventBridge fails it; it is retried
`MaximumRetryAttempts` times and then sent to the dead-letter queue (a queue of the stand-in's
named after the template's), and logged, as the Pipe's ERROR log level would.
"""
import datetime
import json
import re
import sys
import threading
import uuid

import boto3
import yaml
from moto.events.models import EventPattern

from cfn_yaml import CfnLoader


def pipe_of(template_path):
    """The template's one Pipe: (logical id, properties)."""
    with open(template_path) as f:
        template = yaml.load(f, Loader=CfnLoader)
    pipes = [(k, r["Properties"]) for k, r in template["Resources"].items() if r["Type"] == "AWS::Pipes::Pipe"]
    if len(pipes) != 1:
        sys.exit(f"pipe-standin: {template_path} declares {len(pipes)} pipes; expected one")
    return pipes[0]


_VARIABLE = re.compile(r"<([^<>]+)>")


def _path(record, path):
    """A `$.a.b.c` JSONPath into the record (what the template uses); None when absent."""
    node = record
    for part in path.removeprefix("$.").split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def render(template, record, ingested):
    """The input template with each variable replaced as Pipes replaces it: a string as it is
    (inside quotes only if the template quotes it), anything else as JSON."""
    def value(match):
        name = match.group(1)
        if name == "aws.pipes.event.ingestion-time":
            return ingested
        v = _path(record, name) if name.startswith("$.") else None
        if v is None:
            return ""
        return v if isinstance(v, str) else json.dumps(v)
    return _VARIABLE.sub(value, template)


class PipeShim:
    def __init__(self, app, endpoint, region, template_path):
        self.app = app
        self.endpoint = endpoint
        self.region = region
        self.logical_id, self.props = pipe_of(template_path)
        self.lock = threading.Lock()
        self.sources = {}
        self._clients = None

    def clients(self):
        if self._clients is None:
            kw = dict(endpoint_url=self.endpoint, region_name=self.region,
                      aws_access_key_id="pipe", aws_secret_access_key="pipe")
            self._clients = {n: boto3.client(n, **kw) for n in ("dynamodbstreams", "events", "sqs")}
        return self._clients

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != "/_standin/pipes" or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        spec = json.loads(environ["wsgi.input"].read(length) or b"{}")
        try:
            with self.lock:
                answer, status = self.run(spec["source"]), "200 OK"
        except Exception as e:  # the stand-in's own failure: say which
            answer, status = {"error": f"{type(e).__name__}: {e}"}, "500 Internal Server Error"
        body = json.dumps(answer).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def target(self, source):
        """The source's bus, with a rule delivering every event of the Pipe's source to a queue."""
        if source in self.sources:
            return self.sources[source]
        c = self.clients()
        name = f"pipe-{uuid.uuid4().hex[:12]}"
        c["events"].create_event_bus(Name=name)
        queue_url = c["sqs"].create_queue(QueueName=name)["QueueUrl"]
        queue_arn = c["sqs"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        bus_params = self.props["TargetParameters"]["EventBridgeEventBusParameters"]
        c["events"].put_rule(Name=name, EventBusName=name,
                             EventPattern=json.dumps({"source": [bus_params["Source"]]}))
        c["events"].put_targets(Rule=name, EventBusName=name, Targets=[{"Id": "tests", "Arn": queue_arn}])
        dlq = None
        if self.props["SourceParameters"]["DynamoDBStreamParameters"].get("DeadLetterConfig"):
            dlq = c["sqs"].create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        iterators = {}
        for shard in c["dynamodbstreams"].describe_stream(StreamArn=source)["StreamDescription"]["Shards"]:
            iterators[shard["ShardId"]] = c["dynamodbstreams"].get_shard_iterator(
                StreamArn=source, ShardId=shard["ShardId"],
                ShardIteratorType=self.props["SourceParameters"]["DynamoDBStreamParameters"]["StartingPosition"],
            )["ShardIterator"]
        self.sources[source] = {"bus": name, "queue_url": queue_url, "dlq": dlq, "iterators": iterators}
        return self.sources[source]

    def run(self, source):
        c = self.clients()
        t = self.target(source)
        stream = self.props["SourceParameters"]["DynamoDBStreamParameters"]
        patterns = [EventPattern(f["Pattern"], json.loads(f["Pattern"]))
                    for f in self.props["SourceParameters"].get("FilterCriteria", {}).get("Filters", [])]
        bus_params = self.props["TargetParameters"]["EventBridgeEventBusParameters"]
        template = self.props["TargetParameters"]["InputTemplate"]
        retries = stream.get("MaximumRetryAttempts", -1)
        counts = {"delivered": 0, "filtered": 0, "failed": 0, "dead_lettered": 0}
        for shard, iterator in list(t["iterators"].items()):
            while iterator:
                page = c["dynamodbstreams"].get_records(ShardIterator=iterator, Limit=stream.get("BatchSize", 100))
                records = page["Records"]
                if records:
                    iterator = page.get("NextShardIterator")
                    t["iterators"][shard] = iterator
                else:
                    break
                for record in records:
                    record = json.loads(json.dumps(record, default=str))
                    if patterns and not any(p.matches_event(record) for p in patterns):
                        counts["filtered"] += 1
                        continue
                    ingested = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                    text = render(template, record, ingested)
                    try:
                        detail = json.loads(text)
                        ok = isinstance(detail, dict)
                    except ValueError:
                        ok = False
                    if not ok:
                        counts["failed"] += 1
                        # The same input fails every attempt: after the retry limit, the record
                        # goes to the dead-letter target; without one, the shard stays blocked.
                        print(f"pipe-standin: {self.logical_id}: the target refused the transformed input "
                              f"(not a JSON object; retried {retries} times): {text[:300]}", file=sys.stderr, flush=True)
                        if t["dlq"] is None:
                            print(f"pipe-standin: {self.logical_id} has no dead-letter target: the shard is blocked",
                                  file=sys.stderr, flush=True)
                            t["iterators"][shard] = None
                            return {"queue_url": t["queue_url"], **counts, "blocked": True}
                        c["sqs"].send_message(QueueUrl=t["dlq"], MessageBody=json.dumps(
                            {"source": source, "sequenceNumber": record["dynamodb"].get("SequenceNumber")}))
                        counts["dead_lettered"] += 1
                        continue
                    detail_type = bus_params.get("DetailType", "")
                    if detail_type.startswith("$."):
                        detail_type = _path(record, detail_type) or ""
                    out = c["events"].put_events(Entries=[{
                        "Source": bus_params["Source"], "DetailType": detail_type,
                        "Detail": json.dumps(detail), "EventBusName": t["bus"]}])
                    if out.get("FailedEntryCount"):
                        counts["failed"] += 1
                        print(f"pipe-standin: PutEvents refused: {out['Entries']}", file=sys.stderr, flush=True)
                        continue
                    counts["delivered"] += 1
        return {"queue_url": t["queue_url"], **counts}
