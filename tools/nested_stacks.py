"""Read a template that nests local templates as one stack, with each nested stack inlined.

stacks/backend.yaml nests stacks/service.yaml once per process (ApiStack, WorkerStack,
MigrationStack). Tools that judge resources one template at a time (the infra tests,
Control Tower's cfn-guard rules in tools/cfn-guard/check.py) read it through
`inline_nested`: each instance's resources under its name (ApiStack's TaskDefinition becomes
ApiTaskDefinition), its parameters replaced by the values the instance passes, its
conditions decided where those values decide them (a Fn::If on one is replaced by its
branch), the others kept as the parent's, and the parent's reads of the instance's outputs
replaced by what the outputs hold. What a nested template declares is then checked on every
instance with the values it really gets, under the names it had when the instances were
written out by hand. template.yaml's own parts (ROOT_INLINED_STACKS: the queues, SES's
events, the site and the dashboard) are read the same way, inlined in the root under the
names they had there.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

Template = dict[str, Any]
_NO_VALUE = object()


def referenced_id(value: Any) -> str | None:
    """The logical ID a `!Ref X` or `!GetAtt X.Attr` points to, else None."""
    if isinstance(value, Mapping):
        if "Ref" in value:
            return str(value["Ref"])
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            return str(target[0] if isinstance(target, Sequence) else target.split(".")[0])
    return None


def as_list(value: Any) -> list[Any]:
    """One item or a list, as a list."""
    return list(value) if isinstance(value, list) else [value]


def nested_templates(paths: Sequence[Path]) -> set[Path]:
    """The local templates that the templates at ``paths`` nest."""
    return {
        nested.resolve()
        for path in paths
        for resource in _load_yaml_resources(path)
        if (nested := nested_template_path(resource, path)) is not None
    }


def _load_yaml_resources(path: Path) -> list[Mapping[str, Any]]:
    from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]

    loaded: Template = cfn_yaml.load(str(path))
    return list(loaded.get("Resources", {}).values())


NESTED_STACK_TYPES = {
    "AWS::Serverless::Application": "Location",
    "AWS::CloudFormation::Stack": "TemplateURL",
}
_UNDECIDED = object()


def nested_template_path(resource: Mapping[str, Any], parent: Path) -> Path | None:
    """The local template a nested stack resource names, else None."""
    key = NESTED_STACK_TYPES.get(str(resource.get("Type")))
    location = resource.get("Properties", {}).get(key) if key else None
    if isinstance(location, str) and (parent.parent / location).is_file():
        return parent.parent / location
    return None


# The concerns moved out of template.yaml to make it shorter (issue 16): the web app's
# hosting (stacks/site.yaml), the pipeline's dashboard (stacks/dashboard.yaml), each queue
# with its DLQ and alarms (stacks/queue.yaml) and SES's configuration set and events
# (stacks/ses.yaml). Read as part of the root, they keep the logical IDs they had there
# (SiteStack's Bucket is SiteBucket, TaskStack's Queue TaskQueue), so tests, cfn-guard
# findings, runbook entries and the local system (herald_local.template) name them as
# before; a few were renamed (the README's upgrade notes list them).
ROOT_INLINED_STACKS = (
    "TaskStack",
    "ResultStack",
    "FeedbackStack",
    "SesStack",
    "SiteStack",
    "DashboardStack",
)


def inline_nested(
    template: Template,
    path: Path,
    load: Callable[[Path], Template],
    only: Collection[str] | None = None,
) -> Template:
    """``template`` (read from ``path``) with each stack it nests from a local file replaced
    by that file's resources (read with ``load``, themselves inlined), prefixed with the
    nested stack's logical ID less "Stack" (ApiStack's TaskDefinition: ApiTaskDefinition).
    With ``only``, just the nested stacks of those logical IDs are inlined."""
    expanded: Template = copy.deepcopy(template)
    for stack_id, resource in template.get("Resources", {}).items():
        nested_path = nested_template_path(resource, path)
        if nested_path is None or (only is not None and stack_id not in only):
            continue
        nested = inline_nested(load(nested_path), nested_path, load)
        prefix = stack_id.removesuffix("Stack")
        # As the parent holds it now: reads of stacks inlined before it already replaced.
        resource = expanded["Resources"][stack_id]
        outputs = _inline(expanded, stack_id, prefix, resource, nested)
        del expanded["Resources"][stack_id]
        expanded = _read_outputs(expanded, stack_id, outputs)
    return expanded


def _inline(
    parent: Template, stack_id: str, prefix: str, stack: Mapping[str, Any], nested: Template
) -> dict[str, Any]:
    """Add ``nested``'s resources, conditions and mappings to ``parent``; return its
    outputs' values, renamed."""
    passed = stack.get("Properties", {}).get("Parameters", {})
    values: dict[str, Any] = {}
    for name, declared in nested.get("Parameters", {}).items():
        if name in passed:
            value = passed[name]
            join = value.get("Fn::Join") if isinstance(value, Mapping) else None
            listed = "List" in str(declared.get("Type"))
            if listed and join and join[0] == ",":  # a list passed as its joined string
                value = join[1]
            elif listed and isinstance(value, str):
                value = value.split(",")
            elif listed and not _is_list_parameter(parent, value):  # a list of one
                value = [value]
            values[name] = value
        else:
            if "Default" not in declared:
                raise ValueError(f"{stack_id} does not pass {name}, which has no default")
            values[name] = declared["Default"]
    resources = nested.get("Resources", {})
    renamed = {logical_id: prefix + logical_id for logical_id in resources}

    def rename(value: Any) -> Any:
        return _substitute(value, values, renamed)

    # Conditions: decided now when the passed values decide them, else kept (shared with
    # the parent's condition of the same name when that one means the same).
    decided: dict[str, Any] = {}
    condition_names: dict[str, str] = {}
    for name, condition in nested.get("Conditions", {}).items():
        definition = rename(condition)
        outcome = _evaluate(definition, decided, parent.get("Parameters", {}))
        if outcome is not _UNDECIDED:
            decided[name] = outcome
            continue
        definition = _decide_conditions(definition, decided, condition_names)
        if "Fn::And" in definition:  # And[C, true...] is C: use C's name
            undecided = [
                c for c in definition["Fn::And"] if decided.get(c.get("Condition")) is not True
            ]
            if len(undecided) == 1 and list(undecided[0]) == ["Condition"]:
                condition_names[name] = undecided[0]["Condition"]
                continue
        existing = parent.setdefault("Conditions", {}).get(name)
        kept = name if existing in (None, definition) else prefix + name
        parent["Conditions"][kept] = definition
        condition_names[name] = kept
    for name, mapping in nested.get("Mappings", {}).items():
        if parent.setdefault("Mappings", {}).get(name, mapping) != mapping:
            raise ValueError(f"{stack_id}: mapping {name} differs from its parent's")
        parent["Mappings"][name] = mapping

    depends_on = as_list(stack.get("DependsOn", []))
    for logical_id, resource in resources.items():
        inlined = _decide_conditions(rename(resource), decided, condition_names)
        condition = resource.get("Condition")
        if condition in decided:
            if not decided[condition]:
                continue
            del inlined["Condition"]
        inlined["DependsOn"] = [
            *(renamed.get(d, d) for d in as_list(inlined.get("DependsOn", []))),
            *depends_on,
        ] or None
        if inlined["DependsOn"] is None:
            del inlined["DependsOn"]
        parent["Resources"][renamed[logical_id]] = inlined
    return {
        name: _decide_conditions(rename(output["Value"]), decided, condition_names)
        for name, output in nested.get("Outputs", {}).items()
        if decided.get(output.get("Condition"), True)
    }


def _is_list_parameter(template: Template, value: Any) -> bool:
    """Whether ``value`` is a Ref to a list parameter of ``template``."""
    declared = template.get("Parameters", {}).get(referenced_id(value) or "", {})
    return "Ref" in value and "List" in str(declared.get("Type"))


def _substitute(value: Any, values: Mapping[str, Any], renamed: Mapping[str, str]) -> Any:
    """``value`` with Refs to parameters replaced by the values passed, and Refs, GetAtts
    and ${...} to resources renamed."""
    if isinstance(value, list):
        return [_substitute(item, values, renamed) for item in value]
    if not isinstance(value, dict):
        return value
    if list(value) == ["Ref"]:
        name = value["Ref"]
        if name in values:
            return copy.deepcopy(values[name])
        return {"Ref": renamed.get(name, name)}
    if list(value) == ["Fn::GetAtt"]:
        target = value["Fn::GetAtt"]
        logical_id, attribute = target if isinstance(target, list) else target.split(".", 1)
        return {"Fn::GetAtt": [renamed.get(logical_id, logical_id), attribute]}
    if list(value) == ["Fn::Sub"]:
        sub = value["Fn::Sub"]
        text, variables = (sub[0], dict(sub[1])) if isinstance(sub, list) else (sub, {})
        local = {k: _substitute(v, values, renamed) for k, v in variables.items()}
        extra: dict[str, Any] = {}

        def placeholder(match: re.Match[str]) -> str:
            name, _, attribute = match.group(1).partition(".")
            if match.group(1) in local or name.startswith("AWS::"):
                return match.group(0)
            if name in values:
                passed = values[name]
                if isinstance(passed, str | int | float):
                    return str(passed)
                target = referenced_id(passed)
                if target is not None and "Ref" in passed:
                    return "${" + target + "}"
                if target is not None:
                    return "${" + ".".join(passed["Fn::GetAtt"]) + "}"
                extra[name] = copy.deepcopy(passed)
                return match.group(0)
            return (
                "${"
                + ".".join([renamed.get(name, name), *([attribute] if attribute else [])])
                + "}"
            )

        text = re.sub(r"\$\{([^!}][^}]*)\}", placeholder, text)
        local |= extra
        if not local and "${" not in text:  # nothing left to substitute: the string itself
            return text
        return {"Fn::Sub": [text, local] if local else text}
    return {key: _substitute(item, values, renamed) for key, item in value.items()}


def _may_equal(value: Any, literal: Any, parameters: Mapping[str, Any]) -> bool:
    """Whether a reference can take a literal value: only a parameter of the parent that
    allows it explicitly (its Default, AllowedValues or AllowedPattern) can; a resource's
    Ref or attribute, or a value built from them, is taken to be a real (non-empty) value."""
    declared = parameters.get(referenced_id(value) or "") if "Ref" in value else None
    if declared is None:
        return False
    text = str(literal)
    return (
        str(declared.get("Default")) == text
        or text in [str(allowed) for allowed in declared.get("AllowedValues", [])]
        or bool(re.fullmatch(declared.get("AllowedPattern", "(?!)"), text))
    )


def _evaluate(condition: Any, decided: Mapping[str, bool], parameters: Mapping[str, Any]) -> Any:
    """A condition's outcome when the values in it decide it, else _UNDECIDED."""
    if not isinstance(condition, Mapping) or len(condition) != 1:
        return _UNDECIDED
    [(function, arguments)] = condition.items()
    if function == "Condition":
        return decided.get(arguments, _UNDECIDED)
    if function == "Fn::Equals":
        left, right = arguments
        if isinstance(left, dict) and isinstance(right, dict):
            return _UNDECIDED
        if isinstance(left, dict) or isinstance(right, dict):
            reference, literal = (left, right) if isinstance(left, dict) else (right, left)
            return _UNDECIDED if _may_equal(reference, literal, parameters) else False
        return str(left) == str(right)
    outcomes = [_evaluate(argument, decided, parameters) for argument in arguments]
    if function == "Fn::Not":
        return _UNDECIDED if outcomes[0] is _UNDECIDED else not outcomes[0]
    if function == "Fn::And":
        if False in outcomes:
            return False
        return _UNDECIDED if _UNDECIDED in outcomes else True
    if function == "Fn::Or":
        if True in outcomes:
            return True
        return _UNDECIDED if _UNDECIDED in outcomes else False
    return _UNDECIDED


def _decide_conditions(value: Any, decided: Mapping[str, bool], names: Mapping[str, str]) -> Any:
    """``value`` with each Fn::If on a decided condition replaced by its branch (dropped
    when that is AWS::NoValue), and the conditions kept renamed as the parent knows them."""
    if isinstance(value, list):
        items = [_decide_conditions(item, decided, names) for item in value]
        return [item for item in items if item is not _NO_VALUE]
    if not isinstance(value, dict):
        return value
    if list(value) == ["Fn::If"]:
        name, when_true, when_false = value["Fn::If"]
        if name in decided:
            chosen = when_true if decided[name] else when_false
            if chosen == {"Ref": "AWS::NoValue"}:
                return _NO_VALUE
            return _decide_conditions(chosen, decided, names)
        branches = [
            _decide_conditions(branch, decided, names) for branch in (when_true, when_false)
        ]
        return {"Fn::If": [names.get(name, name), *branches]}
    if list(value) == ["Condition"] and isinstance(value["Condition"], str):
        return {"Condition": names.get(value["Condition"], value["Condition"])}
    resolved = {key: _decide_conditions(item, decided, names) for key, item in value.items()}
    if isinstance(resolved.get("Condition"), str):
        resolved["Condition"] = names.get(resolved["Condition"], resolved["Condition"])
    return {key: item for key, item in resolved.items() if item is not _NO_VALUE}


def _read_outputs(template: Template, stack_id: str, outputs: Mapping[str, Any]) -> Template:
    """``template`` with its reads of a nested stack's outputs replaced by their values."""

    def replace(value: Any) -> Any:
        if isinstance(value, list):
            return [replace(item) for item in value]
        if not isinstance(value, dict):
            return value
        if list(value) == ["Fn::GetAtt"]:
            target = value["Fn::GetAtt"]
            logical_id, attribute = target if isinstance(target, list) else target.split(".", 1)
            if logical_id == stack_id and attribute.startswith("Outputs."):
                return copy.deepcopy(outputs[attribute.removeprefix("Outputs.")])
        if list(value) == ["Fn::Sub"]:
            sub = value["Fn::Sub"]
            text, variables = (sub[0], sub[1]) if isinstance(sub, list) else (sub, {})

            def placeholder(match: re.Match[str]) -> str:
                output = outputs[match.group(1)]
                target = referenced_id(output)
                if target is None:
                    raise ValueError(f"{stack_id}.Outputs.{match.group(1)} in a !Sub: {output!r}")
                if "Ref" in output:
                    return "${" + target + "}"
                return "${" + ".".join(output["Fn::GetAtt"]) + "}"

            text = re.sub(r"\$\{" + stack_id + r"\.Outputs\.([A-Za-z0-9]+)\}", placeholder, text)
            return {"Fn::Sub": [text, replace(variables)] if variables else text}
        return {key: replace(item) for key, item in value.items()}

    return {
        key: replace(item) if key in ("Resources", "Outputs") else item
        for key, item in template.items()
    }
