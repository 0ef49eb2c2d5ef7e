#!/usr/bin/env bash
# `make lint`: formatting, the layers of src/, clippy with warnings as errors, and the SAM template checks
# (cfn-lint and `sam validate --lint`, pinned in dev/requirements-lint.txt; both work offline).
set -euo pipefail
cd "$(dirname "$0")/.."
bash dev/install.sh --lint
. .stack/tools.lint
cargo fmt --check
# The house rule of src/: imports point down the layers, no cycle (see src/lib.rs).
python3 dev/layers.py
cargo clippy --all-targets -- -D warnings
"$LINT_VENV/bin/cfn-lint" template.yml
# sam validate needs a region but no credentials for --lint.
AWS_REGION=${AWS_REGION:-us-east-1} AWS_DEFAULT_REGION=${AWS_REGION:-us-east-1} SAM_CLI_TELEMETRY=0 \
  "$LINT_VENV/bin/sam" validate --lint --template-file template.yml
# The dashboard's body is JSON inside a !Sub string: neither linter reads it.
python3 - <<'PY'
import json, re, sys
t = open("template.yml").read()
m = re.search(r"DashboardBody: !Sub\n        - \|\n((?:          .*\n)+)", t)
if not m:
    sys.exit("lint: no DashboardBody found in template.yml")
try:
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "X", m.group(1)))["widgets"]
except (ValueError, KeyError) as e:
    sys.exit(f"lint: the dashboard body is not valid JSON: {e}")
PY
echo "lint: ok"
