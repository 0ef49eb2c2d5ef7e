# post-signup: the Cognito PostConfirmation tenant provisioner.
# `make demo` is the main job; `make test` is what CI runs. Both install what they need.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

STACK_ENV := .stack/env
EVENT ?= events/post-confirmation.json
# Lambda's Graviton target; see `build` for the fallback.
ARM_TARGET := aarch64-unknown-linux-gnu

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

stack-up: ## Start the local stack (installs what is missing; idempotent)
	bash dev/stack.sh up

stack-down: ## Stop the local stack and delete its state
	bash dev/stack.sh down

demo: ## Bring the stack up and provision events/post-confirmation.json end to end
	bash dev/demo.sh

test: ## Unit + integration tests against the stack (started and stopped if not running), lint, Lambda runtime smoke test
	bash dev/test.sh

bench: ## Token signing, tenantctl vs aws eks get-token, cold/warm invocations on the stack
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

deploy: build ## sam deploy --guided (needs AWS credentials)
	. .stack/tools.lint && "$$LINT_VENV/bin/sam" deploy --guided --template-file template.yml

.PHONY: help stack-up stack-down demo test bench lint build watch invoke deploy
