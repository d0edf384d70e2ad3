"""The one exception a deploy step raises: it stops the deploy with a message for people."""

from __future__ import annotations


class DeployError(Exception):
    """A deploy step failed; the message says what failed and what to do about it."""
