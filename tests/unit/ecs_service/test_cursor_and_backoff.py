"""Page cursors and the worker's back-off: small pure pieces."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from ecs_service.messages import Cursor, InvalidCursorError
from ecs_service.worker.process import Backoff


def test_cursor_round_trips() -> None:
    cursor = Cursor(datetime(2026, 11, 24, 9, 0, 0, 123456, tzinfo=UTC), uuid4())
    assert Cursor.decode(cursor.encode()) == cursor


@pytest.mark.parametrize("token", ["", "garbage", "e30", "eyJjIjogMX0"])
def test_foreign_cursor_is_refused(token: str) -> None:
    with pytest.raises(InvalidCursorError):
        Cursor.decode(token)


def test_backoff_doubles_to_its_maximum_and_resets() -> None:
    backoff = Backoff(maximum=5)
    assert [backoff.failed() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 5]
    backoff.succeeded()
    assert backoff.failed() == 0.5
