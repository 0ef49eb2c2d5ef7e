#!/usr/bin/env python3
"""A local stand-in for AWS STS GetCallerIdentity, as aws-iam-authenticator calls it.

It checks a presigned GetCallerIdentity URL the way STS does: known access key, matching
session token, credential scope (date, region, service `sts`), age of X-Amz-Date, and the SigV4
signature recomputed over the request it actually received - including the x-k8s-aws-id header
the authenticator adds with *its* cluster id. This is an independent implementation (stdlib
only), so the Rust signer is checked against something other than itself.

Usage: sts_standin.py --listen IP:PORT --cert CERT --key KEY --identities FILE
"""
import argparse
import datetime as dt
import hashlib
import hmac
import json
import ssl
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlsplit

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_AGE = dt.timedelta(minutes=15)
MAX_SKEW = dt.timedelta(minutes=5)


def enc(s):
    return quote(s, safe="-_.~")


def signing_key(secret, date, region, service):
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


class Rejection(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def verify(method, path, query_pairs, headers, identities, now):
    q = {}
    for k, v in query_pairs:
        if k in q:
            raise Rejection(400, "InvalidParameterCombination", f"duplicate parameter {k}")
        q[k] = v
    if q.get("Action") != "GetCallerIdentity" or q.get("Version") != "2011-06-15":
        raise Rejection(400, "InvalidAction", "only GetCallerIdentity 2011-06-15 is served")
    if q.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        raise Rejection(400, "IncompleteSignature", "X-Amz-Algorithm must be AWS4-HMAC-SHA256")
    for required in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature"):
        if required not in q:
            raise Rejection(400, "IncompleteSignature", f"missing {required}")
    try:
        akid, date, region, service, terminator = q["X-Amz-Credential"].split("/")
    except ValueError:
        raise Rejection(400, "IncompleteSignature", "malformed X-Amz-Credential")
    if service != "sts" or terminator != "aws4_request":
        raise Rejection(403, "SignatureDoesNotMatch", "credential scope must be .../sts/aws4_request")
    identity = identities.get(akid)
    if identity is None:
        raise Rejection(403, "InvalidClientTokenId", "The security token included in the request is invalid.")
    if identity.get("session_token") != q.get("X-Amz-Security-Token"):
        raise Rejection(403, "InvalidClientTokenId", "The security token included in the request is invalid.")
    try:
        signed_at = dt.datetime.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise Rejection(400, "IncompleteSignature", "malformed X-Amz-Date")
    if signed_at.strftime("%Y%m%d") != date:
        raise Rejection(403, "SignatureDoesNotMatch", "credential scope date does not match X-Amz-Date")
    if now - signed_at > MAX_AGE:
        raise Rejection(403, "ExpiredToken", "Signature expired")
    if signed_at - now > MAX_SKEW:
        raise Rejection(403, "SignatureDoesNotMatch", "Signature not yet current")

    signed_headers = q["X-Amz-SignedHeaders"].split(";")
    lower = {k.lower(): v for k, v in headers.items()}
    if "host" not in signed_headers:
        raise Rejection(403, "SignatureDoesNotMatch", "host must be signed")
    canonical_headers = ""
    for name in signed_headers:
        if name not in lower:
            raise Rejection(403, "SignatureDoesNotMatch", f"signed header {name} not sent")
        canonical_headers += f"{name}:{' '.join(lower[name].strip().split())}\n"
    canonical_query = "&".join(
        f"{enc(k)}={enc(v)}" for k, v in sorted((k, v) for k, v in q.items() if k != "X-Amz-Signature")
    )
    canonical_request = "\n".join(
        [method, path or "/", canonical_query, canonical_headers, ";".join(signed_headers), EMPTY_SHA256]
    )
    scope = f"{date}/{region}/sts/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", q["X-Amz-Date"], scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    expected = hmac.new(
        signing_key(identity["secret_access_key"], date, region, "sts"), string_to_sign.encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, q["X-Amz-Signature"]):
        raise Rejection(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    return identity


class Handler(BaseHTTPRequestHandler):
    server_version = "sts-standin"
    identities = {}

    def log_message(self, fmt, *args):
        sys.stderr.write("sts-standin: " + (fmt % args) + "\n")

    def log_request(self, code="-", size="-"):
        # The query string is a bearer credential (signature, session token): log the path only.
        self.log_message("%s %s %s", self.command, urlsplit(self.path).path, code)

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        request_id = str(uuid.uuid4())
        try:
            identity = verify(
                "GET",
                url.path,
                parse_qsl(url.query, keep_blank_values=True),
                dict(self.headers.items()),
                self.identities,
                dt.datetime.now(dt.timezone.utc),
            )
        except Rejection as r:
            self.log_message("rejected: %s %s", r.code, r.message)
            self.reply(
                r.status,
                {"Error": {"Code": r.code, "Message": r.message, "Type": "Sender"}, "RequestId": request_id},
            )
            return
        self.reply(
            200,
            {
                "GetCallerIdentityResponse": {
                    "GetCallerIdentityResult": {
                        "Account": identity["account"],
                        "Arn": identity["arn"],
                        "UserId": identity["user_id"],
                    },
                    "ResponseMetadata": {"RequestId": request_id},
                }
            },
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--identities", required=True)
    args = ap.parse_args()
    with open(args.identities) as f:
        Handler.identities = {i["access_key_id"]: i for i in json.load(f)}
    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"sts-standin: listening on https://{args.listen}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
