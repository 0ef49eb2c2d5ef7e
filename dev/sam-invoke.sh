#!/usr/bin/env bash
# `make sam-invoke [EVENT=file] [ARCH=x86_64|arm64]`: SAM's own `sam local invoke` of the
# trigger against the local stack, offline, on a fresh machine. With no EVENT it sends the
# fixture with the sub of a fresh user of the stack's pool and checks the tenant is complete,
# then drives the frontend's API (TenantApiFunction) with `sam local generate-event apigateway
# http-api-proxy`, filled with that user's real access token and claims, and checks it answers
# that tenant; `dev/sam-invoke.sh --ci` also sends a malformed event and an API request with no
# token (what `make test` runs).
#
# What it sets up, and takes down again (by PID; nothing already running is touched):
#   - dockerd (Debian's docker.io), started by hand with its own socket, state and bridge;
#   - the provided.al2023 base image, built locally (debootstrap minbase, docker import) and
#     cached in ~/.cache/post-signup/images: nothing is pulled from a registry;
#   - for arm64, qemu-user-static registered with binfmt_misc (removed again if we added it);
#   - forwarders from the bridge to the stack's loopback-only services.
# It checks the function's output, not SAM's exit status (which is 0 even when it fails).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. dev/versions.sh
. dev/progress.sh
ARCH=${ARCH:-x86_64}
CI_MODE=
EVENT=
for a in "$@"; do
  case "$a" in
    --ci) CI_MODE=1 ;;
    "") ;;
    *) EVENT=$a ;;
  esac
done
BRIDGE=psam0
BRIDGE_NET=10.213.7
BRIDGE_IP=$BRIDGE_NET.1
# What a deployer passes as the BackendImage parameter: it must reach the tenant's Deployment.
BACKEND_IMAGE=registry.example.com/post-signup/backend:sam-invoke
IMAGES=$CACHE_DIR/images
log() { echo "sam-invoke: $*" >&2; }
die() { echo "sam-invoke: error: $*" >&2; exit 1; }

[ -f .stack/env ] || die "the stack is not up: run 'make stack-up'"
case "$ARCH" in x86_64|arm64) ;; *) die "ARCH must be x86_64 or arm64" ;; esac
W=$(mktemp -d /tmp/post-signup-sam.XXXXXX)
DOCKER_SOCK=$W/docker.sock
dockerd_pid= forward_pid= made_bridge= made_binfmt= mounted_binfmt=

cleanup() {
  if [ -n "${SAM_INVOKE_KEEP:-}" ]; then log "kept for debugging: $W (DOCKER_HOST=unix://$DOCKER_SOCK)"; return 0; fi
  if [ -n "$forward_pid" ]; then kill "$forward_pid" 2>/dev/null || true; fi
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$dockerd_pid" 2>/dev/null || true
  fi
  if [ -n "$made_bridge" ]; then ip link del "$BRIDGE" 2>/dev/null || true; fi
  if [ -n "$made_binfmt" ]; then echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || true; fi
  if [ -n "$mounted_binfmt" ]; then umount /proc/sys/fs/binfmt_misc 2>/dev/null || true; fi
  rm -rf "$W"
}
trap cleanup EXIT

install_engine() {
  local need=()
  command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  if [ "$ARCH" = arm64 ] && [ ! -x /usr/bin/qemu-aarch64-static ]; then need+=(qemu-user-static); fi
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  bash dev/install.sh --lint >/dev/null
}

# arm64 binaries (the function, SAM's emulator, the image's shell) run under qemu.
register_binfmt() {
  [ "$ARCH" = arm64 ] || return 0
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && mounted_binfmt=1
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    # Debian's own registration line, with F: the interpreter is opened now, so it also
    # works inside containers that do not have it.
    grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf | head -1 > /proc/sys/fs/binfmt_misc/register
    made_binfmt=1
  fi
}

start_dockerd() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    made_bridge=1
  fi
  mkdir -p "$CACHE_DIR/docker"
  # Own socket, state, exec root and bridge, and no iptables rules: containers only talk to the
  # bridge address, and SAM reaches the emulator through docker's userland proxy.
  dockerd --host "unix://$DOCKER_SOCK" --data-root "$CACHE_DIR/docker" --exec-root "$W/exec" \
    --pidfile "$W/dockerd.pid" --bridge "$BRIDGE" --iptables=false --ip-masq=false \
    --storage-driver vfs > "$W/dockerd.log" 2>&1 &
  dockerd_pid=$!
  export DOCKER_HOST=unix://$DOCKER_SOCK
  for _ in $(seq 150); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$dockerd_pid" 2>/dev/null || { tail -20 "$W/dockerd.log" >&2; die "dockerd exited"; }
    sleep 0.2
  done
  tail -20 "$W/dockerd.log" >&2; die "dockerd did not start"
}

# SAM's base image for provided.al2023, made here: a Debian minbase root filesystem with what
# Lambda's image gives a Rust bootstrap (glibc, a shell, the CA certificates that rustls'
# platform roots load), cached as a tarball keyed by suite, architecture and make-up.
base_image() {
  local deb_arch tag tarball
  deb_arch=$([ "$ARCH" = arm64 ] && echo arm64 || echo amd64)
  tag=public.ecr.aws/lambda/provided:al2023-$ARCH
  local version=3  # bump when the image's make-up below changes
  if [ "$(docker image inspect -f '{{index .Config.Labels "post-signup.base"}}' "$tag" 2>/dev/null)" = "$version" ]; then
    return 0
  fi
  tarball=$IMAGES/debian-bookworm-minbase-$deb_arch-v$version.tar
  if [ ! -s "$tarball" ]; then
    mkdir -p "$IMAGES"
    local rootfs=$W/rootfs
    log "building the base image: debootstrap bookworm minbase ($deb_arch), once per machine"
    if [ "$deb_arch" = amd64 ]; then
      heartbeat "debootstrapping" debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    else
      heartbeat "debootstrapping (first stage)" debootstrap --variant=minbase --include=ca-certificates --arch=arm64 --foreign bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
      heartbeat "debootstrapping (second stage, emulated)" chroot "$rootfs" /debootstrap/debootstrap --second-stage >/dev/null
    fi
    mkdir -p "$rootfs/var/task" "$rootfs/var/runtime" "$rootfs/opt"
    # Where the emulator looks first for a custom runtime's bootstrap.
    printf '#!/bin/sh\nexec /var/task/bootstrap "$@"\n' > "$rootfs/var/runtime/bootstrap"
    chmod +x "$rootfs/var/runtime/bootstrap"
    rm -rf "$rootfs/var/cache/apt/archives"/*.deb "$rootfs/var/lib/apt/lists"/*
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  # As in Lambda: the emulator runs the handler `bootstrap` from PATH, which includes the task root.
  docker import --platform "linux/$deb_arch" -c 'WORKDIR /var/task' \
    -c 'ENV LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime PATH=/var/task:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c "LABEL post-signup.base=$version" "$tarball" "$tag" >/dev/null
  # SAM's emulation image is built on the base image: let SAM build it again.
  docker rmi -f "public.ecr.aws/lambda/provided:al2023-rapid-$ARCH" >/dev/null 2>&1 || true
}

# With a backend template of a user's own shipped in the package (BACKEND_TEMPLATE, as a user
# runs `make package`), which the tenants' Deployments must then follow.
CUSTOM_TEMPLATE=tests/data/backend-custom.yaml
build_function() {
  BACKEND_TEMPLATE=$CUSTOM_TEMPLATE BUILD_DIR=.aws-sam/build-$ARCH ARCH=$ARCH bash dev/package.sh
}

start_forwarders() {
  . .stack/ports
  read -r F_MGMT F_AWS F_API < <(python3 -c "
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(('$BRIDGE_IP', 0))
print(' '.join(str(s.getsockname()[1]) for s in socks))")
  python3 dev/forward.py "$BRIDGE_IP" "$F_MGMT:127.0.0.1:$MGMT_PORT" "$F_AWS:127.0.0.1:$AWS_PORT" \
    "$F_API:127.0.0.1:$API_PORT" > "$W/forward.log" 2>&1 &
  forward_pid=$!
  for _ in $(seq 50); do grep -q ready "$W/forward.log" 2>/dev/null && return 0; sleep 0.1; done
  die "the forwarders did not start"
}

# invoke NAME EVENT_FILE [FUNCTION]: one `sam local invoke`; the answer in $W/NAME.out.
invoke() {
  local name=$1 event=$2 fn=${3:-PostSignupFunction} ca t0
  ca=$(base64 -w0 < "$STACK_CA_FILE")
  # The stack's settings go in through --env-vars (SAM resolves no Fn::If, and these override
  # only variables the template declares; every one of these is declared).
  python3 - "$W/env.json" <<PY
import json, sys
queue = "$HANDOFF_QUEUE_URL".replace("127.0.0.1", "$BRIDGE_IP").replace(":$AWS_PORT/", ":$F_AWS/")
json.dump({"PostSignupFunction": {
    "EKS_CLUSTER_NAME": "$EKS_CLUSTER_NAME",
    "EKS_ENDPOINT": "https://kubernetes:$F_API",
    "EKS_CA_DATA": "$ca",
    "TENANT_NAMESPACE": "$TENANT_NAMESPACE",
    "RABBITMQ_MANAGEMENT_URL": "http://$BRIDGE_IP:$F_MGMT",
    "RABBITMQ_AMQP_URL": "$RABBITMQ_AMQP_URL",
    "RABBITMQ_ADMIN_SECRET_ID": "$RABBITMQ_ADMIN_SECRET_ID",
    "TENANT_SECRET_PREFIX": "$TENANT_SECRET_PREFIX",
    "HANDOFF_QUEUE_URL": queue,
    "REGISTRY_TABLE": "$REGISTRY_TABLE",
    "BACKEND_IMAGE": "$BACKEND_IMAGE",
    "BACKEND_TEMPLATE_PATH": "/var/task/backend-template.yaml",
    "PLANS_PATH": "",
    "CELLS_PATH": "",
    "AWS_ENDPOINT_URL": "http://$BRIDGE_IP:$F_AWS",
}, "TenantApiFunction": {
    "USER_POOL_ID": "$USER_POOL_ID",
    "USER_POOL_CLIENT_IDS": "$USER_POOL_CLIENT_IDS",
    "COGNITO_JWKS_URL": "http://$BRIDGE_IP:$F_AWS/$USER_POOL_ID/.well-known/jwks.json",
    "REGISTRY_TABLE": "$REGISTRY_TABLE",
    "TENANT_SECRET_PREFIX": "$TENANT_SECRET_PREFIX",
    "RABBITMQ_WEB_STOMP_URL": "$RABBITMQ_WEB_STOMP_URL",
    "HANDOFF_QUEUE_URL": queue,
    "CELLS_PATH": "",
    "AWS_ENDPOINT_URL": "http://$BRIDGE_IP:$F_AWS",
}}, open(sys.argv[1], "w"))
PY
  t0=$(date +%s%N)
  # A clean environment: SAM lets the shell's value of any variable the template declares win
  # over the template, and the stack's own .stack/env points at loopback addresses. Only the
  # function's credentials go in (SAM hands them to the container).
  env -i PATH="$PATH" HOME="$HOME" DOCKER_HOST="$DOCKER_HOST" SAM_CLI_TELEMETRY=0 AWS_MAX_ATTEMPTS=1 \
    AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
    AWS_SESSION_TOKEN="$AWS_SESSION_TOKEN" AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    "$LINT_VENV/bin/sam" local invoke "$fn" \
    --template-file ".aws-sam/build-$ARCH/template.yaml" --event "$event" --env-vars "$W/env.json" \
    --skip-pull-image --region "$AWS_REGION" --add-host "kubernetes:$BRIDGE_IP" \
    --parameter-overrides "Architecture=$ARCH EksClusterName=$EKS_CLUSTER_NAME RabbitMqManagementUrl=http://$BRIDGE_IP:$F_MGMT RabbitMqAmqpUrl=$RABBITMQ_AMQP_URL" \
    > "$W/$name.out" 2> "$W/$name.err" || true
  echo $(( ($(date +%s%N) - t0) / 1000000 )) > "$W/$name.ms"
}

function_log() {  # the function's own JSON log lines from SAM's output
  grep -h '^{' "$W/$1.err" | python3 -c "
import json, sys
for l in sys.stdin:
    try: d = json.loads(l)
    except ValueError: continue
    if d.get('message') in ('ready', 'tenant provisioned'): print(json.dumps(d))"
}

# expect_provisioned NAME SUB EVENT_FILE
expect_provisioned() {
  local name=$1 sub=$2 event=$3
  python3 - "$event" "$W/$name.out" "$W/$name.err" <<'PY'
import json, sys
sent = json.load(open(sys.argv[1]))
text = open(sys.argv[2]).read().strip()
try:
    got = json.loads(text.splitlines()[-1]) if text else None
except ValueError:
    got = None
if got != sent:
    sys.stderr.write(open(sys.argv[3]).read()[-4000:])
    sys.exit(f"sam-invoke: the function did not return the event unchanged: {text[:500]!r}")
PY
  local status
  status=$(set -a; . .stack/env; set +a; "$TENANTCTL" status --sub "$sub" 2>/dev/null) || die "tenantctl status failed"
  echo "$status" | python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if d['complete'] else 'sam-invoke: tenant incomplete: missing ' + ', '.join(d['missing']))"
  # The BackendImage deploy parameter (BACKEND_IMAGE) reached the Deployment, with no rebuild.
  echo "$status" | python3 -c "import json,sys; i=json.load(sys.stdin)['kubernetes']['deployment']['images']; sys.exit(0 if i[:1] == ['$BACKEND_IMAGE'] else f'sam-invoke: the backend image is {i}, not $BACKEND_IMAGE')"
  # The template that shipped in the package (BackendTemplatePath) made the Deployment.
  local made
  made=$("$STACK_KUBECTL" --kubeconfig .stack/kubeconfig get deployment "backend-$sub" -n "$TENANT_NAMESPACE" \
    -o 'jsonpath={.spec.template.metadata.annotations.example\.com/backend-template} {.spec.template.spec.containers[0].ports[0].containerPort}')
  [ "$made" = "custom 9090" ] || die "the Deployment was not made from the packaged template (annotation and port: '$made')"
  local times
  times=$(function_log "$name" | python3 -c "
import json, sys
d = {}
for l in sys.stdin:
    j = json.loads(l); d[j['message']] = j
print('init %.0f ms, provisioning %.0f ms' % (d['ready']['init_ms'], d['tenant provisioned']['wall_ms']))" 2>/dev/null || echo "function timings not in SAM's output")
  log "$name: tenant $sub complete in RabbitMQ, Kubernetes and Secrets Manager; sam local invoke $(cat "$W/$name.ms") ms ($times)"
}

expect_invalid() {
  local name=$1
  python3 - "$W/$name.out" <<'PY'
import json, sys
text = open(sys.argv[1]).read().strip()
got = json.loads(text.splitlines()[-1]) if text else {}
if got.get("errorType") != "InvalidEvent":
    sys.exit(f"sam-invoke: expected an InvalidEvent answer, got {text[:500]!r}")
PY
  log "$name: answered InvalidEvent, as expected ($(cat "$W/$name.ms") ms)"
}

# fresh_event FILE: a new confirmed user of the stack's pool (admin-created: no trigger runs);
# writes the trigger's event for their sub to FILE and their access token to FILE.token.
fresh_event() {
  local sub
  sub=$("$STACK_VENV/bin/python" - "$1.token" <<'PY'
import os, sys, uuid, boto3
idp = boto3.client("cognito-idp")
pool, client = os.environ["USER_POOL_ID"], os.environ["USER_POOL_CLIENT_IDS"]
email, password = f"sam-{uuid.uuid4().hex[:8]}@example.com", "Correct-horse-battery-1!"
user = idp.admin_create_user(UserPoolId=pool, Username=email, MessageAction="SUPPRESS",
                             UserAttributes=[{"Name": "email", "Value": email}])["User"]
idp.admin_set_user_password(UserPoolId=pool, Username=email, Password=password, Permanent=True)
tokens = idp.initiate_auth(ClientId=client, AuthFlow="USER_PASSWORD_AUTH",
                           AuthParameters={"USERNAME": email, "PASSWORD": password})["AuthenticationResult"]
open(sys.argv[1], "w").write(tokens["AccessToken"])
print(next(a["Value"] for a in user["Attributes"] if a["Name"] == "sub"))
PY
)
  "$TENANTCTL" event --sub "$sub" > "$1"
  echo "$sub"
}

# api_event FILE TOKEN_FILE|"": SAM's own HTTP API (payload 2.0) event for GET /tenant, with the
# user's token as the Authorization header and its claims as the JWT authorizer would add them.
api_event() {
  "$LINT_VENV/bin/sam" local generate-event apigateway http-api-proxy 2>/dev/null > "$1.generated"
  python3 - "$1.generated" "$1" "${2:-}" <<'PY'
import base64, json, sys
event = json.load(open(sys.argv[1]))
token = open(sys.argv[3]).read().strip() if sys.argv[3] else None
event.update(routeKey="GET /tenant", rawPath="/tenant", rawQueryString="", cookies=[], body=None,
             isBase64Encoded=False, headers={"accept": "application/json"})
event.pop("queryStringParameters", None)
ctx = event["requestContext"]
ctx.update(routeKey="GET /tenant")
ctx["http"].update(method="GET", path="/tenant")
if token:
    event["headers"]["authorization"] = f"Bearer {token}"
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    ctx["authorizer"] = {"jwt": {"claims": {k: str(v) for k, v in claims.items()}, "scopes": None}}
else:
    ctx.pop("authorizer", None)
json.dump(event, open(sys.argv[2], "w"))
PY
}

# expect_api NAME STATUS [SUB]: the API's answer had STATUS (and, for 200, SUB's tenant).
expect_api() {
  local name=$1 want=$2 sub=${3:-}
  python3 - "$W/$name.out" "$W/$name.err" "$want" "$sub" <<'PY'
import json, sys
text = open(sys.argv[1]).read().strip()
try:
    got = json.loads(text.splitlines()[-1]) if text else {}
except ValueError:
    got = {}
want, sub = int(sys.argv[3]), sys.argv[4]
if got.get("statusCode") != want:
    sys.stderr.write(open(sys.argv[2]).read()[-3000:])
    sys.exit(f"sam-invoke: GET /tenant answered {got.get('statusCode')}, not {want}: {text[:300]!r}")
headers = {k.lower(): v for k, v in (got.get("headers") or {}).items()}
if headers.get("cache-control") != "no-store":
    sys.exit("sam-invoke: GET /tenant without Cache-Control: no-store")
body = json.loads(got.get("body") or "{}")
if want == 200 and (body.get("status") != "ready" or body.get("vhost") != sub or not body.get("password")):
    sys.exit(f"sam-invoke: GET /tenant did not answer the user's tenant {sub}: status {body.get('status')}, vhost {body.get('vhost')}")
PY
  log "$name: GET /tenant answered $want$([ -n "$sub" ] && echo " with tenant $sub") ($(cat "$W/$name.ms") ms)"
}

main() {
  local t0=$SECONDS
  . .stack/tools.base
  set -a; . .stack/env; set +a
  cargo build -q --bin tenantctl
  TENANTCTL=$ROOT/target/debug/tenantctl
  install_engine
  . .stack/tools.lint
  register_binfmt
  start_dockerd
  base_image
  build_function
  start_forwarders
  if [ -n "$EVENT" ]; then
    invoke given "$EVENT"
    cat "$W/given.out"
    local sub
    sub=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['request']['userAttributes'].get('sub',''))" "$EVENT" 2>/dev/null || true)
    if grep -q errorType "$W/given.out"; then log "the function answered with an error (above)"; exit 1; fi
    [ -n "$sub" ] && expect_provisioned given "$sub" "$EVENT"
  else
    local sub
    sub=$(fresh_event "$W/first.json"); invoke first "$W/first.json"; expect_provisioned first "$sub" "$W/first.json"
    local first_sub=$sub
    sub=$(fresh_event "$W/second.json"); invoke second "$W/second.json"; expect_provisioned second "$sub" "$W/second.json"
    api_event "$W/api.json" "$W/first.json.token"
    invoke api "$W/api.json" TenantApiFunction; expect_api api 200 "$first_sub"
    if [ -n "$CI_MODE" ]; then
      invoke malformed events/malformed-non-uuid-sub.json; expect_invalid malformed
      api_event "$W/anonymous.json" ""
      invoke anonymous "$W/anonymous.json" TenantApiFunction; expect_api anonymous 401
    fi
  fi
  log "done in $((SECONDS - t0))s ($ARCH)"
}

main
