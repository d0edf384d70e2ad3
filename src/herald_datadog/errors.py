"""The exceptions that end a run, each with a message for people and its exit code."""

from __future__ import annotations


class HeraldDatadogError(Exception):
    """A run failed; the message says what failed and what to do about it."""

    exit_code = 1


class DefinitionError(HeraldDatadogError):
    """A definition under ``datadog/`` or the command's configuration is invalid: exit 2.

    Nothing was sent to Datadog; fix the file (or the option, or the variable) named in
    the message.
    """

    exit_code = 2


class DatadogApiError(HeraldDatadogError):
    """Datadog refused a request or could not be reached: exit 1, with the API's message."""

    exit_code = 1
