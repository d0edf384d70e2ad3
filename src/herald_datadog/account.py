"""The Datadog account, through ``datadog-api-client``: what herald-datadog manages there.

``DatadogAccount`` lists the resources of one environment that carry herald-datadog's
mark (tags ``managed-by:herald-datadog`` and ``env:<env>``; for dashboards, which only
take ``team:`` tags, the marker in their description) and creates, updates and deletes
them. Every failure becomes a ``DatadogApiError`` carrying Datadog's own message.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from datadog_api_client.exceptions import ApiException, OpenApiException
from datadog_api_client.v1.api.dashboards_api import DashboardsApi
from datadog_api_client.v1.api.monitors_api import MonitorsApi
from datadog_api_client.v1.api.synthetics_api import SyntheticsApi
from datadog_api_client.v1.model.dashboard import Dashboard
from datadog_api_client.v1.model.monitor import Monitor
from datadog_api_client.v1.model.monitor_update_request import MonitorUpdateRequest
from datadog_api_client.v1.model.synthetics_api_test import SyntheticsAPITest
from datadog_api_client.v1.model.synthetics_delete_tests_payload import (
    SyntheticsDeleteTestsPayload,
)
from urllib3.exceptions import HTTPError

from herald_datadog.definitions import (
    DASHBOARD,
    MANAGED_BY_TAG,
    MONITOR,
    SYNTHETICS_TEST,
    Definition,
    Kind,
    dashboard_marker,
    model_json,
    parse_model,
    untyped,
)
from herald_datadog.errors import DatadogApiError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from datadog_api_client import ApiClient

PAGE_SIZE = 100
ResultT = TypeVar("ResultT")


@dataclass(frozen=True)
class Existing:
    """A managed resource as Datadog holds it, in the API's JSON shape."""

    kind: Kind
    id: str
    name: str
    body: dict[str, Any]


def _api_message(error: ApiException) -> str:
    body = error.body
    if isinstance(body, dict) and body.get("errors"):
        return "; ".join(str(item) for item in body["errors"])
    return str(body or error.reason or "no message").strip()


@contextmanager
def _api_call(what: str) -> Iterator[None]:
    """Turn the client's failures into one error that says what was being done."""
    try:
        yield
    except ApiException as error:
        raise DatadogApiError(
            f"{what}: Datadog answered HTTP {error.status}: {_api_message(error)}"
        ) from error
    except HTTPError as error:
        raise DatadogApiError(f"{what}: cannot reach Datadog: {error}") from error
    except OpenApiException as error:
        raise DatadogApiError(f"{what}: unexpected answer from Datadog: {error}") from error


def _pages(fetch: Callable[[int], list[ResultT]]) -> Iterator[ResultT]:
    page = 0
    while True:
        items = fetch(page)
        yield from items
        if len(items) < PAGE_SIZE:
            return
        page += 1


class DatadogAccount:
    """Lists and changes herald-datadog's resources in one Datadog account."""

    def __init__(self, client: ApiClient, env: str) -> None:
        self._monitors = untyped(MonitorsApi)(client)
        self._synthetics = untyped(SyntheticsApi)(client)
        self._dashboards = untyped(DashboardsApi)(client)
        self._env = env
        self._tags = {MANAGED_BY_TAG, f"env:{env}"}

    def list_managed(self) -> list[Existing]:
        """Every monitor, Synthetics API test and dashboard of this environment that is ours."""
        return [*self._list_monitors(), *self._list_synthetics(), *self._list_dashboards()]

    def _is_ours(self, tags: Any) -> bool:
        return self._tags <= {str(tag) for tag in tags or []}

    def _list_monitors(self) -> list[Existing]:
        def fetch(page: int) -> list[Monitor]:
            with _api_call("listing monitors"):
                return list(
                    self._monitors.list_monitors(
                        monitor_tags=",".join(sorted(self._tags)), page=page, page_size=PAGE_SIZE
                    )
                )

        found = []
        for monitor in _pages(fetch):
            body = model_json(monitor)
            if self._is_ours(body.get("tags")):
                found.append(Existing(MONITOR, str(body["id"]), str(body.get("name")), body))
        return found

    def _list_synthetics(self) -> list[Existing]:
        def fetch(page: int) -> list[Any]:
            with _api_call("listing Synthetics tests"):
                response = self._synthetics.list_tests(page_size=PAGE_SIZE, page_number=page)
            return list(untyped(response).get("tests") or [])

        found = []
        for test in _pages(fetch):
            summary = model_json(test)
            if summary.get("type") != "api" or not self._is_ours(summary.get("tags")):
                continue
            public_id = str(summary["public_id"])
            # The list's entries are summaries; the test itself is what an update replaces.
            with _api_call(f"reading Synthetics test {public_id}"):
                body = model_json(self._synthetics.get_api_test(public_id))
            found.append(Existing(SYNTHETICS_TEST, public_id, str(body.get("name")), body))
        return found

    def _list_dashboards(self) -> list[Existing]:
        def fetch(page: int) -> list[Any]:
            with _api_call("listing dashboards"):
                response = self._dashboards.list_dashboards(
                    filter_shared=False, count=PAGE_SIZE, start=page * PAGE_SIZE
                )
            return list(untyped(response).get("dashboards") or [])

        marker = dashboard_marker(self._env)
        found = []
        for summary in _pages(fetch):
            if marker not in str(untyped(summary).get("description") or ""):
                continue
            dashboard_id = str(summary["id"])
            with _api_call(f"reading dashboard {dashboard_id}"):
                body = model_json(self._dashboards.get_dashboard(dashboard_id))
            found.append(Existing(DASHBOARD, dashboard_id, str(body.get("title")), body))
        return found

    def create(self, definition: Definition) -> str:
        """Create the resource; return its id."""
        where = str(definition.path)
        with _api_call(f"creating {definition.kind.label} {definition.name!r}"):
            if definition.kind is MONITOR:
                monitor = self._monitors.create_monitor(
                    body=parse_model(definition.body, Monitor, where)
                )
                return str(monitor["id"])
            if definition.kind is SYNTHETICS_TEST:
                test = self._synthetics.create_synthetics_api_test(
                    body=parse_model(definition.body, SyntheticsAPITest, where)
                )
                return str(test["public_id"])
            dashboard = self._dashboards.create_dashboard(
                body=parse_model(definition.body, Dashboard, where)
            )
            return str(dashboard["id"])

    def update(self, existing: Existing, definition: Definition) -> None:
        """Replace the resource's definition with the repository's."""
        where = str(definition.path)
        with _api_call(f"updating {definition.kind.label} {definition.name!r} ({existing.id})"):
            if definition.kind is MONITOR:
                self._monitors.update_monitor(
                    int(existing.id), body=parse_model(definition.body, MonitorUpdateRequest, where)
                )
            elif definition.kind is SYNTHETICS_TEST:
                self._synthetics.update_api_test(
                    existing.id, body=parse_model(definition.body, SyntheticsAPITest, where)
                )
            else:
                self._dashboards.update_dashboard(
                    existing.id, body=parse_model(definition.body, Dashboard, where)
                )

    def delete(self, existing: Existing) -> None:
        """Delete the resource (only ever an orphan, and only when asked)."""
        with _api_call(f"deleting {existing.kind.label} {existing.name!r} ({existing.id})"):
            if existing.kind is MONITOR:
                self._monitors.delete_monitor(int(existing.id))
            elif existing.kind is SYNTHETICS_TEST:
                self._synthetics.delete_tests(
                    body=SyntheticsDeleteTestsPayload(public_ids=[existing.id])
                )
            else:
                self._dashboards.delete_dashboard(existing.id)
