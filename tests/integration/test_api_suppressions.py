"""Each tenant's suppression list through the api: what SES's feedback puts on it, the
refusal of a message to a listed address, listing it and taking an address off."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
from sqlalchemy.orm import Session

from ecs_service import tenant_limits
from tests.support.api import assert_problem, create, email
from tests.support.feedback import bounced, event, record, sent_message, suppress

if TYPE_CHECKING:
    from fastapi.testclient import TestClient
    from sqlalchemy.engine import Engine

    from tests.integration.conftest import Caller

ADA, BOB, CY = "ada@example.org", "bob@example.org", "cy@example.org"


def used_today(engine: Engine, caller: Caller) -> int:
    with Session(engine) as session:
        (quota,) = tenant_limits.quotas(session, caller.tenant_id)
        return quota.used_today


def messages_of(client: TestClient, caller: Caller) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(
        "/v1/messages", params={"limit": 100}, headers=caller.headers
    ).json()["items"]
    return items


def listed(client: TestClient, caller: Caller, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/suppressions", params=params, headers=caller.headers)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


# The refusal


def test_a_message_to_an_address_that_bounced_for_good_is_refused_naming_it(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given an address that bounced permanently
    suppress(client, engine, caller, BOB)
    stored, used = len(messages_of(client, caller)), used_today(engine, caller)

    # When the tenant schedules another email to it
    response = client.post("/v1/messages", json=email(to=[BOB]), headers=caller.headers)

    # Then it is refused, naming the address, and nothing is stored or counted
    problem = assert_problem(response, 422, "recipient-suppressed")
    assert problem["suppressed"] == [BOB]
    assert problem["detail"] == (
        f"{BOB} is on this tenant's suppression list (a permanent bounce or a complaint); "
        "DELETE /v1/suppressions/{address} takes an address off it"
    )
    assert len(messages_of(client, caller)) == stored
    assert used_today(engine, caller) == used


def test_the_refusal_names_every_suppressed_recipient_of_to_cc_and_bcc_whatever_the_case(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given two suppressed addresses, one of them by a complaint
    suppress(client, engine, caller, BOB)
    suppress(client, engine, caller, CY, reason="complaint")

    # When a message names them in cc and bcc, in another case, beside a listed-free to
    response = client.post(
        "/v1/messages",
        json=email(to=[ADA], cc=["Bob@Example.org"], bcc=["CY@example.ORG"]),
        headers=caller.headers,
    )

    # Then the whole message is refused, naming both as the message holds them (a domain
    # is lower-cased as every stored address's is; a local part keeps its case)
    problem = assert_problem(response, 422, "recipient-suppressed")
    assert problem["suppressed"] == ["Bob@example.org", "CY@example.org"]


def test_an_address_suppressed_for_one_tenant_can_still_be_sent_to_by_another(
    client: TestClient, engine: Engine, caller: Caller, other_caller: Caller
) -> None:
    # Given an address on one tenant's list
    suppress(client, engine, caller, BOB)

    # When another tenant schedules an email to it
    response = client.post("/v1/messages", json=email(to=[BOB]), headers=other_caller.headers)

    # Then it is accepted
    assert response.status_code == 201, response.text


def test_a_transient_bounce_does_not_suppress(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given an address that bounced for now only (a full mailbox)
    message_id = sent_message(client, engine, caller, BOB)
    record(engine, event(message_id, caller.tenant_id, "Bounce", bounced(BOB, "Transient")))

    # When the tenant sends to it again
    response = client.post("/v1/messages", json=email(to=[BOB]), headers=caller.headers)

    # Then it is accepted, and the list is empty
    assert response.status_code == 201, response.text
    assert listed(client, caller)["items"] == []


def test_a_replay_of_a_message_accepted_before_its_address_was_suppressed_still_replays(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given a message accepted with an Idempotency-Key, whose address is suppressed since
    key = {"Idempotency-Key": "welcome-bob"}
    first = client.post("/v1/messages", json=email(to=[BOB]), headers=caller.headers | key)
    assert first.status_code == 201
    suppress(client, engine, caller, BOB)

    # When the client retries the same request
    again = client.post("/v1/messages", json=email(to=[BOB]), headers=caller.headers | key)

    # Then it answers the original message, as a replay
    assert again.status_code == 200, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


def test_a_new_idempotency_key_to_a_suppressed_address_is_refused(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given a suppressed address
    suppress(client, engine, caller, BOB)

    # When a first request with a key names it
    response = client.post(
        "/v1/messages", json=email(to=[BOB]), headers=caller.headers | {"Idempotency-Key": "k1"}
    )

    # Then it is refused like any other
    assert_problem(response, 422, "recipient-suppressed")


# The list


def test_the_list_shows_the_tenants_suppressions_newest_first_with_why(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given an address that bounced, then one that complained
    bounce_message = suppress(client, engine, caller, BOB)
    complaint_message = suppress(client, engine, caller, CY, reason="complaint")

    # When the tenant lists its suppressions
    page = listed(client, caller)

    # Then both are there, newest first, each with its reason, message and detail
    assert [(s["address"], s["reason"], s["message_id"], s["detail"]) for s in page["items"]] == [
        (CY, "complaint", str(complaint_message), "complaint (abuse)"),
        (BOB, "bounce", str(bounce_message), "smtp; 550 5.1.1 user unknown"),
    ]
    assert page["next_cursor"] is None


def test_the_list_pages_with_its_cursor(client: TestClient, engine: Engine, caller: Caller) -> None:
    # Given three suppressed addresses
    addresses = [f"r{i}@example.org" for i in range(3)]
    for address in addresses:
        suppress(client, engine, caller, address)

    # When the list is read two at a time
    first = listed(client, caller, limit=2)
    second = listed(client, caller, limit=2, cursor=first["next_cursor"])

    # Then the two pages hold all three once, newest first, and the last has no cursor
    seen = [s["address"] for s in first["items"] + second["items"]]
    assert seen == list(reversed(addresses))
    assert second["next_cursor"] is None


def test_the_list_pages_past_the_longest_address_a_message_may_have(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given an ordinary address and, newer, one of 254 characters (the most the api takes
    # as a recipient), both suppressed
    longest = "a" * 64 + "@" + ".".join(["b" * 63, "c" * 63, "d" * 57]) + ".org"
    suppress(client, engine, caller, ADA)
    suppress(client, engine, caller, longest)

    # When the list is read one at a time
    first = listed(client, caller, limit=1)
    second = listed(client, caller, limit=1, cursor=first["next_cursor"])

    # Then the cursor the api handed out is one it takes back
    assert [s["address"] for s in first["items"] + second["items"]] == [longest, ADA]


def test_the_list_shows_only_the_callers_tenant(
    client: TestClient, engine: Engine, caller: Caller, other_caller: Caller
) -> None:
    # Given an address on one tenant's list
    suppress(client, engine, caller, BOB)

    # When another tenant lists its own
    page = listed(client, other_caller)

    # Then it is empty
    assert page["items"] == []


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 101}, {"cursor": "garbage"}, {"cursor": "x" * 513}]
)
def test_the_list_rejects_bad_query_parameters(
    client: TestClient, caller: Caller, params: dict[str, Any]
) -> None:
    response = client.get("/v1/suppressions", params=params, headers=caller.headers)
    assert_problem(response, 422, "validation-error")


def test_the_list_needs_a_key(client: TestClient) -> None:
    assert_problem(client.get("/v1/suppressions"), 401, "unauthorized")


# Taking an address off


def test_removing_an_address_lets_the_tenant_send_to_it_again(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given a suppressed address
    suppress(client, engine, caller, BOB)

    # When the tenant takes it off its list
    response = client.delete(f"/v1/suppressions/{BOB}", headers=caller.headers)

    # Then it is gone, and a message to it is accepted
    assert response.status_code == 204
    assert response.content == b""
    assert listed(client, caller)["items"] == []
    create(client, caller, to=[BOB])


def test_an_address_is_removed_whatever_its_case_and_with_its_domain_in_unicode(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given a suppressed address whose domain is internationalized (stored as punycode)
    suppress(client, engine, caller, "ada@bücher.example")
    assert listed(client, caller)["items"][0]["address"] == "ada@xn--bcher-kva.example"

    # When the tenant removes it, written in another case and in Unicode
    response = client.delete(
        f"/v1/suppressions/{quote('Ada@Bücher.example')}", headers=caller.headers
    )

    # Then it is gone
    assert response.status_code == 204, response.text
    assert listed(client, caller)["items"] == []


def test_an_address_with_a_slash_is_removed_when_sent_escaped(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    # Given a suppressed address whose local part holds a "/" (valid in an address)
    suppress(client, engine, caller, "sales/eu@example.org")

    # When the tenant removes it, the slash escaped as %2F
    response = client.delete(
        f"/v1/suppressions/{quote('sales/eu@example.org', safe='')}", headers=caller.headers
    )

    # Then it is gone
    assert response.status_code == 204, response.text
    assert listed(client, caller)["items"] == []


def test_removing_an_address_not_on_the_list_is_not_found(
    client: TestClient, caller: Caller
) -> None:
    response = client.delete(f"/v1/suppressions/{BOB}", headers=caller.headers)
    problem = assert_problem(response, 404, "not-found")
    assert problem["detail"] == f"{BOB} is not on this tenant's suppression list"


def test_a_tenant_cannot_remove_another_tenants_suppression(
    client: TestClient, engine: Engine, caller: Caller, other_caller: Caller
) -> None:
    # Given an address on one tenant's list
    suppress(client, engine, caller, BOB)

    # When another tenant tries to remove it
    response = client.delete(f"/v1/suppressions/{BOB}", headers=other_caller.headers)

    # Then it is not found there, and stays on the first tenant's list
    assert_problem(response, 404, "not-found")
    assert [s["address"] for s in listed(client, caller)["items"]] == [BOB]


@pytest.mark.parametrize("address", ["not-an-address", "ana@bü.example@x", "ünï@example.org"])
def test_removing_something_that_is_not_an_address_is_a_validation_problem(
    client: TestClient, caller: Caller, address: str
) -> None:
    response = client.delete(f"/v1/suppressions/{quote(address)}", headers=caller.headers)
    problem = assert_problem(response, 422, "validation-error")
    assert problem["errors"][0]["location"] == "path.address"
    assert "not a valid email address" in problem["errors"][0]["message"]


def test_the_openapi_document_describes_the_list_the_removal_and_the_refusal(
    client: TestClient,
) -> None:
    # When the OpenAPI document is read
    document = client.get("/openapi.json").json()
    paths = document["paths"]

    # Then both routes are there, the removal's address an email
    assert paths["/v1/suppressions"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/SuppressionPage"}
    removal = paths["/v1/suppressions/{address}"]["delete"]
    assert {"204", "404", "422"} <= set(removal["responses"])
    assert removal["parameters"][0]["schema"]["format"] == "email"
    # And a refused POST is a problem whose `suppressed` lists addresses
    refusal = paths["/v1/messages"]["post"]["responses"]["422"]["content"][
        "application/problem+json"
    ]["schema"]["allOf"]
    assert refusal[0] == {"$ref": "#/components/schemas/Problem"}
    assert refusal[1]["properties"]["suppressed"]["items"]["format"] == "email"


def test_the_request_log_line_names_the_route_not_the_address_taken_off(
    client: TestClient, engine: Engine, caller: Caller
) -> None:
    import json
    import logging

    from shared.observability import logger

    # Given an address on the tenant's list
    suppress(client, engine, caller, BOB)
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(logger.registered_formatter.format(record))

    handler = Capture()
    logger._logger.addHandler(handler)  # noqa: SLF001 - Powertools exposes no other hook
    try:
        # When the tenant takes it off, and asks for a path no route serves with it
        removed = client.delete(f"/v1/suppressions/{quote(BOB)}", headers=caller.headers)
        client.get(f"/v1/unknown/{quote(BOB)}", headers=caller.headers)
    finally:
        logger._logger.removeHandler(handler)  # noqa: SLF001

    # Then the log lines name the route's template, and no line holds the address
    assert removed.status_code == 204
    requests = [json.loads(line) for line in lines if '"request"' in line]
    assert [line["path"] for line in requests if line["message"] == "request"] == [
        "/v1/suppressions/{address}",
        "/v1/unknown/…",
    ]
    assert not [line for line in lines if BOB in line]
