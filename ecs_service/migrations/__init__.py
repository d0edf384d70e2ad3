"""Alembic migrations of Herald's schema; run with ``herald migrate``."""
