"""The local system's TCP ports: checked free before anything starts, with a clear message.

(TCP ports, as opposed to ``shared/ports.py``'s interfaces the adapters implement.)
"""

from __future__ import annotations

import errno
import json
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path


@dataclass(frozen=True)
class PortRequest:
    """A port a part will listen on, and how a person changes it."""

    part: str
    port: int
    flag: str
    variable: str


class PortInUseError(RuntimeError):
    """A port the local system needs is taken."""


def check_ports_free(requests: list[PortRequest]) -> None:
    """Raise ``PortInUseError`` naming every taken port and how to choose another.

    A port counts as taken when a listening socket holds it on 127.0.0.1 (the bind
    uses SO_REUSEADDR, as the servers do, so a recently closed connection does not count).
    """
    problems: list[str] = []
    seen: dict[int, str] = {}
    for request in requests:
        if request.port in seen:
            problems.append(
                f"port {request.port} is chosen for both {seen[request.port]} and "
                f"{request.part}: change one ({request.flag} or {request.variable})"
            )
            continue
        seen[request.port] = request.part
        if not is_port_free(request.port):
            problems.append(
                f"port {request.port} ({request.part}) is in use by another program: stop it, "
                f"or choose another port with {request.flag} PORT (or {request.variable}=PORT)"
            )
    if problems:
        raise PortInUseError("\n".join(problems))


def is_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


RUNNING_PORTS_FILE = "running-ports.json"


def write_running_ports(data_dir: Path, ports: Mapping[str, int]) -> None:
    """Record a running system's ports in its data directory, for ``herald-local mailbox``."""
    record = {"pid": os.getpid(), "ports": dict(ports)}
    (data_dir / RUNNING_PORTS_FILE).write_text(json.dumps(record), encoding="utf-8")


def remove_running_ports(data_dir: Path) -> None:
    (data_dir / RUNNING_PORTS_FILE).unlink(missing_ok=True)


def read_running_ports(data_dir: Path) -> dict[str, int]:
    """The ports of the system running on ``data_dir``; empty when none runs there."""
    try:
        record = json.loads((data_dir / RUNNING_PORTS_FILE).read_text(encoding="utf-8"))
        os.kill(int(record["pid"]), 0)  # a record a killed run left behind does not count
        return {str(name): int(port) for name, port in record["ports"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
