"""Least-privilege access (issue 18): the role ``herald_app`` the api, worker and CLI log in as.

The migration task keeps the master user, which owns the schema; the api and worker log in
as ``herald_app``, which may only read and write Herald's rows: no DDL, no TRUNCATE, no
``alembic_version``, nothing it does not use. Per table, exactly what the code does:

- ``messages``: the api stores, reads and cancels; the relay claims (FOR UPDATE needs
  UPDATE) and marks queued; results and feedback update; retention deletes.
- ``tenant_daily_usage``: counted with INSERT ... ON CONFLICT DO UPDATE; old days pruned.
- ``tenants``, ``api_keys``: the CLI creates them; set-quota and revocation (and a key's
  last use) update them; nothing deletes them.
- ``api_rate_buckets``, ``send_rate_buckets``: upserted; rows go only with their key.
- ``message_recipients`` (upserted), ``message_events`` (appended; its id sequence),
  ``suppressions`` (added, and removed by the api and CLI): the delivery feedback.

Foreign keys' checks and cascades, and the NOTIFY trigger, run as the table owner or need
no privilege; LISTEN needs none. Tables later migrations create get SELECT, INSERT,
UPDATE and DELETE (and their sequences USAGE) through the migration user's default
privileges: a later migration revokes what its table's code does not need.

The role logs in without a password of this migration's: in AWS it is granted ``rds_iam``
(IAM database authentication, when the role ``rds_iam`` exists, i.e. on RDS); the local
system and the tests trust local connections. Roles belong to the server, not the
database, so the role may exist already (another database, an earlier attempt): creating
it is skipped then, and everything else here is a grant, which repeats harmlessly.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "herald_app"
TABLE_PRIVILEGES = {
    "tenants": "SELECT, INSERT, UPDATE",
    "api_keys": "SELECT, INSERT, UPDATE",
    "messages": "SELECT, INSERT, UPDATE, DELETE",
    "tenant_daily_usage": "SELECT, INSERT, UPDATE, DELETE",
    "api_rate_buckets": "SELECT, INSERT, UPDATE",
    "send_rate_buckets": "SELECT, INSERT, UPDATE",
    "message_recipients": "SELECT, INSERT, UPDATE",
    "message_events": "SELECT, INSERT",
    "suppressions": "SELECT, INSERT, DELETE",
}
SEQUENCES = ("message_events_id_seq",)
LATER_TABLES = "SELECT, INSERT, UPDATE, DELETE"

CREATE_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
        CREATE ROLE {APP_ROLE} LOGIN;
    ELSE
        ALTER ROLE {APP_ROLE} LOGIN;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam') THEN
        GRANT rds_iam TO {APP_ROLE};
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO {APP_ROLE}', current_database());
END
$$
"""

REVOKE_CONNECT = f"""
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM {APP_ROLE}', current_database());
END
$$
"""
# Dropped unless another database of the server still grants it something (tests' extra
# databases, say): that one's own downgrade drops it then.
DROP_ROLE = f"""
DO $$
BEGIN
    DROP ROLE {APP_ROLE};
EXCEPTION WHEN dependent_objects_still_exist THEN
    RAISE NOTICE 'role {APP_ROLE} kept: another database grants it privileges';
END
$$
"""


def upgrade() -> None:
    op.execute(CREATE_ROLE)
    # PostgreSQL before 15 lets every role create tables in public; 15+ already does not.
    op.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}")
    for table, privileges in TABLE_PRIVILEGES.items():
        op.execute(f"GRANT {privileges} ON TABLE {table} TO {APP_ROLE}")
    for sequence in SEQUENCES:
        op.execute(f"GRANT USAGE ON SEQUENCE {sequence} TO {APP_ROLE}")
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {LATER_TABLES} ON TABLES TO {APP_ROLE}"
    )
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE {LATER_TABLES} ON TABLES FROM {APP_ROLE}"
    )
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE USAGE ON SEQUENCES FROM {APP_ROLE}"
    )
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {APP_ROLE}")
    op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {APP_ROLE}")
    op.execute(f"REVOKE ALL ON SCHEMA public FROM {APP_ROLE}")
    op.execute(REVOKE_CONNECT)
    op.execute(DROP_ROLE)
