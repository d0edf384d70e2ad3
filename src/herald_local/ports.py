"""The local system's ports: checked free before anything starts, with a clear message."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass


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
