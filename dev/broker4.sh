#!/usr/bin/env bash
# A throwaway RabbitMQ 4.0 node beside the stack, on Mnesia (the stack's own 4.0 node runs
# Khepri), for `make bench` to compare the two metadata stores on the same machine and run.
#   dev/broker4.sh up     start it; prints its management URL (admin as in .stack/env)
#   dev/broker4.sh down   stop it and delete its state
set -euo pipefail
cd "$(dirname "$0")/.."
. dev/versions.sh
S=.stack
R=$(pwd)/$S/broker4-mnesia
[ -f $S/env ] || { echo "broker4: the stack is not up: run 'make stack-up'" >&2; exit 1; }
set -a; . $S/env; set +a

down() {
  if [ -f "$R/launcher.pid" ]; then kill -- -"$(cat "$R/launcher.pid")" 2>/dev/null || true; fi
  if [ -f "$R/ports" ]; then . "$R/ports"; ERL_EPMD_PORT=$EPMD epmd -kill >/dev/null 2>&1 || true; fi
  for _ in $(seq 50); do [ -f "$R/launcher.pid" ] && kill -0 "$(cat "$R/launcher.pid")" 2>/dev/null || break; sleep 0.1; done
  rm -rf "$R"
}

up() {
  down
  mkdir -p "$R/mnesia" "$R/log"
  read -r AMQP MGMT DIST EPMD < <(python3 -c "
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks: s.bind(('127.0.0.1', 0))
print(' '.join(str(s.getsockname()[1]) for s in socks))")
  printf 'AMQP=%s\nMGMT=%s\nDIST=%s\nEPMD=%s\n' "$AMQP" "$MGMT" "$DIST" "$EPMD" > "$R/ports"
  cat > "$R/rabbitmq.conf" <<EOT
listeners.tcp.default = 127.0.0.1:$AMQP
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT
default_user = $RABBITMQ_ADMIN_USERNAME
default_pass = $RABBITMQ_ADMIN_PASSWORD
default_user_tags.administrator = true
log.console = true
log.console.level = warning
log.file = false
EOT
  echo "[rabbitmq_management]." > "$R/enabled_plugins"
  setsid unshare --mount --propagation private sh -c \
    'mount -t proc proc "$0/proc" && mount --bind /dev "$0/dev" && mount --bind "$1" "$0/stack" && shift && exec chroot "$@"' \
    "$RABBITMQ4_ROOTFS" "$R" "$RABBITMQ4_ROOTFS" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/stack \
    RABBITMQ_NODENAME="bench4-$AMQP@localhost" RABBITMQ_CONFIG_FILE=/stack/rabbitmq.conf \
    RABBITMQ_ENABLED_PLUGINS_FILE=/stack/enabled_plugins RABBITMQ_MNESIA_BASE=/stack/mnesia \
    RABBITMQ_LOG_BASE=/stack/log RABBITMQ_DIST_PORT="$DIST" ERL_EPMD_PORT="$EPMD" \
    RABBITMQ_PID_FILE=/stack/pid /usr/lib/rabbitmq/bin/rabbitmq-server > "$R/launcher.log" 2>&1 < /dev/null &
  echo $! > "$R/launcher.pid"
  for _ in $(seq 600); do
    if curl -sf -u "$RABBITMQ_ADMIN_USERNAME:$RABBITMQ_ADMIN_PASSWORD" "http://127.0.0.1:$MGMT/api/overview" >/dev/null 2>&1; then
      echo "http://127.0.0.1:$MGMT"; return 0
    fi
    kill -0 "$(cat "$R/launcher.pid")" 2>/dev/null || { tail -20 "$R/launcher.log" >&2; echo "broker4: the node exited" >&2; exit 1; }
    sleep 0.2
  done
  tail -20 "$R/launcher.log" >&2; echo "broker4: not up after 120 s" >&2; exit 1
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
