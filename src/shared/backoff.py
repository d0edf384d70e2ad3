"""Doubling pauses for a loop that retries after failures: the worker's loops and the
api's revocation listener wait this way, each with its own first pause and cap."""

from __future__ import annotations


class Backoff:
    """Pauses that double after each consecutive failure, from ``first`` up to ``maximum``
    seconds; a success starts over from ``first``.

    Parameters
    ----------
    maximum
        The longest pause, in seconds.
    first
        The pause after the first failure, in seconds (``maximum`` if that is shorter).
    """

    def __init__(self, maximum: float, *, first: float = 0.5) -> None:
        self.maximum = maximum
        self.first = first
        self._pause = 0.0

    def failed(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        self._pause = min(self.maximum, self._pause * 2 if self._pause else self.first)
        return self._pause

    def succeeded(self) -> None:
        """Forget the failures: the next one waits ``first`` again."""
        self._pause = 0.0
