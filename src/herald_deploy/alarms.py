"""Alarms that reach a person: staging and prod are not deployed without an alarm subscriber.

The template subscribes `AlarmEmail` to the alarm topic (template.yaml,
AlarmEmailSubscription); without it every CloudWatch alarm notifies a topic nobody reads.
A subscription made outside the template (a team's address, a chat or paging integration
subscribed to the stack's `AlarmTopicArn` output) is declared with
`ALARM_TOPIC_SUBSCRIBED=yes` (`--alarm-topic-subscribed`). herald-datadog holds the
Datadog monitors' notification target to the same rule (`herald_datadog.cli`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from herald_deploy.samconfig import PLACEHOLDER

if TYPE_CHECKING:
    from herald_deploy.samconfig import Environment

ALARM_EMAIL_PARAMETER = "AlarmEmail"
# Environments whose alarms must reach someone; any other (dev) is only warned.
ATTENDED_ENVIRONMENTS = frozenset({"staging", "prod"})


def is_attended(environment: Environment) -> bool:
    """Whether the environment's alarms must reach a person (the template's Environment)."""
    return environment.parameters.get("Environment", environment.name) in ATTENDED_ENVIRONMENTS


def missing_alarm_subscriber(environment: Environment, *, topic_subscribed: bool) -> str | None:
    """Why the environment's alarms would reach nobody, in one line; None when they reach
    someone (an `AlarmEmail`, or a subscription the caller says the topic has)."""
    email = environment.parameters.get(ALARM_EMAIL_PARAMETER, "").strip()
    if topic_subscribed or (email and PLACEHOLDER not in email):
        return None
    return (
        f"samconfig.toml [{environment.config_env}] sets no {ALARM_EMAIL_PARAMETER}, so "
        f"{environment.stack_name}'s alarms would notify nobody: add "
        f"{ALARM_EMAIL_PARAMETER}=you@example.org to its parameter_overrides, or, if the "
        "stack's AlarmTopicArn already has a confirmed subscriber, deploy with "
        "ALARM_TOPIC_SUBSCRIBED=yes (docs/monitoring.md, Notifications)"
    )
