#!/usr/bin/env bash
# Installs everything the local stack, the tests and the demo need, on a fresh machine:
# Debian packages, pinned Python tools (in virtualenvs), and the Go-built Kubernetes binaries.
# Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
. dev/versions.sh
# Packaging and deploying never need this installer (dev/package.sh has its own pinned tools);
# a check proves it by making it unavailable.
if [ -n "${POST_SIGNUP_NO_STACK_INSTALL:-}" ]; then
  echo "install: the stack's installer is unavailable here (POST_SIGNUP_NO_STACK_INSTALL)" >&2
  exit 1
fi

need_apt=()
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need_apt+=(rabbitmq-server)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v file >/dev/null 2>&1 || need_apt+=(file)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
# The browser test drives Debian's chromium (tools that download their own browser cannot here).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install: apt-get install ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Installing rabbitmq-server must not start Debian's default node on 5672/15672: the stack
  # runs its own isolated node. policy-rc.d exit 101 tells invoke-rc.d not to start services.
  created_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created_policy=1
  fi
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

. dev/venv.sh

# The RabbitMQ 4.0 root filesystem: Debian trixie minbase plus its rabbitmq-server, made once.
rabbitmq4_rootfs() {
  local r=$RABBITMQ4_ROOTFS
  [ -f "$r/.complete" ] && return 0
  echo "install: RabbitMQ 4.0 from Debian $RABBITMQ4_SUITE into $r (once per machine, about a minute)" >&2
  rm -rf "$r.tmp" && mkdir -p "$(dirname "$r")"
  debootstrap --variant=minbase "$RABBITMQ4_SUITE" "$r.tmp" http://deb.debian.org/debian >/dev/null
  printf '#!/bin/sh\nexit 101\n' > "$r.tmp/usr/sbin/policy-rc.d" && chmod +x "$r.tmp/usr/sbin/policy-rc.d"
  unshare --mount --propagation private sh -c 'mount -t proc proc "$0/proc" && exec chroot "$0" sh -c \
    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server" >/dev/null 2>&1' "$r.tmp"
  printf '127.0.0.1 localhost\n::1 localhost\n' > "$r.tmp/etc/hosts"
  mkdir -p "$r.tmp/stack"
  rm -rf "$r" && mv "$r.tmp" "$r" && touch "$r/.complete"
}

mkdir -p "$CACHE_DIR"
stack_venv=$(venv "$STACK_REQUIREMENTS")
lint_venv=
if [ "${1:-}" = "--lint" ]; then
  # Only the linters: no stack binaries needed.
  lint_venv=$(venv "$LINT_REQUIREMENTS")
else
  bash dev/build-go-tools.sh
  rabbitmq4_rootfs
fi

# For other scripts: where things are.
mkdir -p .stack
printf 'STACK_VENV=%s\nGO_BIN_DIR=%s\n' "$stack_venv" "$GO_BIN_DIR" > .stack/tools.base
if [ -n "$lint_venv" ]; then
  printf 'LINT_VENV=%s\n' "$lint_venv" > .stack/tools.lint
fi

# The example frontend's pinned packages (the STOMP client it serves, playwright-core for its
# browser test), from its lock file; npm keeps its download cache outside the repository.
if [ ! -f frontend/node_modules/.package-lock.json ] || ! cmp -s frontend/package-lock.json frontend/node_modules/.post-signup-lock; then
  echo "install: npm ci in frontend/" >&2
  npm ci --prefix frontend --no-audit --no-fund >/dev/null
  cp frontend/package-lock.json frontend/node_modules/.post-signup-lock
fi
