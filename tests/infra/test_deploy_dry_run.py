"""`make deploy ENV=staging DRY_RUN=1` prints exactly the commands a release runs, in order.

The dry run walks the same code as a deploy; only the reads (stack outputs, the account,
ECR's tags, the task definition, the task's exit code) are answered with examples.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from typing import TYPE_CHECKING

import pytest

from herald_deploy.destroy import KEPT_OUTSIDE, KEPT_RESOURCES
from tests.conftest import REPO_ROOT, require_tool

if TYPE_CHECKING:
    from pathlib import Path

    from tests.infra.conftest import Template

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REGISTRY = "111122223333.dkr.ecr.us-east-1.amazonaws.com"
IMAGE = f"{REGISTRY}/herald:{COMMIT}"
STACK = "herald-staging"
REGION = ["--region", "us-east-1"]
BUCKET = "s3://herald-staging-sitebucket-example"
CLUSTER = "herald-staging-cluster"
TASK_DEFINITION = "arn:aws:ecs:us-east-1:111122223333:task-definition/herald-staging-migrate"
# A dry run's one-off tasks (migrations, the drill's check, a bootstrap) share one example id.
TASK = f"arn:aws:ecs:us-east-1:111122223333:task/{CLUSTER}/0fedcba987654321"
IMMUTABLE = "public, max-age=31536000, immutable"
DESCRIBE_STACK = [
    "aws", "cloudformation", "describe-stacks", *REGION, "--stack-name", STACK,
    "--query", "Stacks[0].Outputs", "--output", "json",
]  # fmt: skip
# One-off tasks run in the private subnets with the security group the database accepts.
NETWORK = (
    "awsvpcConfiguration={subnets=[subnet-0example00000000a,subnet-0example00000000b],"
    "securityGroups=[sg-0example000000000],assignPublicIp=DISABLED}"
)


def one_off_task(stack: str, *, started_by: str, overrides: str) -> list[list[str]]:
    """What a dry run prints to run a command once as a task of `stack`'s migration task
    definition (the command and variables in the file `overrides`) and read its output."""
    cluster = f"{stack}-cluster"
    definition = f"arn:aws:ecs:us-east-1:111122223333:task-definition/{stack}-migrate:7"
    task = f"arn:aws:ecs:us-east-1:111122223333:task/{cluster}/0fedcba987654321"
    return [
        ["aws", "ecs", "describe-task-definition", *REGION, "--task-definition", definition,
         "--query", "taskDefinition", "--output", "json"],
        ["write", overrides],
        ["aws", "ecs", "run-task", *REGION, "--cluster", cluster, "--launch-type", "FARGATE",
         "--task-definition", definition, "--started-by", started_by,
         "--network-configuration", NETWORK, "--overrides", f"file://{overrides}",
         "--output", "json"],
        ["aws", "ecs", "wait", "tasks-stopped", *REGION, "--cluster", cluster, "--tasks", task],
        ["aws", "ecs", "describe-tasks", *REGION, "--cluster", cluster, "--tasks", task,
         "--query", "tasks[0]", "--output", "json"],
        ["aws", "logs", "get-log-events", *REGION,
         "--log-group-name", f"/herald/{stack}-migrate/migrate",
         "--log-stream-name", "migrate/migrate/0fedcba987654321", "--start-from-head",
         "--query", "events[].message", "--output", "json"],
    ]  # fmt: skip


def dry_run(target: str, *variables: str) -> list[str]:
    """Run a deploy target in dry-run mode; return its printed lines."""
    make = require_tool("make")
    env = {
        **os.environ,
        "CI": "",
        "COMMIT": "",
        "CFN_ROLE_ARN": "",
        "PERMISSIONS_BOUNDARY_ARN": "",
        "NO_WAIT": "",
    }
    result = subprocess.run(
        # -o: treat the install stamp as up to date, whatever changed since `make install`.
        [make, "--no-print-directory", "-o", ".venv/.installed", target, "DRY_RUN=1",
         f"COMMIT={COMMIT}", *variables],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def commands(lines: list[str]) -> list[list[str]]:
    """The printed commands (`+ ...` lines) as argument lists; file writes as ["write", path]."""
    found = []
    for line in lines:
        if line.startswith("+ write "):
            found.append(["write", line.removeprefix("+ write ").split(": ", 1)[0]])
        elif line.startswith("+ "):
            found.append(shlex.split(line.removeprefix("+ ")))
    return found


def written(lines: list[str], path: str) -> str:
    """What the dry run says it writes to `path`."""
    prefix = f"+ write {path}: "
    return next(line.removeprefix(prefix) for line in lines if line.startswith(prefix))


@pytest.fixture(scope="module")
def staging_release() -> list[str]:
    return dry_run("deploy", "ENV=staging")


def test_backend_pushes_migrates_then_deploys_with_the_commits_image(
    staging_release: list[str],
) -> None:
    # Given the dry run of a staging release
    run = commands(staging_release)
    backend = run[: run.index(["sam", "build", "--config-env", "staging"]) + 2]

    # Then the backend's commands are exactly these, in this order
    assert backend[:-1] == [
        DESCRIBE_STACK,
        ["aws", "sts", "get-caller-identity", *REGION, "--query", "Account", "--output", "text"],
        ["aws", "ecr", "list-images", *REGION, "--repository-name", "herald",
         "--filter", "tagStatus=TAGGED", "--output", "json"],
        ["aws", "ecr", "get-login-password", *REGION, "|",
         "docker", "login", "--username", "AWS", "--password-stdin", REGISTRY],
        ["docker", "build", "--platform", "linux/arm64", "--file", "ecs_service/Dockerfile",
         "--tag", IMAGE, "--label", f"org.opencontainers.image.revision={COMMIT}", "."],
        ["docker", "push", IMAGE],
        ["aws", "ecs", "describe-task-definition", *REGION,
         "--task-definition", f"{TASK_DEFINITION}:7", "--query", "taskDefinition",
         "--output", "json"],
        ["write", "build/herald-deploy/herald-staging-migrate.json"],
        ["aws", "ecs", "register-task-definition", *REGION,
         "--cli-input-json", "file://build/herald-deploy/herald-staging-migrate.json",
         "--query", "taskDefinition.taskDefinitionArn", "--output", "text"],
        ["aws", "ecs", "run-task", *REGION, "--cluster", CLUSTER, "--launch-type", "FARGATE",
         "--task-definition", f"{TASK_DEFINITION}:8", "--started-by", "herald-deploy",
         "--network-configuration", NETWORK, "--output", "json"],
        ["aws", "ecs", "wait", "tasks-stopped", *REGION, "--cluster", CLUSTER, "--tasks", TASK],
        ["aws", "ecs", "describe-tasks", *REGION, "--cluster", CLUSTER, "--tasks", TASK,
         "--query", "tasks[0]", "--output", "json"],
        ["aws", "ecs", "deregister-task-definition", *REGION,
         "--task-definition", f"{TASK_DEFINITION}:8", "--query", "taskDefinition.status",
         "--output", "text"],
        ["sam", "build", "--config-env", "staging"],
    ]  # fmt: skip
    sam_deploy = backend[-1]
    assert sam_deploy[:4] == ["sam", "deploy", "--config-env", "staging"]
    assert "--no-confirm-changeset" not in sam_deploy  # a person confirms the change set


def test_the_one_off_migration_revision_runs_the_new_image(staging_release: list[str]) -> None:
    # Given the registration request the dry run writes
    request = json.loads(
        written(staging_release, "build/herald-deploy/herald-staging-migrate.json")
    )

    # Then it is the stack's task definition with only the image replaced
    assert request["containerDefinitions"][0]["name"] == "migrate"
    assert request["containerDefinitions"][0]["image"] == IMAGE
    assert request["containerDefinitions"][0]["command"] == ["herald", "migrate"]
    assert "revision" not in request and "taskDefinitionArn" not in request


def test_sam_deploy_passes_every_samconfig_parameter_with_the_new_image(
    staging_release: list[str],
) -> None:
    # Given the sam deploy command of the release
    sam_deploy = next(c for c in commands(staging_release) if c[:2] == ["sam", "deploy"])
    overrides = dict(
        item.split("=", 1) for item in sam_deploy[sam_deploy.index("--parameter-overrides") + 1 :]
    )

    # Then the command line replaces samconfig.toml's list, so all of it is there
    assert overrides["BackendImageUri"] == IMAGE
    assert overrides["ServiceVersion"] == COMMIT  # the task runner's DD_VERSION
    assert overrides["Environment"] == "staging"
    assert overrides["DatabaseInstanceClass"] == "db.t4g.small"
    assert overrides["ApiDomainName"] == "api.staging.example.com"


def test_frontend_uploads_assets_first_index_last_then_invalidates_and_prunes(
    staging_release: list[str],
) -> None:
    # Given the dry run of a staging release
    run = commands(staging_release)
    frontend = run[run.index(["sam", "build", "--config-env", "staging"]) + 2 :]

    # Then the web app is built, configured, uploaded in a safe order and invalidated
    assert frontend == [
        DESCRIBE_STACK,
        ["(cd", "frontend", "&&", "npm", "ci", "--no-audit", "--no-fund)"],
        ["(cd", "frontend", "&&", "npm", "run", "build)"],
        ["write", "frontend/dist/config.json"],
        ["aws", "s3", "sync", "frontend/dist/assets", f"{BUCKET}/assets", *REGION,
         "--cache-control", IMMUTABLE],
        ["aws", "s3", "sync", "frontend/dist", BUCKET, *REGION, "--delete",
         "--exclude", "assets/*", "--exclude", "index.html", "--exclude", "config.json",
         "--cache-control", "no-cache"],
        ["aws", "s3", "cp", "frontend/dist/config.json", f"{BUCKET}/config.json", *REGION,
         "--cache-control", "no-cache", "--content-type", "application/json"],
        ["aws", "s3", "cp", "frontend/dist/index.html", f"{BUCKET}/index.html", *REGION,
         "--cache-control", "no-cache", "--content-type", "text/html; charset=utf-8"],
        ["aws", "cloudfront", "create-invalidation", "--distribution-id", "E2EXAMPLE00000",
         "--paths", "/*", "--query", "Invalidation.Id", "--output", "text"],
        ["aws", "cloudfront", "wait", "invalidation-completed",
         "--distribution-id", "E2EXAMPLE00000", "--id", "I2EXAMPLEINVALIDATION"],
        ["aws", "s3", "sync", "frontend/dist/assets", f"{BUCKET}/assets", *REGION, "--delete",
         "--cache-control", IMMUTABLE],
    ]  # fmt: skip


def test_config_json_points_the_app_at_the_stacks_api(staging_release: list[str]) -> None:
    assert json.loads(written(staging_release, "frontend/dist/config.json")) == {
        "apiBaseUrl": "https://api.staging.example.com"
    }


def test_without_waiting_the_invalidation_id_is_printed_and_assets_are_kept(
    tmp_path: Path,
) -> None:
    # Given stack outputs from a file, and NO_WAIT
    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps(
            {
                "ApiUrl": "https://api.example.org",
                "SiteBucketName": "herald-prod-site-1",
                "SiteDistributionId": "E1",
                "SiteUrl": "https://app.example.org/",
            }
        )
    )

    # When the front-end of prod is deployed in a dry run, without waiting
    result = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "herald-deploy"), "frontend", "--env", "prod",
         "--dry-run", "--no-wait", "--outputs-file", str(outputs)],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()

    # Then nothing waits, the id is printed, and no asset is deleted
    run = commands(lines)
    assert not [c for c in run if c[:3] == ["aws", "cloudfront", "wait"]]
    assert any("I2EXAMPLEINVALIDATION" in line and "to wait" in line for line in lines)
    assert run[-1][:3] == ["aws", "cloudfront", "create-invalidation"]
    assert json.loads(written(lines, "frontend/dist/config.json")) == {
        "apiBaseUrl": "https://api.example.org"
    }


def test_pipelines_deploy_without_a_prompt_through_the_cloudformation_role() -> None:
    # Given a pipeline's variables
    lines = dry_run(
        "deploy-backend", "ENV=prod", "CI=true", "CFN_ROLE_ARN=arn:aws:iam::111122223333:role/cfn"
    )

    # Then sam deploy neither asks nor acts with the caller's own rights
    sam_deploy = next(c for c in commands(lines) if c[:2] == ["sam", "deploy"])
    assert "--no-confirm-changeset" in sam_deploy
    assert sam_deploy[sam_deploy.index("--role-arn") + 1] == "arn:aws:iam::111122223333:role/cfn"


def test_smoke_reads_the_api_url_and_the_smoke_tenants_secret_and_prints_no_key() -> None:
    # Given staging, dry-run
    lines = dry_run("smoke", "ENV=staging")

    # Then it reads the stack's outputs and the smoke tenant's secret, says what it sends
    # where, and never prints the key it read
    assert commands(lines) == [
        DESCRIBE_STACK,
        [
            "aws", "secretsmanager", "get-secret-value", *REGION,
            "--secret-id", "herald/staging/tenants/smoke",
            "--query", "SecretString", "--output", "text",
        ],
    ]  # fmt: skip
    assert any(
        "POST https://" in line and "success@simulator.amazonses.com" in line for line in lines
    )
    assert not [line for line in lines if "hk_example_not_a_key" in line]


def test_pipelines_deploy_every_role_with_the_pipelines_permissions_boundary() -> None:
    # Given the pipeline stack's boundary, as the deploy project's variable
    boundary = "arn:aws:iam::111122223333:policy/herald-pipeline-permissions-boundary"
    lines = dry_run("deploy-backend", "ENV=prod", "CI=true", f"PERMISSIONS_BOUNDARY_ARN={boundary}")

    # Then sam deploy passes it as the root stack's parameter, once
    sam_deploy = next(c for c in commands(lines) if c[:2] == ["sam", "deploy"])
    overrides = sam_deploy[sam_deploy.index("--parameter-overrides") + 1 :]
    assert [o for o in overrides if o.startswith("PermissionsBoundaryArn=")] == [
        f"PermissionsBoundaryArn={boundary}"
    ]


def test_a_staging_dry_run_warns_that_no_one_would_get_its_alarms(
    staging_release: list[str],
) -> None:
    # Given staging's samconfig.toml without AlarmEmail, dry-run
    warnings = [line for line in staging_release if "sets no AlarmEmail" in line]

    # Then the dry run says what a deploy would refuse (once, before any command)
    assert len(warnings) == 1
    assert staging_release.index(warnings[0]) < next(
        i for i, line in enumerate(staging_release) if line.startswith("+ ")
    )


def test_alarm_topic_subscribed_tells_the_deploy_a_subscriber_exists() -> None:
    # When prod is dry-run with ALARM_TOPIC_SUBSCRIBED=yes
    lines = dry_run("deploy-backend", "ENV=prod", "ALARM_TOPIC_SUBSCRIBED=yes")

    # Then no alarm warning is printed
    assert not [line for line in lines if "AlarmEmail" in line]


SITE_BUCKET = "herald-staging-sitebucket-example"
VERSIONS_FILE = f"build/herald-deploy/{SITE_BUCKET}-versions.json"
LIST_VERSIONS = [
    "aws", "s3api", "list-object-versions", *REGION, "--bucket", SITE_BUCKET,
    "--max-keys", "1000", "--no-paginate", "--output", "json",
]  # fmt: skip


def test_destroy_empties_the_site_bucket_lifts_protection_then_deletes_the_stack() -> None:
    # Given the dry run of destroying staging, confirmed with the stack's name
    lines = dry_run("destroy", "ENV=staging", f"CONFIRM={STACK}")

    # Then every version is deleted, the database's protection lifted (staging's table and
    # ALB have none), and the stack deleted, exactly in this order
    assert commands(lines) == [
        DESCRIBE_STACK,
        LIST_VERSIONS,
        ["write", VERSIONS_FILE],
        ["aws", "s3api", "delete-objects", *REGION, "--bucket", SITE_BUCKET,
         "--delete", f"file://{VERSIONS_FILE}", "--output", "json"],
        LIST_VERSIONS,
        ["aws", "rds", "modify-db-instance", *REGION,
         "--db-instance-identifier", "herald-staging-0a1b2c3d", "--no-deletion-protection",
         "--apply-immediately", "--query", "DBInstance.DBInstanceIdentifier",
         "--output", "text"],
        ["sam", "delete", "--stack-name", STACK, *REGION, "--no-prompts"],
    ]  # fmt: skip


def test_destroy_deletes_versions_and_delete_markers_alike() -> None:
    # Given the dry run of destroying staging
    lines = dry_run("destroy", "ENV=staging", f"CONFIRM={STACK}")

    # Then the delete request names each version and delete marker the listing gave
    request = json.loads(written(lines, VERSIONS_FILE))
    assert request == {
        "Objects": [
            {"Key": "index.html", "VersionId": "3sL4kqtJlcpXroDTDmJ_example_1"},
            {"Key": "assets/index-1a2b3c4d.js", "VersionId": "null"},
            {"Key": "assets/index-0f9e8d7c.js", "VersionId": "UIORUnfnd_example_2"},
        ],
        "Quiet": True,
    }


def test_destroy_says_what_the_templates_keep(
    template: Template, database: Template, backend: Template
) -> None:
    # Given every resource the templates keep when the stack is deleted
    kept = {
        logical_id
        for stack in (template, database, backend)
        for logical_id, resource in stack["Resources"].items()
        if resource.get("DeletionPolicy") in ("Retain", "Snapshot")
    }

    # When staging is destroyed (dry run)
    lines = dry_run("destroy", "ENV=staging", f"CONFIRM={STACK}")

    # Then the closing lines name exactly those, and what no environment stack owns
    assert set(KEPT_RESOURCES) == kept
    said = [line for line in lines if "kept: " in line]
    assert [line.split("kept: ", 1)[1] for line in said] == [
        *KEPT_RESOURCES.values(),
        *KEPT_OUTSIDE,
    ]


def test_make_destroy_refuses_when_confirm_is_not_the_stack_name() -> None:
    # Given a CONFIRM naming another environment's stack
    make = require_tool("make")

    # When staging is destroyed (even as a dry run)
    result = subprocess.run(
        [make, "--no-print-directory", "-o", ".venv/.installed", "destroy", "ENV=staging",
         "CONFIRM=herald-prod", "DRY_RUN=1"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip

    # Then nothing runs, and one line says what to type
    assert result.returncode != 0
    assert "+ " not in result.stdout
    assert (
        "herald-deploy: error: destroy deletes stack herald-staging and the data in it; "
        "to go on, run: make destroy ENV=staging CONFIRM=herald-staging\n"
    ) in result.stderr


DATABASE = "herald-staging-0a1b2c3d"
DRILL = f"{DATABASE}-restore-drill"
DRILL_CHECK = f"build/herald-deploy/{DRILL}-check.json"
DRILL_KEY = "arn:aws:kms:us-east-1:111122223333:key/0example-0000-4000-8000-000000000000"


def test_restore_drill_restores_beside_the_source_checks_then_deletes() -> None:
    # Given the dry run of a restore drill of staging to a given moment
    lines = dry_run("restore-drill", "ENV=staging", "RESTORE_TIME=2026-12-03T09:30:00+01:00")

    # Then the commands are exactly these, in this order: the copy shares the source's
    # network, parameters and key, is not public, and is deleted at the end
    assert commands(lines) == [
        DESCRIBE_STACK,
        ["aws", "rds", "describe-db-instances", *REGION, "--db-instance-identifier", DATABASE,
         "--query", "DBInstances[0]", "--output", "json"],
        ["aws", "rds", "restore-db-instance-to-point-in-time", *REGION,
         "--source-db-instance-identifier", DATABASE, "--target-db-instance-identifier", DRILL,
         "--restore-time", "2026-12-03T08:30:00Z", "--db-instance-class", "db.t4g.small",
         "--db-subnet-group-name", f"{DATABASE}-subnets",
         "--vpc-security-group-ids", "sg-0exampledatabase00",
         "--db-parameter-group-name", f"{DATABASE}-parameters",
         "--no-multi-az", "--no-publicly-accessible", "--no-deletion-protection",
         "--backup-retention-period", "0", "--manage-master-user-password",
         "--master-user-secret-kms-key-id", DRILL_KEY,
         "--tags", "Key=herald:restore-drill,Value=herald-staging",
         "--query", "DBInstance.DBInstanceStatus", "--output", "text"],
        ["aws", "rds", "wait", "db-instance-available", *REGION,
         "--db-instance-identifier", DRILL],
        ["aws", "rds", "describe-db-instances", *REGION, "--db-instance-identifier", DRILL,
         "--query", "DBInstances[0]", "--output", "json"],
        *one_off_task(STACK, started_by="herald-restore-drill", overrides=DRILL_CHECK),
        ["aws", "rds", "delete-db-instance", *REGION, "--db-instance-identifier", DRILL,
         "--skip-final-snapshot", "--delete-automated-backups",
         "--query", "DBInstance.DBInstanceStatus", "--output", "text"],
        ["aws", "rds", "wait", "db-instance-deleted", *REGION,
         "--db-instance-identifier", DRILL],
    ]  # fmt: skip


def test_restore_drill_checks_the_copy_with_the_environments_own_image() -> None:
    # Given the check task's override the dry run writes
    lines = dry_run("restore-drill", "ENV=staging")
    override = json.loads(written(lines, DRILL_CHECK))["containerOverrides"]

    # Then it runs `herald db check` against the copy, with the copy's own secret (by ARN)
    assert override == [
        {
            "name": "migrate",
            "command": ["herald", "db", "check"],
            "environment": [
                {"name": "DATABASE_HOST",
                 "value": f"{DRILL}.c0example0000.us-east-1.rds.amazonaws.com"},
                {"name": "DATABASE_PORT", "value": "5432"},
                {"name": "DATABASE_SECRET_ARN",
                 "value": "arn:aws:secretsmanager:us-east-1:111122223333:secret:"
                 "rds!db-0example-0000-4000-8000-000000000000-AbCdEf"},
            ],
        }
    ]  # fmt: skip
    # and without RESTORE_TIME the latest restorable time is restored, and said so
    restore = next(c for c in commands(lines) if "restore-db-instance-to-point-in-time" in c)
    assert "--use-latest-restorable-time" in restore
    assert "--restore-time" not in restore
    assert any("rows: api_keys 3, messages 1200, tenants 2" in line for line in lines)


BOOTSTRAP = "build/herald-deploy/herald-prod-bootstrap-initech.json"


def test_bootstrap_tenant_runs_the_cli_in_the_environment_and_prints_only_the_arn() -> None:
    # Given the dry run of bootstrapping tenant initech in prod
    lines = dry_run("bootstrap-tenant", "ENV=prod", "TENANT=initech")

    # Then one one-off task of the migration task definition runs the bootstrap, and the
    # secret's ARN is looked up by its name
    assert commands(lines)[1:] == [
        *one_off_task("herald-prod", started_by="herald-bootstrap-tenant", overrides=BOOTSTRAP),
        ["aws", "secretsmanager", "describe-secret", *REGION,
         "--secret-id", "herald/prod/tenants/initech", "--query", "ARN", "--output", "text"],
    ]  # fmt: skip
    override = json.loads(written(lines, BOOTSTRAP))["containerOverrides"]
    assert override == [
        {
            "name": "migrate",
            "command": ["herald", "tenants", "bootstrap", "--name", "initech",
                        "--secret-name", "herald/prod/tenants/initech"],
            "environment": [],
        }
    ]  # fmt: skip
    assert "secret:herald/prod/tenants/initech-AbCdEf" in lines[-2]


def test_bootstrap_tenant_passes_the_keys_lifetime_to_the_cli() -> None:
    # Given the dry run of bootstrapping tenant initech in prod with a 90-day key
    lines = dry_run("bootstrap-tenant", "ENV=prod", "TENANT=initech", "EXPIRES_DAYS=90")

    # Then the one-off task's command asks the CLI for a key that expires in 90 days
    (override,) = json.loads(written(lines, BOOTSTRAP))["containerOverrides"]
    assert override["command"] == [
        "herald", "tenants", "bootstrap", "--name", "initech",
        "--secret-name", "herald/prod/tenants/initech", "--expires-in-days", "90",
    ]  # fmt: skip
