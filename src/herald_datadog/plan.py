"""What would change in Datadog, and making exactly those changes.

A definition finds its resource by kind and name among the environment's managed
resources. It is *unchanged* when every field the definition sets already has that value
in Datadog: fields Datadog adds itself (ids, dates, defaults it fills in, widget ids) are
not the repository's business, so they never count as a change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from herald_datadog.account import Existing
    from herald_datadog.definitions import Definition, Kind

VALUE_WIDTH = 70


class Action(Enum):
    """What the plan does with one resource."""

    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    ORPHAN = "orphan"
    DELETE = "delete"


SYMBOLS = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.UNCHANGED: "=",
    Action.ORPHAN: "!",
    Action.DELETE: "-",
}


@dataclass(frozen=True)
class FieldChange:
    """One field whose value in Datadog differs from the definition's."""

    path: str
    current: Any
    desired: Any


@dataclass(frozen=True)
class Change:
    """One line of the plan."""

    action: Action
    kind: Kind
    name: str
    definition: Definition | None = None
    existing: Existing | None = None
    fields: tuple[FieldChange, ...] = ()


class Account(Protocol):
    """The Datadog side of a plan: what ``DatadogAccount`` offers."""

    def create(self, definition: Definition) -> str: ...

    def update(self, existing: Existing, definition: Definition) -> None: ...

    def delete(self, existing: Existing) -> None: ...


_MISSING = object()


def _same_scalar(desired: Any, current: Any) -> bool:
    # JSON numbers: a threshold of 1 comes back from Datadog as 1.0.
    if isinstance(desired, int | float) and isinstance(current, int | float):
        if isinstance(desired, bool) or isinstance(current, bool):
            return desired is current
        return float(desired) == float(current)
    return bool(desired == current)


def field_changes(desired: Any, current: Any, path: str = "") -> list[FieldChange]:
    """The fields ``desired`` sets whose value in ``current`` differs.

    Mappings are compared on the desired keys only; lists element by element; lists of
    plain strings (tags, locations) as sets, because Datadog does not keep their order.
    """
    if current is _MISSING:
        return [FieldChange(path, None, desired)]
    if isinstance(desired, dict):
        if not isinstance(current, dict):
            return [FieldChange(path, current, desired)]
        changes: list[FieldChange] = []
        for key, value in desired.items():
            child = f"{path}.{key}" if path else key
            changes.extend(field_changes(value, current.get(key, _MISSING), child))
        return changes
    if isinstance(desired, list):
        if not isinstance(current, list) or len(current) != len(desired):
            return [FieldChange(path, current, desired)]
        if all(isinstance(item, str) for item in desired):
            same = all(isinstance(item, str) for item in current) and (
                sorted(desired) == sorted(current)
            )
            return [] if same else [FieldChange(path, current, desired)]
        return [
            change
            for index, (want, have) in enumerate(zip(desired, current, strict=True))
            for change in field_changes(want, have, f"{path}[{index}]")
        ]
    return [] if _same_scalar(desired, current) else [FieldChange(path, current, desired)]


def make_plan(
    definitions: Sequence[Definition], existing: Sequence[Existing], *, delete_orphans: bool
) -> list[Change]:
    """Match definitions to managed resources by kind and name and say what to do with each.

    A managed resource no definition names is an orphan: kept, unless ``delete_orphans``.
    When Datadog holds two managed resources of one name, the first is the definition's
    and the others are orphans.
    """
    remaining = list(existing)
    plan: list[Change] = []
    for definition in definitions:
        match = next(
            (
                item
                for item in remaining
                if item.kind is definition.kind and item.name == definition.name
            ),
            None,
        )
        if match is None:
            plan.append(Change(Action.CREATE, definition.kind, definition.name, definition))
            continue
        remaining.remove(match)
        fields = tuple(field_changes(definition.body, match.body))
        action = Action.UPDATE if fields else Action.UNCHANGED
        plan.append(Change(action, definition.kind, definition.name, definition, match, fields))
    orphan_action = Action.DELETE if delete_orphans else Action.ORPHAN
    plan.extend(Change(orphan_action, item.kind, item.name, existing=item) for item in remaining)
    return plan


def _show(value: Any) -> str:
    if value is None:
        return "(unset)"
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 1] + "…"


def _show_pair(current: Any, desired: Any) -> tuple[str, str]:
    """Both values, and for two long strings only where they differ, with some context."""
    if not (isinstance(current, str) and isinstance(desired, str)):
        return _show(current), _show(desired)
    start = 0
    while start < min(len(current), len(desired)) and current[start] == desired[start]:
        start += 1
    end = 0
    while (
        end < min(len(current), len(desired)) - start
        and current[len(current) - 1 - end] == desired[len(desired) - 1 - end]
    ):
        end += 1
    context = 20
    begin = max(0, start - context)

    def excerpt(text: str) -> str:
        middle = text[begin : max(begin, len(text) - end + context)]
        prefix = "…" if begin else ""
        suffix = "…" if len(text) - end + context < len(text) else ""
        return _show(prefix + middle + suffix)

    return excerpt(current), excerpt(desired)


def render_plan(plan: Sequence[Change]) -> list[str]:
    """The plan as lines for people: one per resource, the changed fields under updates."""
    lines: list[str] = []
    for change in plan:
        where = ""
        if change.definition is not None:
            where = f"  ({change.definition.path})"
        elif change.existing is not None:
            where = f"  (id {change.existing.id})"
        lines.append(
            f"{SYMBOLS[change.action]} {change.action.value:<9} {change.kind.label:<15} "
            f"{change.name}{where}"
        )
        for item in change.fields:
            current, desired = _show_pair(item.current, item.desired)
            lines.append(f"      {item.path}: {current} -> {desired}")
        if change.action is Action.ORPHAN:
            lines.append(
                "      tagged as managed here but no longer defined: kept "
                "(pass --delete-orphans to delete it)"
            )
    counts = {action: sum(1 for c in plan if c.action is action) for action in Action}
    lines.append(
        f"Plan: {counts[Action.CREATE]} to create, {counts[Action.UPDATE]} to update, "
        f"{counts[Action.UNCHANGED]} unchanged, {counts[Action.ORPHAN]} orphan(s) kept, "
        f"{counts[Action.DELETE]} to delete."
    )
    return lines


def has_changes(plan: Sequence[Change]) -> bool:
    """Whether applying the plan would change anything in Datadog."""
    return any(c.action in (Action.CREATE, Action.UPDATE, Action.DELETE) for c in plan)


def apply_plan(plan: Sequence[Change], account: Account, say: Callable[[str], None]) -> None:
    """Make the plan's changes, and only those, in the plan's order."""
    for change in plan:
        if change.action is Action.CREATE and change.definition is not None:
            new_id = account.create(change.definition)
            say(f"created {change.kind.label} {change.name!r} (id {new_id})")
        elif change.action is Action.UPDATE and change.definition and change.existing:
            account.update(change.existing, change.definition)
            say(f"updated {change.kind.label} {change.name!r} (id {change.existing.id})")
        elif change.action is Action.DELETE and change.existing is not None:
            account.delete(change.existing)
            say(f"deleted {change.kind.label} {change.name!r} (id {change.existing.id})")
