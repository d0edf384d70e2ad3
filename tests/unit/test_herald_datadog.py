"""herald-datadog: the definitions validate against datadog-api-client's models, and
plan/apply run against a fake Datadog API on 127.0.0.1 (no other host is reachable).

The fake keeps monitors, Synthetics API tests and dashboards in memory, checks the keys on
every request, and deserializes every request body into the client's model strictly (the
same check the definitions get), so a malformed request fails with a 400. Like the real
API it fills in fields of its own (ids, dates, an option default, widget ids) and does
not keep the order of tags, which a correct plan must ignore.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from datadog_api_client.v1.model.dashboard import Dashboard
from datadog_api_client.v1.model.monitor import Monitor
from datadog_api_client.v1.model.monitor_update_request import MonitorUpdateRequest
from datadog_api_client.v1.model.synthetics_api_test import SyntheticsAPITest
from datadog_api_client.v1.model.synthetics_delete_tests_payload import (
    SyntheticsDeleteTestsPayload,
)
from pytest_socket import SocketConnectBlockedError, enable_socket, socket_allow_hosts

from herald_datadog.cli import datadog_configuration, main
from herald_datadog.definitions import (
    DASHBOARD,
    KINDS,
    MONITOR,
    SYNTHETICS_TEST,
    Kind,
    Settings,
    load_definition,
    load_definitions,
    parse_model,
)
from herald_datadog.errors import DefinitionError
from tests.conftest import REPO_ROOT

DEFINITIONS = Path(__file__).resolve().parents[2] / "datadog"
API_KEY = "fake-api-key"
APP_KEY = "fake-app-key"
CREATED = "2026-01-01T00:00:00+00:00"


@dataclass(frozen=True)
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class FakeDatadog:
    """The fake's state: what Datadog holds, what it was asked, what it should refuse."""

    monitors: dict[str, dict[str, Any]] = field(default_factory=dict)
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    refuse_writes_with: str | None = None
    _next_id: int = 1000
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method != "GET"]

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # ------------------------------------------------------------------ seeding
    def seed_monitor(self, name: str, tags: list[str]) -> str:
        monitor_id = self.new_id()
        self.monitors[str(monitor_id)] = {
            "id": monitor_id,
            "name": name,
            "type": "metric alert",
            "query": "avg(last_5m):avg:system.load.1{*} > 10",
            "message": "seeded",
            "tags": tags,
            "options": {"thresholds": {"critical": 10.0}},
        }
        return str(monitor_id)

    # ------------------------------------------------------------------ handling
    def handle(self, method: str, url: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        parts = urlsplit(url)
        body = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append(Recorded(method, parts.path, parse_qs(parts.query), headers, body))
            if headers.get("dd-api-key") != API_KEY or headers.get("dd-application-key") != APP_KEY:
                return 403, {"errors": ["Forbidden"]}
            if method != "GET" and self.refuse_writes_with:
                return 400, {"errors": [self.refuse_writes_with]}
            try:
                return 200, self._route(method, parts.path.rstrip("/"), parse_qs(parts.query), body)
            except ApiError as error:
                return error.status, {"errors": [str(error)]}

    @staticmethod
    def _valid(body: Any, model: type[Any]) -> dict[str, Any]:
        try:
            parse_model(body, model, f"request body ({model.__name__})")
        except DefinitionError as error:
            raise ApiError(400, str(error)) from error
        return dict(body)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        segments = path.split("/")[3:]  # after /api/v1
        route = (method, *segments[:1])
        if route == ("GET", "monitor") and len(segments) == 1:
            wanted = query.get("monitor_tags", [""])[0].split(",")
            found = [m for m in self.monitors.values() if set(wanted) <= set(m["tags"])]
            return _page(found, int(query["page"][0]), int(query["page_size"][0]))
        if route == ("POST", "monitor") and len(segments) == 1:
            monitor = self._valid(body, Monitor)
            monitor_id = self.new_id()
            monitor.update(id=monitor_id, created=CREATED, modified=CREATED)
            monitor["tags"] = list(reversed(monitor.get("tags", [])))
            monitor.setdefault("options", {}).setdefault("notify_audit", False)
            self.monitors[str(monitor_id)] = monitor
            return monitor
        if route == ("PUT", "monitor") and len(segments) == 2:
            monitor = self._existing(self.monitors, segments[1])
            monitor.update(self._valid(body, MonitorUpdateRequest))
            return monitor
        if route == ("DELETE", "monitor") and len(segments) == 2:
            self._existing(self.monitors, segments[1])
            del self.monitors[segments[1]]
            return {"deleted_monitor_id": int(segments[1])}
        if segments[:2] == ["synthetics", "tests"]:
            return self._synthetics(method, segments[2:], query, body)
        if route == ("GET", "dashboard") and len(segments) == 1:
            summaries = [
                {key: d[key] for key in ("id", "title", "description", "layout_type", "url")}
                for d in self.dashboards.values()
            ]
            start, count = int(query["start"][0]), int(query["count"][0])
            return {"dashboards": summaries[start : start + count]}
        if route == ("POST", "dashboard") and len(segments) == 1:
            dashboard = self._valid(body, Dashboard)
            dashboard_id = f"abc-{self.new_id()}"
            return self._store_dashboard(dashboard_id, dashboard)
        if route == ("GET", "dashboard") and len(segments) == 2:
            return self._existing(self.dashboards, segments[1])
        if route == ("PUT", "dashboard") and len(segments) == 2:
            self._existing(self.dashboards, segments[1])
            return self._store_dashboard(segments[1], self._valid(body, Dashboard))
        if route == ("DELETE", "dashboard") and len(segments) == 2:
            self._existing(self.dashboards, segments[1])
            del self.dashboards[segments[1]]
            return {"deleted_dashboard_id": segments[1]}
        raise ApiError(404, f"the fake has no {method} {path}")

    def _synthetics(
        self, method: str, rest: list[str], query: dict[str, list[str]], body: Any
    ) -> Any:
        if method == "GET" and not rest:
            size, number = int(query["page_size"][0]), int(query["page_number"][0])
            summaries = [
                {key: t[key] for key in ("public_id", "name", "type", "tags", "status")}
                for t in self.tests.values()
            ]
            return {"tests": summaries[number * size : (number + 1) * size]}
        if method == "POST" and rest == ["api"]:
            test = self._valid(body, SyntheticsAPITest)
            public_id = f"syn-{self.new_id()}"
            test.update(public_id=public_id, monitor_id=self.new_id())
            test["tags"] = list(reversed(test.get("tags", [])))
            self.tests[public_id] = test
            return test
        if method in ("GET", "PUT") and len(rest) == 2 and rest[0] == "api":
            test = self._existing(self.tests, rest[1])
            if method == "PUT":
                test.update(self._valid(body, SyntheticsAPITest))
            return test
        if method == "POST" and rest == ["delete"]:
            payload = self._valid(body, SyntheticsDeleteTestsPayload)
            for public_id in payload["public_ids"]:
                self._existing(self.tests, public_id)
                del self.tests[public_id]
            return {
                "deleted_tests": [
                    {"public_id": p, "deleted_at": CREATED} for p in payload["public_ids"]
                ]
            }
        raise ApiError(404, f"the fake has no {method} synthetics/tests/{'/'.join(rest)}")

    def _store_dashboard(self, dashboard_id: str, dashboard: dict[str, Any]) -> dict[str, Any]:
        for index, widget in enumerate(dashboard.get("widgets", [])):
            widget["id"] = index + 1
        dashboard.update(id=dashboard_id, url=f"/dashboard/{dashboard_id}", created_at=CREATED)
        self.dashboards[dashboard_id] = dashboard
        return dashboard

    @staticmethod
    def _existing(store: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
        if key not in store:
            raise ApiError(404, f"{key} not found")
        return store[key]


def _page(items: list[dict[str, Any]], page: int, size: int) -> list[dict[str, Any]]:
    return items[page * size : (page + 1) * size]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        status, payload = self.server.fake.handle(self.command, self.path, headers, raw)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Quiet: the test reads the recorded requests instead."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeDatadog) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


@dataclass
class RunningFake:
    fake: FakeDatadog
    url: str
    server: _Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_fake() -> RunningFake:
    """Serve a new, empty fake on a free port of 127.0.0.1."""
    fake = FakeDatadog()
    server = _Server(fake)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    return RunningFake(fake, f"http://{host!s}:{port}", server, thread)


# ---------------------------------------------------------------------------- fixtures
SETTINGS = Settings(
    env="dev",
    variables={
        "stack": "herald-dev",
        "api_url": "https://api.example.org",
        "site_url": "https://d111111abcdef8.cloudfront.net",
    },
)
DEFINITION_FILES = [
    (kind, path) for kind in KINDS for path in sorted((DEFINITIONS / kind.folder).glob("*.yaml"))
]
ENVIRON = {"DD_API_KEY": API_KEY, "DD_APP_KEY": APP_KEY, "DD_SITE": "datadoghq.eu"}


@pytest.fixture(autouse=True)
def _only_localhost() -> Iterator[None]:
    """The fake API listens on 127.0.0.1, and nothing else may be reached: a request that
    would leave the machine (the real Datadog) fails the test at connect()."""
    enable_socket()
    socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)
    yield


@pytest.fixture
def datadog() -> Iterator[RunningFake]:
    running = start_fake()
    yield running
    running.stop()


def herald_datadog(
    running: RunningFake, command: str, *options: str, definitions: Path = DEFINITIONS
) -> int:
    return main(
        [
            command,
            "--env",
            "dev",
            "--definitions",
            str(definitions),
            "--api-url",
            "https://api.example.org",
            "--site-url",
            "https://d111111abcdef8.cloudfront.net/",
            "--datadog-url",
            running.url,
            *options,
        ],
        environ=ENVIRON,
    )


def plan_lines(output: str, action: str) -> list[str]:
    return [line for line in output.splitlines() if line.split(" ", 2)[1:2] == [action]]


# ---------------------------------------------------------------------------- definitions
def test_there_is_a_definition_of_each_kind() -> None:
    # Given / When
    kinds = {kind.folder for kind, _ in DEFINITION_FILES}

    # Then
    assert kinds == {"monitors", "synthetics", "dashboards"}
    assert len(DEFINITION_FILES) >= 7


@pytest.mark.parametrize(
    ("kind", "path"), DEFINITION_FILES, ids=[p.name for _, p in DEFINITION_FILES]
)
def test_definition_validates_against_the_clients_model(kind: Kind, path: Path) -> None:
    # Given / When
    definition = load_definition(kind, path, SETTINGS)

    # Then: the body deserializes into the model and carries the ownership marks
    parse_model(definition.body, kind.model, str(path))
    assert "${" not in json.dumps(definition.body)
    if kind is DASHBOARD:
        assert "[managed-by:herald-datadog env:dev]" in definition.body["description"]
    else:
        assert {"service:herald", "env:dev", "managed-by:herald-datadog"} <= set(
            definition.body["tags"]
        )


def test_synthetics_checks_are_https_with_status_and_time_assertions() -> None:
    # Given
    definitions = load_definitions(DEFINITIONS, SETTINGS)

    # When
    tests = [d for d in definitions if d.kind is SYNTHETICS_TEST]

    # Then
    assert {t.body["config"]["request"]["url"] for t in tests} == {
        "https://api.example.org/healthz",
        "https://d111111abcdef8.cloudfront.net/",
    }
    for test in tests:
        types = {a["type"] for a in test.body["config"]["assertions"]}
        assert {"statusCode", "responseTime"} <= types
        assert test.body["options"]["tick_every"] <= 900
        assert len(test.body["locations"]) >= 2


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (("options:", "options:\n  thresholds_typo: 1"), "options.thresholds_typo"),
        (("critical: 0\n", "critical: high\n"), "options.thresholds.critical"),
        (("type: metric alert", "type: metric alarm"), "type"),
    ],
    ids=["unknown field", "wrong type", "value not allowed"],
)
def test_a_broken_definition_is_an_error_naming_file_and_field(
    tmp_path: Path, edit: tuple[str, str], field: str
) -> None:
    # Given
    source = (DEFINITIONS / "monitors" / "dlq-depth.yaml").read_text(encoding="utf-8")
    broken = tmp_path / "dlq-depth.yaml"
    broken.write_text(source.replace(*edit, 1), encoding="utf-8")

    # When
    with pytest.raises(DefinitionError) as raised:
        load_definition(MONITOR, broken, SETTINGS)

    # Then
    assert str(broken) in str(raised.value)
    assert field in str(raised.value)


def test_an_unset_url_names_the_option(tmp_path: Path) -> None:
    # Given
    settings = Settings(env="dev", variables={"stack": "herald-dev", "api_url": ""})

    # When
    with pytest.raises(DefinitionError) as raised:
        load_definition(SYNTHETICS_TEST, DEFINITIONS / "synthetics" / "api-healthz.yaml", settings)

    # Then
    assert "api-healthz.yaml" in str(raised.value)
    assert "--api-url" in str(raised.value)


def test_notify_handle_is_appended_to_every_message() -> None:
    # Given
    settings = Settings(env="dev", variables=SETTINGS.variables, notify=("@pagerduty-herald",))

    # When
    definitions = load_definitions(DEFINITIONS, settings)

    # Then
    for definition in definitions:
        if definition.kind is not DASHBOARD:
            assert definition.body["message"].endswith("Notify: @pagerduty-herald")


def test_a_notify_handle_must_be_a_handle() -> None:
    with pytest.raises(DefinitionError, match="notification handle"):
        Settings(env="dev", notify=("pagerduty herald",))


def run_for(running: RunningFake, command: str, env: str, environ: dict[str, str]) -> int:
    """herald-datadog ``command`` for ``env`` against the fake, with these variables."""
    return main(
        [command, "--env", env, "--definitions", str(DEFINITIONS),
         "--api-url", "https://api.example.org", "--site-url", "https://d1.cloudfront.net",
         "--datadog-url", running.url],
        environ={**ENVIRON, **environ},
    )  # fmt: skip


@pytest.mark.parametrize("command", ["plan", "apply"])
@pytest.mark.parametrize("env", ["staging", "prod"])
def test_staging_and_prod_without_a_notification_handle_are_refused_before_any_request(
    datadog: RunningFake, capsys: pytest.CaptureFixture[str], env: str, command: str
) -> None:
    # Given no --notify and no handle in the environment

    # When monitors of an attended environment are planned or applied
    code = run_for(datadog, command, env, {})

    # Then one line says how to name who is alerted, and Datadog was not asked anything
    assert code == 2
    assert capsys.readouterr().err == (
        f"herald-datadog: error: no notification handle for {env}, so its monitors and "
        "Synthetics tests would alert nobody: pass --notify @pagerduty-herald (repeatable), "
        f"or set HERALD_DATADOG_NOTIFY_{env.upper()} or HERALD_DATADOG_NOTIFY (docs/datadog.md)\n"
    )
    assert datadog.fake.requests == []


def test_each_environment_notifies_its_own_handles_before_the_shared_ones(
    datadog: RunningFake,
) -> None:
    # Given prod's own handle and a shared one
    environ = {
        "HERALD_DATADOG_NOTIFY_PROD": "@pagerduty-herald-prod",
        "HERALD_DATADOG_NOTIFY": "@slack-herald",
    }

    # When prod's monitors are applied
    code = run_for(datadog, "apply", "prod", environ)

    # Then every monitor pages prod's handle only
    assert code == 0
    messages = [m["message"] for m in datadog.fake.monitors.values()]
    assert messages
    assert all(m.endswith("Notify: @pagerduty-herald-prod") for m in messages)


def test_dev_without_a_notification_handle_is_warned_and_applied(
    datadog: RunningFake, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given no handle at all

    # When dev's monitors are applied
    code = run_for(datadog, "apply", "dev", {})

    # Then they are, with a warning that they alert nobody
    assert code == 0
    assert "herald-datadog: warning: no notification handle for dev" in capsys.readouterr().err
    assert datadog.fake.monitors


def test_validate_needs_no_keys(capsys: pytest.CaptureFixture[str]) -> None:
    # Given / When
    code = main(
        ["validate", "--definitions", str(DEFINITIONS), "--api-url", "https://a.example.org"],
        environ={"HERALD_SITE_URL": "https://d1.cloudfront.net"},
    )

    # Then
    assert code == 0
    assert "are valid for dev" in capsys.readouterr().out


def test_an_environment_samconfig_does_not_name_is_refused_as_herald_deploy_refuses_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given / When
    code = main(
        ["validate", "--env", "qa", "--samconfig", str(REPO_ROOT / "samconfig.toml")],
        environ={},
    )

    # Then one line names the environment and the known ones, and nothing was validated
    assert code == 2
    error = capsys.readouterr().err
    assert error == (
        "herald-datadog: error: "
        f"{REPO_ROOT / 'samconfig.toml'} has no environment 'qa' (known: dev, prod, staging)\n"
    )


# ---------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("missing", ["DD_API_KEY", "DD_APP_KEY"])
def test_a_missing_key_is_an_error_naming_the_variable(
    datadog: RunningFake, capsys: pytest.CaptureFixture[str], missing: str
) -> None:
    # Given
    environ = {key: value for key, value in ENVIRON.items() if key != missing}

    # When
    code = main(
        ["plan", "--definitions", str(DEFINITIONS), "--datadog-url", datadog.url],
        environ={
            **environ,
            "HERALD_API_URL": "https://a.example.org",
            "HERALD_SITE_URL": "https://s.example.org",
        },
    )

    # Then
    assert code == 2
    assert f"{missing} is not set" in capsys.readouterr().err
    assert datadog.fake.requests == []


def test_the_site_comes_from_dd_site() -> None:
    # Given / When
    configuration = datadog_configuration(ENVIRON, None)

    # Then
    assert configuration.host == "https://api.datadoghq.eu"


def test_an_invalid_definition_exits_2_before_any_request(
    datadog: RunningFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given
    shutil.copytree(DEFINITIONS, tmp_path / "datadog")
    broken = tmp_path / "datadog" / "dashboards" / "pipeline.yaml"
    broken.write_text(
        broken.read_text(encoding="utf-8").replace(
            "layout_type: ordered\nreflow", "layout_type: tabs\nreflow"
        ),
        encoding="utf-8",
    )

    # When
    code = herald_datadog(datadog, "plan", definitions=tmp_path / "datadog")

    # Then
    assert code == 2
    error = capsys.readouterr().err
    assert str(broken) in error and "layout_type" in error
    assert datadog.fake.requests == []


# ---------------------------------------------------------------------------- plan and apply
def test_first_plan_creates_everything_and_writes_nothing(
    datadog: RunningFake, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given: an empty account

    # When
    code = herald_datadog(datadog, "plan")

    # Then
    output = capsys.readouterr().out
    assert code == 0
    assert len(plan_lines(output, "create")) == len(DEFINITION_FILES)
    assert "nothing was changed" in output
    assert datadog.fake.writes == []
    assert datadog.fake.requests, "the plan reads what Datadog holds"


def test_apply_creates_exactly_the_planned_resources(
    datadog: RunningFake, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given
    herald_datadog(datadog, "plan")
    planned = plan_lines(capsys.readouterr().out, "create")

    # When
    code = herald_datadog(datadog, "apply")

    # Then
    assert code == 0
    fake = datadog.fake
    assert len(fake.writes) == len(planned) == len(DEFINITION_FILES)
    assert all(w.method == "POST" for w in fake.writes)
    names = (
        [m["name"] for m in fake.monitors.values()]
        + [t["name"] for t in fake.tests.values()]
        + [d["title"] for d in fake.dashboards.values()]
    )
    assert len(set(names)) == len(names)
    assert all(name in "\n".join(planned) for name in names)


def test_second_apply_changes_nothing(
    datadog: RunningFake, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given
    herald_datadog(datadog, "apply")
    writes_after_first = len(datadog.fake.writes)
    capsys.readouterr()

    # When
    plan_code = herald_datadog(datadog, "plan")
    plan_output = capsys.readouterr().out
    apply_code = herald_datadog(datadog, "apply")

    # Then
    assert plan_code == apply_code == 0
    assert len(plan_lines(plan_output, "unchanged")) == len(DEFINITION_FILES)
    assert len(datadog.fake.writes) == writes_after_first
    assert "nothing to change" in capsys.readouterr().out


def test_an_edited_definition_is_an_update_with_its_diff(
    datadog: RunningFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given
    definitions = tmp_path / "datadog"
    shutil.copytree(DEFINITIONS, definitions)
    herald_datadog(datadog, "apply", definitions=definitions)
    edited = definitions / "monitors" / "api-error-rate.yaml"
    text = edited.read_text(encoding="utf-8")
    edited.write_text(text.replace("critical: 0.05", "critical: 0.1").replace("> 0.05", "> 0.1"))
    capsys.readouterr()
    writes_before = len(datadog.fake.writes)

    # When
    code = herald_datadog(datadog, "plan", definitions=definitions)

    # Then
    output = capsys.readouterr().out
    assert code == 0
    updates = plan_lines(output, "update")
    assert len(updates) == 1 and "API error rate" in updates[0]
    assert "options.thresholds.critical: 0.05 -> 0.1" in output
    assert '      query: "…dev}.as_count() > 0.05" -> "…dev}.as_count() > 0.1"' in output
    assert len(datadog.fake.writes) == writes_before

    # When applied
    herald_datadog(datadog, "apply", definitions=definitions)

    # Then exactly that monitor is replaced, and the next plan is clean
    new_writes = datadog.fake.writes[writes_before:]
    assert [(w.method, w.path.rsplit("/", 1)[0]) for w in new_writes] == [
        ("PUT", "/api/v1/monitor")
    ]
    capsys.readouterr()
    herald_datadog(datadog, "plan", definitions=definitions)
    assert plan_lines(capsys.readouterr().out, "update") == []


def test_an_orphan_is_reported_and_kept_unless_asked(
    datadog: RunningFake, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given: a managed monitor no definition names, and someone else's monitor
    fake = datadog.fake
    orphan = fake.seed_monitor(
        "[Herald dev] retired check", ["service:herald", "env:dev", "managed-by:herald-datadog"]
    )
    foreign = fake.seed_monitor("[Herald dev] API error rate is high", ["team:other"])
    other_env = fake.seed_monitor(
        "[Herald prod] retired", ["env:prod", "managed-by:herald-datadog"]
    )

    # When
    code = herald_datadog(datadog, "apply")

    # Then
    output = capsys.readouterr().out
    assert code == 0
    assert len(plan_lines(output, "orphan")) == 1
    assert "retired check" in plan_lines(output, "orphan")[0]
    assert {orphan, foreign, other_env} <= set(fake.monitors)

    # When asked to delete orphans
    code = herald_datadog(datadog, "apply", "--delete-orphans")

    # Then only the orphan goes
    assert code == 0
    assert orphan not in fake.monitors
    assert {foreign, other_env} <= set(fake.monitors)
    assert [w.method for w in fake.writes].count("DELETE") == 1


def test_every_request_carries_the_keys_and_stays_on_localhost(
    datadog: RunningFake,
) -> None:
    # Given / When
    herald_datadog(datadog, "apply")

    # Then
    assert datadog.url.startswith("http://127.0.0.1:")
    assert datadog.fake.requests
    for request in datadog.fake.requests:
        assert request.headers["dd-api-key"] == API_KEY
        assert request.headers["dd-application-key"] == APP_KEY
        assert request.path.startswith("/api/v1/")


def test_the_fake_rejects_a_malformed_request_body() -> None:
    # Given
    fake = FakeDatadog()
    headers = {"dd-api-key": API_KEY, "dd-application-key": APP_KEY}

    # When
    status, payload = fake.handle(
        "POST",
        "/api/v1/monitor",
        headers,
        json.dumps({"name": "x", "type": "metric alarm", "query": "q"}).encode(),
    )

    # Then
    assert status == 400
    assert "type" in payload["errors"][0]


def test_an_api_refusal_exits_1_with_the_apis_message(
    datadog: RunningFake, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given
    datadog.fake.refuse_writes_with = "The value provided for parameter 'query' is invalid"

    # When
    code = herald_datadog(datadog, "apply")

    # Then
    assert code == 1
    error = capsys.readouterr().err
    assert "HTTP 400" in error
    assert "The value provided for parameter 'query' is invalid" in error


def test_an_unreachable_datadog_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    # Given: a port nothing listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    # When
    code = main(
        ["plan", "--definitions", str(DEFINITIONS), "--datadog-url", f"http://127.0.0.1:{port}"],
        environ={
            **ENVIRON,
            "HERALD_API_URL": "https://a.example.org",
            "HERALD_SITE_URL": "https://s.example.org",
        },
    )

    # Then
    assert code == 1
    assert "cannot reach Datadog" in capsys.readouterr().err


# pytest-socket warns as it blocks: the warning is this test's expected outcome.
@pytest.mark.filterwarnings("ignore:A test tried to use socket")
def test_a_request_to_any_other_host_is_blocked() -> None:
    # Given: Datadog's documentation address (TEST-NET-1), which must never be reached

    # When / Then
    with pytest.raises(SocketConnectBlockedError):
        main(
            ["plan", "--definitions", str(DEFINITIONS), "--datadog-url", "http://192.0.2.1"],
            environ={
                **ENVIRON,
                "HERALD_API_URL": "https://a.example.org",
                "HERALD_SITE_URL": "https://s.example.org",
            },
        )
