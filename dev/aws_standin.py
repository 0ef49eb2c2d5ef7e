#!/usr/bin/env python3
"""The stack's AWS stand-in: moto (Secrets Manager, EKS) behind one small shim.

moto's DescribeCluster answers with a made-up endpoint and CA. The shim rewrites exactly those
two fields, for the stack's own cluster only, to the real kube-apiserver's endpoint and CA, so
the function's DescribeCluster path runs for real. Everything else is moto, unchanged.

Usage: aws_standin.py --listen IP:PORT --cluster NAME --endpoint URL --ca-file PEM --seed FILE
The seed file lists what to create once the server is up (the admin secret, the cluster).
"""
import argparse
import base64
import json
import re
import sys
import threading

import boto3
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


class DescribeClusterShim:
    def __init__(self, app, cluster, endpoint, ca_data):
        self.app = app
        self.path = re.compile(r"^/clusters/" + re.escape(cluster) + r"/?$")
        self.endpoint = endpoint
        self.ca_data = ca_data

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") != "GET" or not self.path.match(environ.get("PATH_INFO", "")):
            return self.app(environ, start_response)
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        if captured["status"].startswith("200"):
            doc = json.loads(body)
            doc["cluster"]["endpoint"] = self.endpoint
            doc["cluster"]["certificateAuthority"] = {"data": self.ca_data}
            body = json.dumps(doc).encode()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(captured["status"], headers)
        return [body]


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--region", required=True)
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--ca-file", required=True)
    ap.add_argument("--seed", required=True)
    args = ap.parse_args()
    with open(args.ca_file, "rb") as f:
        ca_data = base64.b64encode(f.read()).decode()
    app = DescribeClusterShim(DomainDispatcherApplication(create_backend_app), args.cluster, args.endpoint, ca_data)
    host, port = args.listen.rsplit(":", 1)
    server = make_server(host, int(port), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with open(args.seed) as f:
        seed(f"http://{args.listen}", args.region, json.load(f))
    print(f"aws-standin: listening on http://{args.listen}, seeded", file=sys.stderr, flush=True)
    thread.join()


if __name__ == "__main__":
    main()
