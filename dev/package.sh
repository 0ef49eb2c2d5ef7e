#!/usr/bin/env bash
# `make package`: `sam build` of template.yml (cargo lambda, zig as the cross linker, for the
# template's architecture), then a check of the artifact SAM would deploy: every function's code
# holds `bootstrap` at its root, built for that architecture, and zips to at most 8 MB; then the
# files you ship with it (CELLS, BACKEND_TEMPLATE, PLANS), each checked as the cold start checks
# it. Needs only Rust (rustup), Python 3 and the pinned dev/requirements-package.txt (SAM CLI,
# cargo-lambda, zig), installed here into a cached virtualenv: no apt, no browser, no root, none
# of the test stack. `make deploy` deploys exactly this build, without building again.
set -euo pipefail
cd "$(dirname "$0")/.."
. dev/progress.sh
. dev/versions.sh
. dev/venv.sh
tools=$(venv dev/requirements-package.txt)
# The template's architecture (its Architecture parameter's default), or ARCH=… to override.
arch=${ARCH:-$(python3 -c "
import re; t = open('template.yml').read()
print(re.search(r'  Architecture:\n(?:    .*\n)*?    Default: (\w+)', t).group(1))")}
build_dir=${BUILD_DIR:-.aws-sam/build}
target=$([ "$arch" = arm64 ] && echo aarch64-unknown-linux-gnu || echo x86_64-unknown-linux-gnu)
rustup target list --installed | grep -qx "$target" || rustup target add "$target" >/dev/null
echo "package: sam build for $arch (a release build with LTO: several minutes the first time)" >&2
# cargo-lambda (and its zig) must be on PATH for SAM's rust-cargolambda build method.
PATH="$tools/bin:$PATH" SAM_CLI_TELEMETRY=0 heartbeat "building the $arch release" \
  "$tools/bin/sam" build --template-file template.yml --build-dir "$build_dir" \
  --parameter-overrides "Architecture=$arch" >/dev/null
python3 - "$arch" "$build_dir" <<'PY'
import io, os, re, struct, sys, zipfile
arch, build = sys.argv[1:3]
template = open(os.path.join(build, "template.yaml")).read()
# The ELF header's e_machine: 183 is AArch64, 62 is x86-64 (no `file` needed).
machine = {"arm64": 183, "x86_64": 62}[arch]
functions = [d for d in os.listdir(build) if os.path.isfile(os.path.join(build, d, "bootstrap"))]
if not functions:
    sys.exit("package: no function directory with a bootstrap at its root under .aws-sam/build")
for fn in sorted(functions):
    if f"CodeUri: {fn}" not in template:
        sys.exit(f"package: {build}/template.yaml does not point {fn} at its built code")
    path = os.path.join(build, fn, "bootstrap")
    with open(path, "rb") as f:
        header = f.read(20)
    if header[:4] != b"\x7fELF" or struct.unpack("<H", header[18:20])[0] != machine:
        sys.exit(f"package: {path} is not an ELF executable for {arch}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(path, "bootstrap")
    mb = len(buf.getvalue()) / 1048576
    if mb > 8:
        sys.exit(f"package: {fn} zips to {mb:.2f} MB, over the 8 MB limit")
    print(f"package: {fn}: bootstrap for {arch} at the code root, {os.path.getsize(path) / 1048576:.1f} MB, {mb:.2f} MB zipped")
print(f"package: ok ({build}/template.yaml is what `make deploy` deploys)")
PY
# What ships beside `bootstrap` is checked by the tenantctl of this tree (a debug build).
tenantctl=${CARGO_TARGET_DIR:-target}/debug/tenantctl
if [ -n "${BACKEND_TEMPLATE:-}${CELLS:-}${PLANS:-}" ]; then cargo build -q --bin tenantctl; fi
# ship FILE NAME PARAMETER FUNCTION...: FILE (checked already) beside `bootstrap` of each
# FUNCTION as /var/task/NAME; deploy with PARAMETER=/var/task/NAME.
ship() {
  local file=$1 name=$2 parameter=$3 fn; shift 3
  for fn in "$@"; do
    cp "$file" "$build_dir/$fn/$name"
    cmp -s "$file" "$build_dir/$fn/$name" || { echo "package: $fn has no copy of $file" >&2; exit 1; }
  done
  echo "package: $file ships as /var/task/$name (deploy with $parameter=/var/task/$name)"
}
# PLANS=FILE: your plans, for every function that applies plans. Checked as the cold start checks it.
if [ -n "${PLANS:-}" ]; then
  "$tenantctl" check-plans "$PLANS" >/dev/null
  ship "$PLANS" plans.yaml PlansPath PostSignupFunction HandoffWorkerFunction ReconcilerFunction
fi
# BACKEND_TEMPLATE=FILE: your backend's Deployment template, for each function that applies
# Deployments. Checked here as the cold start checks it.
if [ -n "${BACKEND_TEMPLATE:-}" ]; then
  "$tenantctl" check-template "$BACKEND_TEMPLATE" >/dev/null
  ship "$BACKEND_TEMPLATE" backend-template.yaml BackendTemplatePath \
    PostSignupFunction HandoffWorkerFunction ReconcilerFunction
fi
# CELLS=FILE: your cells file, for every function (the API reads each cell's Web-STOMP URL from
# it). Checked as the cold start checks it, and every cell's admin secret against what the roles
# may read (ADMIN_SECRET_ID, default: what the template derives from its Installation,
# INSTALLATION, default post-signup).
if [ -n "${CELLS:-}" ]; then
  admin_id=${ADMIN_SECRET_ID:-${INSTALLATION:-post-signup}/rabbitmq-admin}
  "$tenantctl" check-cells "$CELLS" --admin-secret-id "$admin_id" >/dev/null
  ship "$CELLS" cells.yaml CellsPath \
    PostSignupFunction HandoffWorkerFunction ReconcilerFunction TenantApiFunction
fi
