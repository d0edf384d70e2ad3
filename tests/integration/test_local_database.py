"""The local run's database side: one demo key per data directory, reused across runs."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecs_service.api_keys import hash_key
from ecs_service.db.models import ApiKey
from herald_local.local_database import DEMO_KEY_NAME, prepare_database

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.engine import Engine

    from herald_local.postgres import LocalPostgres


def active_demo_keys(engine: Engine) -> set[str]:
    with Session(engine) as session:
        return set(
            session.scalars(
                select(ApiKey.key_hash).where(
                    ApiKey.name == DEMO_KEY_NAME, ApiKey.revoked_at.is_(None)
                )
            )
        )


def test_a_second_run_on_the_same_data_directory_reuses_the_demo_key(
    postgres: LocalPostgres, engine: Engine, tmp_path: Path
) -> None:
    # Given a first run that issued the demo key
    key_file = tmp_path / "demo-api-key"
    first = prepare_database(postgres.url(), key_file)

    # When the next run prepares the database
    second = prepare_database(postgres.url(), key_file)

    # Then it answers with the same key, the only active demo key, kept in a private file
    assert (first.reused, second.reused) == (False, True)
    assert second.plaintext == first.plaintext
    assert active_demo_keys(engine) == {hash_key(first.plaintext)}
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_lost_key_file_gets_a_new_key_and_the_old_one_is_revoked(
    postgres: LocalPostgres, engine: Engine, tmp_path: Path
) -> None:
    # Given a run's demo key whose file is then lost
    key_file = tmp_path / "demo-api-key"
    old = prepare_database(postgres.url(), key_file)
    key_file.unlink()

    # When the next run prepares the database
    new = prepare_database(postgres.url(), key_file)

    # Then a new key is issued and the old one no longer works
    assert not new.reused
    assert new.plaintext != old.plaintext
    assert active_demo_keys(engine) == {hash_key(new.plaintext)}
    assert key_file.read_text(encoding="utf-8").strip() == new.plaintext
