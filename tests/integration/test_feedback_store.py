"""feedback_store's suppression list and reads, on the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ecs_service import feedback_store, messages
from ecs_service.feedback_store import (
    FeedbackEvent,
    InvalidCursorError,
    RecipientOutcome,
    RecipientState,
    SuppressionCursor,
)
from ecs_service.settings import WorkerSettings
from tests.integration.conftest import Caller
from tests.support.builders import insert_suppressions
from tests.support.feedback_events import message_to

CREATED = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
QUEUES = {
    "TASK_QUEUE_URL": "http://localhost:4566/000000000000/tasks",
    "RESULT_QUEUE_URL": "http://localhost:4566/000000000000/results",
}


def listed(engine: Engine, tenant_id: UUID, *addresses: str) -> None:
    """``addresses`` on the tenant's list, the first the oldest, a minute apart."""
    insert_suppressions(engine, tenant_id, *addresses, created_at=CREATED)


def test_suppressed_names_the_listed_addresses_as_given_in_their_order(
    engine: Engine, caller: Caller
) -> None:
    # Given two addresses on the tenant's list
    listed(engine, caller.tenant_id, "gone@example.org", "spam@example.org")

    # When a message's recipients are checked, in other case and with a repeat
    with Session(engine) as session:
        found = messages.listed_recipients(
            session,
            caller.tenant_id,
            ["Spam@Example.org", "fine@example.org", "gone@example.org", "spam@example.org"],
        )

    # Then each listed one is named once, as the caller wrote it first, in its order
    assert found == ["Spam@Example.org", "gone@example.org"]


def test_another_tenants_list_does_not_suppress(
    engine: Engine, caller: Caller, other_caller: Caller
) -> None:
    # Given an address on another tenant's list
    listed(engine, other_caller.tenant_id, "gone@example.org")

    # When this tenant's recipients are checked
    with Session(engine) as session:
        found = messages.listed_recipients(session, caller.tenant_id, ["gone@example.org"])

    # Then it is not suppressed for this tenant
    assert found == []


def test_the_list_pages_newest_first_with_a_cursor(engine: Engine, caller: Caller) -> None:
    # Given three listed addresses
    listed(engine, caller.tenant_id, "a@example.org", "b@example.org", "c@example.org")

    # When the list is read two at a time, the cursor passed on as the api passes it
    with Session(engine) as session:
        first, cursor = feedback_store.list_suppressions(
            session, caller.tenant_id, limit=2, after=None
        )
        assert cursor is not None
        second, last = feedback_store.list_suppressions(
            session, caller.tenant_id, limit=2, after=SuppressionCursor.decode(cursor.encode())
        )

    # Then the pages hold each address once, newest first, and the last page says so
    assert [s.address for s in first] == ["c@example.org", "b@example.org"]
    assert [s.address for s in second] == ["a@example.org"]
    assert last is None


@pytest.mark.parametrize("token", ["", "not-base64!", "eyJjIjogMX0"], ids=["empty", "junk", "no-a"])
def test_a_cursor_the_api_did_not_hand_out_is_refused(token: str) -> None:
    with pytest.raises(InvalidCursorError):
        SuppressionCursor.decode(token)


def test_removing_an_address_in_any_case_takes_it_off_once(engine: Engine, caller: Caller) -> None:
    # Given a listed address
    listed(engine, caller.tenant_id, "gone@example.org")

    # When it is removed twice, the first time in other case
    with Session(engine) as session, session.begin():
        first = feedback_store.remove_suppression(session, caller.tenant_id, "Gone@Example.ORG")
        second = feedback_store.remove_suppression(session, caller.tenant_id, "gone@example.org")

    # Then the first removal found it and the second did not
    assert (first, second) == (True, False)


def test_recipients_and_events_read_back_in_their_orders(engine: Engine, caller: Caller) -> None:
    # Given a sent message with a Delivery to one recipient and a Bounce of another, the
    # bounce recorded first but happening later
    message_id = message_to(engine, caller.tenant_id, "b@example.org", "a@example.org")
    bounce = FeedbackEvent(
        message_id=message_id,
        tenant_id=caller.tenant_id,
        event_type="Bounce",
        occurred_at=CREATED + timedelta(seconds=5),
        digest=uuid4().hex * 2,
        outcomes=(
            RecipientOutcome("b@example.org", RecipientState.BOUNCED, "Transient", "General"),
        ),
    )
    delivery = FeedbackEvent(
        message_id=message_id,
        tenant_id=caller.tenant_id,
        event_type="Delivery",
        occurred_at=CREATED + timedelta(seconds=2),
        digest=uuid4().hex * 2,
        outcomes=(RecipientOutcome("a@example.org", RecipientState.DELIVERED),),
    )
    with Session(engine) as session, session.begin():
        feedback_store.record_event(session, bounce)
        feedback_store.record_event(session, delivery)

    # When they are read
    with Session(engine) as session:
        recipients = feedback_store.recipients_of(session, message_id)
        events = feedback_store.events_of(session, message_id)
        latest_only = feedback_store.events_of(session, message_id, limit=1)

    # Then recipients come by address, events oldest first (by SES's time); over the limit,
    # the latest are kept (a run of delays must not hide the bounce that ended them)
    assert [(r.address, r.status) for r in recipients] == [
        ("a@example.org", "delivered"),
        ("b@example.org", "bounced"),
    ]
    assert [(e.event_type, e.recipient) for e in events] == [
        ("Delivery", "a@example.org"),
        ("Bounce", "b@example.org"),
    ]
    assert [e.event_type for e in latest_only] == ["Bounce"]


def test_summarise_leaves_a_message_that_is_not_sent_as_it_is(
    engine: Engine, caller: Caller
) -> None:
    # Given a queued message whose recipient was delivered
    message_id = message_to(engine, caller.tenant_id, "a@example.org", status="queued")
    with Session(engine) as session, session.begin():
        feedback_store.record_event(
            session,
            FeedbackEvent(
                message_id=message_id,
                tenant_id=caller.tenant_id,
                event_type="Delivery",
                occurred_at=CREATED,
                digest=uuid4().hex * 2,
                outcomes=(RecipientOutcome("a@example.org", RecipientState.DELIVERED),),
            ),
        )

        # When it is summarised
        status = feedback_store.summarise(session, message_id)

    # Then it stays queued: its summary waits for the sent result
    assert status == "queued"


@pytest.mark.parametrize("value", ["", None], ids=["empty", "absent"])
def test_the_feedback_loop_is_off_without_a_feedback_queue_url(value: str | None) -> None:
    # Given the worker's environment with FEEDBACK_QUEUE_URL empty or absent
    environment = QUEUES | ({} if value is None else {"FEEDBACK_QUEUE_URL": value})

    # When the settings are read, Then there is no feedback queue to consume
    assert WorkerSettings.model_validate(environment).feedback_queue_url is None
