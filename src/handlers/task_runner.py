"""Lambda entry point of the task runner: batches from the SQS task queue, emails out.

With ``DD_TRACE_ENABLED=true`` the entry point is wrapped by the Datadog Lambda library
(``datadog_lambda``, from the Datadog Python layer) and each record's task gets its own
span; otherwise neither ``ddtrace`` nor ``datadog_lambda`` is imported, and when Lambda
traces with X-Ray each task and each AWS call is an X-Ray subsegment
(``shared.tracing.XRayTracing``, without the X-Ray SDK).

Under Lambda SnapStart (the template's ``TaskRunnerSnapStart``) this module's init runs
once, when a version is published, and every execution environment resumes from that
snapshot: ``reseed_after_restore`` runs after each restore so the retry jitter of two
environments is not the same sequence. Without SnapStart the runtime hook module is never
imported (the cold start ``bench.cold_start`` measures stays as it is).
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING, Any

from botocore.config import Config

from shared.observability import logger, metrics
from shared.settings import TaskRunnerSettings
from shared.task_runner import aws_session, build_task_runner
from shared.tracing import XRayTracing, build_lambda_tracing

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.typing import LambdaContext

# The composition root: settings validated and clients built once, at cold start.
settings = TaskRunnerSettings.from_environment()
tracing = build_lambda_tracing()
tracing.correlate_logs(logger)
aws = aws_session(("sqs", "sesv2", "dynamodb"))
# botocore waits 60 s for an answer by default, twice the function's 30 s timeout, and its
# legacy mode makes 5 attempts: a hung connection would end the invocation and retry its
# whole batch. These calls answer in tens of milliseconds; one that has not in 5 s is
# tried once more (standard mode), at most ~15 s in all, then fails as transient.
within_the_invocation = Config(
    connect_timeout=2, read_timeout=5, retries={"mode": "standard", "total_max_attempts": 2}
)
sqs = aws.client("sqs", config=within_the_invocation)
# No retries inside botocore for SES: the runner retries a throttle or an outage itself,
# with jitter and within the invocation's time.
sesv2 = aws.client(
    "sesv2", config=within_the_invocation.merge(Config(retries={"total_max_attempts": 1}))
)
dynamodb = aws.client("dynamodb", config=within_the_invocation)
if isinstance(tracing, XRayTracing):
    for client in (sqs, sesv2, dynamodb):
        tracing.instrument(client)
runner = build_task_runner(
    settings,
    sqs=sqs,
    sesv2=sesv2,
    dynamodb=dynamodb,
    logger=logger,
    metrics=metrics,
    tracing=tracing,
)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def handle_batch(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    """Send the emails of one SQS batch; report the records to retry."""
    return runner.handle_batch(event, context)


# The template's Handler: handlers.task_runner.lambda_handler, whether Datadog is on or off.
lambda_handler = tracing.wrap_lambda_handler(handle_batch)

# Lambda's value of AWS_LAMBDA_INITIALIZATION_TYPE when the init runs to be snapshotted.
SNAPSTART_INITIALIZATION = "snap-start"


def reseed_after_restore() -> None:
    """Give this execution environment its own random state after a SnapStart restore.

    The snapshot holds the state ``random`` seeded at init, so every environment resumed
    from it would draw the same jitter (the runner's retry pauses and deferral delays,
    botocore's retry backoff): throttled tasks would come back in lockstep. Credentials
    need nothing (under SnapStart Lambda serves them from its container endpoint and
    botocore refreshes them) and no connection is opened at init.
    """
    random.seed()
    runner.reseed()


if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == SNAPSTART_INITIALIZATION:
    # Part of Lambda's Python runtimes, not of the artifact; imported only under SnapStart.
    from snapshot_restore_py import register_after_restore  # type: ignore[import-not-found]

    register_after_restore(reseed_after_restore)
