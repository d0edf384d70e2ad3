"""Tenant limits (issue 13): a daily email quota per tenant, and a request-rate bucket per key.

- ``tenants.daily_quota``: emails a tenant may schedule per UTC day (default 10,000).
  A NOT NULL column with a constant default is a catalog change in PostgreSQL 11+:
  no table rewrite, no long lock on tenants.
- ``tenant_daily_usage``: emails scheduled per tenant and UTC day, counted in the same
  transaction that stores each message. One row per (tenant, day, slot), where the slot
  is the counting connection's (``pg_backend_pid() % 1024``): concurrent transactions of
  one tenant update different rows, so none waits for another's commit.
- ``api_rate_buckets``: the token bucket of each API key, shared by every api process.
  UNLOGGED: its updates write no WAL and their commits wait for no fsync; after a crash
  PostgreSQL empties it, which only refills every bucket.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "tenants",
        sa.Column("daily_quota", sa.Integer(), server_default=sa.text("10000"), nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_tenants_daily_quota_not_negative"), "tenants", "daily_quota >= 0"
    )
    op.create_table(
        "tenant_daily_usage",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.CheckConstraint("used >= 0", name=op.f("ck_tenant_daily_usage_used_not_negative")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tenant_daily_usage_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "day", "slot", name=op.f("pk_tenant_daily_usage")),
    )
    # Pruning old days scans by day alone.
    op.create_index(op.f("ix_tenant_daily_usage_day"), "tenant_daily_usage", ["day"])
    op.create_table(
        "api_rate_buckets",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("tokens", sa.Double(), nullable=False),
        sa.Column("granted", sa.Integer(), nullable=False),
        sa.Column("refilled_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.key_id"],
            name=op.f("fk_api_rate_buckets_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_api_rate_buckets")),
        prefixes=["UNLOGGED"],
    )


def downgrade() -> None:
    op.drop_table("api_rate_buckets")
    op.drop_index(op.f("ix_tenant_daily_usage_day"), table_name="tenant_daily_usage")
    op.drop_table("tenant_daily_usage")
    op.drop_constraint(op.f("ck_tenants_daily_quota_not_negative"), "tenants", type_="check")
    op.drop_column("tenants", "daily_quota")
