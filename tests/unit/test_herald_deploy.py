"""The deploy package's decisions that a dry run cannot show: a failed migration stops the
release, and samconfig.toml's environments are read whole."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING

import pytest

from herald_deploy.alarms import missing_alarm_subscriber
from herald_deploy.bootstrap import bootstrap_tenant
from herald_deploy.cli import main
from herald_deploy.destroy import destroy
from herald_deploy.errors import DeployError
from herald_deploy.migrations import run_migrations
from herald_deploy.restore import restore_drill
from herald_deploy.samconfig import load_environment
from herald_deploy.shell import Command, DryRunShell
from herald_deploy.stack_outputs import StackOutputs, example_outputs
from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path

SAMCONFIG = REPO_ROOT / "samconfig.toml"


class FailingMigrationShell(DryRunShell):
    """A dry run in which the migration container exits 1."""

    def read(self, cmd: Command, *, dry_run_output: str) -> str:
        if cmd.argv[:3] == ("aws", "ecs", "describe-tasks"):
            self._print(f"+ {cmd}")
            return json.dumps(
                {"stoppedReason": "Essential container in task exited",
                 "containers": [{"name": "migrate", "exitCode": 1}]}
            )  # fmt: skip
        return super().read(cmd, dry_run_output=dry_run_output)


def test_a_failed_migration_stops_the_release_and_deregisters_the_revision() -> None:
    # Given a migration task that exits 1
    out = io.StringIO()
    environment = load_environment(REPO_ROOT / "samconfig.toml", "staging")
    outputs = StackOutputs("herald-staging", example_outputs(environment))

    # When the migrations run
    with pytest.raises(DeployError, match=r"exit code 1.*aws logs tail /herald/"):
        run_migrations(
            FailingMigrationShell(out), outputs, region="us-east-1", image_uri="x/herald:abc"
        )

    # Then the one-off revision is deregistered all the same, and nothing is deployed
    printed = out.getvalue()
    assert "deregister-task-definition" in printed.splitlines()[-1]
    assert "sam deploy" not in printed


class StuckMigrationShell(DryRunShell):
    """A dry run in which ECS's waiter gives up before the migration task stops."""

    def run(self, cmd: Command) -> None:
        super().run(cmd)
        if cmd.argv[:4] == ("aws", "ecs", "wait", "tasks-stopped"):
            raise DeployError("Waiter TasksStopped failed: Max attempts exceeded")


def test_a_migration_that_does_not_stop_names_its_task_and_deregisters_the_revision() -> None:
    # Given a migration task still running when ECS's waiter gives up
    out = io.StringIO()
    environment = load_environment(REPO_ROOT / "samconfig.toml", "staging")
    outputs = StackOutputs("herald-staging", example_outputs(environment))

    # When the migrations run
    with pytest.raises(DeployError) as raised:
        run_migrations(
            StuckMigrationShell(out), outputs, region="us-east-1", image_uri="x/herald:abc"
        )

    # Then the error names the task and its logs, and says nothing was deployed
    message = str(raised.value)
    assert "the migration task (arn:aws:ecs:us-east-1:111122223333:task/" in message
    assert "had not stopped after 10 minutes. its logs: aws logs tail /herald/" in message
    assert message.endswith("Nothing was deployed.")
    # and the one-off revision is deregistered all the same, without asking for the outcome
    printed = out.getvalue()
    assert "deregister-task-definition" in printed.splitlines()[-1]
    assert "describe-tasks" not in printed


def test_dev_is_samconfigs_default_environment_with_all_its_parameters() -> None:
    environment = load_environment(REPO_ROOT / "samconfig.toml", "dev")

    assert (environment.config_env, environment.stack_name) == ("default", "herald-dev")
    assert environment.parameters["LogLevel"] == "DEBUG"
    assert environment.with_parameter("BackendImageUri", "new")["BackendImageUri"] == "new"


@pytest.mark.parametrize(("name", "config_env"), [("dev", "default"), ("staging", "staging"),
                                                 ("prod", "prod")])  # fmt: skip
def test_every_environment_reads_as_sam_clis_own_reader_reads_it(
    name: str, config_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given SAM CLI's own reading of samconfig.toml (its config reader and the type its
    # --parameter-overrides option parses with), without its telemetry
    monkeypatch.setenv("SAM_CLI_TELEMETRY", "0")
    from samcli.cli.types import CfnParameterOverridesType  # type: ignore[import-untyped]
    from samcli.lib.config.samconfig import SamConfig  # type: ignore[import-untyped]

    sam = SamConfig(str(REPO_ROOT), "samconfig.toml").get_all(["deploy"], "parameters", config_env)

    # When herald-deploy reads the same environment
    environment = load_environment(SAMCONFIG, name)

    # Then both see the same stack, region and template parameters
    assert (environment.stack_name, environment.region) == (sam["stack_name"], sam["region"])
    overrides = CfnParameterOverridesType().convert(sam["parameter_overrides"], None, None)
    assert environment.parameters == overrides


@pytest.mark.parametrize(
    "override", ["ParameterKey=LogLevel,ParameterValue=INFO", "LogLevel='INFO'", "file://p.yaml"]
)
def test_an_override_form_herald_deploy_does_not_read_is_refused_not_misread(
    override: str, tmp_path: Path
) -> None:
    # Given an environment whose parameter_overrides uses a form SAM CLI reads but this
    # package does not
    samconfig = tmp_path / "samconfig.toml"
    samconfig.write_text(
        "version = 0.1\n[staging.deploy.parameters]\n"
        'stack_name = "herald-staging"\nregion = "us-east-1"\n'
        f"parameter_overrides = [{override!r}]\n",
        encoding="utf-8",
    )

    # When it is read, then it is refused, naming the item
    with pytest.raises(DeployError, match="is not KEY=VALUE"):
        load_environment(samconfig, "staging")


def test_an_unknown_environment_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="known: dev, prod, staging"):
        load_environment(REPO_ROOT / "samconfig.toml", "qa")


def test_a_dry_run_labels_its_progress_lines_as_examples() -> None:
    # Given a dry run's shell
    out = io.StringIO()

    # When a step reports what a real run would have done
    DryRunShell(out).say("migrations applied: the schema is current")

    # Then the line says it is a dry run on example outputs, not that it happened
    assert (
        out.getvalue()
        == "==> [dry run, example outputs] migrations applied: the schema is current\n"
    )


def test_destroy_without_yes_refuses_in_one_line_with_exit_code_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # When staging is destroyed without a confirmation (even as a dry run)
    code = main(["destroy", "--env", "staging", "--dry-run", "--samconfig", str(SAMCONFIG)])

    # Then nothing is printed as done, and one line says what to type
    printed = capsys.readouterr()
    assert code == 2
    assert printed.out == ""
    assert printed.err == (
        "herald-deploy: error: destroy deletes stack herald-staging and the data in it; "
        "to go on, run: make destroy ENV=staging CONFIRM=herald-staging\n"
    )


def test_destroying_prod_also_lifts_the_tables_and_the_albs_protection() -> None:
    # Given prod, where the templates protect the idempotency table and the ALB too
    out = io.StringIO()
    environment = load_environment(SAMCONFIG, "prod")

    # When it is destroyed (dry run)
    destroy(DryRunShell(out), environment)

    # Then both are unprotected after the database and before sam delete
    run = aws_lines(out)
    assert [line.split()[2:4] for line in run[-4:]] == [
        ["rds", "modify-db-instance"],
        ["dynamodb", "update-table"],
        ["elbv2", "describe-load-balancers"],
        ["elbv2", "modify-load-balancer-attributes"],
    ]
    assert "--no-deletion-protection-enabled" in run[-3]
    assert "Key=deletion_protection.enabled,Value=false" in run[-1]


class UndeletableVersionShell(DryRunShell):
    """A dry run in which S3 refuses to delete one object version."""

    def read(self, cmd: Command, *, dry_run_output: str) -> str:
        if cmd.argv[:3] == ("aws", "s3api", "delete-objects"):
            self._print(f"+ {cmd}")
            return json.dumps(
                {"Errors": [{"Key": "index.html", "Code": "AccessDenied", "Message": "denied"}]}
            )
        return super().read(cmd, dry_run_output=dry_run_output)


def test_a_version_s3_will_not_delete_stops_the_destroy_before_sam_delete() -> None:
    # Given a site bucket one of whose versions S3 refuses to delete
    out = io.StringIO()
    environment = load_environment(SAMCONFIG, "staging")

    # When staging is destroyed
    with pytest.raises(DeployError, match=r"did not delete 1 object version.*'index.html'"):
        destroy(UndeletableVersionShell(out), environment)

    # Then neither protection nor the stack is touched
    printed = out.getvalue()
    assert "delete-objects" in printed.splitlines()[-1]
    assert "modify-db-instance" not in printed
    assert "sam delete" not in printed


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def deploy(*arguments: str, samconfig: Path = SAMCONFIG) -> list[str]:
    """herald-deploy's arguments for a release of this commit from `samconfig`."""
    return [*arguments, "--commit", COMMIT, "--samconfig", str(samconfig)]


class StopAtFirstCommand(DryRunShell):
    """A real run's shell that stops the run at its first command, running nothing."""

    def run(self, cmd: Command) -> None:
        raise DeployError(f"reached `{cmd}`")

    def read(self, cmd: Command, *, dry_run_output: str) -> str:
        raise DeployError(f"reached `{cmd}`")

    def say(self, message: str) -> None:
        self._print(f"==> {message}")


@pytest.fixture(autouse=True)
def _nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests call main() as a real run; no aws, sam or docker command may run from here."""
    monkeypatch.setattr("herald_deploy.cli.SubprocessShell", StopAtFirstCommand)


def without_placeholders(tmp_path: Path) -> Path:
    """A copy of samconfig.toml whose REPLACE-ME values are filled in."""
    copy = tmp_path / "samconfig.toml"
    copy.write_text(
        SAMCONFIG.read_text(encoding="utf-8").replace("REPLACE-ME", "filled"), encoding="utf-8"
    )
    return copy


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_staging_and_prod_without_an_alarm_subscriber_are_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str], env: str
) -> None:
    # Given samconfig.toml's environment without AlarmEmail (a real deploy, not a dry run)

    # When it is deployed
    code = main(deploy("all", "--env", env))

    # Then nothing runs, and one line says how to give the alarms a reader
    printed = capsys.readouterr()
    assert code == 1
    assert printed.out == ""
    assert printed.err == (
        f"herald-deploy: error: samconfig.toml [{env}] sets no AlarmEmail, so herald-{env}'s "
        "alarms would notify nobody: add AlarmEmail=you@example.org to its "
        "parameter_overrides, or, if the stack's AlarmTopicArn already has a confirmed "
        "subscriber, deploy with ALARM_TOPIC_SUBSCRIBED=yes "
        "(docs/monitoring.md, Notifications)\n"
    )


def test_dev_without_an_alarm_subscriber_is_only_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given dev without AlarmEmail
    samconfig = without_placeholders(tmp_path)

    # When it is deployed
    code = main(deploy("all", "--env", "dev", samconfig=samconfig))

    # Then the alarm check warns and the deploy goes on to its first command
    printed = capsys.readouterr()
    assert "==> warning: samconfig.toml [default] sets no AlarmEmail" in printed.out
    assert code == 1
    assert "reached `aws cloudformation describe-stacks" in printed.err


def test_a_declared_subscription_lets_prod_deploy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given prod without AlarmEmail, whose topic has a subscriber made outside the template
    samconfig = without_placeholders(tmp_path)

    # When it is deployed with ALARM_TOPIC_SUBSCRIBED=yes
    code = main(deploy("all", "--env", "prod", "--alarm-topic-subscribed", samconfig=samconfig))

    # Then it goes on to its first command, without a word about alarms
    printed = capsys.readouterr()
    assert code == 1
    assert "reached `aws cloudformation describe-stacks" in printed.err
    assert "AlarmEmail" not in printed.out + printed.err


def with_parameter(tmp_path: Path, env: str, parameter: str) -> Path:
    """A copy of samconfig.toml whose `env` section has one more parameter override."""
    text = SAMCONFIG.read_text(encoding="utf-8")
    marker = f'"Environment={env}",'
    copy = tmp_path / "samconfig.toml"
    copy.write_text(text.replace(marker, f'{marker}\n    "{parameter}",'), encoding="utf-8")
    return copy


@pytest.mark.parametrize(
    ("parameter", "subscribed", "passes"),
    [
        ("AlarmEmail=oncall@example.org", False, True),
        ("AlarmEmail=REPLACE-ME@example.org", False, False),
        ("AlarmEmail=", False, False),
        ("LogLevel=INFO", True, True),
    ],
)
def test_an_alarm_email_or_a_declared_subscription_is_a_subscriber(
    tmp_path: Path, parameter: str, *, subscribed: bool, passes: bool
) -> None:
    # Given prod with this parameter, and the subscription declared or not
    environment = load_environment(with_parameter(tmp_path, "prod", parameter), "prod")

    # When its alarms' reach is checked
    problem = missing_alarm_subscriber(environment, topic_subscribed=subscribed)

    # Then only a real address or a declared subscription lets it through
    assert (problem is None) is passes


class DrillShell(DryRunShell):
    """A dry run of the restore drill in which one command fails (or is interrupted), or
    the check task exits with `check_exit_code`."""

    def __init__(
        self,
        out: io.StringIO,
        failing: tuple[str, ...] = (),
        error: BaseException | None = None,
        check_exit_code: int = 0,
        restored_status: str | None = None,
    ) -> None:
        super().__init__(out)
        self.failing = failing
        self.error = error
        self.check_exit_code = check_exit_code
        self.restored_status = restored_status

    def _print_or_fail(self, cmd: Command) -> None:
        self._print(f"+ {cmd}")
        if self.error is not None and cmd.argv[: len(self.failing)] == self.failing:
            raise self.error

    def run(self, cmd: Command) -> None:
        self._print_or_fail(cmd)

    def read(self, cmd: Command, *, dry_run_output: str) -> str:
        self._print_or_fail(cmd)
        if cmd.argv[:3] == ("aws", "ecs", "describe-tasks"):
            return json.dumps(
                {"containers": [{"name": "migrate", "exitCode": self.check_exit_code}]}
            )
        describes_the_copy = cmd.argv[:3] == ("aws", "rds", "describe-db-instances") and any(
            arg.endswith("-restore-drill") for arg in cmd.argv
        )
        if self.restored_status and describes_the_copy:
            return json.dumps({"DBInstanceStatus": self.restored_status})
        return dry_run_output


def drill(shell: DryRunShell) -> None:
    """Run the restore drill of staging, to the latest restorable time, on `shell`."""
    restore_drill(shell, load_environment(SAMCONFIG, "staging"), restore_time=None)


def aws_lines(out: io.StringIO) -> list[str]:
    return [line for line in out.getvalue().splitlines() if line.startswith("+ aws ")]


def test_a_failed_check_still_deletes_the_temporary_instance() -> None:
    # Given a check task that exits 1
    out = io.StringIO()
    shell = DrillShell(out, check_exit_code=1)

    # When the drill runs
    with pytest.raises(DeployError, match=r"check of the restored database failed \(exit code 1"):
        drill(shell)

    # Then the temporary instance is deleted all the same, last
    run = aws_lines(out)
    assert "delete-db-instance" in run[-2] and "herald-staging-0a1b2c3d-restore-drill" in run[-2]
    assert "wait db-instance-deleted" in run[-1]


def test_an_interrupted_drill_still_deletes_the_temporary_instance() -> None:
    # Given a person pressing Ctrl-C while the restore is awaited
    out = io.StringIO()
    shell = DrillShell(out, ("aws", "rds", "wait", "db-instance-available"), KeyboardInterrupt())

    # When the drill runs
    with pytest.raises(KeyboardInterrupt):
        drill(shell)

    # Then the instance it started is deleted before the interrupt ends the run
    run = aws_lines(out)
    assert "delete-db-instance" in run[-2]
    assert "wait db-instance-deleted" in run[-1]


def test_a_restore_that_ends_in_a_failed_state_is_named_and_deleted() -> None:
    # Given a restore RDS gives up on (the waiter fails, the copy is incompatible-restore)
    out = io.StringIO()
    waiter = DeployError("Waiter DBInstanceAvailable failed")
    shell = DrillShell(
        out,
        ("aws", "rds", "wait", "db-instance-available"),
        waiter,
        restored_status="incompatible-restore",
    )

    # When the drill runs
    with pytest.raises(DeployError, match=r"restore-drill is 'incompatible-restore'"):
        drill(shell)

    # Then the waiter is not asked again, no check runs, and the copy is deleted
    run = aws_lines(out)
    assert sum("wait db-instance-available" in line for line in run) == 1
    assert not any("ecs run-task" in line for line in run)
    assert "delete-db-instance" in run[-2]
    assert "wait db-instance-deleted" in run[-1]


def test_a_refused_restore_deletes_nothing() -> None:
    # Given RDS refusing the restore (a drill of this environment is already running)
    out = io.StringIO()
    refusal = DeployError("DBInstanceAlreadyExists")
    shell = DrillShell(out, ("aws", "rds", "restore-db-instance-to-point-in-time"), refusal)

    # When the drill runs
    with pytest.raises(DeployError, match="DBInstanceAlreadyExists"):
        drill(shell)

    # Then the other drill's instance is left alone
    assert "delete-db-instance" not in out.getvalue()


def test_an_instance_that_will_not_delete_is_named_with_the_command_to_delete_it() -> None:
    # Given a drill that passes, but RDS refuses to delete the copy
    out = io.StringIO()
    shell = DrillShell(out, ("aws", "rds", "delete-db-instance"), DeployError("AccessDenied"))

    # When the drill runs
    with pytest.raises(DeployError) as raised:
        drill(shell)

    # Then the error says the copy is left and how to delete it by hand
    assert "The drill passed but herald-staging-0a1b2c3d-restore-drill is left" in str(raised.value)
    assert "aws rds delete-db-instance --region us-east-1 --db-instance-identifier " in str(
        raised.value
    )


@pytest.mark.parametrize("given", ["yesterday", "2026-12-03T09:30:00", "2026-13-03T09:30:00Z"])
def test_a_restore_time_without_a_zone_or_not_a_time_is_refused_before_anything_runs(
    given: str,
) -> None:
    # Given a RESTORE_TIME that is not a moment with its zone
    out = io.StringIO()
    environment = load_environment(SAMCONFIG, "staging")

    # When the drill is asked for it
    with pytest.raises(DeployError, match="is not a time with its zone"):
        restore_drill(DryRunShell(out), environment, restore_time=given)

    # Then nothing ran
    assert out.getvalue() == ""


@pytest.mark.parametrize("tenant", ["", "-rm", "a b", "ac/me", "x" * 64])
def test_a_tenant_name_a_secret_or_shell_would_misread_is_refused_before_anything_runs(
    tenant: str,
) -> None:
    # Given a TENANT that is not a plain name
    out = io.StringIO()

    # When it is bootstrapped
    with pytest.raises(DeployError, match="is not a tenant name"):
        bootstrap_tenant(DryRunShell(out), load_environment(SAMCONFIG, "prod"), tenant=tenant)

    # Then nothing ran
    assert out.getvalue() == ""


@pytest.mark.parametrize("days", ["", "0", "ninety", "-5", "1.5", " 90", "1e3"])
def test_a_key_lifetime_that_is_not_a_whole_number_of_days_is_refused_before_anything_runs(
    days: str,
) -> None:
    # Given an EXPIRES_DAYS that is not a whole number of days from 1
    out = io.StringIO()
    prod = load_environment(SAMCONFIG, "prod")

    # When a tenant is bootstrapped with it
    with pytest.raises(DeployError, match="is not a whole number of days from 1"):
        bootstrap_tenant(DryRunShell(out), prod, tenant="initech", expires_in_days=days)

    # Then nothing ran
    assert out.getvalue() == ""


class ExistingTenantShell(DryRunShell):
    """A dry run in which `herald tenants bootstrap` finds the tenant exists (exit 1)."""

    def read(self, cmd: Command, *, dry_run_output: str) -> str:
        self._print(f"+ {cmd}")
        if cmd.argv[:3] == ("aws", "ecs", "describe-tasks"):
            return json.dumps({"containers": [{"name": "migrate", "exitCode": 1}]})
        if cmd.argv[:3] == ("aws", "logs", "get-log-events"):
            return json.dumps(["herald: a tenant named 'initech' exists already"])
        return dry_run_output


def test_a_failed_bootstrap_says_what_the_command_said_and_looks_for_no_secret() -> None:
    # Given a tenant that exists already in prod
    out = io.StringIO()

    # When it is bootstrapped
    with pytest.raises(DeployError, match=r"exit code 1; herald: a tenant named 'initech' exists"):
        bootstrap_tenant(
            ExistingTenantShell(out), load_environment(SAMCONFIG, "prod"), tenant="initech"
        )

    # Then no secret is looked up
    assert "secretsmanager" not in out.getvalue()
