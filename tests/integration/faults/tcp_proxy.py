"""A TCP proxy in front of a local server, to cut the network to it and to slow it down.

Nothing in Herald can tell it from the server itself: the clients under test are simply
given the proxy's address. ``cut()`` resets every open connection and every new one
until ``restore()``, as a network outage or a failing load balancer does.
``delay_seconds`` holds back each chunk a client sends, so a fast local server behaves
like a slow remote one.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from typing import Self

CHUNK_BYTES = 65_536


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port``, one thread per direction."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        delay_seconds: float = 0,
        watch: bytes | None = None,
    ) -> None:
        self.delay_seconds = delay_seconds
        self._watch = watch
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._down = False
        self._closed = False
        self.refused = 0  # connections reset while cut
        self.watched = 0  # chunks from clients holding ``watch`` (e.g. an operation's name)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()
        return self

    def cut(self) -> None:
        """Reset every open connection, and refuse new ones until ``restore()``."""
        with self._lock:
            self._down = True
            connections, self._connections = self._connections, set()
        for connection in connections:
            _reset(connection)

    def restore(self) -> None:
        with self._lock:
            self._down = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                down = self._down
            if down:
                self.refused += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection(self._target, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._connections.update((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while chunk := source.recv(CHUNK_BYTES):
                if from_client:
                    if self._watch is not None and self._watch in chunk:
                        with self._lock:
                            self.watched += 1
                    if self.delay_seconds:
                        time.sleep(self.delay_seconds)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with self._lock:
                    self._connections.discard(end)
                _reset(end)


def _reset(connection: socket.socket) -> None:
    """Drop a connection at once, as a network failure does to its peer.

    ``shutdown`` first: closing a socket another thread is blocked reading does not wake
    that thread, and the peer would then wait for its read timeout instead of failing.
    """
    with contextlib.suppress(OSError):
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        connection.close()
