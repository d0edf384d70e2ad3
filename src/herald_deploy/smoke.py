"""smoke: one email through an environment's api to SES's mailbox simulator, until delivered.

Run after staging's deploy and before prod's approval (stacks/pipeline.yaml, Jenkinsfile):
it schedules an email to success@simulator.amazonses.com with the api key of the tenant
`make bootstrap-tenant ENV=<env> TENANT=smoke` made (the secret
herald/<env>/tenants/smoke, or HERALD_SMOKE_API_KEY), then reads the message until SES
reports it `delivered`: the api, the database, the relay, the queue, the task runner, SES
and the delivery feedback all worked for this release. Any other end, or no end within
the timeout, fails the run with one line naming the message and its last status.

The key is never printed: the secret is read by a command whose output only this process
sees, and the HTTP requests are described without their headers.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from herald_deploy.bootstrap import secret_name
from herald_deploy.errors import DeployError
from herald_deploy.shell import command
from herald_deploy.stack_outputs import read_stack_outputs

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from herald_deploy.samconfig import Environment
    from herald_deploy.shell import Shell

SMOKE_TENANT = "smoke"
SIMULATOR_SUCCESS = "success@simulator.amazonses.com"
DELIVERED = "delivered"
# A message in one of these states will never be delivered.
FINAL_FAILURES = frozenset({"failed", "bounced", "complained", "canceled"})
DEFAULT_TIMEOUT_SECONDS = 300.0
DEFAULT_POLL_SECONDS = 5.0
EXAMPLE_KEY_SECRET = json.dumps({"api_key": "hk_example_not_a_key"})


def smoke_secret_id(environment: Environment) -> str:
    """The secret `make bootstrap-tenant ENV=<env> TENANT=smoke` stored the key in."""
    return secret_name(environment, SMOKE_TENANT)


class Api(Protocol):
    """The two requests the smoke test makes: JSON in, (status, JSON) out."""

    def __call__(
        self, method: str, url: str, *, key: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]: ...


def http_api(
    method: str, url: str, *, key: str, body: Mapping[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    """One HTTPS request to the api; an HTTP error is an answer, not an exception."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the URL is the stack's own https ApiUrl
        url,
        data=data,
        method=method,
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            **({"Idempotency-Key": f"smoke-{uuid.uuid4()}"} if method == "POST" else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return int(response.status), _json(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), _json(error.read())
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise DeployError(f"smoke: {method} {url} failed: {error}") from error


def _json(raw: bytes) -> dict[str, Any]:
    try:
        loaded = json.loads(raw or b"{}")
    except ValueError:
        return {"detail": raw[:200].decode(errors="replace")}
    return loaded if isinstance(loaded, dict) else {"detail": str(loaded)[:200]}


def read_api_key(shell: Shell, environment: Environment, *, given: str | None) -> str:
    """The smoke tenant's key: given (HERALD_SMOKE_API_KEY), else from its secret."""
    if given:
        return given
    answer = shell.read(
        command(
            "aws", "secretsmanager", "get-secret-value",
            "--region", environment.region,
            "--secret-id", smoke_secret_id(environment),
            "--query", "SecretString",
            "--output", "text",
        ),
        dry_run_output=EXAMPLE_KEY_SECRET,
    )  # fmt: skip
    try:
        key = json.loads(answer)["api_key"]
    except (ValueError, KeyError, TypeError) as error:
        raise DeployError(
            f"smoke: secret {smoke_secret_id(environment)} holds no api_key "
            f"(make bootstrap-tenant ENV={environment.name} TENANT={SMOKE_TENANT})"
        ) from error
    return str(key)


@dataclass(frozen=True)
class SmokeResult:
    message_id: str
    seconds: float


def send_and_wait(
    api: Api,
    *,
    base_url: str,
    key: str,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SmokeResult:
    """Schedule one email to the simulator now and wait until it is delivered.

    Raises DeployError with one line if the api refuses it, it ends in any other state,
    or it is not delivered within `timeout_seconds`.
    """
    started = clock()
    status, created = api(
        "POST",
        f"{base_url}/v1/messages",
        key=key,
        body={
            "to": [SIMULATOR_SUCCESS],
            "subject": "Herald smoke test",
            "text": "Sent by the release pipeline's smoke test; SES's simulator accepts it.",
        },
    )
    if status != 201 or "id" not in created:
        raise DeployError(
            f"smoke: POST {base_url}/v1/messages answered {status}: "
            f"{created.get('detail') or created.get('title') or created}"
        )
    message_id = str(created["id"])
    last = str(created.get("status", "scheduled"))
    while True:
        if last == DELIVERED:
            return SmokeResult(message_id, clock() - started)
        if clock() - started >= timeout_seconds:
            raise DeployError(
                f"smoke: message {message_id} is still {last!r} after "
                f"{timeout_seconds:g} s (expected {DELIVERED!r})"
            )
        sleep(poll_seconds)
        status, message = api("GET", f"{base_url}/v1/messages/{message_id}", key=key)
        if status != 200:
            raise DeployError(
                f"smoke: GET {base_url}/v1/messages/{message_id} answered {status}: "
                f"{message.get('detail') or message.get('title') or message}"
            )
        last = str(message.get("status"))
        if last in FINAL_FAILURES:
            raise DeployError(
                f"smoke: message {message_id} ended {last!r}"
                + (f": {message['error']}" if message.get("error") else "")
            )


def smoke(
    shell: Shell,
    environment: Environment,
    *,
    api_key: str | None,
    dry_run: bool,
    api: Api = http_api,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    dry_run_outputs: dict[str, str] | None = None,
) -> None:
    """The environment's ApiUrl and smoke key, then one email until delivered."""
    outputs = read_stack_outputs(shell, environment, dry_run_outputs=dry_run_outputs)
    base_url = outputs["ApiUrl"].rstrip("/")
    key = read_api_key(shell, environment, given=api_key)
    shell.say(
        f"smoke {environment.name}: POST {base_url}/v1/messages to {SIMULATOR_SUCCESS}, "
        f"then GET it until {DELIVERED!r} (at most {timeout_seconds:g} s)"
    )
    if dry_run:
        return
    result = send_and_wait(api, base_url=base_url, key=key, timeout_seconds=timeout_seconds)
    shell.say(
        f"smoke {environment.name}: message {result.message_id} delivered in {result.seconds:.0f} s"
    )
