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

log=$(mktemp)
# Unit, integration (they share the one stack; each uses its own tenant, so they run in
# parallel) and doc tests.
cargo test 2>&1 | tee "$log"
passed=$(awk '/^test result:/ {s += $4} END {print s + 0}' "$log")
failed=$(awk '/^test result:/ {s += $6} END {print s + 0}' "$log")
rm -f "$log"
# The SAM template and code style, then the Lambda runtime path end to end.
bash dev/lint.sh
bash dev/lambda-smoke.sh
echo "test: done in $((SECONDS - t0))s (cargo tests, lint, Lambda runtime smoke test)"
echo "$((passed + 2)) passed, $failed failed"
