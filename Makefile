# post-signup: the Cognito PostConfirmation tenant provisioner.
# `make demo` is the main job; `make test` is what CI runs. Both install what they need.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

STACK_ENV := .stack/env
EVENT ?= events/post-confirmation.json
# sam-invoke: an explicit EVENT=… is sent as it is; without one, the fixture with a fresh sub.
EVENT_ARG := $(if $(filter command line environment,$(origin EVENT)),$(EVENT),)
# Lambda's Graviton target; see `build` for the fallback.
ARM_TARGET := aarch64-unknown-linux-gnu

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

stack-up: ## Start the local stack (installs what is missing; idempotent)
	bash dev/stack.sh up

stack-down: ## Stop the local stack and delete its state
	bash dev/stack.sh down

demo: ## Bring the stack up; a person signs up (Cognito calls the trigger) and gets their tenant from GET /tenant; prints how to open the example page
	bash dev/demo.sh

test: ## Unit + integration tests against the stack (started and stopped if not running), lint, Lambda runtime smoke test
	bash dev/test.sh

bench: ## Token signing, tenantctl vs aws eks get-token, cold/warm invocations, bursts, reconcile, list, vhost creation per broker setup
	bash dev/bench.sh

lint: ## cargo fmt --check, clippy -D warnings, cfn-lint, sam validate --lint
	bash dev/lint.sh

build: ## Release build of the Lambda (arm64, or x86_64 where the arm64 target cannot be installed)
	bash dev/build.sh

watch: ## cargo lambda watch with the stack's settings (invoke with `make invoke`)
	@test -f $(STACK_ENV) || { echo "the stack is not up: make stack-up"; exit 1; }
	. .stack/tools.base && "$$STACK_VENV/bin/cargo-lambda" lambda watch --ignore-changes --env-file $(STACK_ENV) --bin post-signup

invoke: ## Send EVENT (default events/post-confirmation.json) to a running `make watch`
	. .stack/tools.base && "$$STACK_VENV/bin/cargo-lambda" lambda invoke post-signup --data-file $(EVENT) --output-format json

package: ## sam build (arm64 release) and check the artifact in .aws-sam/build; CELLS=, BACKEND_TEMPLATE=, PLANS= ship those files (needs only Rust and Python)
	bash dev/package.sh

deploy: ## Deploy what `make package` built, without building again (guided the first time; answers kept in ./samconfig.toml; needs AWS credentials)
	bash dev/deploy.sh

sam-invoke: ## sam local invoke EVENT (default events/post-confirmation.json with a fresh sub) against the stack, offline; ARCH=x86_64|arm64
	bash dev/sam-invoke.sh "$(EVENT_ARG)"

.PHONY: help stack-up stack-down demo test bench lint build package watch invoke deploy sam-invoke
