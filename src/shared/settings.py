"""Configuration, read once from environment variables into validated models.

A missing or malformed variable fails at start-up (a Lambda cold start, a container
boot) with pydantic's message naming the variable, never later on a hot path.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from shared.contracts import EmailAddress  # noqa: TC001 - pydantic reads it at run time

QueueUrl = Annotated[str, StringConstraints(pattern=r"^https?://\S+/\S+$")]
TableName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{3,255}$")]

FOUR_DAYS = 4 * 24 * 3600  # the task queue's retention
FOURTEEN_DAYS = 14 * 24 * 3600  # the dead-letter queues' retention


class EnvironmentSettings(BaseModel):
    """Settings read from environment variables: each field's ``validation_alias`` names
    its variable. Values given to the constructor (by variable name) win over the
    environment's; ``from_environment()`` reads the environment alone.

    Not pydantic-settings: its import (asyncio, argparse, dotenv, its CLI source) took
    ~35 ms of every Lambda cold start, to read a handful of variables by exact name.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    @classmethod
    def from_environment(cls) -> Self:
        """The settings as the environment gives them.

        Raises
        ------
        pydantic.ValidationError
            A variable is missing or malformed; the message names it.
        """
        return cls.model_validate({})

    @model_validator(mode="before")
    @classmethod
    def _read_environment(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        names = (str(field.validation_alias) for field in cls.model_fields.values())
        environment = {name: os.environ[name] for name in names if name in os.environ}
        return {**environment, **values}


class ObservabilitySettings(EnvironmentSettings):
    """How a process names itself in logs, traces and metrics."""

    service_name: str = Field(default="herald", validation_alias="POWERTOOLS_SERVICE_NAME")
    metrics_namespace: str = Field(
        default="Herald", validation_alias="POWERTOOLS_METRICS_NAMESPACE"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", validation_alias="LOG_LEVEL"
    )
    environment: str = Field(default="dev", validation_alias="ENVIRONMENT")


class TracingSettings(EnvironmentSettings):
    """Whether the process traces with Datadog: ``DD_TRACE_ENABLED``, ``true`` or ``false``.

    Only those two spellings (any case, and ``1``/``0``, which ddtrace reads the same way)
    are accepted: a typo must stop the process, not switch tracing off without a word.
    """

    datadog_enabled: bool = Field(default=False, validation_alias="DD_TRACE_ENABLED")

    @field_validator("datadog_enabled", mode="before")
    @classmethod
    def _true_or_false(cls, value: object) -> object:
        if isinstance(value, bool):
            return value
        spelled = str(value).strip().lower()
        if spelled in {"true", "1"}:
            return True
        if spelled in {"false", "0"}:
            return False
        raise ValueError(f"must be 'true' or 'false', not {str(value)!r}")


class TaskRunnerSettings(EnvironmentSettings):
    """What the Lambda task runner needs: its queues, table and sender identity."""

    result_queue_url: QueueUrl = Field(validation_alias="RESULT_QUEUE_URL")
    task_dlq_url: QueueUrl = Field(validation_alias="TASK_DLQ_URL")
    idempotency_table: TableName = Field(validation_alias="IDEMPOTENCY_TABLE")
    # The ASCII form SES needs (a punycode domain), as the api stores every address.
    sender_email: EmailAddress = Field(validation_alias="SENDER_EMAIL")
    # A task may come back as long as SQS keeps it: 4 days on the task queue, and up to
    # 14 days if an operator redrives it from the DLQ. The idempotency record must outlive it.
    idempotency_ttl_seconds: int = Field(
        default=FOURTEEN_DAYS, ge=FOUR_DAYS, validation_alias="IDEMPOTENCY_TTL_SECONDS"
    )
    # Where a task SES throttled is queued again with a delay (the task queue itself).
    # Absent: a throttled task is retried through SQS's receive count, towards the DLQ.
    task_queue_url: QueueUrl | None = Field(default=None, validation_alias="TASK_QUEUE_URL")
    # The SES configuration set every email is sent through (delivery feedback); absent
    # or empty: none.
    ses_configuration_set: str | None = Field(
        default=None, validation_alias="SES_CONFIGURATION_SET"
    )

    @field_validator("task_queue_url", "ses_configuration_set", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value
