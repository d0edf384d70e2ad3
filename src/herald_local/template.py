"""What ``template.yaml`` declares about the task pipeline, read so the local copy cannot drift.

The local system creates its queues, table, SES configuration set and task runner
configuration, and routes SES's events by its EventBridge rules, from the same template
``sam deploy`` uses: names come from the logical IDs, properties from the
resources, and the task runner's environment, batch size and batching window from the
function and its SQS event, with every parameter at its default (or a local override).

cfn-lint's loader parses the short intrinsic forms (``!Ref``, ``!GetAtt``, ``!If`` ...)
into their long forms; the few intrinsics the pipeline uses are resolved here against
the local stack (``IntrinsicResolver``). Anything else is refused with the property that
holds it, so a template change the local system cannot follow fails loudly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

QUEUE_TYPE = "AWS::SQS::Queue"
TABLE_TYPE = "AWS::DynamoDB::Table"
FUNCTION_TYPE = "AWS::Serverless::Function"
CONFIGURATION_SET_TYPE = "AWS::SES::ConfigurationSet"
EVENT_DESTINATION_TYPE = "AWS::SES::ConfigurationSetEventDestination"
EVENT_RULE_TYPE = "AWS::Events::Rule"
FEEDBACK_QUEUE = "FeedbackQueue"
# The local stack's id: fixed, so names the template derives from it stay the same.
STACK_ID = (
    "arn:aws:cloudformation:us-east-1:123456789012:stack/herald-local/"
    "6c6f6361-6c00-4000-8000-000000000000"
)
TASK_RUNNER_FUNCTION = "TaskRunnerFunction"
TASK_QUEUE = "TaskQueue"
TASK_QUEUE_EVENT = "TaskQueue"
SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")


class TemplateError(ValueError):
    """The template holds something the local system cannot reproduce."""


@dataclass(frozen=True)
class TemplateResource:
    """One resource: its logical ID, type and raw (unresolved) properties."""

    logical_id: str
    type: str
    properties: Mapping[str, Any]
    condition: str | None = None  # the resource exists only when this condition holds


@dataclass(frozen=True)
class EventSourceMapping:
    """The task runner's SQS event: which queue, and how Lambda batches it."""

    queue_logical_id: str
    batch_size: int
    maximum_batching_window_seconds: int
    report_batch_item_failures: bool


@dataclass(frozen=True)
class FunctionConfiguration:
    """The task runner function as Lambda would run it."""

    logical_id: str
    handler: str
    timeout_seconds: int
    memory_mb: int
    environment: Mapping[str, Any]  # unresolved: values may reference resources
    event: EventSourceMapping


@dataclass(frozen=True)
class PipelineTemplate:
    """The parts of ``template.yaml`` the local system reproduces."""

    parameters: Mapping[str, Any]  # name -> the value used (default or override)
    conditions: Mapping[str, Any]
    queues: tuple[TemplateResource, ...]  # in dependency order: DLQs first
    tables: tuple[TemplateResource, ...]
    task_runner: FunctionConfiguration
    resolver: IntrinsicResolver
    configuration_sets: tuple[TemplateResource, ...] = ()
    event_destinations: tuple[TemplateResource, ...] = ()
    event_rules: tuple[TemplateResource, ...] = ()

    def exists(self, resource: TemplateResource) -> bool:
        """Whether ``resource`` is created with these parameters (its ``Condition``)."""
        return resource.condition is None or self.resolver.condition(resource.condition)


@dataclass
class IntrinsicResolver:
    """Resolves ``Ref``, ``Fn::GetAtt``, ``Fn::Sub``, ``Fn::If``, ``Fn::Equals``,
    ``Fn::Not``, ``Fn::And``, ``Fn::Or`` and ``Fn::Select``/``Fn::Split`` against the
    local stack.

    ``refs`` and ``attributes`` are filled in as the local resources are created, so a
    property may refer to a resource created before it.
    """

    parameters: Mapping[str, Any]
    conditions: Mapping[str, Any]
    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)

    def resolve(self, value: Any, where: str = "") -> Any:
        """``value`` with every intrinsic replaced by its local value."""
        if isinstance(value, Mapping):
            if len(value) == 1:
                ((name, argument),) = value.items()
                function = self._functions().get(str(name))
                if function is not None:
                    return function(argument, where)
                if str(name).startswith("Fn::"):
                    raise TemplateError(f"{where}: {name} is not supported by the local system")
            return {str(k): self.resolve(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(item, f"{where}[{i}]") for i, item in enumerate(value)]
        return value

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            raise TemplateError(f"condition {name} is not defined")
        return bool(self.resolve(self.conditions[name], f"Conditions.{name}"))

    def _functions(self) -> dict[str, Callable[[Any, str], Any]]:
        return {
            "Ref": self._ref,
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::If": self._if,
            "Fn::Equals": lambda a, w: self._pair(a, w)[0] == self._pair(a, w)[1],
            "Fn::Not": lambda a, w: not self.resolve(a[0], w),
            "Fn::And": lambda a, w: all(self.resolve(item, w) for item in a),
            "Fn::Or": lambda a, w: any(self.resolve(item, w) for item in a),
            "Fn::Select": lambda a, w: self.resolve(a[1], w)[int(self.resolve(a[0], w))],
            "Fn::Split": lambda a, w: str(self.resolve(a[1], w)).split(str(a[0])),
            "Condition": lambda a, w: self.condition(str(a)),
        }

    def _ref(self, name: Any, where: str) -> Any:
        name = str(name)
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        raise TemplateError(f"{where}: Ref {name} has no local value (not created yet?)")

    def _get_att(self, argument: Any, where: str) -> str:
        resource, attribute = (
            argument.split(".", 1) if isinstance(argument, str) else (argument[0], argument[1])
        )
        try:
            return self.attributes[(str(resource), str(attribute))]
        except KeyError:
            raise TemplateError(
                f"{where}: GetAtt {resource}.{attribute} has no local value"
            ) from None

    def _sub(self, argument: Any, where: str) -> str:
        template, variables = (argument, {}) if isinstance(argument, str) else argument
        values = {str(name): self.resolve(value, where) for name, value in variables.items()}

        def substitute(found: re.Match[str]) -> str:
            name = found[1]
            if name.startswith("!"):  # ${!Literal} is the text ${Literal}
                return "${" + name[1:] + "}"
            if name in values:
                return str(values[name])
            if "." in name:
                return self._get_att(name, where)
            return str(self._ref(name, where))

        return SUB_VARIABLE.sub(substitute, str(template))

    def _if(self, argument: Any, where: str) -> Any:
        condition, when_true, when_false = argument
        return self.resolve(when_true if self.condition(str(condition)) else when_false, where)

    def _pair(self, argument: Any, where: str) -> tuple[Any, Any]:
        return self.resolve(argument[0], where), self.resolve(argument[1], where)


def read_pipeline_template(
    path: Path, parameter_overrides: Mapping[str, Any] | None = None
) -> PipelineTemplate:
    """Read the queues, tables and task runner of the template at ``path``.

    Parameters
    ----------
    path
        The root SAM template.
    parameter_overrides
        Values for parameters, e.g. ``SenderEmail`` (which has no default) or ``LogLevel``.
    """
    # Imported here: cfn-lint takes about two seconds to import, which the caller overlaps
    # with starting PostgreSQL.
    from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]

    from tools.nested_stacks import ROOT_INLINED_STACKS, inline_nested

    # The queues and SES's configuration set live in stacks the root nests as its own parts
    # (TaskStack, SesStack, ...): read inlined, under the names the root gives them.
    document = inline_nested(cfn_yaml.load(str(path)), path, _load, ROOT_INLINED_STACKS)
    overrides = dict(parameter_overrides or {})
    parameters: dict[str, Any] = {}
    for name, declaration in document.get("Parameters", {}).items():
        if name in overrides:
            parameters[name] = overrides.pop(name)
        elif "Default" in declaration:
            parameters[name] = declaration["Default"]
    if overrides:
        raise TemplateError(f"unknown template parameter(s): {', '.join(sorted(overrides))}")
    # Pseudo parameters, as moto's default account and region see them.
    parameters |= {
        "AWS::Region": "us-east-1",
        "AWS::AccountId": "123456789012",
        "AWS::Partition": "aws",
        "AWS::StackName": "herald-local",
        "AWS::StackId": STACK_ID,
        "AWS::URLSuffix": "amazonaws.com",
    }
    conditions = dict(document.get("Conditions", {}))
    resources = {
        str(logical_id): TemplateResource(
            str(logical_id),
            str(body["Type"]),
            dict(body.get("Properties", {})),
            str(body["Condition"]) if "Condition" in body else None,
        )
        for logical_id, body in document["Resources"].items()
    }
    return PipelineTemplate(
        parameters=parameters,
        conditions=conditions,
        queues=_dead_letter_queues_first([r for r in resources.values() if r.type == QUEUE_TYPE]),
        tables=tuple(r for r in resources.values() if r.type == TABLE_TYPE),
        task_runner=_task_runner(document, resources, parameters, conditions),
        resolver=IntrinsicResolver(parameters=parameters, conditions=conditions),
        configuration_sets=_of_type(resources, CONFIGURATION_SET_TYPE),
        event_destinations=_of_type(resources, EVENT_DESTINATION_TYPE),
        event_rules=_of_type(resources, EVENT_RULE_TYPE),
    )


def _load(path: Path) -> dict[str, Any]:
    from cfnlint.decode import cfn_yaml

    loaded: dict[str, Any] = cfn_yaml.load(str(path))
    return loaded


def _of_type(resources: Mapping[str, TemplateResource], type_: str) -> tuple[TemplateResource, ...]:
    return tuple(resource for resource in resources.values() if resource.type == type_)


def _dead_letter_queues_first(queues: list[TemplateResource]) -> tuple[TemplateResource, ...]:
    # A queue's RedrivePolicy names its DLQ's ARN, so the DLQ must exist first.
    def has_redrive(queue: TemplateResource) -> bool:
        return "RedrivePolicy" in queue.properties

    return tuple(sorted(queues, key=has_redrive))


def _task_runner(
    document: Mapping[str, Any],
    resources: Mapping[str, TemplateResource],
    parameters: Mapping[str, Any],
    conditions: Mapping[str, Any],
) -> FunctionConfiguration:
    function = resources.get(TASK_RUNNER_FUNCTION)
    if function is None or function.type != FUNCTION_TYPE:
        raise TemplateError(f"the template has no {FUNCTION_TYPE} {TASK_RUNNER_FUNCTION}")
    # Only parameters and conditions are known before any resource exists.
    early = IntrinsicResolver(parameters=parameters, conditions=conditions)
    globals_ = document.get("Globals", {}).get("Function", {})
    properties = {**globals_, **function.properties}
    environment = {
        **globals_.get("Environment", {}).get("Variables", {}),
        **function.properties.get("Environment", {}).get("Variables", {}),
    }
    event = properties.get("Events", {}).get(TASK_QUEUE_EVENT)
    if event is None or event.get("Type") != "SQS":
        raise TemplateError(f"{TASK_RUNNER_FUNCTION} has no SQS event {TASK_QUEUE_EVENT}")
    event_properties = event["Properties"]
    queue = event_properties["Queue"]
    queue_id = (
        queue["Fn::GetAtt"][0] if isinstance(queue["Fn::GetAtt"], list) else queue["Fn::GetAtt"]
    )
    where = f"{TASK_RUNNER_FUNCTION}.Events.{TASK_QUEUE_EVENT}"
    return FunctionConfiguration(
        logical_id=TASK_RUNNER_FUNCTION,
        handler=str(properties["Handler"]),
        timeout_seconds=int(early.resolve(properties.get("Timeout", 3), "Timeout")),
        memory_mb=int(early.resolve(properties.get("MemorySize", 128), "MemorySize")),
        environment=environment,
        event=EventSourceMapping(
            queue_logical_id=str(queue_id).split(".")[0],
            # Lambda's own defaults when the template leaves them out.
            batch_size=int(early.resolve(event_properties.get("BatchSize", 10), where)),
            maximum_batching_window_seconds=int(
                early.resolve(event_properties.get("MaximumBatchingWindowInSeconds", 0), where)
            ),
            report_batch_item_failures="ReportBatchItemFailures"
            in event_properties.get("FunctionResponseTypes", []),
        ),
    )
