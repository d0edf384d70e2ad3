"""POST /v1/messages/batch against real PostgreSQL: many emails in one request and one
transaction, each item answered on its own, with the single POST's keys, limits and lists."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ecs_service import tenant_limits
from ecs_service.api.request_limits import MAX_BATCH_BODY_BYTES
from ecs_service.db.models import Message
from ecs_service.messages import MAX_BATCH_MESSAGES
from tests.support.api import assert_problem, email
from tests.support.feedback import suppress

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from httpx import Response
    from sqlalchemy.engine import Engine

    from tests.integration.conftest import Caller

BATCH = "/v1/messages/batch"


def batch(client: TestClient, caller: Caller, items: list[Any], key: str | None = None) -> Response:
    headers = caller.headers | ({"Idempotency-Key": key} if key else {})
    return client.post(BATCH, json={"messages": items}, headers=headers)


def stored(engine: Engine, caller: Caller) -> int:
    with Session(engine) as session:
        count: int = session.scalar(
            select(func.count()).select_from(Message).where(Message.tenant_id == caller.tenant_id)
        )
        return count


def used_today(engine: Engine, caller: Caller) -> int:
    with Session(engine) as session:
        (quota,) = tenant_limits.quotas(session, caller.tenant_id)
        return quota.used_today


def test_each_item_is_answered_on_its_own_and_only_valid_ones_are_stored(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given a batch of two good emails around a bad address and a non-object
    items = [email(to=["a@example.org"]), email(to=["not-an-address"]), 7, email(subject="Two")]

    # When it is posted
    response = batch(client, caller, items)

    # Then each item is answered at its index, and the two good ones are scheduled
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["created"], body["replayed"], body["refused"]) == (2, 0, 2)
    outcomes = [(i["index"], i["outcome"], i["status"]) for i in body["items"]]
    assert outcomes == [
        (0, "created", 201),
        (1, "refused", 422),
        (2, "refused", 422),
        (3, "created", 201),
    ]
    refused = body["items"][1]["problem"]
    assert refused["type"] == "urn:herald:problem:validation-error"
    assert refused["errors"][0]["location"] == "body.messages.1.to.0"
    assert body["items"][2]["problem"]["errors"][0]["location"] == "body.messages.2"
    created = body["items"][3]["message"]
    assert (created["status"], created["subject"]) == ("scheduled", "Two")
    read = client.get(f"/v1/messages/{created['id']}", headers=caller.headers)
    assert read.status_code == 200
    assert stored(engine, caller) == 2
    assert used_today(engine, caller) == 2


def test_an_item_too_large_for_one_task_is_refused_with_413(
    client: TestClient, caller: Caller
) -> None:
    # When one item's email would not fit in one SQS message
    response = batch(client, caller, [email(text="x" * 270_000), email()])

    # Then that item alone is refused as too large
    items = response.json()["items"]
    assert [(i["outcome"], i["status"]) for i in items] == [("refused", 413), ("created", 201)]
    assert items[0]["problem"]["type"] == "urn:herald:problem:payload-too-large"


def test_the_same_key_and_batch_answers_the_same_messages_as_replays(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given a batch posted with an Idempotency-Key, one item refused
    items = [email(to=["a@example.org"]), email(to=["bad"]), email(to=["c@example.org"])]
    first = batch(client, caller, items, key="campaign-7").json()

    # When the same batch is posted again with the same key
    again = batch(client, caller, items, key="campaign-7")

    # Then the stored items are answered as replays of the same messages, nothing more is
    # stored or counted, and the refused item is refused again
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    body = again.json()
    assert (body["created"], body["replayed"], body["refused"]) == (0, 2, 1)
    assert [i["outcome"] for i in body["items"]] == ["replayed", "refused", "replayed"]
    assert [i["message"]["id"] for i in body["items"] if i["message"]] == [
        i["message"]["id"] for i in first["items"] if i["message"]
    ]
    assert stored(engine, caller) == 2
    assert used_today(engine, caller) == 2


def test_the_same_key_with_another_batch_is_refused_whole(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given a batch posted with a key
    batch(client, caller, [email()], key="k1")

    # When another batch is posted with the same key
    response = batch(client, caller, [email(subject="Other")], key="k1")

    # Then it is refused and nothing of it is stored
    assert_problem(response, 422, "idempotency-key-reused")
    assert stored(engine, caller) == 1


def test_a_batch_key_never_replays_a_single_message_of_the_same_key(
    client: TestClient, caller: Caller
) -> None:
    # Given a single message posted with a key
    client.post("/v1/messages", json=email(), headers=caller.headers | {"Idempotency-Key": "k"})

    # When a batch uses the same key
    response = batch(client, caller, [email()], key="k")

    # Then its item is a new message
    assert response.json()["items"][0]["outcome"] == "created"


def test_a_batch_over_the_daily_quota_stores_none_of_it(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given a tenant with room for 3 more emails today
    with Session(engine) as session, session.begin():
        tenant_limits.set_daily_quota(session, caller.tenant_id, 3)

    # When it posts a batch of 4 valid emails (and one refused item)
    response = batch(client, caller, [email(), email(), email(), email(), email(to=["x"])])

    # Then the whole batch is refused for the quota, naming how many it asked for
    problem = assert_problem(response, 429, "quota-exceeded")
    assert "no room for 4 more emails" in problem["detail"]
    assert int(response.headers["retry-after"]) >= 1
    assert stored(engine, caller) == 0
    assert used_today(engine, caller) == 0

    # And a batch that fits is scheduled and counted
    assert batch(client, caller, [email(), email(), email()]).json()["created"] == 3
    assert used_today(engine, caller) == 3


def test_items_to_suppressed_recipients_are_refused_naming_them(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given an address on the tenant's suppression list
    suppress(client, engine, caller, "bob@example.org")
    before = stored(engine, caller)

    # When a batch has an item to it (in another case, in bcc) beside one that is not
    response = batch(
        client, caller, [email(to=["ada@example.org"], bcc=["Bob@Example.org"]), email()]
    )

    # Then that item is refused naming the address, the other stored
    items = response.json()["items"]
    assert [(i["outcome"], i["status"]) for i in items] == [("refused", 422), ("created", 201)]
    assert items[0]["problem"]["type"] == "urn:herald:problem:recipient-suppressed"
    assert items[0]["problem"]["suppressed"] == ["Bob@example.org"]
    assert stored(engine, caller) == before + 1


def test_a_batch_is_stored_for_its_tenant_only(
    client: TestClient, caller: Caller, other_caller: Caller
) -> None:
    # Given a batch scheduled by one tenant, with a key
    first = batch(client, caller, [email()], key="shared-key").json()
    message_id = first["items"][0]["message"]["id"]

    # When another tenant reads the message, and posts a batch with the same key
    read = client.get(f"/v1/messages/{message_id}", headers=other_caller.headers)
    theirs = batch(client, other_caller, [email()], key="shared-key").json()

    # Then it cannot see it, and its batch is its own new message
    assert_problem(read, 404, "not-found")
    assert theirs["items"][0]["outcome"] == "created"
    assert theirs["items"][0]["message"]["id"] != message_id


def test_a_full_batch_of_reasonable_emails_fits_the_batch_body_cap(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given the most messages a batch takes, each a reasonable email of about 1 KB
    text = "Your order has shipped and should arrive within three working days. " * 12
    items = [
        email(to=[f"customer{n:04d}@mail.example.org"], subject=f"Order {n}", text=text)
        for n in range(MAX_BATCH_MESSAGES)
    ]
    assert len(json.dumps({"messages": items})) < MAX_BATCH_BODY_BYTES

    # When it is posted
    response = batch(client, caller, items)

    # Then every one is scheduled
    assert response.status_code == 200, response.text[:300]
    assert response.json()["created"] == MAX_BATCH_MESSAGES
    assert stored(engine, caller) == MAX_BATCH_MESSAGES


def test_more_messages_than_a_batch_takes_is_a_validation_problem(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    response = batch(client, caller, [email()] * (MAX_BATCH_MESSAGES + 1))

    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["location"] == "body.messages"
    assert stored(engine, caller) == 0


def test_an_empty_batch_is_a_validation_problem(client: TestClient, caller: Caller) -> None:
    assert_problem(batch(client, caller, []), 422, "validation-error")


def test_a_body_over_the_batch_cap_is_refused_before_it_is_read(
    client: TestClient, caller: Caller
) -> None:
    # When a batch body is over its cap
    body = b'{"messages": [' + b" " * MAX_BATCH_BODY_BYTES + b"]}"
    response = client.post(
        BATCH, content=body, headers=caller.headers | {"Content-Type": "application/json"}
    )

    # Then it is 413, naming the batch's cap
    problem = assert_problem(response, 413, "payload-too-large")
    assert f"{MAX_BATCH_BODY_BYTES:,} bytes" in problem["detail"]


def test_a_single_message_keeps_its_smaller_body_cap(client: TestClient, caller: Caller) -> None:
    body = b'{"to": [' + b" " * 400_000 + b"]}"
    response = client.post(
        "/v1/messages", content=body, headers=caller.headers | {"Content-Type": "application/json"}
    )

    problem = assert_problem(response, 413, "payload-too-large")
    assert "300,000 bytes" in problem["detail"]


def test_the_openapi_document_describes_the_batch(client: TestClient) -> None:
    # When the OpenAPI document is read
    document = client.get("/openapi.json").json()
    route = document["paths"][BATCH]["post"]

    # Then the batch takes MessageCreate items, up to the documented number
    schema = document["components"]["schemas"]["MessageBatchCreate"]["properties"]["messages"]
    assert schema["maxItems"] == MAX_BATCH_MESSAGES
    assert schema["items"] == {"$ref": "#/components/schemas/MessageCreate"}
    assert "MessageCreate" in document["components"]["schemas"]
    assert route["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MessageBatchOut"
    }
    assert {"413", "422", "429"} <= set(route["responses"])


def test_reading_the_batch_route_is_405_not_a_malformed_message_id(
    client: TestClient, caller: Caller
) -> None:
    response = client.get(BATCH, headers=caller.headers)

    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "POST"
