#!/usr/bin/env bash
# The real Lambda runtime path: `cargo lambda watch` runs the post-signup binary behind the
# Lambda Runtime API emulator, `cargo lambda invoke` sends it a ConfirmSignUp event for a fresh
# sub, and we check that the payload comes back unchanged and the tenant exists.
# Usage: dev/lambda-smoke.sh [EVENT_FILE]. Prints the cold-start init time the function logged.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .stack/env ] || { echo "lambda-smoke: the stack is not up: run 'make stack-up'" >&2; exit 1; }
. .stack/tools.base
set -a; . .stack/env; set +a
CL="$STACK_VENV/bin/cargo-lambda"

# Logs and the event live outside the crate: `cargo lambda watch` restarts on crate changes.
work=$(mktemp -d)
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
# With an event file: send it as it is. Without: the fixture with a fresh sub (a new tenant).
if [ -n "${1:-}" ]; then
  cp "$1" "$work/event.json"
  sub=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['request']['userAttributes']['sub'])" "$1")
else
  sub=$(python3 -c "import uuid; print(uuid.uuid4())")
  cargo run -q --bin tenantctl -- event --sub "$sub" > "$work/event.json"
fi

"$CL" lambda watch --ignore-changes --invoke-address 127.0.0.1 --invoke-port "$port" \
  --env-file .stack/env --bin post-signup > "$work/watch.log" 2>&1 &
watch_pid=$!
trap 'kill $watch_pid 2>/dev/null; wait $watch_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 600); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  kill -0 $watch_pid 2>/dev/null || { cat "$work/watch.log" >&2; echo "lambda-smoke: cargo lambda watch exited" >&2; exit 1; }
  sleep 0.2
done

"$CL" lambda invoke post-signup --invoke-address 127.0.0.1 --invoke-port "$port" \
  --data-file "$work/event.json" --output-format json > "$work/out.json" 2> "$work/invoke.err" || {
  cat "$work/invoke.err" "$work/watch.log" >&2; echo "lambda-smoke: invoke failed" >&2; exit 1; }

python3 - "$work/event.json" "$work/out.json" <<'PY'
import json, sys
sent, got = (json.load(open(p)) for p in sys.argv[1:3])
if sent != got:
    sys.exit(f"lambda-smoke: the function did not return the event unchanged:\n{json.dumps(got)[:500]}")
print("lambda-smoke: payload returned unchanged")
PY
status=$(./target/debug/tenantctl status --sub "$sub" 2>/dev/null || cargo run -q --bin tenantctl -- status --sub "$sub" 2>/dev/null)
echo "$status" | python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if d['complete'] else 'lambda-smoke: tenant incomplete: '+json.dumps(d))"
echo "lambda-smoke: tenant $sub exists (rabbitmq, kubernetes, secrets manager)"
python3 - "$work/watch.log" <<'PY' || true
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
last = lambda msg: next((l for l in reversed(lines) if l.get("message") == msg), None)
ready, start, done = last("ready"), last("provisioning"), last("tenant provisioned")
if ready and start and done:
    print(f"lambda-smoke: cold start {ready['init_ms']:.0f} ms, then provisioning {done['wall_ms']:.0f} ms: "
          f"{start['cold_start_ms'] + done['wall_ms']:.0f} ms of Cognito's 5000 ms "
          f"(the function's own budget is {start['budget_ms']} ms, counted from process start)")
PY
