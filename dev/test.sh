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
# An if, not `[ … ] && …`: under set -e a false test as the last command would fail the run.
cleanup() { if [ -n "$started" ]; then bash dev/stack.sh down; fi; }
trap cleanup EXIT

passed=0 failed=0
# check NAME CMD...: one pass/fail check beside the cargo tests, counted in the closing line.
check() {
  local name=$1; shift
  echo "== $name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $name"; fi
}

log=$(mktemp)
# Unit, integration (they share the one stack; each uses its own tenant, so they run in
# parallel) and doc tests.
status=0
cargo test 2>&1 | tee "$log" || status=$?
passed=$((passed + $(awk '/^test result:/ {s += $4} END {print s + 0}' "$log")))
failed=$((failed + $(awk '/^test result:/ {s += $6} END {print s + 0}' "$log")))
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi  # a build failure counts
rm -f "$log"
check "lint: fmt, clippy, cfn-lint, sam validate" bash dev/lint.sh
check "Lambda runtime smoke test (cargo lambda)" bash dev/lambda-smoke.sh
echo "test: done in $((SECONDS - t0))s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
