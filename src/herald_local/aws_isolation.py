"""Local mode never reaches real AWS: the environment every part runs with, and its check.

Whatever the developer's shell holds (a profile, real keys, an SSO session, an endpoint
for some service), the local system and every process it starts see only:

- fake static credentials, so no credential provider (profile, SSO, container or
  instance metadata, web identity) is ever consulted;
- ``AWS_CONFIG_FILE`` and ``AWS_SHARED_CREDENTIALS_FILE`` pointing at an empty file,
  so no profile's ``endpoint_url``, ``services`` section or ``credential_process`` applies;
- ``AWS_ENDPOINT_URL`` on the local endpoint, for every service.

``use_only_local_aws`` applies that environment to the local system's own process, then
builds the clients the parts use under it and refuses to start if any would talk to
anything but the loopback address, or found credentials other than the fake ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3

if TYPE_CHECKING:
    from collections.abc import Mapping

REGION = "us-east-1"  # moto's default region; the template's pseudo parameters agree
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "herald-local",
    "AWS_SECRET_ACCESS_KEY": "herald-local-not-a-secret",  # noqa: S105 - a fake credential
}
# What the Lambda handler, the api and the worker build clients for.
SERVICES_USED = ("sqs", "sesv2", "dynamodb")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class RealAwsRefusedError(RuntimeError):
    """Something would make a client of the local system talk to real AWS."""


@dataclass(frozen=True)
class IsolatedEnvironment:
    """The environment for local processes, and what was dropped from the shell's."""

    variables: dict[str, str]
    dropped: tuple[str, ...]


def isolated_environment(base: Mapping[str, str], endpoint_url: str) -> IsolatedEnvironment:
    """``base`` without any AWS setting of its own, pointed at ``endpoint_url``.

    Every ``AWS_*`` variable of ``base`` is dropped (the names are returned, to tell the
    developer), then the fake credentials, region and local endpoint are set.
    """
    if not _is_loopback(endpoint_url):
        raise RealAwsRefusedError(
            f"the local AWS endpoint must be on the loopback address, not {endpoint_url}"
        )
    dropped = tuple(sorted(name for name in base if name.startswith("AWS_")))
    variables = {name: value for name, value in base.items() if not name.startswith("AWS_")}
    variables |= FAKE_CREDENTIALS | {
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        # No instance metadata look-up (it would time out, or find a real role on EC2).
        "AWS_EC2_METADATA_DISABLED": "true",
        # Outside Lambda there is no X-Ray daemon; Powertools' tracer stays off.
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    return IsolatedEnvironment(variables=variables, dropped=dropped)


def use_only_local_aws(environment: Mapping[str, str]) -> None:
    """Make ``environment`` this process's, and refuse if a client would leave 127.0.0.1.

    Raises
    ------
    RealAwsRefusedError
        A client of a service the parts use resolved a non-loopback endpoint, or boto3
        found credentials other than the fake ones.
    """
    os.environ.clear()
    os.environ.update(environment)
    session = boto3.session.Session()
    credentials = session.get_credentials()
    if credentials is None or credentials.access_key != FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"]:
        raise RealAwsRefusedError("boto3 found credentials other than the local fake ones")
    for service in SERVICES_USED:
        endpoint = session.client(service).meta.endpoint_url  # type: ignore[call-overload]
        if not _is_loopback(str(endpoint)):
            raise RealAwsRefusedError(
                f"a {service} client would talk to {endpoint}, not to the local endpoint"
            )


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in LOOPBACK_HOSTS
