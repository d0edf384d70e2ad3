"""The ``herald`` command: run the api, the worker or the migrations, and manage tenants and keys.

    herald api | worker | migrate | db check
    herald tenants create NAME | tenants list [--json] | tenants set-quota TENANT EMAILS_PER_DAY
    herald tenants bootstrap --name NAME --secret-name NAME [--expires-in-days DAYS]
                                                             (the key only in a new secret)
    herald keys create TENANT [--name NAME] [--expires-in-days DAYS]
    herald keys list [TENANT] [--json] | keys revoke KEY_ID
    herald suppressions list --tenant TENANT [--json] | suppressions remove --tenant TENANT ADDRESS

Configuration comes from the environment (see ``ecs_service.settings``); a missing or
invalid variable stops the command with a message that names it.

With ``DD_TRACE_ENABLED=true``, ``herald api`` and ``herald worker`` turn on ddtrace's
automatic instrumentation before the app is imported, and trace one email end to end.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from psycopg.errors import InsufficientPrivilege, LockNotAvailable
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from ecs_service import api_keys, feedback_store, tenant_limits
from ecs_service.api.asgi import APP_FACTORY
from ecs_service.db.engine import build_engine
from ecs_service.db.migrations import upgrade_to_head
from ecs_service.db.models import ApiKey, Tenant
from ecs_service.settings import (
    ApiSettings,
    DatabaseSettings,
    TenantBootstrapSettings,
    WorkerSettings,
)
from ecs_service.startup import read_settings, start_tracing
from shared.contracts import suppression_key
from shared.settings import TracingSettings

if TYPE_CHECKING:
    from uuid import UUID

    from pydantic import BaseModel

    from ecs_service.db.models import Suppression

# The suppression list is read this many rows at a time (one query each).
SUPPRESSIONS_PAGE = 500


def run_api(_: argparse.Namespace) -> int:
    """Serve the api with ``API_WORKERS`` uvicorn processes.

    The settings are checked here, so a bad one stops the command before any process
    starts; each process then builds its app (and starts tracing) itself, through the
    import string of ``ecs_service.api.asgi``. With several workers, this process
    supervises them: SIGTERM stops them all, each finishing its in-flight requests.
    """
    settings = read_settings(ApiSettings)
    read_settings(DatabaseSettings)
    read_settings(TracingSettings)
    import uvicorn

    from ecs_service.api.http_protocol import BoundedHeadersProtocol

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
        # httptools (h11 costs 0.3 ms more CPU a request), with a deadline and a size
        # bound on each request's headers, which httptools lacks (BoundedHeadersProtocol).
        # Bodies are bounded by the app (ecs_service.api.request_limits).
        http=BoundedHeadersProtocol,
        # Longer than the ALB's idle timeout (60 s), so the api never closes a connection
        # the ALB is about to reuse (a 502); an idle client elsewhere is cut after it.
        timeout_keep_alive=65,
        # A backstop behind the admission gate: past this many connections, a 503 at once.
        limit_concurrency=settings.max_connections,
    )
    return 0


def run_worker(_: argparse.Namespace) -> int:
    tracing = start_tracing()
    from ecs_service.worker.process import run_worker as run

    return run(read_settings(DatabaseSettings), read_settings(WorkerSettings), tracing=tracing)


class DatabaseUnreachableError(SystemExit):
    """The database refused or did not answer: exit 1 with one line naming the variables."""

    def __init__(self, error: OperationalError) -> None:
        # psycopg's first line names host, port and the reason; the rest is SQLAlchemy's.
        reason = str(error.orig or error).strip().splitlines()[0]
        super().__init__(
            f"herald: cannot use the database set by DATABASE_URL (or DATABASE_HOST): {reason}"
        )


class NotSchemaOwnerError(SystemExit):
    """Run as a role that may not read or change the schema (the api's ``herald_app``)."""

    def __init__(self, command: str) -> None:
        super().__init__(
            f"herald: {command} runs as the schema's owner (the migration task's database "
            "user), not the application role: permission denied"
        )


def run_migrate(_: argparse.Namespace) -> int:
    engine = build_engine(read_settings(DatabaseSettings), application_name="herald-migrate")
    try:
        upgrade_to_head(engine)
    except OperationalError as error:
        if isinstance(error.orig, LockNotAvailable):
            # A migration's lock_timeout (e.g. 0010's): nothing was changed.
            raise SystemExit(
                "herald: the migration waited too long for a table lock another transaction "
                "holds (see pg_stat_activity) and changed nothing; run herald migrate again"
            ) from None
        raise DatabaseUnreachableError(error) from None
    except ProgrammingError as error:
        if isinstance(error.orig, InsufficientPrivilege):
            raise NotSchemaOwnerError("herald migrate") from None
        raise
    finally:
        engine.dispose()
    print("herald: database schema is up to date")
    return 0


def run_db_check(_: argparse.Namespace) -> int:
    """Print the schema's revision and each table's rows as one JSON line; exit 1 unless
    the schema is this image's head (the restore drill's check, docs/restore.md)."""
    from ecs_service.db.schema_check import check_schema

    engine = build_engine(read_settings(DatabaseSettings), application_name="herald-db-check")
    try:
        report = check_schema(engine)
    except OperationalError as error:
        raise DatabaseUnreachableError(error) from None
    except ProgrammingError as error:
        if isinstance(error.orig, InsufficientPrivilege):
            raise NotSchemaOwnerError("herald db check") from None
        raise
    finally:
        engine.dispose()
    print(report.to_json())
    if not report.current:
        found, head = report.revision, report.head
        print(
            f"herald: the schema is at revision {found}, not this image's {head}", file=sys.stderr
        )
        return 1
    return 0


def _admin(action: Callable[[Session], int]) -> int:
    engine = build_engine(read_settings(DatabaseSettings), application_name="herald-cli")
    try:
        with Session(engine) as session, session.begin():
            return action(session)
    except (api_keys.NotFoundError, api_keys.TenantExistsError) as error:
        print(f"herald: {error}", file=sys.stderr)
        return 1
    except OperationalError as error:
        raise DatabaseUnreachableError(error) from None
    finally:
        engine.dispose()


def tenants_create(args: argparse.Namespace) -> int:
    def action(session: Session) -> int:
        tenant = api_keys.create_tenant(session, args.name)
        print(f"{tenant.id}\t{tenant.name}")
        return 0

    return _admin(action)


def tenants_bootstrap(args: argparse.Namespace) -> int:
    """A tenant and its first key, the key stored only in a new secret; prints its ARN."""
    try:
        expires_at = _expiry(args)
    except api_keys.InvalidExpiryError as error:
        print(f"herald: {error}", file=sys.stderr)
        return 2
    import boto3

    from ecs_service.tenant_bootstrap import (
        SecretsManagerStore,
        SecretStoreError,
        bootstrap_tenant,
    )

    kms_key_id = read_settings(TenantBootstrapSettings).kms_key_id
    engine = build_engine(read_settings(DatabaseSettings), application_name="herald-cli")
    try:
        made = bootstrap_tenant(
            engine,
            SecretsManagerStore(boto3.client("secretsmanager")),
            name=args.name,
            secret_name=args.secret_name,
            kms_key_id=kms_key_id,
            expires_at=expires_at,
        )
    except (api_keys.TenantExistsError, SecretStoreError) as error:
        print(f"herald: {error}", file=sys.stderr)
        return 1
    except OperationalError as error:
        raise DatabaseUnreachableError(error) from None
    finally:
        engine.dispose()
    print(made.secret_arn)
    print(
        f"herald: tenant {made.tenant_name} ({made.tenant_id}) has key {made.key_id}, "
        "kept only in that secret",
        file=sys.stderr,
    )
    return 0


def tenants_list(args: argparse.Namespace) -> int:
    def action(session: Session) -> int:
        rows = [
            {
                "id": str(tenant.tenant_id),
                "name": tenant.name,
                "created_at": tenant.created_at.isoformat(timespec="seconds"),
                "daily_quota": tenant.daily_quota,
                "used_today": tenant.used_today,
            }
            for tenant in tenant_limits.quotas(session)
        ]
        print_listing(
            rows,
            ("TENANT ID", "NAME", "CREATED", "DAILY QUOTA", "USED TODAY (UTC)"),
            lambda row: list(row.values()),
            as_json=args.json,
        )
        return 0

    return _admin(action)


def tenants_set_quota(args: argparse.Namespace) -> int:
    raw: str = args.emails_per_day
    if not (raw.isascii() and raw.isdigit() and int(raw) <= tenant_limits.MAX_DAILY_QUOTA):
        print(
            "herald: the daily quota must be a whole number of emails from 0 to "
            f"{tenant_limits.MAX_DAILY_QUOTA}, not {raw!r}",
            file=sys.stderr,
        )
        return 2

    def action(session: Session) -> int:
        tenant = api_keys.find_tenant(session, args.tenant)
        tenant_limits.set_daily_quota(session, tenant.id, int(raw))
        (quota,) = tenant_limits.quotas(session, tenant.id)
        used = f"{quota.used_today} used today"
        print(f"{tenant.name}: {quota.daily_quota} emails per UTC day ({used})")
        return 0

    return _admin(action)


def _expiry(args: argparse.Namespace) -> datetime | None:
    """When a key created now expires, from ``--expires-in-days`` (None: never)."""
    if args.expires_in_days is None:
        return None
    return api_keys.expiry_in_days(args.expires_in_days, datetime.now(UTC))


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def keys_create(args: argparse.Namespace) -> int:
    try:
        expires_at = _expiry(args)
    except api_keys.InvalidExpiryError as error:
        print(f"herald: {error}", file=sys.stderr)
        return 2

    def action(session: Session) -> int:
        tenant = api_keys.find_tenant(session, args.tenant)
        issued = api_keys.issue_key(session, tenant, args.name, expires_at=expires_at)
        print(issued.plaintext)
        until = f"expires {_when(expires_at)}" if expires_at else "never expires"
        print(
            f"key id {issued.key_id} for tenant {tenant.name} ({until}): shown once, store it now",
            file=sys.stderr,
        )
        return 0

    return _admin(action)


def _state(key: ApiKey, now: datetime) -> str:
    """``active``, ``expired`` or ``revoked``: whether the api accepts the key now."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def keys_list(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)

    def action(session: Session) -> int:
        query = select(ApiKey, Tenant.name).join(Tenant).order_by(ApiKey.created_at)
        if args.tenant:
            query = query.where(ApiKey.tenant_id == api_keys.find_tenant(session, args.tenant).id)
        rows = [
            {
                "key_id": key.key_id,
                "tenant": tenant_name,
                "name": key.name,
                "state": _state(key, now),
                "created_at": _when(key.created_at),
                "expires_at": _when(key.expires_at),
                "last_used_at": _when(key.last_used_at),
                "revoked_at": _when(key.revoked_at),
            }
            for key, tenant_name in session.execute(query)
        ]
        print_listing(
            rows,
            ("KEY ID", "TENANT", "NAME", "CREATED", "EXPIRES", "LAST USED", "STATE"),
            lambda row: (
                row["key_id"], row["tenant"], row["name"], row["created_at"],
                row["expires_at"] or "never", row["last_used_at"] or "never",
                f"revoked {row['revoked_at']}" if row["revoked_at"] else row["state"],
            ),
            as_json=args.json,
        )  # fmt: skip
        return 0

    return _admin(action)


def print_listing(
    rows: Sequence[dict[str, Any]],
    header: Sequence[str],
    cells_of: Callable[[dict[str, Any]], Sequence[object]],
    *,
    as_json: bool,
) -> None:
    """A list command's rows: JSON lines, or a table under ``header``."""
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        print_table(header, [cells_of(row) for row in rows])


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Rows under a header, in columns as wide as their widest cell."""
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    for row in cells:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def keys_revoke(args: argparse.Namespace) -> int:
    def action(session: Session) -> int:
        api_keys.revoke_key(session, args.key_id)
        print(f"revoked {args.key_id}")
        return 0

    return _admin(action)


def suppressions_list(args: argparse.Namespace) -> int:
    def action(session: Session) -> int:
        tenant = api_keys.find_tenant(session, args.tenant)
        rows = [
            {
                "address": suppression.address,
                "reason": suppression.reason,
                "message_id": str(suppression.message_id) if suppression.message_id else None,
                "detail": suppression.detail,
                "created_at": suppression.created_at.isoformat(timespec="seconds"),
            }
            for suppression in _all_suppressions(session, tenant.id)
        ]
        print_listing(
            rows,
            ("ADDRESS", "REASON", "SINCE", "MESSAGE ID", "DETAIL"),
            lambda row: (
                row["address"], row["reason"], row["created_at"], row["message_id"] or "-",
                row["detail"] or "-",
            ),
            as_json=args.json,
        )  # fmt: skip
        return 0

    return _admin(action)


def _all_suppressions(session: Session, tenant_id: UUID) -> Iterator[Suppression]:
    after = None
    while True:
        page, after = feedback_store.list_suppressions(
            session, tenant_id, limit=SUPPRESSIONS_PAGE, after=after
        )
        yield from page
        if after is None:
            return


def suppressions_remove(args: argparse.Namespace) -> int:
    try:
        key = suppression_key(args.address)
    except ValueError as error:
        print(f"herald: {args.address!r} is not an email address: {error}", file=sys.stderr)
        return 2

    def action(session: Session) -> int:
        tenant = api_keys.find_tenant(session, args.tenant)
        if not feedback_store.remove_suppression(session, tenant.id, key):
            print(f"herald: {key} is not on {tenant.name}'s suppression list", file=sys.stderr)
            return 1
        print(f"removed {key} from {tenant.name}'s suppression list")
        return 0

    return _admin(action)


def environment_help(*settings_classes: type[BaseModel]) -> str:
    """The environment variables these settings read, with their defaults, for ``--help``.

    Generated from the settings models, so the help cannot drift from what is read.
    """
    lines = ["environment variables:"]
    for settings_class in settings_classes:
        prefix = str(settings_class.model_config.get("env_prefix", ""))
        for name, field in settings_class.model_fields.items():
            variable = (
                str(field.validation_alias) if field.validation_alias else prefix + name
            ).upper()
            if field.is_required():
                default = "required"
            elif field.default in (None, ""):
                default = "unset"
            else:
                default = f"default {field.default}"
            lines.append(f"  {variable:<34} {default}")
    return "\n".join(lines)


def add_expiry_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--expires-in-days",
        metavar="DAYS",
        help=f"the key stops working this many days from now (1 to "
        f"{api_keys.MAX_KEY_LIFETIME_DAYS}); without it, it works until revoked",
    )


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="herald",
        description="Herald's backend: api, worker, migrations, tenants, API keys and "
        "suppression lists.",
        epilog="Each command lists the environment variables it reads: herald COMMAND --help.",
    )
    commands = root.add_subparsers(dest="command", required=True)
    for name, help_text, run, settings_classes in (
        ("api", "serve the HTTP API", run_api, (ApiSettings, DatabaseSettings, TracingSettings)),
        (
            "worker",
            "run the relay, the results consumer and the delivery feedback consumer",
            run_worker,
            (WorkerSettings, DatabaseSettings, TracingSettings),
        ),
        ("migrate", "bring the database schema up to date", run_migrate, (DatabaseSettings,)),
    ):
        commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=environment_help(*settings_classes),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        ).set_defaults(run=run)

    db_check = "print the schema revision and rows per table; fail unless it is this image's"
    commands.add_parser("db", help="check the database").add_subparsers(
        dest="action", required=True
    ).add_parser(
        "check",
        help=db_check,
        description=db_check,
        epilog=environment_help(DatabaseSettings),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).set_defaults(run=run_db_check)

    tenants = commands.add_parser("tenants", help="manage tenants").add_subparsers(
        dest="action", required=True
    )
    create = tenants.add_parser("create", help="create a tenant")
    create.add_argument("name")
    create.set_defaults(run=tenants_create)
    bootstrap = tenants.add_parser(
        "bootstrap",
        help="create a tenant and its first key, stored only in a new Secrets Manager secret",
        description="Create a tenant and an API key, store the key in a new Secrets Manager "
        "secret (encrypted with TENANT_SECRET_KMS_KEY_ID, tagged with the tenant) and print "
        "only the secret's ARN: nothing secret reaches the output or a log.",
        epilog=environment_help(TenantBootstrapSettings, DatabaseSettings),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bootstrap.add_argument("--name", required=True, help="the new tenant's name")
    bootstrap.add_argument(
        "--secret-name", required=True, help="the new secret's name, e.g. herald/prod/tenants/NAME"
    )
    add_expiry_option(bootstrap)
    bootstrap.set_defaults(run=tenants_bootstrap)
    tenant_list = tenants.add_parser(
        "list", help="list tenants with their daily quota and today's usage"
    )
    tenant_list.add_argument("--json", action="store_true", help="as JSON lines, one per tenant")
    tenant_list.set_defaults(run=tenants_list)
    set_quota = tenants.add_parser(
        "set-quota",
        help="set the emails a tenant may schedule per UTC day "
        f"(default {tenant_limits.DEFAULT_DAILY_QUOTA})",
    )
    set_quota.add_argument("tenant", help="tenant name or id")
    set_quota.add_argument("emails_per_day", help="a whole number, 0 to stop it scheduling")
    set_quota.set_defaults(run=tenants_set_quota)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    key_create = keys.add_parser("create", help="issue a key for a tenant (printed once)")
    key_create.add_argument("tenant", help="tenant name or id")
    key_create.add_argument("--name", default="default", help="what the key is for")
    add_expiry_option(key_create)
    key_create.set_defaults(run=keys_create)
    key_list = keys.add_parser("list", help="list keys (never their secrets)")
    key_list.add_argument("tenant", nargs="?", help="only this tenant's")
    key_list.add_argument("--json", action="store_true", help="as JSON lines, one per key")
    key_list.set_defaults(run=keys_list)
    key_revoke = keys.add_parser("revoke", help="revoke a key at once")
    key_revoke.add_argument("key_id")
    key_revoke.set_defaults(run=keys_revoke)

    suppressions = commands.add_parser(
        "suppressions",
        help="manage a tenant's suppression list",
        description="The addresses a tenant's emails may not go to: each permanent bounce "
        "or complaint adds one; a message to one is refused.",
    ).add_subparsers(dest="action", required=True)
    suppression_list = suppressions.add_parser(
        "list", help="list a tenant's suppressed addresses, newest first"
    )
    suppression_list.add_argument("--tenant", required=True, help="tenant name or id")
    suppression_list.add_argument(
        "--json", action="store_true", help="as JSON lines, one per address"
    )
    suppression_list.set_defaults(run=suppressions_list)
    suppression_remove = suppressions.add_parser(
        "remove", help="take an address off a tenant's suppression list, to send to it again"
    )
    suppression_remove.add_argument("--tenant", required=True, help="tenant name or id")
    suppression_remove.add_argument("address", help="the email address, in any case")
    suppression_remove.set_defaults(run=suppressions_remove)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)
