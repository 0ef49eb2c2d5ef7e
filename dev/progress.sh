# Sourced by the dev/ scripts. `heartbeat LABEL CMD...` runs CMD and, while it runs, says every
# 20 s that LABEL is still going and for how long: a long build is never minutes of silence.
heartbeat() {
  local label=$1; shift
  local t0=$SECONDS
  ( while sleep 20; do echo "  … still $label ($((SECONDS - t0))s)" >&2; done ) &
  local ticker=$!
  local status=0
  "$@" || status=$?
  kill "$ticker" 2>/dev/null || true
  wait "$ticker" 2>/dev/null || true
  return "$status"
}
