#!/usr/bin/env python3
"""A person signs up on the stack, as a frontend does it: SignUp, ConfirmSignUp (the stack's
Cognito runs the PostConfirmation trigger inside that call), InitiateAuth, then GET /tenant
with the access token until the tenant is ready. Prints what happened (never a password).

Usage: signup.py  (with .stack/env and .stack/functions.env loaded). Exit 1 if no tenant.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

import boto3

env = os.environ
idp = boto3.client("cognito-idp")
client = env["USER_POOL_CLIENT_IDS"]
email = f"demo-{uuid.uuid4().hex[:8]}@example.com"
password = "Correct-horse-battery-1!"

sub = idp.sign_up(ClientId=client, Username=email, Password=password,
                  UserAttributes=[{"Name": "email", "Value": email}])["UserSub"]
print(f"signup: SignUp {email}: sub {sub}")
t0 = time.monotonic()
try:
    idp.confirm_sign_up(ClientId=client, Username=email, ConfirmationCode="123456")
except idp.exceptions.ClientError as e:
    sys.exit(f"signup: ConfirmSignUp answered an error (shown to the person): {e}")
print(f"signup: ConfirmSignUp returned in {(time.monotonic() - t0) * 1000:.0f} ms "
      "(Cognito ran the PostConfirmation trigger inside it)")
tokens = idp.initiate_auth(ClientId=client, AuthFlow="USER_PASSWORD_AUTH",
                           AuthParameters={"USERNAME": email, "PASSWORD": password})["AuthenticationResult"]
url = env["STACK_API_URL"] + "/tenant"
deadline = time.monotonic() + 60
while True:
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + tokens["AccessToken"]})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, body = r.status, json.load(r)
    except urllib.error.HTTPError as e:
        status, body = e.code, json.loads(e.read() or b"{}")
    if status != 202 or time.monotonic() > deadline:
        break
    print("signup: GET /tenant: 202 provisioning (setting up the workspace); asking again")
    time.sleep(2)
if status != 200:
    sys.exit(f"signup: GET /tenant answered {status}: {body}")
shown = {k: ("(hidden)" if k == "password" else v) for k, v in body.items()}
print(f"signup: GET /tenant with the user's access token: 200 {json.dumps(shown)}")
print(f"SUB={sub}")
