"""Reading the spans ddtrace finished, in a test: recorded in memory, never sent."""

from __future__ import annotations

from ddtrace._trace.processor import TraceProcessor
from ddtrace.trace import Span


class SpanRecorder(TraceProcessor):
    """Keeps every finished span and hands nothing on: no trace is ever written."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: list[Span] = []

    def process_trace(self, trace: list[Span]) -> list[Span] | None:
        self.spans.extend(trace)
        return None

    def named(self, name: str) -> list[Span]:
        return [span for span in self.spans if span.name == name]


def chain_reaches(spans: list[Span], span: Span, ancestor_id: int) -> bool:
    """Whether following ``span``'s parents through ``spans`` reaches ``ancestor_id``."""
    by_id = {s.span_id: s for s in spans}
    parent_id = span.parent_id
    while parent_id:
        if parent_id == ancestor_id:
            return True
        parent = by_id.get(parent_id)
        parent_id = parent.parent_id if parent is not None else None
    return False
