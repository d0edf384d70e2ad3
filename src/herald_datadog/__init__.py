"""Datadog monitors, dashboards and Synthetics as code: ``herald-datadog plan|apply``.

The definitions live in ``datadog/`` at the repository's root, one resource per YAML
file, in the shape of Datadog's v1 API. ``plan`` compares them with what Datadog holds
(resources tagged ``managed-by:herald-datadog`` and ``env:<env>``, matched by name) and
prints what would change; ``apply`` makes exactly those changes.
"""
