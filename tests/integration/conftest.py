"""Integration tests: a real PostgreSQL the session starts itself (migrations applied by the
session) and the moto server for SQS."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import uuid4

import boto3
import pytest
from aws_lambda_powertools import Logger, Metrics
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer
from mypy_boto3_sqs import SQSClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from ecs_service.api.app import create_app
from ecs_service.db.migrations import upgrade_to_head
from ecs_service.settings import ApiSettings, DatabaseSettings
from ecs_service.thread_safe_metrics import MetricRecorder
from ecs_service.worker.relay import BACKLOG_INTERVAL_SECONDS, Relay
from ecs_service.worker.send_rate import ConfiguredSendRate, PostgresSendRateBucket
from herald_local.postgres import EPHEMERAL_SETTINGS, LocalPostgres
from shared.ports import TaskProducer
from tests.support.builders import Caller, make_caller
from tests.support.consumers import Feedback, Results
from tests.support.queues import drain

SENDER = "herald@example.com"
# Test modules take these from here too (they live in tests/support/).
__all__ = ["Caller", "drain", "make_caller"]


@contextmanager
def migrated_postgres(prefix: str) -> Iterator[LocalPostgres]:
    """A real PostgreSQL server in a new folder, its schema migrated to head, until the
    block ends; then stopped and its folder removed.

    The folder is made under the system's temp folder rather than pytest's: as root the
    server runs as the postgres account, which must traverse the path, and every pytest
    session on the machine resets pytest-of-<user> to 0700.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    server = LocalPostgres(folder / "data", settings=EPHEMERAL_SETTINGS)
    server.start()
    migrator = create_engine(server.url())
    upgrade_to_head(migrator)
    migrator.dispose()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A real PostgreSQL server for the whole session, its schema migrated to head."""
    with migrated_postgres("herald-tests-postgres-") as server:
        yield server


@pytest.fixture(scope="session")
def database_settings(postgres: LocalPostgres) -> DatabaseSettings:
    """The api, worker and CLI log in as herald_app, as in AWS: a missing grant fails."""
    return DatabaseSettings(url=postgres.app_url(), pool_size=10, max_overflow=10)


@pytest.fixture(scope="session")
def owner_engine(postgres: LocalPostgres) -> Iterator[Engine]:
    """The schema's owner (the migration user), for what herald_app may not do: TRUNCATE,
    DDL a test adds for a moment."""
    built = create_engine(postgres.url(), pool_size=2)
    yield built
    built.dispose()


@pytest.fixture(scope="session")
def engine(database_settings: DatabaseSettings) -> Iterator[Engine]:
    from ecs_service.db.engine import build_engine

    built = build_engine(database_settings, application_name="herald-tests")
    yield built
    built.dispose()


@pytest.fixture(autouse=True)
def _empty_tables(request: pytest.FixtureRequest) -> None:
    """Each test starts from empty tables (only for tests that use the database)."""
    if "engine" not in request.fixturenames and "postgres" not in request.fixturenames:
        return
    owner: Engine = request.getfixturevalue("owner_engine")
    with owner.begin() as connection:
        connection.execute(text("TRUNCATE tenants, api_keys, messages CASCADE"))


@pytest.fixture
def caller(engine: Engine) -> Caller:
    return make_caller(engine, "acme")


@pytest.fixture
def other_caller(engine: Engine) -> Caller:
    return make_caller(engine, "globex")


@pytest.fixture(scope="session")
def app_client(database_settings: DatabaseSettings) -> Iterator[TestClient]:
    app = create_app(ApiSettings(SENDER_EMAIL=SENDER), database_settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def client(app_client: TestClient, engine: Engine) -> TestClient:
    """The session's API client, for a test that starts from empty tables (it uses engine)."""
    return app_client


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The moto server, as a local AWS endpoint (boto3 reaches it through AWS_ENDPOINT_URL)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    yield endpoint
    server.stop()


@pytest.fixture
def sqs(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> SQSClient:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return boto3.client("sqs", endpoint_url=moto_endpoint)


def new_queue(sqs: SQSClient, prefix: str) -> str:
    """A fresh queue (a new name per test, so tests never share messages)."""
    return sqs.create_queue(QueueName=f"{prefix}-{uuid4().hex[:12]}")["QueueUrl"]


@pytest.fixture
def bucket(engine: Engine) -> Iterator[PostgresSendRateBucket]:
    """A send-rate bucket of this test's own: the tables' truncation between tests leaves
    buckets."""
    shared = PostgresSendRateBucket(engine, name=f"test-{uuid4().hex[:12]}")
    yield shared
    shared.close()


def paced_relay(
    engine: Engine,
    producer: TaskProducer,
    bucket: PostgresSendRateBucket,
    rate: float,
    *,
    metrics: MetricRecorder | None = None,
    claim_size: int = 50,
    backlog_interval_seconds: float = BACKLOG_INTERVAL_SECONDS,
) -> Relay:
    """A relay paced to ``rate`` recipients a second through ``bucket``."""
    return Relay(
        engine,
        producer,
        claim_size=claim_size,
        logger=Logger(service="paced-relay-test"),
        metrics=metrics or Metrics(namespace="HeraldTests"),
        backlog_interval_seconds=backlog_interval_seconds,
        send_rate=ConfiguredSendRate(rate),
        send_rate_bucket=bucket,
    )


@pytest.fixture
def queue_url(sqs: SQSClient, request: pytest.FixtureRequest) -> str:
    """A fresh queue for the test's consumer, named after its module (test_results: results)."""
    return new_queue(sqs, request.module.__name__.rpartition(".")[2].removeprefix("test_"))


@pytest.fixture
def results(engine: Engine, sqs: SQSClient, queue_url: str) -> Results:
    """The results consumer of ``queue_url``, its metrics and log lines at hand."""
    return Results(engine, sqs, queue_url)


@pytest.fixture
def feedback(engine: Engine, sqs: SQSClient, queue_url: str) -> Feedback:
    """The feedback consumer of ``queue_url``, its metrics and log lines at hand."""
    return Feedback(engine, sqs, queue_url)


REPO_ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "HeraldTests")
