"""`herald-deploy`: the composition root the Makefile's deploy targets call.

    herald-deploy backend  --env staging [--dry-run]   image, migrations, sam deploy
    herald-deploy frontend --env staging [--dry-run]   build, upload, invalidate
    herald-deploy all      --env staging [--dry-run]   backend, then frontend
    herald-deploy image    --env staging [--dry-run]   only build and push the image
    herald-deploy destroy  --env staging --yes [--dry-run]   delete the stack (see below)
    herald-deploy restore-drill --env staging [--restore-time T] [--dry-run]
                           restore the database into a temporary instance, check it, delete it
    herald-deploy bootstrap-tenant --env staging --tenant NAME [--expires-in-days N]
                           [--dry-run]   the first tenant and key; the key only in a new secret
    herald-deploy smoke --env staging [--dry-run]
                           one email through the api to SES's simulator, until delivered

`destroy` refuses to run without --yes (or --confirm naming the stack): it empties the
web app's bucket, turns off deletion protection and runs `sam delete`.

Every failure ends the run with exit code 1 and one message saying what went wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from herald_deploy.alarms import is_attended, missing_alarm_subscriber
from herald_deploy.backend import IMAGE_PARAMETER, deploy_backend, push_image
from herald_deploy.bootstrap import bootstrap_tenant
from herald_deploy.destroy import destroy
from herald_deploy.errors import DeployError
from herald_deploy.frontend import deploy_frontend
from herald_deploy.restore import restore_drill
from herald_deploy.samconfig import Environment, load_environment
from herald_deploy.shell import DryRunShell, Shell, SubprocessShell
from herald_deploy.smoke import DEFAULT_TIMEOUT_SECONDS, smoke

COMMIT_PATTERN = re.compile(r"^[0-9a-f]{40}$")


class ConfirmationRequired(DeployError):
    """A destroy without --yes: ends the run with exit code 2, as a usage error does."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herald-deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "step",
        choices=[
            "backend",
            "frontend",
            "all",
            "image",
            "destroy",
            "restore-drill",
            "bootstrap-tenant",
            "smoke",
        ],
    )
    parser.add_argument("--env", default="dev", help="dev, staging or prod (samconfig.toml)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print every command instead of running it; stack outputs are examples",
    )
    parser.add_argument(
        "--outputs-file",
        type=Path,
        help="dry run: a JSON object of stack outputs to pretend instead of the examples",
    )
    parser.add_argument(
        "--commit",
        help="the commit to deploy (40 hex digits); default: git rev-parse HEAD",
    )
    parser.add_argument("--repository", default="herald", help="the ECR repository's name")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="print the CloudFront invalidation id instead of waiting for it",
    )
    parser.add_argument(
        "--no-confirm-changeset",
        action="store_true",
        help="deploy the change set without asking (pipelines)",
    )
    parser.add_argument(
        "--role-arn",
        help="the CloudFormation service role sam deploy passes (pipelines)",
    )
    parser.add_argument(
        "--permissions-boundary-arn",
        help="the pipeline stack's PermissionsBoundaryArn, passed as the stack's parameter "
        "of that name (pipelines: the CloudFormation role requires it on every role)",
    )
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="deploy although tracked files differ from the commit the image is tagged with",
    )
    parser.add_argument(
        "--alarm-topic-subscribed",
        action="store_true",
        help="the stack's alarm topic has a confirmed subscriber made outside the template "
        "(ALARM_TOPIC_SUBSCRIBED=yes): staging and prod deploy without AlarmEmail",
    )
    parser.add_argument(
        "--restore-time",
        metavar="TIME",
        help="restore-drill: the moment to restore, e.g. 2026-12-03T09:30:00Z "
        "(RESTORE_TIME=; default: the latest restorable time)",
    )
    parser.add_argument("--tenant", help="bootstrap-tenant: the new tenant's name (TENANT=)")
    parser.add_argument(
        "--expires-in-days",
        metavar="DAYS",
        help="bootstrap-tenant: the key stops working this many days from now "
        "(EXPIRES_DAYS=; default: it works until revoked)",
    )
    parser.add_argument(
        "--smoke-timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="smoke: how long to wait for the email's delivery (SMOKE_TIMEOUT=)",
    )
    parser.add_argument("--samconfig", type=Path, default=Path("samconfig.toml"))
    parser.add_argument(
        "--yes", action="store_true", help="destroy: yes, delete the environment's stack"
    )
    parser.add_argument(
        "--confirm",
        metavar="STACK",
        help="destroy: the same as --yes when STACK is the environment's stack name (CONFIRM=)",
    )
    return parser


def _git(*args: str) -> str:
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as error:
        raise DeployError("git is not installed: pass --commit (COMMIT=...)") from error
    if result.returncode != 0:
        raise DeployError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def resolve_commit(requested: str | None, *, allow_dirty: bool, shell: Shell, dry_run: bool) -> str:
    """The commit to tag the image with: given, or the checkout's HEAD when it is clean.

    The tag is immutable: an image built from uncommitted changes under a commit's SHA
    would stand for that commit forever, so a dirty checkout stops the deploy.
    """
    if requested:
        commit = requested.strip().lower()
    else:
        commit = _git("rev-parse", "HEAD")
        changed = _git("status", "--porcelain", "--untracked-files=no")
        if changed and not allow_dirty:
            message = (
                f"tracked files differ from commit {commit[:12]}; commit them, or pass "
                "--allow-dirty (ALLOW_DIRTY=1) to deploy them under this commit's tag anyway"
            )
            if not dry_run:
                raise DeployError(message)
            shell.say(f"warning: {message}")
    if not COMMIT_PATTERN.fullmatch(commit):
        raise DeployError(f"{commit!r} is not a full commit SHA (40 hex digits)")
    return commit


def _dry_run_outputs(path: Path | None) -> dict[str, str] | None:
    if path is None:
        return None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DeployError(f"cannot read the outputs file {path}: {error}") from error
    if not isinstance(loaded, dict):
        raise DeployError(f"{path} must hold a JSON object of OutputKey: OutputValue")
    return {str(key): str(value) for key, value in loaded.items()}


def _check_placeholders(environment: Environment, shell: Shell, *, dry_run: bool) -> None:
    left = environment.placeholders(ignore=frozenset({IMAGE_PARAMETER}))
    if not left:
        return
    message = (
        f"samconfig.toml [{environment.config_env}] still has REPLACE-ME in "
        f"{', '.join(left)} (docs/deploying.md, step 4)"
    )
    if not dry_run:
        raise DeployError(message)
    shell.say(f"warning: {message}")


def _check_alarm_subscriber(
    environment: Environment, shell: Shell, *, topic_subscribed: bool, dry_run: bool
) -> None:
    problem = missing_alarm_subscriber(environment, topic_subscribed=topic_subscribed)
    if problem is None:
        return
    # Staging and prod alarms must reach someone; a dry run only shows what would stop.
    if is_attended(environment) and not dry_run:
        raise DeployError(problem)
    shell.say(f"warning: {problem}")


def run(arguments: argparse.Namespace, shell: Shell) -> None:
    """Run the chosen step for the chosen environment."""
    dry_run: bool = arguments.dry_run
    if arguments.outputs_file and not dry_run:
        raise DeployError("--outputs-file is for dry runs: a deploy reads the real stack")
    environment = load_environment(arguments.samconfig, arguments.env)
    outputs = _dry_run_outputs(arguments.outputs_file)
    if arguments.step == "destroy":
        stack = environment.stack_name
        if not (arguments.yes or arguments.confirm == stack):
            raise ConfirmationRequired(
                f"destroy deletes stack {stack} and the data in it; to go on, run: "
                f"make destroy ENV={arguments.env} CONFIRM={stack}"
            )
        destroy(shell, environment, dry_run_outputs=outputs)
        return
    if arguments.step == "bootstrap-tenant":
        bootstrap_tenant(
            shell,
            environment,
            tenant=arguments.tenant,
            expires_in_days=arguments.expires_in_days,
            dry_run_outputs=outputs,
        )
        return
    if arguments.step == "smoke":
        # The key from the environment, never the command line (ps, shell history).
        smoke(
            shell,
            environment,
            api_key=os.environ.get("HERALD_SMOKE_API_KEY") or None,
            dry_run=dry_run,
            timeout_seconds=arguments.smoke_timeout,
            dry_run_outputs=outputs,
        )
        return
    if arguments.step == "restore-drill":
        restore_drill(
            shell, environment, restore_time=arguments.restore_time, dry_run_outputs=outputs
        )
        return
    if arguments.step in ("backend", "all", "image"):
        commit = resolve_commit(
            arguments.commit, allow_dirty=arguments.allow_dirty, shell=shell, dry_run=dry_run
        )
        if arguments.step == "image":
            push_image(shell, environment, repository=arguments.repository, commit=commit)
            return
        _check_alarm_subscriber(
            environment,
            shell,
            topic_subscribed=arguments.alarm_topic_subscribed,
            dry_run=dry_run,
        )
        _check_placeholders(environment, shell, dry_run=dry_run)
        deploy_backend(
            shell,
            environment,
            repository=arguments.repository,
            commit=commit,
            confirm_changeset=not arguments.no_confirm_changeset,
            cloudformation_role_arn=arguments.role_arn,
            permissions_boundary_arn=arguments.permissions_boundary_arn,
            dry_run_outputs=outputs,
        )
    if arguments.step in ("frontend", "all"):
        deploy_frontend(shell, environment, wait=not arguments.no_wait, dry_run_outputs=outputs)


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the step, and turn any failure into one clear message."""
    arguments = _parser().parse_args(argv)
    shell: Shell = DryRunShell() if arguments.dry_run else SubprocessShell()
    try:
        run(arguments, shell)
    except DeployError as error:
        print(f"herald-deploy: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfirmationRequired) else 1
    except KeyboardInterrupt:
        print("herald-deploy: interrupted", file=sys.stderr)
        return 130
    if arguments.dry_run:
        shell.say("dry run: nothing was changed")
    return 0
