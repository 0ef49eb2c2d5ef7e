#!/usr/bin/env bash
# What a deployer does, checked in `make test`: `make package` from a clean clone of this
# commit, with the test stack's installer made unavailable (POST_SIGNUP_NO_STACK_INSTALL), so
# packaging provably needs only Rust, Python and its own pinned tools; every shipped file
# (cells, plans, backend template) must be in the build, and the build must still be there
# for `make deploy` (which never builds). The clone shares this tree's cargo target directory,
# so the dependencies are not built twice in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
git clone -q --no-hardlinks "$root" "$work/src"
cd "$work/src"
export POST_SIGNUP_NO_STACK_INSTALL=1
CARGO_TARGET_DIR="$root/target" \
  CELLS=deploy/cells.yaml PLANS=deploy/plans.yaml BACKEND_TEMPLATE=deploy/backend-deployment.yaml \
  bash dev/package.sh
for fn in PostSignupFunction HandoffWorkerFunction ReconcilerFunction; do
  for f in cells.yaml plans.yaml backend-template.yaml; do
    [ -f ".aws-sam/build/$fn/$f" ] || { echo "package: $fn is missing $f" >&2; exit 1; }
  done
done
[ -f .aws-sam/build/TenantApiFunction/cells.yaml ] || { echo "package: the API is missing cells.yaml" >&2; exit 1; }
# The installer really is unavailable here: the check would be meaningless otherwise.
if bash dev/install.sh --lint >/dev/null 2>&1; then
  echo "package: the stack's installer ran although it was made unavailable" >&2
  exit 1
fi
echo "package: a clean clone packaged with the stack's installer unavailable; cells, plans and backend template shipped"
