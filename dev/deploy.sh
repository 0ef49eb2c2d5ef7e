#!/usr/bin/env bash
# `make deploy`: deploys exactly what `make package` built (.aws-sam/build), never building
# again (a build would empty that directory and drop the files shipped with it). The first
# deploy is guided and its answers are saved in ./samconfig.toml, at the project's root (not in
# the build directory, which the next package empties); every later deploy reuses them, so an
# update keeps its VPC, pool and every other answer. Needs AWS credentials.
set -euo pipefail
cd "$(dirname "$0")/.."
. dev/versions.sh
. dev/venv.sh
build_dir=${BUILD_DIR:-.aws-sam/build}
if [ ! -f "$build_dir/template.yaml" ]; then
  echo "deploy: nothing is packaged: run \`make package\` first (with CELLS=… BACKEND_TEMPLATE=… PLANS=… for the files you ship)" >&2
  exit 1
fi
tools=$(venv dev/requirements-package.txt)
config="$PWD/samconfig.toml"
# The parameters that point the functions at the files this package ships.
shipped=()
[ -f "$build_dir/PostSignupFunction/cells.yaml" ] && shipped+=(CellsPath=/var/task/cells.yaml)
[ -f "$build_dir/PostSignupFunction/backend-template.yaml" ] && shipped+=(BackendTemplatePath=/var/task/backend-template.yaml)
[ -f "$build_dir/PostSignupFunction/plans.yaml" ] && shipped+=(PlansPath=/var/task/plans.yaml)
export SAM_CLI_TELEMETRY=0
if [ ! -f "$config" ]; then
  # Guided: the shipped files' parameters are offered as the answers' defaults.
  args=(deploy --guided --template-file "$build_dir/template.yaml" --config-file "$config")
  if [ ${#shipped[@]} -gt 0 ]; then args+=(--parameter-overrides "${shipped[@]}"); fi
  exec "$tools/bin/sam" "${args[@]}"
fi
# Saved answers: passing overrides would replace all of them, so the saved ones must already
# point at what ships (a package with a cells file and answers without CellsPath would start
# functions that never read it).
python3 - "$config" "${shipped[@]}" <<'PY'
import shlex, sys, tomllib
config, shipped = sys.argv[1], sys.argv[2:]
with open(config, "rb") as f:
    saved = tomllib.load(f)
raw = saved.get("default", {}).get("deploy", {}).get("parameters", {}).get("parameter_overrides", "")
given = dict(p.split("=", 1) for p in (shlex.split(raw) if isinstance(raw, str) else raw) if "=" in p)
for p in shipped:
    key, value = p.split("=", 1)
    if given.get(key) != value:
        sys.exit(f"deploy: the package ships {value} but {config} sets {key}={given.get(key, '')!r}: "
                 f"set {key}={value} in its parameter_overrides (or remove the file to answer the guided questions again)")
PY
exec "$tools/bin/sam" deploy --template-file "$build_dir/template.yaml" --config-file "$config"
