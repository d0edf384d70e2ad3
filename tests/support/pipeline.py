"""The pipeline's queues, dead-letter queues, idempotency table and SES configuration, made
for a test from the template by the local system's own factory
(``herald_local.pipeline_resources.create_pipeline_resources``), under a name prefix of
the test's, so tests share a moto endpoint without sharing a queue."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.exceptions import ClientError

from herald_local.pipeline_resources import LocalPipeline, create_pipeline_resources
from herald_local.template import PipelineTemplate, read_pipeline_template
from tests.conftest import REPO_ROOT

SENDER = "herald@example.com"
REGION = "us-east-1"


@functools.cache
def _read_template() -> PipelineTemplate:
    return read_pipeline_template(REPO_ROOT / "template.yaml", {"SenderEmail": SENDER})


def pipeline_template() -> PipelineTemplate:
    """The template's pipeline (read once a session: cfn-lint's parser takes seconds), a copy
    of its own since making the resources fills in its resolver."""
    return copy.deepcopy(_read_template())


@contextmanager
def template_pipeline(
    prefix: str,
    *,
    endpoint_url: str | None = None,
    queue_attributes: Mapping[str, Mapping[str, str]] | None = None,
) -> Iterator[LocalPipeline]:
    """The template's queues, table and SES configuration set, named ``<prefix>-<logical
    ID>``, on ``endpoint_url`` (boto3's configuration when None); deleted at the end.

    ``queue_attributes`` sets SQS attributes over the template's, by logical ID.
    """
    options: dict[str, Any] = {"region_name": REGION}
    if endpoint_url is not None:
        options["endpoint_url"] = endpoint_url
    sqs = boto3.client("sqs", **options)
    dynamodb = boto3.client("dynamodb", **options)
    sesv2 = boto3.client("sesv2", **options)

    def create_email_identity(identity: str) -> None:
        """The sender's domain, once per endpoint: an earlier test may have made it."""
        try:
            sesv2.create_email_identity(EmailIdentity=identity)
        except ClientError as error:
            if error.response["Error"]["Code"] != "AlreadyExistsException":
                raise

    pipeline = create_pipeline_resources(
        pipeline_template(),
        sender_email=SENDER,
        sqs=sqs,
        dynamodb=dynamodb,
        sesv2=sesv2,
        create_email_identity=create_email_identity,
        name_prefix=prefix,
        queue_attributes=queue_attributes,
    )
    try:
        yield pipeline
    finally:
        for url in pipeline.queue_urls.values():
            sqs.delete_queue(QueueUrl=url)
        for table in pipeline.table_names.values():
            dynamodb.delete_table(TableName=table)
        if pipeline.configuration_set:
            sesv2.delete_configuration_set(ConfigurationSetName=pipeline.configuration_set)
