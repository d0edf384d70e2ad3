"""One named environment of samconfig.toml: its stack, region and template parameters.

Why not SAM CLI's own reader (samcli.lib.config.samconfig.SamConfig, with
samcli.cli.types.CfnParameterOverridesType for parameter_overrides), although aws-sam-cli
is installed: importing it took 1.1 to 2.6 s (ruamel.yaml, tomlkit, rich, click, requests;
`python -X importtime`, SAM CLI 1.170, six runs on a loaded 2-core machine) where this
module with tomllib took 0.06 to 0.29 s, and every herald-deploy and herald-datadog run and
every dry-run test would pay it; constructing a SamConfig records a SAM CLI telemetry
event; `samcli.lib` is SAM CLI's internals, not an API it documents; and all it would
replace is the merge of [<env>.global.parameters] under [<env>.deploy.parameters] and the
split of KEY=VALUE items. So this reads only the form samconfig.toml uses (a TOML list of
KEY=VALUE strings, or one string of them without quotes), refuses the others SAM accepts
(ParameterKey=…, quoted values, file:// includes) instead of misreading them, and
tests/unit/test_herald_deploy.py checks every environment against SAM CLI's own reader.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from herald_deploy.errors import DeployError

if TYPE_CHECKING:
    from pathlib import Path

# samconfig.toml calls dev "default" (plain `sam deploy` uses it); the Makefile says dev.
CONFIG_ENV_BY_ENVIRONMENT = {"dev": "default"}
PLACEHOLDER = "REPLACE-ME"


@dataclass(frozen=True)
class Environment:
    """What a deploy of one environment needs from samconfig.toml."""

    name: str
    config_env: str
    stack_name: str
    region: str
    parameters: dict[str, str]

    def with_parameter(self, key: str, value: str) -> dict[str, str]:
        """Every template parameter of the environment, with one replaced or added."""
        return {**self.parameters, key: value}

    def placeholders(self, *, ignore: frozenset[str] = frozenset()) -> list[str]:
        """The parameters still holding a REPLACE-ME placeholder."""
        return sorted(
            key
            for key, value in self.parameters.items()
            if PLACEHOLDER in value and key not in ignore
        )


def _section(config: dict[str, Any], config_env: str, command: str) -> dict[str, Any]:
    section: dict[str, Any] = config.get(config_env, {}).get(command, {}).get("parameters", {})
    return section


# Forms SAM CLI reads that this module does not: say so rather than misread them.
UNREAD_OVERRIDE = re.compile(r"^(?:ParameterKey=|file://)|['\"]")


def _parse_overrides(raw: Any, where: str) -> dict[str, str]:
    items = raw.split() if isinstance(raw, str) else list(raw)
    parameters: dict[str, str] = {}
    for item in items:
        key, separator, value = str(item).partition("=")
        if not separator or not key or UNREAD_OVERRIDE.search(str(item)):
            raise DeployError(
                f"{where}: parameter override {item!r} is not KEY=VALUE (herald-deploy reads "
                "a list of KEY=VALUE strings, without quotes or ParameterKey= or file://)"
            )
        parameters[key] = value
    return parameters


def load_environment(samconfig: Path, name: str) -> Environment:
    """Read one environment (dev, staging, prod) from samconfig.toml.

    `sam deploy --parameter-overrides` on the command line replaces samconfig.toml's
    parameter_overrides wholesale (the file only supplies click's defaults), so a deploy
    that changes one parameter must pass all of them: they are read here.
    """
    try:
        config = tomllib.loads(samconfig.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise DeployError(f"cannot read {samconfig}: {error}") from error
    config_env = CONFIG_ENV_BY_ENVIRONMENT.get(name, name)
    if config_env not in config:
        known = ", ".join(
            sorted({"dev", *(env for env in config if env != "version")} - {"default"})
        )
        raise DeployError(f"{samconfig} has no environment {name!r} (known: {known})")
    global_parameters = _section(config, config_env, "global")
    deploy_parameters = _section(config, config_env, "deploy")
    settings = {**global_parameters, **deploy_parameters}
    missing = [key for key in ("stack_name", "region") if key not in settings]
    if missing:
        raise DeployError(f"{samconfig} [{config_env}] does not set {', '.join(missing)}")
    return Environment(
        name=name,
        config_env=config_env,
        stack_name=str(settings["stack_name"]),
        region=str(settings["region"]),
        parameters=_parse_overrides(
            deploy_parameters.get("parameter_overrides", []),
            f"{samconfig} [{config_env}.deploy.parameters]",
        ),
    )
