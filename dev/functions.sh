#!/usr/bin/env bash
# The stack's functions, run for real: the PostConfirmation trigger and the frontend's API
# (`POST_SIGNUP_HANDLER=api`), each behind cargo lambda's Lambda runtime emulator, and the
# example frontend (frontend/) served as static files.
#
#   dev/functions.sh up      build, start, register the trigger with the stand-in's Cognito
#                            (idempotent: running functions are left as they are)
#   dev/functions.sh down    stop them and unregister the trigger
#   dev/functions.sh status  exit 0 if they run
#
# Once up, the stack's Cognito calls the trigger on ConfirmSignUp/AdminConfirmSignUp as Cognito
# does, and .stack/functions.env names the API's URL (STACK_API_URL) and the page's
# (STACK_FRONTEND_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
S=.stack
[ -f $S/env ] || { echo "functions: the stack is not up: run 'make stack-up'" >&2; exit 1; }
. $S/tools.base
set -a; . $S/env; set +a
CL="$STACK_VENV/bin/cargo-lambda"
F=$S/functions
mkdir -p $F

log() { echo "functions: $*" >&2; }
alive() { [ -f "$F/$1.pid" ] && kill -0 "$(cat "$F/$1.pid")" 2>/dev/null; }
free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
listening() { python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 0.2)" "$1" 2>/dev/null; }

register() {
  curl -sf -X POST "$STACK_AWS_STANDIN/_standin/functions" -H 'Content-Type: application/json' \
    -d "{\"arn\": \"$STACK_TRIGGER_ARN\", \"url\": \"$1\"}" >/dev/null
}

# watch NAME PORT ENV...: one function behind its own emulator (logs in .stack/functions/NAME.log).
watch() {
  local name=$1 port=$2; shift 2
  local vars=()
  for v in "$@"; do vars+=(--env-var "$v"); done
  setsid "$CL" lambda watch --ignore-changes --invoke-address 127.0.0.1 --invoke-port "$port" \
    --env-file $S/env "${vars[@]}" --bin post-signup > "$F/$name.log" 2>&1 < /dev/null &
  echo $! > "$F/$name.pid"
  echo "$port" > "$F/$name.port"
}

wait_port() {
  local name=$1 port=$2
  for _ in $(seq 600); do
    listening "$port" && return 0
    alive "$name" || { tail -n 30 "$F/$name.log" >&2; log "$name exited (log: $F/$name.log)"; exit 1; }
    sleep 0.2
  done
  tail -n 30 "$F/$name.log" >&2; log "$name not listening after 120 s"; exit 1
}

up() {
  if alive trigger && alive api && alive frontend; then log "already running ($S/functions.env)"; return 0; fi
  down
  mkdir -p $F
  # One build for both emulators (each would otherwise start its own).
  cargo build -q --bin post-signup
  local tport aport
  tport=$(free_port); aport=$(free_port)
  watch trigger "$tport" POST_SIGNUP_HANDLER=trigger
  watch api "$aport" POST_SIGNUP_HANDLER=api
  # The page as a user deploys it: its files, the STOMP client from the pinned package, and a
  # config.json naming this stack's Cognito, app client and API.
  [ -d frontend/node_modules/@stomp/stompjs ] || npm ci --prefix frontend --no-audit --no-fund >/dev/null
  mkdir -p $F/www/vendor
  cp frontend/index.html frontend/app.js $F/www/
  cp frontend/node_modules/@stomp/stompjs/bundles/stomp.umd.min.js $F/www/vendor/
  cat > $F/www/config.json <<EOT
{"cognitoEndpoint": "$AWS_ENDPOINT_URL/", "clientId": "$USER_POOL_CLIENT_IDS",
 "apiUrl": "http://127.0.0.1:$aport/lambda-url/post-signup"}
EOT
  setsid python3 -m http.server --bind 127.0.0.1 --directory $F/www "$STACK_FRONTEND_PORT" \
    > "$F/frontend.log" 2>&1 < /dev/null &
  echo $! > "$F/frontend.pid"
  wait_port trigger "$tport"; wait_port api "$aport"; wait_port frontend "$STACK_FRONTEND_PORT"
  register "http://127.0.0.1:$tport/2015-03-31/functions/post-signup/invocations"
  cat > $S/functions.env <<EOT
# The stack's functions (dev/functions.sh up). Load after .stack/env.
export STACK_API_URL=http://127.0.0.1:$aport/lambda-url/post-signup
export STACK_TRIGGER_INVOKE_URL=http://127.0.0.1:$tport/2015-03-31/functions/post-signup/invocations
export STACK_FRONTEND_URL=http://127.0.0.1:$STACK_FRONTEND_PORT/
EOT
  log "up: trigger :$tport (Cognito's PostConfirmation), api http://127.0.0.1:$aport/lambda-url/post-signup/tenant, frontend http://127.0.0.1:$STACK_FRONTEND_PORT/"
}

down() {
  for name in trigger api frontend; do
    if alive "$name"; then kill -- -"$(cat "$F/$name.pid")" 2>/dev/null || true; fi
  done
  if curl -sf "$STACK_AWS_STANDIN/moto-api/" >/dev/null 2>&1; then
    curl -sf -X POST "$STACK_AWS_STANDIN/_standin/functions" -H 'Content-Type: application/json' \
      -d "{\"arn\": \"$STACK_TRIGGER_ARN\"}" >/dev/null || true
  fi
  rm -rf $F $S/functions.env
}

case "${1:-}" in
  up) up ;;
  down) down; log "down" ;;
  # Exit 0 if all three run (and the stand-in knows the trigger's address).
  status) alive trigger && alive api && alive frontend && [ -f $S/functions.env ] ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
