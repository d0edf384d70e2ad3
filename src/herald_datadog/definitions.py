"""Reading the definitions in ``datadog/``: files, variables, tags, and the client's models.

One file is one Datadog resource, written in the shape of Datadog's v1 API so that the
API reference explains every field. The folder says the kind: ``monitors/`` (a
``Monitor``), ``synthetics/`` (a ``SyntheticsAPITest``), ``dashboards/`` (a ``Dashboard``).
String values may use ``${env}``, ``${stack}``, ``${api_url}`` and ``${site_url}``; the
``${…}`` form is used because Datadog's own queries and messages are full of ``{…}``.

Validation deserializes each file into the client's model and then walks the result,
because the client is lenient where a definition must not be: it keeps unknown keys as
"additional properties" and an unknown enum value as an unparsed object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from datadog_api_client import Configuration
from datadog_api_client.exceptions import OpenApiException
from datadog_api_client.model_utils import (
    ModelComposed,
    ModelNormal,
    ModelSimple,
    OpenApiModel,
    UnparsedObject,
    validate_and_convert_types,
)
from datadog_api_client.v1.model.dashboard import Dashboard
from datadog_api_client.v1.model.monitor import Monitor
from datadog_api_client.v1.model.synthetics_api_test import SyntheticsAPITest

from herald_datadog.errors import DefinitionError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

MANAGED_BY_TAG = "managed-by:herald-datadog"
SERVICE_TAG = "service:herald"
VARIABLE = re.compile(r"\$\{([a-z_]+)\}")
NOTIFY_HANDLE = re.compile(r"^@[A-Za-z0-9][\w.+@-]*$")
ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


def untyped(value: object) -> Any:
    """``value`` as ``Any``: mypy --strict sees most of datadog-api-client as unannotated."""
    return value


def model_json(model: object) -> dict[str, Any]:
    """A model of the client as the API's JSON (enums as their values)."""
    return dict(untyped(model).to_dict())


# Model classes are deserialized through one configuration; it is never used to call an API.
_MODEL_CONFIGURATION = untyped(Configuration)()

ModelT = TypeVar("ModelT", bound=OpenApiModel)


@dataclass(frozen=True)
class Kind:
    """A kind of Datadog resource herald-datadog manages, and where its definitions live."""

    folder: str
    label: str
    name_field: str
    model: type[ModelNormal]


MONITOR = Kind("monitors", "monitor", "name", Monitor)
SYNTHETICS_TEST = Kind("synthetics", "synthetics test", "name", SyntheticsAPITest)
DASHBOARD = Kind("dashboards", "dashboard", "title", Dashboard)
KINDS = (MONITOR, SYNTHETICS_TEST, DASHBOARD)


@dataclass(frozen=True)
class Settings:
    """What the definitions are rendered with: the environment and the operator's options."""

    env: str
    variables: Mapping[str, str] = field(default_factory=dict)
    notify: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not ENV_NAME.fullmatch(self.env):
            raise DefinitionError(
                f"--env {self.env!r} is not an environment name (lowercase letters, digits, -)"
            )
        for handle in self.notify:
            if not NOTIFY_HANDLE.fullmatch(handle):
                raise DefinitionError(
                    f"--notify {handle!r} is not a Datadog notification handle "
                    "(@pagerduty-herald, @slack-herald-alerts, @someone@example.com)"
                )


@dataclass(frozen=True)
class Definition:
    """One resource as the repository defines it, validated, in the API's JSON shape."""

    kind: Kind
    path: Path
    name: str
    body: dict[str, Any]


def dashboard_marker(env: str) -> str:
    """The text that marks a dashboard as ours: dashboards only take ``team:`` tags."""
    return f"[{MANAGED_BY_TAG} env:{env}]"


def managed_tags(env: str) -> tuple[str, ...]:
    """The tags every managed monitor and Synthetics test carries."""
    return (SERVICE_TAG, f"env:{env}", MANAGED_BY_TAG)


def parse_model(data: Any, model: type[ModelT], where: str) -> ModelT:
    """Deserialize JSON-shaped ``data`` into ``model``, strictly.

    Raises
    ------
    DefinitionError
        Naming ``where`` and the field: a wrong type, a missing required field, an unknown
        field, or a value the API does not allow.
    """
    try:
        value = untyped(validate_and_convert_types)(
            data, (model,), [model.__name__], True, True, configuration=_MODEL_CONFIGURATION
        )
    except OpenApiException as error:
        path = [str(part) for part in getattr(error, "path_to_item", [])[1:]]
        reason = str(error).split(" at [", 1)[0]
        at = f"field {'.'.join(path)}: " if path else ""
        raise DefinitionError(f"{where}: {at}{reason}") from error
    except TypeError as error:
        # Raised by a model's __init__: a required field is missing (the client gives no path).
        missing = re.findall(r"'(\w+)'", str(error).split("missing", 1)[-1])
        what = type(error).__name__ if not missing else f"missing required field {missing}"
        raise DefinitionError(f"{where}: {what} ({error})") from error
    problems = strict_problems(value, "")
    if problems:
        raise DefinitionError(f"{where}: " + "; ".join(problems))
    if not isinstance(value, model):
        raise DefinitionError(f"{where}: is not a {model.__name__}")
    return value


def strict_problems(value: Any, path: str) -> list[str]:
    """What the lenient client let through: unknown fields and values, read-only fields."""
    here = path or "(top level)"
    if isinstance(value, UnparsedObject):
        return [f"field {here}: matches none of the shapes the API allows"]
    if isinstance(value, ModelSimple):
        if value._unparsed:
            allowed = ", ".join(sorted(str(v) for v in value.allowed_values))
            return [f"field {here}: {value.value!r} is not one of {allowed}"]
        return []
    if isinstance(value, ModelComposed):
        instance = untyped(value).get_oneof_instance()
        if instance is None:
            return [f"field {here}: matches none of the shapes the API allows"]
        return strict_problems(instance, path)
    if isinstance(value, ModelNormal):
        problems: list[str] = []
        known = value.openapi_types
        for name, item in value._data_store.items():
            json_name = value.attribute_map.get(name, name)
            child = f"{path}.{json_name}" if path else json_name
            if name not in known:
                problems.append(f"field {child}: unknown to {type(value).__name__}")
            elif not path and name in value.read_only_vars:
                problems.append(f"field {child}: is set by Datadog (read-only)")
            else:
                problems.extend(strict_problems(item, child))
        return problems
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in strict_problems(item, f"{path}[{i}]")]
    if isinstance(value, dict):
        return [p for k, item in value.items() for p in strict_problems(item, f"{path}.{k}")]
    return []


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise DefinitionError(f"{path}: cannot read it: {error}") from error
    except yaml.YAMLError as error:
        raise DefinitionError(f"{path}: not valid YAML: {error}") from error


def _substitute(value: Any, variables: Mapping[str, str], path: Path, field_path: str) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in variables:
                known = ", ".join(f"${{{n}}}" for n in sorted(variables))
                raise DefinitionError(
                    f"{path}: field {field_path}: ${{{name}}} is not a known variable ({known})"
                )
            if not variables[name]:
                raise DefinitionError(
                    f"{path}: field {field_path}: ${{{name}}} has no value: "
                    f"pass --{name.replace('_', '-')} (or set HERALD_{name.upper()})"
                )
            return variables[name]

        return VARIABLE.sub(replace, value)
    if isinstance(value, list):
        return [
            _substitute(item, variables, path, f"{field_path}[{i}]") for i, item in enumerate(value)
        ]
    if isinstance(value, dict):
        return {
            key: _substitute(item, variables, path, f"{field_path}.{key}" if field_path else key)
            for key, item in value.items()
        }
    return value


def _with_ownership(kind: Kind, data: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Add what makes a resource ours and findable again: tags (or the dashboard marker)."""
    data = dict(data)
    if kind is DASHBOARD:
        description = str(data.get("description") or "").rstrip()
        footer = (
            f"Managed by herald-datadog {dashboard_marker(settings.env)}: edit the file in "
            "datadog/dashboards/ and apply; changes made here are overwritten."
        )
        data["description"] = f"{description}\n\n{footer}".lstrip()
        return data
    tags = [str(tag) for tag in data.get("tags") or []]
    foreign_env = [t for t in tags if t.startswith("env:") and t != f"env:{settings.env}"]
    if foreign_env:
        raise ValueError(f"field tags: {foreign_env[0]} contradicts --env {settings.env}")
    data["tags"] = sorted(set(tags) | set(managed_tags(settings.env)))
    if settings.notify:
        message = str(data.get("message") or "").rstrip()
        data["message"] = f"{message}\n\nNotify: {' '.join(settings.notify)}".lstrip()
    return data


def load_definition(kind: Kind, path: Path, settings: Settings) -> Definition:
    """Read, render and validate one definition file."""
    raw = _load_yaml(path)
    if not isinstance(raw, dict):
        raise DefinitionError(f"{path}: must hold one {kind.model.__name__} (a YAML mapping)")
    variables = {"env": settings.env, **settings.variables}
    rendered = _substitute(raw, variables, path, "")
    try:
        owned = _with_ownership(kind, rendered, settings)
    except ValueError as error:
        raise DefinitionError(f"{path}: {error}") from error
    model = parse_model(owned, kind.model, str(path))
    body = model_json(model)
    name = body.get(kind.name_field)
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError(f"{path}: field {kind.name_field}: a {kind.label} needs one")
    return Definition(kind=kind, path=path, name=name, body=body)


def load_definitions(root: Path, settings: Settings) -> list[Definition]:
    """Every definition under ``root`` (``datadog/``), in a stable order.

    Raises
    ------
    DefinitionError
        When a file is invalid, or two definitions of one kind share a name (the name is
        how a definition finds its resource in Datadog).
    """
    if not root.is_dir():
        raise DefinitionError(f"{root} is not a folder of definitions (--definitions)")
    definitions: list[Definition] = []
    for kind in KINDS:
        folder = root / kind.folder
        paths: Sequence[Path] = sorted(folder.glob("*.yaml")) if folder.is_dir() else ()
        seen: dict[str, Path] = {}
        for path in paths:
            definition = load_definition(kind, path, settings)
            if definition.name in seen:
                raise DefinitionError(
                    f"{path}: {kind.label} name {definition.name!r} is already used by "
                    f"{seen[definition.name]}; names must be unique per kind"
                )
            seen[definition.name] = path
            definitions.append(definition)
    return definitions
