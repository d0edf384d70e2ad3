# Herald: every build, test and deploy step lives here once. People, CodeBuild and
# Jenkins all call these targets; nothing else knows the commands behind them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

VENV := .venv
CHECKOV_PROJECT := tools/checkov
UV_VERSION := 0.13.9
BIN := $(VENV)/bin
UV := $(BIN)/uv
STAMP := $(VENV)/.installed
TEMPLATES := template.yaml $(wildcard stacks/*.yaml)

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: install
install: $(STAMP) ## Create .venv (Python 3.13 when available) and install the locked dependencies

# Rebuilt only when a lock or pyproject changes, so `make test` stays quick after the first run.
$(STAMP): pyproject.toml uv.lock $(CHECKOV_PROJECT)/pyproject.toml $(CHECKOV_PROJECT)/uv.lock scripts/find-python
	@python="$$(scripts/find-python)"; echo "install: using $$python"; \
	  if [ ! -x $(BIN)/python ] || ! $(BIN)/python -c 'import sys' 2>/dev/null; then rm -rf $(VENV); "$$python" -m venv $(VENV); fi
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(UV) sync --frozen --python $(BIN)/python
	$(UV) sync --frozen --project $(CHECKOV_PROJECT) --python $(BIN)/python
	@touch $@

.PHONY: lock
lock: $(STAMP) ## Re-resolve uv.lock and tools/checkov/uv.lock after a dependency change
	$(UV) lock
	$(UV) lock --project $(CHECKOV_PROJECT)

.PHONY: format
format: $(STAMP) ## Rewrite the code in ruff's format and apply safe fixes
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

.PHONY: lint
lint: $(STAMP) ## ruff, ruff format --check, mypy --strict, cfn-lint on every template
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/cfn-lint $(TEMPLATES)

.PHONY: test
test: lint ## Install, lint and run every test (what CI runs)
	$(BIN)/pytest

.PHONY: build
build: $(STAMP) ## sam build: the Lambda artifact for arm64 / python3.13, offline and without Docker
	$(BIN)/sam build --template-file template.yaml
