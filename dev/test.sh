#!/usr/bin/env bash
# `make test`: every test, against the local stack. Starts the stack if it is not running and
# stops it afterwards if it started it; a stack that was already up is left up.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
started=
if ! bash dev/stack.sh status >/dev/null 2>&1; then
  bash dev/stack.sh up
  started=1
fi
# The functions (the trigger Cognito calls, the frontend's API, the example page), run for real
# beside the stack; stopped afterwards if this run started them.
functions_started=
if ! bash dev/functions.sh status; then
  bash dev/functions.sh up
  functions_started=1
fi
# An if, not `[ … ] && …`: under set -e a false test as the last command would fail the run.
cleanup() {
  if [ -n "$functions_started" ] && [ -z "$started" ]; then bash dev/functions.sh down; fi
  if [ -n "$started" ]; then bash dev/functions.sh down; bash dev/stack.sh down; fi
}
trap cleanup EXIT

passed=0 failed=0
# cargo_tests ARGS...: a cargo test run, its counts added to the closing line (a build that
# fails counts as a failure).
cargo_tests() {
  local log status=0
  log=$(mktemp)
  cargo test "$@" 2>&1 | tee "$log" || status=$?
  local p f
  p=$(awk '/^test result:/ {s += $4} END {print s + 0}' "$log")
  f=$(awk '/^test result:/ {s += $6} END {print s + 0}' "$log")
  if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  passed=$((passed + p)) failed=$((failed + f))
  rm -f "$log"
}
# check NAME CMD...: one pass/fail check beside the cargo tests, counted in the closing line.
check() {
  local name=$1; shift
  echo "== $name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $name"; fi
}

# Unit, integration (they share the one stack; each uses its own tenant, so they run in
# parallel) and doc tests, against RabbitMQ 3.10; then the integration suite against 4.0.
cargo_tests
export POST_SIGNUP_TEST_BROKER=4.0
cargo_tests --test integration
unset POST_SIGNUP_TEST_BROKER
check "browser: the example frontend in chromium (sign-up, readiness, Web-STOMP round trip, isolation)" node frontend/e2e.mjs
check "lint: fmt, clippy, cfn-lint, sam validate" bash dev/lint.sh
check "least privilege: every role of the translated template against its table (offline IAM evaluation)" bash dev/iam-check.sh
check "Lambda runtime smoke test (cargo lambda)" bash dev/lambda-smoke.sh
check "package from a clean clone with the stack's installer unavailable: sam build (arm64), the artifact, the example cells, plans and backend template shipped" bash dev/package-clean-clone.sh
check "sam local invoke (x86_64): a sign-up and a malformed event" bash dev/sam-invoke.sh --ci
echo "test: done in $((SECONDS - t0))s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
