"""A real PostgreSQL server in a private data directory, for tests, benchmarks and local runs.

It uses the PostgreSQL binaries of this machine: ``HERALD_PG_BIN`` if set, else
``pg_config --bindir``, else Debian's ``/usr/lib/postgresql/<version>/bin``, else ``PATH``.
PostgreSQL refuses to run as root, so when this process is root the server runs as the
``postgres`` system user (created by Debian's package; created here if missing).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

SERVER_USER = "postgres"
# The superuser that owns the schema and runs the migrations (as the RDS master user does).
DATABASE_USER = "herald"
# The role migration 0011 creates, which the api, worker and CLI log in as (as in AWS).
APP_USER = "herald_app"
# Settings that make a throwaway server fast; never for data you want to keep.
EPHEMERAL_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PostgresNotFoundError(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bin_dir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    candidates: list[Path] = []
    if configured := os.environ.get("HERALD_PG_BIN"):
        candidates.append(Path(configured))
    if pg_config := shutil.which("pg_config"):
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0:
            candidates.append(Path(result.stdout.strip()))
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True
    )
    candidates.extend(debian)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise PostgresNotFoundError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: run `make install`, or install "
        "PostgreSQL (Debian: apt-get install postgresql) or set HERALD_PG_BIN to its bin folder"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this process's) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVER_USER,
            ],
            check=True,
        )
        return pwd.getpwnam(SERVER_USER)


@dataclass
class LocalPostgres:
    """A PostgreSQL server whose data lives in ``data_dir``.

    Parameters
    ----------
    data_dir
        Created and initialised on first start; kept between runs unless removed.
    port
        The loopback TCP port; a free one by default.
    settings
        Server settings (``postgres -c name=value``), e.g. ``EPHEMERAL_SETTINGS``.
    """

    data_dir: Path
    port: int = field(default_factory=free_port)
    settings: dict[str, str] = field(default_factory=dict)
    bin_dir: Path = field(default_factory=find_bin_dir)

    @property
    def socket_dir(self) -> Path:
        return self.data_dir / "socket"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    def url(
        self,
        database: str = DATABASE_USER,
        *,
        driver: str = "postgresql+psycopg",
        user: str = DATABASE_USER,
    ) -> str:
        """A SQLAlchemy URL for ``database`` over TCP, as the ``herald`` superuser (who
        migrates) unless ``user`` says otherwise. The server trusts local connections, so
        the URL holds no password."""
        return f"{driver}://{user}@127.0.0.1:{self.port}/{database}"

    def app_url(self, database: str = DATABASE_USER, *, driver: str = "postgresql+psycopg") -> str:
        """A URL for ``database`` as ``herald_app``, the role the api, worker and CLI use
        (it exists once migration 0011 ran; it may change rows, not the schema)."""
        return self.url(database, driver=driver, user=APP_USER)

    def start(self) -> Self:
        """Initialise the data directory if needed, start the server and wait until it accepts."""
        account = _server_account()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if account is not None:
            # The server's account must reach its folders; the data stays private to it.
            for folder in (self.data_dir, self.socket_dir):
                os.chown(folder, account.pw_uid, account.pw_gid)
            self._make_traversable(self.data_dir)
        if not (self.pgdata / "PG_VERSION").is_file():
            self._run(
                "initdb", "--pgdata", str(self.pgdata), "--username", DATABASE_USER,
                "--auth", "trust", "--encoding", "UTF8", "--locale", "C", "--no-instructions",
            )  # fmt: skip
        options = [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.socket_dir}"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        self._run(
            "pg_ctl", "start", "--wait", "--timeout", "60", "--pgdata", str(self.pgdata),
            "--log", str(self.log_file), "-o", " ".join(options),
        )  # fmt: skip
        self.ensure_database(DATABASE_USER)
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended, data is kept)."""
        if (self.pgdata / "postmaster.pid").is_file():
            self._run("pg_ctl", "stop", "--wait", "--mode", "fast", "--pgdata", str(self.pgdata))

    def is_running(self) -> bool:
        """Whether a server runs on this data directory (``pg_ctl status``), e.g. one a
        previous run left behind when it was killed."""
        if not (self.pgdata / "PG_VERSION").is_file():
            return False
        command = [str(self.bin_dir / "pg_ctl"), "status", "--pgdata", str(self.pgdata)]
        if _server_account() is not None:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        return subprocess.run(command, capture_output=True, check=False).returncode == 0

    def ensure_database(self, name: str) -> None:
        """Create database ``name`` unless it exists."""
        exists = self.psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists.strip() != "1":
            self.psql("postgres", f'CREATE DATABASE "{name}"')

    def psql(self, database: str, sql: str) -> str:
        """Run one SQL statement through psql and return its unaligned output."""
        psql = self.bin_dir / "psql"
        command = [
            str(psql) if psql.is_file() else "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
        ]
        command += [
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            DATABASE_USER,
            "-d",
            database,
            "-c",
            sql,
        ]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _run(self, program: str, *arguments: str) -> None:
        command = [str(self.bin_dir / program), *arguments]
        if _server_account() is not None:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = ""
            with contextlib.suppress(OSError):
                log = self.log_file.read_text()[-2_000:]
            output = result.stderr.strip() or result.stdout.strip()
            raise RuntimeError(f"{program} failed ({result.returncode}): {output}\n{log}")

    @staticmethod
    def _make_traversable(folder: Path) -> None:
        """Let the server's account walk down to ``folder`` (temp folders are 0700)."""
        for parent in [folder, *folder.parents]:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)
