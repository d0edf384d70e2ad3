"""Page cursors: encoded for the client, refused when foreign."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from ecs_service.messages import Cursor, InvalidCursorError


def test_cursor_round_trips() -> None:
    cursor = Cursor(datetime(2026, 11, 24, 9, 0, 0, 123456, tzinfo=UTC), uuid4())
    assert Cursor.decode(cursor.encode()) == cursor


@pytest.mark.parametrize("token", ["", "garbage", "e30", "eyJjIjogMX0"])
def test_foreign_cursor_is_refused(token: str) -> None:
    with pytest.raises(InvalidCursorError):
        Cursor.decode(token)
