#!/usr/bin/env bash
# The local, EKS-shaped stack: etcd + kube-apiserver (aws-iam-authenticator as its token
# webhook, STS answered by a local SigV4-checking stand-in), moto for Secrets Manager and EKS,
# and an isolated RabbitMQ node. Everything binds to loopback; all state lives under .stack/.
#
#   dev/stack.sh up       start (idempotent: a running stack is left as it is)
#   dev/stack.sh down     stop everything and delete .stack/ state
#   dev/stack.sh status   exit 0 if every service answers
#
# `up` reads as a table of contents: each start_* function starts one service.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
S=$ROOT/.stack
. dev/versions.sh

REGION=us-east-1
CLUSTER=post-signup-local
# A second cluster, for cells that run their tenants' backends in a cluster of their own: its own
# API server (in the same etcd, under its own prefix), CA, token webhook bound to its name,
# controllers and kwok node.
CLUSTER_B=post-signup-local-b
NAMESPACE=tenants
ACCOUNT=111122223333
FUNCTION_ROLE=post-signup-function
FUNCTION_GROUP=post-signup:provisioners
OPERATOR_ROLE=post-signup-operator
OPERATOR_GROUP=post-signup:operators
RECONCILER_ROLE=post-signup-reconciler
RECONCILER_GROUP=post-signup:reconcilers
HANDOFF_QUEUE=post-signup-handoff
USER_POOL=post-signup-local-users
USER_POOL_CLIENT=post-signup-local-web
# The pool's PostConfirmation trigger: the stand-in invokes it once dev/functions.sh runs it.
TRIGGER_ARN=arn:aws:lambda:$REGION:$ACCOUNT:function:post-signup-local-trigger
REGISTRY_TABLE=post-signup-local-tenants
ADMIN_SECRET_ID=post-signup/rabbitmq-admin
SECRET_PREFIX=post-signup/tenants/
SERVICES=(etcd sts iam-authenticator kube-apiserver kube-controller-manager kube-scheduler kwok
  iam-authenticator-b kube-apiserver-b kube-controller-manager-b kube-scheduler-b kwok-b aws rabbitmq rabbitmq4)
# Which broker .stack/env's RABBITMQ_* point at (both run; RABBITMQ_3_10_* and RABBITMQ_4_0_*
# name each): 3.10 (Debian bookworm, end of life) or 4.0 (Debian trixie, Erlang 27).
STACK_RABBITMQ=${STACK_RABBITMQ:-3.10}
case "$STACK_RABBITMQ" in 3.10|4.0) ;; *) echo "stack: STACK_RABBITMQ must be 3.10 or 4.0" >&2; exit 2 ;; esac

log() { echo "stack: $*" >&2; }
die() { echo "stack: error: $*" >&2; exit 1; }

alive() { [ -f "$S/pids/$1" ] && kill -0 "$(cat "$S/pids/$1")" 2>/dev/null; }

# start NAME CMD...: runs CMD in its own session, output to .stack/logs/NAME.log.
start() {
  local name=$1; shift
  setsid "$@" > "$S/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$S/pids/$name"
}

# wait_for NAME SECONDS CMD...: polls CMD until it succeeds; fails with the service's log tail.
wait_for() {
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$name"; then tail -n 30 "$S/logs/$name.log" >&2; die "$name exited during start-up (log: .stack/logs/$name.log)"; fi
    if [ $SECONDS -ge $deadline ]; then tail -n 30 "$S/logs/$name.log" >&2; die "$name not ready after ${secs}s (log: .stack/logs/$name.log)"; fi
    sleep 0.2
  done
}

# free_ports N: N distinct free TCP ports on 127.0.0.1, chosen by the kernel.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# A loopback address whose port 443 is free, for the STS stand-in (the authenticator calls
# https://sts.<region>.amazonaws.com/ on the default port).
free_sts_ip() {
  python3 - <<'PY'
import socket
for third in range(77, 120):
    ip = f"127.{third}.0.1"
    s = socket.socket()
    try:
        s.bind((ip, 443)); print(ip); break
    except OSError:
        continue
    finally:
        s.close()
else:
    raise SystemExit("no loopback address with a free port 443")
PY
}

down() {
  # The functions (dev/functions.sh) go with the stack.
  for pid in "$S"/functions/*.pid; do
    if [ -f "$pid" ]; then kill -- -"$(cat "$pid")" 2>/dev/null || true; fi
  done
  if [ -d "$S/pids" ]; then
    for name in "${SERVICES[@]}"; do
      if alive "$name"; then
        kill -- -"$(cat "$S/pids/$name")" 2>/dev/null || kill "$(cat "$S/pids/$name")" 2>/dev/null || true
      fi
    done
    # Give them a moment to exit, then make sure.
    for _ in $(seq 50); do
      any=; for name in "${SERVICES[@]}"; do alive "$name" && any=1; done
      [ -z "$any" ] && break; sleep 0.1
    done
    for name in "${SERVICES[@]}"; do alive "$name" && kill -9 -- -"$(cat "$S/pids/$name")" 2>/dev/null || true; done
  fi
  # RabbitMQ's Erlang port mapper is started detached on the stack's own port.
  if [ -f "$S/ports" ]; then
    . "$S/ports"
    ERL_EPMD_PORT=$EPMD_PORT epmd -kill >/dev/null 2>&1 || true
    if [ -n "${EPMD4_PORT:-}" ]; then ERL_EPMD_PORT=$EPMD4_PORT epmd -kill >/dev/null 2>&1 || true; fi
  fi
  find "$S" -mindepth 1 -maxdepth 1 ! -name 'tools.*' -exec rm -rf {} + 2>/dev/null || true
}

status() {
  [ -f "$S/env" ] || return 1
  for name in "${SERVICES[@]}"; do alive "$name" || return 1; done
  set -a; . "$S/env"; set +a
  curl -sf --cacert "$S/tls/ca.pem" -H "Authorization: Bearer $(cat "$S/k8s/admin-token")" "$STACK_KUBE_API/readyz" >/dev/null || return 1
  curl -sf --cacert "$S/tls/ca-b.pem" -H "Authorization: Bearer $(cat "$S/k8s/admin-token")" "$STACK_KUBE_API_B/readyz" >/dev/null || return 1
  curl -sf -u "$RABBITMQ_ADMIN_USERNAME:$RABBITMQ_ADMIN_PASSWORD" "$RABBITMQ_3_10_MANAGEMENT_URL/api/overview" >/dev/null || return 1
  curl -sf -u "$RABBITMQ_ADMIN_USERNAME:$RABBITMQ_ADMIN_PASSWORD" "$RABBITMQ_4_0_MANAGEMENT_URL/api/overview" >/dev/null || return 1
  curl -sf "$AWS_ENDPOINT_URL/moto-api/" >/dev/null || return 1
}

tls() {
  local d=$S/tls; mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=post-signup local stack CA" \
    -keyout "$d/ca.key" -out "$d/ca.pem" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  # cert NAME SAN
  cert() {
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$d/$1.key" -out "$d/$1.csr" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$2" > "$d/$1.ext"
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 30 \
      -extfile "$d/$1.ext" -out "$d/$1.pem" 2>/dev/null
  }
  cert kube-apiserver "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc,IP:10.96.0.1"
  # Cluster B's API server has a CA of its own: a client that trusted the first CA only fails.
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=post-signup local cluster B CA" \
    -keyout "$d/ca-b.key" -out "$d/ca-b.pem" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver-b" -keyout "$d/kube-apiserver-b.key" \
    -out "$d/kube-apiserver-b.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' \
    "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc,IP:10.96.0.1" > "$d/kube-apiserver-b.ext"
  openssl x509 -req -in "$d/kube-apiserver-b.csr" -CA "$d/ca-b.pem" -CAkey "$d/ca-b.key" -CAcreateserial -days 30 \
    -extfile "$d/kube-apiserver-b.ext" -out "$d/kube-apiserver-b.pem" 2>/dev/null
  cert sts "DNS:sts.$REGION.amazonaws.com,DNS:sts.amazonaws.com"
  openssl genrsa -out "$S/k8s/sa.key" 2048 2>/dev/null
  openssl rsa -in "$S/k8s/sa.key" -pubout -out "$S/k8s/sa.pub" 2>/dev/null
}

rand() { python3 -c "import secrets; print(secrets.token_urlsafe($1))"; }

# --- the parts of `up`, in the order it calls them ------------------------------------------

choose_ports() {
  read -r ETCD_PORT ETCD_PEER_PORT API_PORT IAM_PORT AWS_PORT AMQP_PORT MGMT_PORT DIST_PORT EPMD_PORT \
    CM_PORT SCHED_PORT KWOK_PORT AMQP4_PORT MGMT4_PORT DIST4_PORT EPMD4_PORT STOMP_PORT STOMP4_PORT FRONTEND_PORT \
    API_B_PORT IAM_B_PORT CM_B_PORT SCHED_B_PORT KWOK_B_PORT < <(free_ports 24)
  STS_IP=$(free_sts_ip)
  cat > "$S/ports" <<EOT
ETCD_PORT=$ETCD_PORT
API_PORT=$API_PORT
IAM_PORT=$IAM_PORT
API_B_PORT=$API_B_PORT
IAM_B_PORT=$IAM_B_PORT
AWS_PORT=$AWS_PORT
AMQP_PORT=$AMQP_PORT
MGMT_PORT=$MGMT_PORT
EPMD_PORT=$EPMD_PORT
AMQP4_PORT=$AMQP4_PORT
MGMT4_PORT=$MGMT4_PORT
EPMD4_PORT=$EPMD4_PORT
STOMP_PORT=$STOMP_PORT
STOMP4_PORT=$STOMP4_PORT
FRONTEND_PORT=$FRONTEND_PORT
STS_IP=$STS_IP
EOT
}

# new_identity ROLE: temporary credentials of an assumed role, as Lambda has them.
# Sets AKID, SECRET, SESSION.
new_identity() {
  AKID=ASIA$(python3 -c "import secrets,string; print(''.join(secrets.choice(string.ascii_uppercase+string.digits) for _ in range(16)))")
  SECRET=$(rand 30)
  SESSION=$(python3 -c "import base64,secrets; print(base64.b64encode(secrets.token_bytes(90)).decode())")
}

make_secrets() {
  new_identity; FN_AKID=$AKID FN_SECRET=$SECRET FN_SESSION=$SESSION
  new_identity; OP_AKID=$AKID OP_SECRET=$SECRET OP_SESSION=$SESSION
  new_identity; REC_AKID=$AKID REC_SECRET=$SECRET REC_SESSION=$SESSION
  ADMIN_TOKEN=$(rand 32); RMQ_USER=psadmin; RMQ_PASS=$(rand 24); PW_KEY=$(rand 32)
  echo "$ADMIN_TOKEN" > "$S/k8s/admin-token"
}

start_sts() {
  cat > "$S/sts/identities.json" <<EOT
[{"access_key_id": "$FN_AKID", "secret_access_key": "$FN_SECRET", "session_token": "$FN_SESSION",
  "account": "$ACCOUNT", "arn": "arn:aws:sts::$ACCOUNT:assumed-role/$FUNCTION_ROLE/$CLUSTER-function",
  "user_id": "AROAEXAMPLEPOSTSIGNUP:$CLUSTER-function"},
 {"access_key_id": "$OP_AKID", "secret_access_key": "$OP_SECRET", "session_token": "$OP_SESSION",
  "account": "$ACCOUNT", "arn": "arn:aws:sts::$ACCOUNT:assumed-role/$OPERATOR_ROLE/$CLUSTER-operator",
  "user_id": "AROAEXAMPLEPSOPERATOR:$CLUSTER-operator"},
 {"access_key_id": "$REC_AKID", "secret_access_key": "$REC_SECRET", "session_token": "$REC_SESSION",
  "account": "$ACCOUNT", "arn": "arn:aws:sts::$ACCOUNT:assumed-role/$RECONCILER_ROLE/$CLUSTER-reconciler",
  "user_id": "AROAEXAMPLEPSRECONCILER:$CLUSTER-reconciler"}]
EOT
  start sts python3 dev/sts_standin.py --listen "$STS_IP:443" --cert "$S/tls/sts.pem" --key "$S/tls/sts.key" \
    --identities "$S/sts/identities.json"
}

start_etcd() {
  start etcd "$GO_BIN_DIR/etcd" --name stack --data-dir "$S/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "stack=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn
}

# aws-iam-authenticator, the API server's token webhook. It has no STS endpoint setting: it
# calls the host named in the token over HTTPS. It runs in a private mount namespace whose
# /etc/hosts sends the STS host to the stand-in (the machine's /etc/hosts is untouched), and
# trusts the stack CA through SSL_CERT_FILE. Two roles are mapped, as EKS access entries would:
# the function's and the operator's.
start_authenticator() {
  printf '127.0.0.1 localhost\n%s sts.%s.amazonaws.com sts.amazonaws.com\n' "$STS_IP" "$REGION" > "$S/iam/hosts"
  authenticator iam-authenticator "$CLUSTER" "$S/iam" "$IAM_PORT"
  authenticator iam-authenticator-b "$CLUSTER_B" "$S/iam-b" "$IAM_B_PORT"
}

# authenticator SERVICE CLUSTER_ID STATE_DIR PORT: one cluster's webhook, bound to its name.
authenticator() {
  mkdir -p "$3"
  cat > "$3/config.yaml" <<EOT
clusterID: $2
server:
  mapRoles:
    - roleARN: arn:aws:iam::$ACCOUNT:role/$FUNCTION_ROLE
      username: post-signup:{{SessionName}}
      groups:
        - $FUNCTION_GROUP
    - roleARN: arn:aws:iam::$ACCOUNT:role/$OPERATOR_ROLE
      username: post-signup-operator:{{SessionName}}
      groups:
        - $OPERATOR_GROUP
    - roleARN: arn:aws:iam::$ACCOUNT:role/$RECONCILER_ROLE
      username: post-signup-reconciler:{{SessionName}}
      groups:
        - $RECONCILER_GROUP
EOT
  start "$1" env AWS_EC2_METADATA_DISABLED=true AWS_REGION="$REGION" SSL_CERT_FILE="$S/tls/ca.pem" \
    unshare --mount --propagation private sh -c \
    'mount --bind "$0" /etc/hosts && exec "$@"' "$S/iam/hosts" \
    "$GO_BIN_DIR/aws-iam-authenticator" server --config "$3/config.yaml" --state-dir "$3" \
    --generate-kubeconfig "$3/webhook-kubeconfig.yaml" --address 127.0.0.1 --port "$4" \
    --backend-mode MountedFile
}

# RabbitMQ: an isolated node (own name, ports, data, cookie, epmd).
start_rabbitmq() {
  local r=$S/rabbitmq
  mkdir -p "$r/mnesia" "$r/log"
  cat > "$r/rabbitmq.conf" <<EOT
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
# Web-STOMP for the example frontend; the plain STOMP listener (61613) stays off.
stomp.listeners.tcp = none
web_stomp.tcp.ip = 127.0.0.1
web_stomp.tcp.port = $STOMP_PORT
default_user = $RMQ_USER
default_pass = $RMQ_PASS
default_user_tags.administrator = true
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
log.console = true
log.console.level = warning
log.file = false
EOT
  echo "[rabbitmq_management,rabbitmq_web_stomp,rabbitmq_shovel,rabbitmq_shovel_management]." > "$r/enabled_plugins"
  start rabbitmq env HOME="$r" RABBITMQ_NODENAME="post-signup-$AMQP_PORT@localhost" \
    RABBITMQ_CONFIG_FILE="$r/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$r/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$r/mnesia" RABBITMQ_LOG_BASE="$r/log" RABBITMQ_DIST_PORT="$DIST_PORT" \
    ERL_EPMD_PORT="$EPMD_PORT" RABBITMQ_PID_FILE="$r/pid" \
    /usr/lib/rabbitmq/bin/rabbitmq-server
}

# RabbitMQ 4.0: the same kind of isolated node, run with chroot in the trixie root filesystem,
# in a private mount namespace so its /proc, /dev and state mounts go away with it. All state is
# under .stack/rabbitmq4 (mounted at /stack inside); the admin is the same as 3.10's.
start_rabbitmq4() {
  local r=$S/rabbitmq4
  mkdir -p "$r/mnesia" "$r/log"
  sed -e "s/127.0.0.1:$AMQP_PORT/127.0.0.1:$AMQP4_PORT/" -e "s/^management.tcp.port = .*/management.tcp.port = $MGMT4_PORT/" \
    -e "s/^web_stomp.tcp.port = .*/web_stomp.tcp.port = $STOMP4_PORT/" \
    "$S/rabbitmq/rabbitmq.conf" > "$r/rabbitmq.conf"
  echo "[rabbitmq_management,rabbitmq_web_stomp,rabbitmq_shovel,rabbitmq_shovel_management]." > "$r/enabled_plugins"
  start rabbitmq4 unshare --mount --propagation private sh -c \
    'mount -t proc proc "$0/proc" && mount --bind /dev "$0/dev" && mount --bind "$1" "$0/stack" && shift && exec chroot "$@"' \
    "$RABBITMQ4_ROOTFS" "$r" "$RABBITMQ4_ROOTFS" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/stack \
    RABBITMQ_NODENAME="post-signup4-$AMQP4_PORT@localhost" RABBITMQ_CONFIG_FILE=/stack/rabbitmq.conf \
    RABBITMQ_ENABLED_PLUGINS_FILE=/stack/enabled_plugins RABBITMQ_MNESIA_BASE=/stack/mnesia \
    RABBITMQ_LOG_BASE=/stack/log RABBITMQ_DIST_PORT="$DIST4_PORT" ERL_EPMD_PORT="$EPMD4_PORT" \
    RABBITMQ_PID_FILE=/stack/pid /usr/lib/rabbitmq/bin/rabbitmq-server
}

start_apiserver() {
  wait_for etcd 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"
  echo "$ADMIN_TOKEN,stack-admin,stack-admin,system:masters" > "$S/k8s/tokens.csv"
  wait_for iam-authenticator 60 test -s "$S/iam/webhook-kubeconfig.yaml"
  apiserver kube-apiserver /registry "$API_PORT" kube-apiserver "$S/iam" "$S/k8s/certs"
  wait_for iam-authenticator-b 60 test -s "$S/iam-b/webhook-kubeconfig.yaml"
  apiserver kube-apiserver-b /registry-b "$API_B_PORT" kube-apiserver-b "$S/iam-b" "$S/k8s/certs-b"
}

# apiserver SERVICE ETCD_PREFIX PORT CERT IAM_DIR CERT_DIR
apiserver() {
  start "$1" "$GO_BIN_DIR/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" --etcd-prefix "$2" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$3" \
    --tls-cert-file "$S/tls/$4.pem" --tls-private-key-file "$S/tls/$4.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$S/k8s/sa.pub" --service-account-signing-key-file "$S/k8s/sa.key" \
    --service-cluster-ip-range 10.96.0.0/24 \
    --authorization-mode RBAC \
    --token-auth-file "$S/k8s/tokens.csv" \
    --authentication-token-webhook-config-file "$5/webhook-kubeconfig.yaml" \
    --endpoint-reconciler-type none \
    --enable-priority-and-fairness=false \
    --profiling=false \
    --cert-dir "$6"
}

# moto (Secrets Manager, EKS, SQS, Cognito, DynamoDB with Streams) behind the DescribeCluster and
# fault shims, seeded with the admin secret, the cluster, the hand-off queue (+ dead-letter
# queue), a user pool and the tenant registry (a table with its stream, as template.yml has it).
start_aws() {
  cat > "$S/aws/seed.json" <<EOT
{"secrets": [{"name": "$ADMIN_SECRET_ID",
              "value": {"username": "$RMQ_USER", "password": "$RMQ_PASS", "tenant_password_key": "$PW_KEY"}}],
 "clusters": [{"name": "$CLUSTER", "role_arn": "arn:aws:iam::$ACCOUNT:role/eks-cluster"},
              {"name": "$CLUSTER_B", "role_arn": "arn:aws:iam::$ACCOUNT:role/eks-cluster"}],
 "queues": [{"name": "$HANDOFF_QUEUE", "visibility_timeout": 30, "max_receive_count": 3}],
 "user_pools": [{"name": "$USER_POOL", "clients": ["$USER_POOL_CLIENT"],
                 "post_confirmation": "$TRIGGER_ARN"}],
 "tables": [{"name": "$REGISTRY_TABLE"}]}
EOT
  start aws "$STACK_VENV/bin/python" dev/aws_standin.py --listen "127.0.0.1:$AWS_PORT" --region "$REGION" \
    --cluster "$CLUSTER" --endpoint "https://127.0.0.1:$API_PORT" --ca-file "$S/tls/ca.pem" \
    --cluster "$CLUSTER_B" --endpoint "https://127.0.0.1:$API_B_PORT" --ca-file "$S/tls/ca-b.pem" \
    --seed "$S/aws/seed.json" --out "$S/aws/created.json" --template template.yml
}

# The rest of a control plane, so a tenant's Deployment really rolls out: the controller manager
# (Deployments → ReplicaSets → Pods, service accounts), the scheduler, and kwok simulating one
# node that runs the pods (no kubelet, no containers). Pod Security admission in the API server
# really judges the template's pods.
start_controllers() {
  controllers "" "$S/kubeconfig" ca "$CM_PORT" "$SCHED_PORT" "$KWOK_PORT"
  controllers -b "$S/kubeconfig-b" ca-b "$CM_B_PORT" "$SCHED_B_PORT" "$KWOK_B_PORT"
}

# controllers SUFFIX KUBECONFIG CA CM_PORT SCHED_PORT KWOK_PORT: one cluster's.
controllers() {
  start "kube-controller-manager$1" "$GO_BIN_DIR/kube-controller-manager" \
    --kubeconfig "$2" --bind-address 127.0.0.1 --secure-port "$4" \
    --service-account-private-key-file "$S/k8s/sa.key" --root-ca-file "$S/tls/$3.pem" \
    --leader-elect=false --controllers '*,-nodeipam,-cloud-node-lifecycle' \
    --cert-dir "$S/k8s/cm-certs$1"
  start "kube-scheduler$1" "$GO_BIN_DIR/kube-scheduler" \
    --kubeconfig "$2" --bind-address 127.0.0.1 --secure-port "$5" \
    --leader-elect=false --cert-dir "$S/k8s/sched-certs$1"
  start "kwok$1" "$KWOK_BIN_DIR/kwok" --kubeconfig "$2" --config "$KWOK_BIN_DIR/stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr=10.0.0.1/24 --node-ip=10.0.0.1 --node-port=0 --server-address "127.0.0.1:$6"
  # Room for every tenant the tests and benchmarks make (kwok pods cost nothing).
  "$GO_BIN_DIR/kubectl" --kubeconfig "$2" apply -f - >/dev/null <<EOT
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations: {node.alpha.kubernetes.io/ttl: "0", kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/hostname: kwok-node-0, kubernetes.io/os: linux, type: kwok}
status:
  allocatable: {cpu: "2000", memory: 8Ti, pods: "50000"}
  capacity: {cpu: "2000", memory: 8Ti, pods: "50000"}
EOT
}

# The 4.0 node's metadata store is Khepri (the default of new 4.2 nodes; Amazon MQ offers 4.2),
# switched on through the management API's feature-flag endpoint before anything uses the node:
# vhost creation, the bottleneck of a burst of sign-ups, is several times faster than on Mnesia
# (make bench, section 7).
enable_khepri() {
  local api="http://127.0.0.1:$MGMT4_PORT/api/feature-flags"
  curl -sf -X PUT -u "$RMQ_USER:$RMQ_PASS" -H 'content-type: application/json' -d '{}' "$api/khepri_db/enable" >/dev/null ||
    die "could not enable khepri_db on the RabbitMQ 4.0 node (log: .stack/logs/rabbitmq4.log)"
  curl -sf -u "$RMQ_USER:$RMQ_PASS" "$api" | python3 -c "
import json, sys
state = next((f['state'] for f in json.load(sys.stdin) if f['name'] == 'khepri_db'), None)
sys.exit(0 if state == 'enabled' else f'khepri_db is {state} on the RabbitMQ 4.0 node')" || die "khepri_db not enabled"
}

# node_schedulable KUBECONFIG
node_schedulable() {
  local k=("$GO_BIN_DIR/kubectl" --kubeconfig "$1")
  [ "$("${k[@]}" get node kwok-node-0 -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ] &&
    [ -z "$("${k[@]}" get node kwok-node-0 -o 'jsonpath={.spec.taints}')" ]
}

write_kubeconfig() {
  kubeconfig "$S/kubeconfig" "$CLUSTER" "$API_PORT" ca
  kubeconfig "$S/kubeconfig-b" "$CLUSTER_B" "$API_B_PORT" ca-b
}

# kubeconfig FILE CLUSTER PORT CA: the stack admin's.
kubeconfig() {
  cat > "$1" <<EOT
apiVersion: v1
kind: Config
clusters:
  - name: $2
    cluster:
      server: https://127.0.0.1:$3
      certificate-authority: $S/tls/$4.pem
users:
  - name: stack-admin
    user:
      token: $ADMIN_TOKEN
contexts:
  - name: stack-admin
    context: {cluster: $2, user: stack-admin, namespace: $NAMESPACE}
current-context: stack-admin
EOT
}

# .stack/env: the function's identity and settings; .stack/operator.env (sourced after it):
# the operator's identity, for the worker, the reconciler and tenantctl.
write_env() {
  local created=$S/aws/created.json queue_url dlq_url pool_id stream_arn
  queue_url=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]['url'])" "$created" "$HANDOFF_QUEUE")
  dlq_url=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]['dlq_url'])" "$created" "$HANDOFF_QUEUE")
  pool_id=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]['id'])" "$created" "$USER_POOL")
  client_id=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]['clients'][sys.argv[3]])" "$created" "$USER_POOL" "$USER_POOL_CLIENT")
  # moto signs every pool's tokens with one key pair it ships: tests sign tokens of their own
  # with it (an expired one, say) to check that only the claims make them fail.
  "$STACK_VENV/bin/python" - "$S/aws/cognito-signing-key.pem" <<'PY'
import gzip, json, sys
from importlib.resources import files
from cryptography.hazmat.primitives import serialization
from joserfc.jwk import RSAKey
doc = json.loads(gzip.decompress((files("moto") / "cognitoidp/resources/jwks-private.json.gz").read_bytes()))
key = RSAKey.import_key(doc["keys"][0] if "keys" in doc else doc)
pem = key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
open(sys.argv[1], "wb").write(pem)
PY
  stream_arn=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]['stream_arn'])" "$created" "$REGISTRY_TABLE")
  cat > "$S/env" <<EOT
# The local stack ($(date -u +%FT%TZ)). Load with: set -a; . .stack/env; set +a
# --- the function and tenantctl ---
export AWS_REGION=$REGION
export AWS_DEFAULT_REGION=$REGION
export AWS_ACCESS_KEY_ID=$FN_AKID
export AWS_SECRET_ACCESS_KEY=$FN_SECRET
export AWS_SESSION_TOKEN=$FN_SESSION
export AWS_ENDPOINT_URL=http://127.0.0.1:$AWS_PORT
export AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null
export AWS_SHARED_CREDENTIALS_FILE=/dev/null
export EKS_CLUSTER_NAME=$CLUSTER
export TENANT_NAMESPACE=$NAMESPACE
export RABBITMQ_MANAGEMENT_URL=http://127.0.0.1:$([ "$STACK_RABBITMQ" = 4.0 ] && echo "$MGMT4_PORT" || echo "$MGMT_PORT")
export RABBITMQ_AMQP_URL=amqp://127.0.0.1:$([ "$STACK_RABBITMQ" = 4.0 ] && echo "$AMQP4_PORT" || echo "$AMQP_PORT")
export RABBITMQ_ADMIN_SECRET_ID=$ADMIN_SECRET_ID
export TENANT_SECRET_PREFIX=$SECRET_PREFIX
export HANDOFF_QUEUE_URL=$queue_url
export USER_POOL_ID=$pool_id
export REGISTRY_TABLE=$REGISTRY_TABLE
# --- the frontend's API (POST_SIGNUP_HANDLER=api) ---
export USER_POOL_CLIENT_IDS=$client_id
export COGNITO_JWKS_URL=http://127.0.0.1:$AWS_PORT/$pool_id/.well-known/jwks.json
export RABBITMQ_WEB_STOMP_URL=ws://127.0.0.1:$([ "$STACK_RABBITMQ" = 4.0 ] && echo "$STOMP4_PORT" || echo "$STOMP_PORT")/ws
export CORS_ALLOWED_ORIGINS=http://127.0.0.1:$FRONTEND_PORT
# --- inspection ---
export KUBECONFIG=$S/kubeconfig
export RABBITMQ_ADMIN_USERNAME=$RMQ_USER
export RABBITMQ_ADMIN_PASSWORD=$RMQ_PASS
export STACK_RABBITMQ=$STACK_RABBITMQ
export RABBITMQ_3_10_MANAGEMENT_URL=http://127.0.0.1:$MGMT_PORT
export RABBITMQ_3_10_AMQP_URL=amqp://127.0.0.1:$AMQP_PORT
export RABBITMQ_4_0_MANAGEMENT_URL=http://127.0.0.1:$MGMT4_PORT
export RABBITMQ_4_0_AMQP_URL=amqp://127.0.0.1:$AMQP4_PORT
export STACK_KUBE_API=https://127.0.0.1:$API_PORT
export STACK_CA_FILE=$S/tls/ca.pem
export STACK_CLUSTER_B=$CLUSTER_B
export STACK_KUBE_API_B=https://127.0.0.1:$API_B_PORT
export STACK_CA_FILE_B=$S/tls/ca-b.pem
export STACK_KUBECONFIG_B=$S/kubeconfig-b
export STACK_ADMIN_TOKEN_FILE=$S/k8s/admin-token
export STACK_FUNCTION_GROUP=$FUNCTION_GROUP
export STACK_OPERATOR_GROUP=$OPERATOR_GROUP
export STACK_DLQ_URL=$dlq_url
export STACK_REGISTRY_STREAM_ARN=$stream_arn
export STACK_AWS_STANDIN=http://127.0.0.1:$AWS_PORT
export STACK_KUBECTL=$GO_BIN_DIR/kubectl
export STACK_VENV=$STACK_VENV
export STACK_TRIGGER_ARN=$TRIGGER_ARN
export STACK_COGNITO_SIGNING_KEY=$S/aws/cognito-signing-key.pem
export STACK_FRONTEND_PORT=$FRONTEND_PORT
export RABBITMQ_3_10_WEB_STOMP_URL=ws://127.0.0.1:$STOMP_PORT/ws
export RABBITMQ_4_0_WEB_STOMP_URL=ws://127.0.0.1:$STOMP4_PORT/ws
EOT
  identity_env operator.env "the operator identity (tenantctl drain, reconcile, deprovision)" \
    "$OP_AKID" "$OP_SECRET" "$OP_SESSION"
  identity_env reconciler.env "the scheduled reconciler's identity (lists and repairs; removes nothing)" \
    "$REC_AKID" "$REC_SECRET" "$REC_SESSION"
}

# identity_env FILE WHAT AKID SECRET SESSION: .stack/FILE, another identity's credentials, to
# load after .stack/env (with the worker's longer budget: the trigger's is Cognito's 5 s).
identity_env() {
  cat > "$S/$1" <<EOT
# $2. Load after .stack/env:
#   set -a; . .stack/env; . .stack/$1; set +a
export AWS_ACCESS_KEY_ID=$3
export AWS_SECRET_ACCESS_KEY=$4
export AWS_SESSION_TOKEN=$5
export PROVISION_BUDGET_MS=20000
EOT
}

# Production RBAC: exactly the files a user applies.
apply_rbac() {
  for kc in "$S/kubeconfig" "$S/kubeconfig-b"; do
    "$GO_BIN_DIR/kubectl" --kubeconfig "$kc" apply \
      -f deploy/namespace.yaml -f deploy/rbac.yaml -f deploy/rbac-operator.yaml -f deploy/rbac-reconciler.yaml \
      -f deploy/tenant-guardrails.yaml >/dev/null
  done
}

up() {
  if status 2>/dev/null; then log "already running (.stack/env)"; return 0; fi
  down
  bash dev/install.sh
  . "$S/tools.base"
  mkdir -p "$S"/{pids,logs,k8s,iam,iam-b,sts,rabbitmq,aws}
  local t0=$SECONDS
  choose_ports
  tls
  make_secrets
  start_sts
  start_etcd
  start_authenticator
  start_rabbitmq
  start_rabbitmq4
  start_apiserver
  start_aws
  write_kubeconfig
  wait_for kube-apiserver 120 curl -sf --cacert "$S/tls/ca.pem" -H "Authorization: Bearer $ADMIN_TOKEN" \
    "https://127.0.0.1:$API_PORT/readyz"
  wait_for kube-apiserver-b 120 curl -sf --cacert "$S/tls/ca-b.pem" -H "Authorization: Bearer $ADMIN_TOKEN" \
    "https://127.0.0.1:$API_B_PORT/readyz"
  apply_rbac
  start_controllers
  wait_for aws 60 test -s "$S/aws/created.json"
  write_env
  wait_for sts 30 python3 -c "import socket; socket.create_connection(('$STS_IP', 443), 1)"
  wait_for rabbitmq 120 curl -sf -u "$RMQ_USER:$RMQ_PASS" "http://127.0.0.1:$MGMT_PORT/api/overview"
  wait_for rabbitmq4 120 curl -sf -u "$RMQ_USER:$RMQ_PASS" "http://127.0.0.1:$MGMT4_PORT/api/overview"
  enable_khepri
  # Pods can be scheduled once the node lifecycle controller has lifted the node's not-ready taint.
  wait_for kwok 90 node_schedulable "$S/kubeconfig"
  wait_for kwok-b 90 node_schedulable "$S/kubeconfig-b"
  status || die "services started but the stack does not answer"
  log "up in $((SECONDS - t0))s: kube-apiserver :$API_PORT (cluster B :$API_B_PORT), rabbitmq 3.10 amqp :$AMQP_PORT mgmt :$MGMT_PORT, 4.0 amqp :$AMQP4_PORT mgmt :$MGMT4_PORT (env: $STACK_RABBITMQ), aws :$AWS_PORT, sts $STS_IP:443 (env: .stack/env, operator: .stack/operator.env)"
}

case "${1:-}" in
  up) up ;;
  down) down; log "down" ;;
  status) if status; then log "running"; else log "not running (make stack-up)"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
