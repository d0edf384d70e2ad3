"""The template's EventBridge rules, as far as the local system routes SES's events by them.

Locally nothing runs EventBridge: the mailbox simulator matches each SES event against
the template's rules (``AWS::Events::Rule`` on the default bus) and sends it to their SQS
targets, so a rule whose pattern would miss Herald's events misses them locally too.

Patterns are matched as EventBridge matches them for the forms the template uses: a
field's list of literal values matches when the event's value (or, for a list, any of
its values) is one of them; a nested object matches field by field. Content filters
(``prefix``, ``anything-but``, ``numeric`` ...) are refused where the rule is read, so a
pattern the local system cannot follow fails loudly instead of matching wrongly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class UnsupportedPatternError(ValueError):
    """A rule's pattern uses a filter the local system does not reproduce."""


@dataclass(frozen=True)
class EventRule:
    """A rule: which events (its pattern) go to which SQS queues (its targets)."""

    name: str
    pattern: Mapping[str, Any]
    queue_urls: tuple[str, ...]

    def __post_init__(self) -> None:
        check_pattern(self.pattern, self.name)


def check_pattern(pattern: Mapping[str, Any], where: str) -> None:
    """Refuse what ``matches`` cannot decide: any filter but lists of literal values."""
    for key, expected in pattern.items():
        if isinstance(expected, Mapping):
            check_pattern(expected, f"{where}.{key}")
        elif not isinstance(expected, list) or any(
            isinstance(value, Mapping | list) for value in expected
        ):
            raise UnsupportedPatternError(
                f"{where}.{key}: only lists of values are matched locally, not {expected!r}"
            )


def matches(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether ``event`` matches ``pattern``, as EventBridge decides for literal values."""
    for key, expected in pattern.items():
        if key not in event:
            return False
        actual = event[key]
        if isinstance(expected, Mapping):
            if not isinstance(actual, Mapping) or not matches(expected, actual):
                return False
            continue
        values = actual if isinstance(actual, list) else [actual]
        if not any(value in expected for value in values):
            return False
    return True
