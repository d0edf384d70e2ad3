"""Which function runs which task kind. The runner dispatches through it by ``kind``
and knows no kind by name; a new kind is a payload model, a function and one
``register`` call (see ``shared.tasks``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from pydantic import BaseModel, ValidationError

from shared.contracts import describe_validation_error
from shared.errors import FailureCode, PermanentError

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.contracts import AnyTask, TaskEnvelope

PayloadT = TypeVar("PayloadT", bound=BaseModel)


@dataclass(frozen=True)
class TaskMetricNames:
    """The CloudWatch metric names a kind counts its outcomes under."""

    sent: str
    failed: str


FALLBACK_METRICS = TaskMetricNames(sent="TasksSucceeded", failed="TasksFailed")


@dataclass(frozen=True)
class _Registration(Generic[PayloadT]):
    payload_model: type[PayloadT]
    run: Callable[[TaskEnvelope[PayloadT]], str | None]
    metrics: TaskMetricNames


class TaskRegistry:
    """Maps a task ``kind`` to the payload model that validates it and the function that runs it."""

    def __init__(self) -> None:
        self._registrations: dict[str, _Registration[Any]] = {}

    def register(
        self,
        kind: str,
        payload_model: type[PayloadT],
        run: Callable[[TaskEnvelope[PayloadT]], str | None],
        *,
        metrics: TaskMetricNames = FALLBACK_METRICS,
    ) -> None:
        """Register ``run`` for ``kind``.

        Parameters
        ----------
        kind
            The envelope's ``kind`` (``"email.send"``); each kind is registered once.
        payload_model
            Validates the envelope's ``payload`` before ``run`` sees it.
        run
            Does the work and returns the provider's reference (a message id) or None.
            Raises ``PermanentError`` when the task can never succeed, ``TransientError``
            when it may later.
        metrics
            The metric names its successes and failures are counted under.
        """
        if kind in self._registrations:
            raise ValueError(f"task kind {kind!r} is already registered")
        self._registrations[kind] = _Registration(payload_model, run, metrics)

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds that have a function."""
        return frozenset(self._registrations)

    def metrics_for(self, kind: str) -> TaskMetricNames:
        """The metric names of ``kind`` (generic ones for an unknown kind)."""
        registration = self._registrations.get(kind)
        return registration.metrics if registration else FALLBACK_METRICS

    def run(self, task: AnyTask) -> str | None:
        """Validate ``task``'s payload for its kind and run the kind's function.

        Raises
        ------
        PermanentError
            No function is registered for the kind, or the payload is invalid for it.
        """
        registration = self._registrations.get(task.kind)
        if registration is None:
            known = ", ".join(sorted(self._registrations)) or "none"
            raise PermanentError(
                f"no handler is registered for task kind {task.kind!r} (known: {known})",
                code=FailureCode.INVALID_TASK,
            )
        try:
            payload = registration.payload_model.model_validate(task.payload)
        except ValidationError as error:
            raise PermanentError(
                f"invalid {task.kind} payload: {describe_validation_error(error)}",
                code=FailureCode.INVALID_TASK,
            ) from error
        # The envelope was validated when it was parsed; only the payload changes type.
        typed_task = cast("TaskEnvelope[Any]", task.model_copy(update={"payload": payload}))
        return registration.run(typed_task)
