"""``python -m herald_local.parent_watch -- COMMAND...``: run COMMAND, bound to the runner's life.

On Linux it asks the kernel (``prctl(PR_SET_PDEATHSIG)``) to send COMMAND a SIGTERM when
the local system's process dies, however it dies (even ``kill -9``), then ``exec``s
COMMAND in its place: the setting survives ``exec``. So a part never outlives the
runner as an orphan. Elsewhere it only ``exec``s. The setting is made here, in a fresh
single-threaded process, because ``preexec_fn`` is unsafe in a threaded parent.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
PARENT_PID_VARIABLE = "HERALD_LOCAL_PARENT_PID"


def bind_to_parent() -> None:
    """Ask for SIGTERM when the parent dies; exit if it died already."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return  # not fatal: the runner still stops its parts itself
    # The parent may have died between fork and prctl: then nobody would signal us.
    expected = os.environ.get(PARENT_PID_VARIABLE)
    if expected and os.getppid() != int(expected):
        sys.exit(0)


def main(argv: list[str]) -> None:
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        sys.exit("usage: python -m herald_local.parent_watch -- COMMAND [ARGUMENT...]")
    bind_to_parent()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
