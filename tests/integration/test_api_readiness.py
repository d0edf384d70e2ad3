"""/readyz under a flood, on PostgreSQL: it is public and not admitted through the gate, so
its pings must not take the connections the gate counts on."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from ecs_service.api.app import create_app
from ecs_service.api.routes.health import READINESS_CACHE_SECONDS
from ecs_service.settings import ApiSettings, DatabaseSettings
from tests.integration.conftest import SENDER


def test_a_flood_of_readyz_takes_one_connection_at_a_time_and_one_a_second(
    database_settings: DatabaseSettings,
) -> None:
    # Given an api whose pool counts the connections taken from it, and the most at once
    app = create_app(ApiSettings(SENDER_EMAIL=SENDER), database_settings)
    lock = threading.Lock()
    taken = {"total": 0, "now": 0, "most": 0}

    def on_checkout(*_: Any) -> None:
        with lock:
            taken["total"] += 1
            taken["now"] += 1
            taken["most"] = max(taken["most"], taken["now"])

    def on_checkin(*_: Any) -> None:
        with lock:
            taken["now"] -= 1

    with TestClient(app) as client:
        engine = app.state.services.engine
        event.listen(engine, "checkout", on_checkout)
        event.listen(engine, "checkin", on_checkin)

        # When 50 callers ask /readyz at once
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=50) as callers:
            statuses = list(callers.map(lambda _: client.get("/readyz").status_code, range(50)))
        elapsed = time.monotonic() - started

    # Then all are told it is ready, from one ping at a time, at most one a second
    assert statuses == [200] * 50
    assert taken["most"] == 1
    assert taken["total"] <= 1 + int(elapsed / READINESS_CACHE_SECONDS), (taken, elapsed)
