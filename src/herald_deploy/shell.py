"""Running the commands a deploy is made of, or only printing them (dry run).

The deploy steps build `Command`s and hand them to a `Shell`. `SubprocessShell` prints
each command and runs it; `DryRunShell` prints it and answers reads with the example
output the step supplies, so a dry run walks the exact same code path as a deploy.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TextIO

from herald_deploy.errors import DeployError

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class Command:
    """One program run: its arguments and the folder it runs in (None: the current one)."""

    argv: tuple[str, ...]
    cwd: Path | None = None

    def __str__(self) -> str:
        line = shlex.join(self.argv)
        return f"(cd {self.cwd} && {line})" if self.cwd else line


def command(*argv: str, cwd: Path | None = None) -> Command:
    """A `Command` from its arguments."""
    return Command(tuple(argv), cwd)


class Shell(Protocol):
    """Where a deploy step's commands go."""

    def run(self, cmd: Command) -> None:
        """Run a command that changes something; raise `DeployError` when it fails."""

    def read(self, cmd: Command, *, dry_run_output: str) -> str:
        """Run a command for its standard output; a dry run returns `dry_run_output`."""

    def pipe(self, producer: Command, consumer: Command) -> None:
        """`producer | consumer`, its output (a secret) never printed."""

    def write_file(self, path: Path, text: str) -> None:
        """Write a file the next commands use."""

    def say(self, message: str) -> None:
        """Tell the person watching what happens next."""


def _failure(cmd: Command, returncode: int, stderr: str = "") -> DeployError:
    detail = f"\n{stderr.strip()}" if stderr.strip() else ""
    return DeployError(f"`{cmd}` failed with exit code {returncode}{detail}")


@dataclass
class _Printing:
    """Where both shells print what they do: standard output, or `out`."""

    out: TextIO = field(default_factory=lambda: sys.stdout)

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)


@dataclass
class SubprocessShell(_Printing):
    """Prints every command, then runs it; any failure raises `DeployError`."""

    def run(self, cmd: Command) -> None:
        self._print(f"+ {cmd}")
        try:
            result = subprocess.run(list(cmd.argv), cwd=cmd.cwd, check=False)
        except FileNotFoundError as error:
            raise DeployError(f"`{cmd.argv[0]}` is not installed or not on PATH") from error
        if result.returncode != 0:
            raise _failure(cmd, result.returncode)

    def read(self, cmd: Command, *, dry_run_output: str) -> str:
        del dry_run_output  # only a dry run answers with it
        self._print(f"+ {cmd}")
        try:
            result = subprocess.run(
                list(cmd.argv), cwd=cmd.cwd, capture_output=True, text=True, check=False
            )
        except FileNotFoundError as error:
            raise DeployError(f"`{cmd.argv[0]}` is not installed or not on PATH") from error
        if result.returncode != 0:
            raise _failure(cmd, result.returncode, result.stderr)
        return result.stdout.strip()

    def pipe(self, producer: Command, consumer: Command) -> None:
        self._print(f"+ {producer} | {consumer}")
        try:
            produced = subprocess.run(
                list(producer.argv), capture_output=True, text=True, check=False
            )
            if produced.returncode != 0:
                raise _failure(producer, produced.returncode, produced.stderr)
            consumed = subprocess.run(
                list(consumer.argv), input=produced.stdout, text=True, check=False
            )
        except FileNotFoundError as error:
            raise DeployError(f"`{error.filename}` is not installed or not on PATH") from error
        if consumed.returncode != 0:
            raise _failure(consumer, consumed.returncode)

    def write_file(self, path: Path, text: str) -> None:
        self._print(f"+ write {path}: {text}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")

    def say(self, message: str) -> None:
        self._print(f"==> {message}")


@dataclass
class DryRunShell(_Printing):
    """Prints every command and file write instead of doing it; reads return the example."""

    def run(self, cmd: Command) -> None:
        self._print(f"+ {cmd}")

    def read(self, cmd: Command, *, dry_run_output: str) -> str:
        self._print(f"+ {cmd}")
        return dry_run_output

    def pipe(self, producer: Command, consumer: Command) -> None:
        self._print(f"+ {producer} | {consumer}")

    def write_file(self, path: Path, text: str) -> None:
        self._print(f"+ write {path}: {text}")

    def say(self, message: str) -> None:
        # Nothing ran: a progress line ("migrations applied", "live at <example URL>") is
        # what a real run would say, so it is labelled as such, never stated as a fact.
        self._print(f"==> [dry run, example outputs] {message}")
