"""The ``herald`` command: run the api, the worker or the migrations, and manage tenants and keys.

    herald api | worker | migrate
    herald tenants create NAME | tenants list
    herald keys create TENANT [--name NAME] | keys list [TENANT] | keys revoke KEY_ID

Configuration comes from the environment (see ``ecs_service.settings``); a missing or
invalid variable stops the command with a message that names it.

With ``DD_TRACE_ENABLED=true``, ``herald api`` and ``herald worker`` turn on ddtrace's
automatic instrumentation before the app is imported, and trace one email end to end.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings
from sqlalchemy import select
from sqlalchemy.orm import Session

from ecs_service import api_keys
from ecs_service.db.engine import build_engine
from ecs_service.db.migrations import upgrade_to_head
from ecs_service.db.models import ApiKey, Tenant
from ecs_service.settings import ApiSettings, DatabaseSettings, WorkerSettings
from shared.contracts import describe_validation_error
from shared.observability import logger
from shared.settings import TracingSettings
from shared.tracing import (
    NO_TRACING,
    DatadogTracing,
    NoTracing,
    TracingUnavailableError,
    build_tracing,
)

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class ConfigurationError(SystemExit):
    """Settings are missing or invalid: exit 2 with a message naming them."""


def load(settings_class: Callable[[], SettingsT]) -> SettingsT:
    try:
        return settings_class()
    except ValidationError as error:
        raise ConfigurationError(
            f"herald: invalid configuration: {describe_validation_error(error)}"
        ) from error


def start_tracing() -> NoTracing | DatadogTracing:
    """Datadog tracing for this process when ``DD_TRACE_ENABLED`` is true, else none.

    ``ddtrace.auto`` instruments the libraries (FastAPI, SQLAlchemy, psycopg, botocore)
    and must run before the app is imported. Botocore's own SQS context injection is
    switched off: it would give every message of a batch the batch call's context,
    where the relay gives each message its own.
    """
    if not load(TracingSettings).datadog_enabled:
        return NO_TRACING
    try:
        importlib.import_module("ddtrace.auto")
        tracing = build_tracing(True)
    except (ImportError, TracingUnavailableError) as error:
        raise ConfigurationError(
            "herald: DD_TRACE_ENABLED is true but ddtrace cannot be imported: install the "
            f"service extra, or set DD_TRACE_ENABLED=false ({error})"
        ) from error
    from ddtrace import config

    config.botocore["distributed_tracing"] = False
    tracing.correlate_logs(logger)
    return tracing


def run_api(_: argparse.Namespace) -> int:
    """Serve the api with ``API_WORKERS`` uvicorn processes.

    The settings are checked here, so a bad one stops the command before any process
    starts; each process then builds its app (and starts tracing) itself, through the
    import string of ``ecs_service.api.asgi``. With several workers, this process
    supervises them: SIGTERM stops them all, each finishing its in-flight requests.
    """
    settings = load(ApiSettings)
    load(DatabaseSettings)
    load(TracingSettings)
    import uvicorn

    from ecs_service.api.asgi import APP_FACTORY

    uvicorn.run(
        APP_FACTORY,
        factory=True,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        # SIGTERM: stop accepting, finish in-flight requests, exit within this many seconds.
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
        access_log=False,  # the request middleware logs every request, as JSON
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips="*",  # behind the ALB, the only way in
    )
    return 0


def run_worker(_: argparse.Namespace) -> int:
    tracing = start_tracing()
    from ecs_service.worker.process import run_worker as run

    return run(load(DatabaseSettings), load(WorkerSettings), tracing=tracing)


def run_migrate(_: argparse.Namespace) -> int:
    engine = build_engine(load(DatabaseSettings), application_name="herald-migrate")
    try:
        upgrade_to_head(engine)
    finally:
        engine.dispose()
    print("herald: database schema is up to date")
    return 0


def _admin(action: Callable[[Session], int]) -> int:
    engine = build_engine(load(DatabaseSettings), application_name="herald-cli")
    try:
        with Session(engine) as session, session.begin():
            return action(session)
    except (api_keys.NotFoundError, api_keys.TenantExistsError) as error:
        print(f"herald: {error}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def tenants_create(args: argparse.Namespace) -> int:
    def action(session: Session) -> int:
        tenant = api_keys.create_tenant(session, args.name)
        print(f"{tenant.id}\t{tenant.name}")
        return 0

    return _admin(action)


def tenants_list(_: argparse.Namespace) -> int:
    def action(session: Session) -> int:
        for tenant in session.scalars(select(Tenant).order_by(Tenant.created_at)):
            print(f"{tenant.id}\t{tenant.name}\t{tenant.created_at.isoformat()}")
        return 0

    return _admin(action)


def keys_create(args: argparse.Namespace) -> int:
    def action(session: Session) -> int:
        tenant = api_keys.find_tenant(session, args.tenant)
        issued = api_keys.issue_key(session, tenant, args.name)
        print(issued.plaintext)
        print(
            f"key id {issued.key_id} for tenant {tenant.name}: shown once, store it now",
            file=sys.stderr,
        )
        return 0

    return _admin(action)


def keys_list(args: argparse.Namespace) -> int:
    def action(session: Session) -> int:
        query = select(ApiKey, Tenant.name).join(Tenant).order_by(ApiKey.created_at)
        if args.tenant:
            query = query.where(ApiKey.tenant_id == api_keys.find_tenant(session, args.tenant).id)
        for key, tenant_name in session.execute(query):
            state = f"revoked {key.revoked_at.isoformat()}" if key.revoked_at else "active"
            print(f"{key.key_id}\t{tenant_name}\t{key.name}\t{state}")
        return 0

    return _admin(action)


def keys_revoke(args: argparse.Namespace) -> int:
    def action(session: Session) -> int:
        api_keys.revoke_key(session, args.key_id)
        print(f"revoked {args.key_id}")
        return 0

    return _admin(action)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="herald",
        description="Herald's backend: api, worker, migrations, tenants and API keys.",
    )
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("api", help="serve the HTTP API").set_defaults(run=run_api)
    commands.add_parser("worker", help="run the relay and the results consumer").set_defaults(
        run=run_worker
    )
    commands.add_parser("migrate", help="bring the database schema up to date").set_defaults(
        run=run_migrate
    )

    tenants = commands.add_parser("tenants", help="manage tenants").add_subparsers(
        dest="action", required=True
    )
    create = tenants.add_parser("create", help="create a tenant")
    create.add_argument("name")
    create.set_defaults(run=tenants_create)
    tenants.add_parser("list", help="list tenants").set_defaults(run=tenants_list)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    key_create = keys.add_parser("create", help="issue a key for a tenant (printed once)")
    key_create.add_argument("tenant", help="tenant name or id")
    key_create.add_argument("--name", default="default", help="what the key is for")
    key_create.set_defaults(run=keys_create)
    key_list = keys.add_parser("list", help="list keys (never their secrets)")
    key_list.add_argument("tenant", nargs="?", help="only this tenant's")
    key_list.set_defaults(run=keys_list)
    key_revoke = keys.add_parser("revoke", help="revoke a key at once")
    key_revoke.add_argument("key_id")
    key_revoke.set_defaults(run=keys_revoke)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)
