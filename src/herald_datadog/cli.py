"""herald-datadog: Datadog monitors, dashboards and Synthetics from datadog/.

    herald-datadog validate --env dev             check the definitions; no keys, no network
    herald-datadog plan     --env dev             what apply would change; writes nothing
    herald-datadog apply    --env dev             make exactly the plan's changes

Staging and prod monitors must reach a person: plan and apply refuse them without a
notification handle (--notify, HERALD_DATADOG_NOTIFY_<ENV> or HERALD_DATADOG_NOTIFY), as
herald-deploy refuses them without an alarm subscriber; dev is only warned.

The Datadog keys come from the environment only: DD_API_KEY, DD_APP_KEY, and DD_SITE
(default datadoghq.com). Exit codes: 0 done, 2 invalid definitions or configuration
(nothing was sent), 1 Datadog refused a request or could not be reached.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datadog_api_client import ApiClient, Configuration

from herald_datadog.account import DatadogAccount
from herald_datadog.definitions import Settings, load_definitions, untyped
from herald_datadog.errors import DefinitionError, HeraldDatadogError
from herald_datadog.plan import apply_plan, has_changes, make_plan, render_plan
from herald_deploy.alarms import is_attended
from herald_deploy.errors import DeployError
from herald_deploy.samconfig import load_environment

if TYPE_CHECKING:
    from collections.abc import Mapping

PROG = "herald-datadog"
DEFAULT_SITE = "datadoghq.com"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        epilog="Environment: DD_API_KEY and DD_APP_KEY (plan, apply), DD_SITE (default "
        f"{DEFAULT_SITE}), HERALD_API_URL, HERALD_SITE_URL, HERALD_DATADOG_NOTIFY_<ENV>, "
        "HERALD_DATADOG_NOTIFY.",
    )
    parser.add_argument("command", choices=["validate", "plan", "apply"])
    parser.add_argument(
        "--env",
        default="dev",
        help="an environment of samconfig.toml (dev, staging, prod): tags and names",
    )
    parser.add_argument(
        "--samconfig",
        type=Path,
        default=Path("samconfig.toml"),
        help="where the environments are (default: samconfig.toml), as for herald-deploy",
    )
    parser.add_argument(
        "--definitions", type=Path, default=Path("datadog"), help="the folder of definitions"
    )
    parser.add_argument(
        "--stack",
        help="the CloudFormation stack, prefix of the queue and function names "
        "(default: herald-<env>, as in samconfig.toml)",
    )
    parser.add_argument(
        "--api-url",
        help="the api's HTTPS base URL, stack output ApiUrl (default: $HERALD_API_URL)",
    )
    parser.add_argument(
        "--site-url",
        help="the web app's HTTPS URL, stack output SiteUrl (default: $HERALD_SITE_URL)",
    )
    parser.add_argument(
        "--notify",
        action="append",
        default=None,
        help="a Datadog handle every monitor and test notifies, e.g. @pagerduty-herald; "
        "repeatable (default: $HERALD_DATADOG_NOTIFY_<ENV>, e.g. HERALD_DATADOG_NOTIFY_PROD, "
        "else $HERALD_DATADOG_NOTIFY, space-separated; required for staging and prod)",
    )
    parser.add_argument(
        "--delete-orphans",
        action="store_true",
        help="delete managed resources no definition names (default: report and keep them)",
    )
    parser.add_argument(
        "--datadog-url",
        help="the Datadog API's base URL (default: https://api.$DD_SITE); tests use a fake",
    )
    return parser


def _https_url(option: str, value: str | None) -> str:
    if not value:
        return ""
    url = value.strip().rstrip("/")
    if not url.startswith("https://") or len(url) <= len("https://"):
        raise DefinitionError(f"{option} {value!r} must be an https:// URL")
    return url


def notify_variable(env: str) -> str:
    """The variable holding one environment's handles: HERALD_DATADOG_NOTIFY_PROD for prod."""
    return "HERALD_DATADOG_NOTIFY_" + re.sub(r"[^A-Z0-9]", "_", env.upper())


def settings_from(arguments: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """What the definitions are rendered with, from the options (and their variables)."""
    # The same environments, checked the same way, as herald-deploy: the stack name too.
    try:
        environment = load_environment(arguments.samconfig, arguments.env)
    except DeployError as error:
        raise DefinitionError(str(error)) from error
    env = environment.name
    notify = arguments.notify
    if notify is None:
        # Each environment its own handles (prod pages, dev perhaps nobody), else the shared.
        notify = (
            environ.get(notify_variable(env)) or environ.get("HERALD_DATADOG_NOTIFY", "")
        ).split()
    if not notify and arguments.command in ("plan", "apply"):
        _no_notification_target(env, attended=is_attended(environment))
    return Settings(
        env=env,
        variables={
            "stack": arguments.stack or environment.stack_name,
            "api_url": _https_url("--api-url", arguments.api_url or environ.get("HERALD_API_URL")),
            "site_url": _https_url(
                "--site-url", arguments.site_url or environ.get("HERALD_SITE_URL")
            ),
        },
        notify=tuple(notify),
    )


def _no_notification_target(env: str, *, attended: bool) -> None:
    """Refuse a staging or prod whose monitors would alert nobody; warn for any other."""
    problem = (
        f"no notification handle for {env}, so its monitors and Synthetics tests would alert "
        f"nobody: pass --notify @pagerduty-herald (repeatable), or set {notify_variable(env)} "
        "or HERALD_DATADOG_NOTIFY (docs/datadog.md)"
    )
    if attended:
        raise DefinitionError(problem)
    print(f"{PROG}: warning: {problem}", file=sys.stderr)


def datadog_configuration(environ: Mapping[str, str], datadog_url: str | None) -> Any:
    """The client's configuration from DD_API_KEY, DD_APP_KEY and DD_SITE.

    Raises
    ------
    DefinitionError
        When a key is missing: it names the variable. Keys are never read from arguments
        or files, so they stay out of shell history and the repository.
    """
    keys = {}
    for variable, purpose in (
        ("DD_API_KEY", "an API key (Organization settings > API keys)"),
        ("DD_APP_KEY", "an application key (Organization settings > Application keys)"),
    ):
        value = environ.get(variable, "").strip()
        if not value:
            raise DefinitionError(f"{variable} is not set: export {purpose} before running")
        keys[variable] = value
    new_configuration = untyped(Configuration)
    configuration: Any = new_configuration(host=datadog_url) if datadog_url else new_configuration()
    configuration.api_key["apiKeyAuth"] = keys["DD_API_KEY"]
    configuration.api_key["appKeyAuth"] = keys["DD_APP_KEY"]
    if not datadog_url:
        configuration.server_variables["site"] = environ.get("DD_SITE", "").strip() or DEFAULT_SITE
    return configuration


def run(arguments: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """Validate the definitions, then plan, then (for apply) make the plan's changes."""
    settings = settings_from(arguments, environ)
    definitions = load_definitions(arguments.definitions, settings)
    print(f"{len(definitions)} definitions in {arguments.definitions} are valid for {settings.env}")
    if arguments.command == "validate":
        return
    configuration = datadog_configuration(environ, arguments.datadog_url)
    print(f"Datadog: {configuration.host}, managed-by:herald-datadog env:{settings.env}")
    with ApiClient(configuration) as client:
        account = DatadogAccount(client, settings.env)
        plan = make_plan(
            definitions, account.list_managed(), delete_orphans=arguments.delete_orphans
        )
        for line in render_plan(plan):
            print(line)
        if arguments.command == "plan":
            print("plan only: nothing was changed (apply makes these changes)")
            return
        if not has_changes(plan):
            print("nothing to change")
            return
        apply_plan(plan, account, print)
        print("applied")


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Parse the arguments, run the command, and turn any failure into one clear message."""
    arguments = _parser().parse_args(argv)
    try:
        run(arguments, os.environ if environ is None else environ)
    except HeraldDatadogError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0
