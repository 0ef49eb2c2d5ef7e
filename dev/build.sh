#!/usr/bin/env bash
# `make build`: the Lambda's release build with cargo lambda (zig as the cross linker), for
# Lambda's arm64 (Graviton). If the arm64 target cannot be installed here, say so and build x86_64.
set -euo pipefail
cd "$(dirname "$0")/.."
# cargo-lambda and zig come with the stack's Python tools.
bash dev/install.sh >/dev/null
. .stack/tools.base
arch=--arm64
if ! rustup target list --installed 2>/dev/null | grep -q aarch64-unknown-linux-gnu; then
  if ! rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1; then
    echo "build: the aarch64-unknown-linux-gnu target cannot be installed on this machine; building x86_64 instead (set Architectures: [x86_64] in template.yml to deploy it)" >&2
    arch=--x86-64
  fi
fi
PATH="$STACK_VENV/bin:$PATH" "$STACK_VENV/bin/cargo-lambda" lambda build --release $arch --bin post-signup --output-format zip
zip=target/lambda/post-signup/bootstrap.zip
ls -l "$zip" | awk '{printf "build: %s %.2f MB\n", $9, $5/1048576}'
