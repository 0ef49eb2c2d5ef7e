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
cleanup() { [ -n "$started" ] && bash dev/stack.sh down; }
trap cleanup EXIT

# Integration tests share the one stack; each uses its own tenant, so they run in parallel.
cargo test 2>&1
cargo test --doc 2>&1 | tail -n 3
bash dev/lint.sh
bash dev/lambda-smoke.sh
echo "test: done in $((SECONDS - t0))s"
