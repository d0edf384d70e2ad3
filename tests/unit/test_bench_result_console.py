"""A benchmark's closing lines: its figures printed against their targets, its result
written, and whether it met them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.result import BenchResult, Figure, print_and_write

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def result_of(*figures: Figure) -> BenchResult:
    return BenchResult(
        name="example", title="Example run", command="python -m bench.example", method="-",
        figures=list(figures), notes=["One note."],
    )  # fmt: skip


def test_a_missed_target_is_printed_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a result with one target met and one missed
    result = result_of(
        Figure("sent", 10, "messages", target="all 10", met=True),
        Figure("sends each", 1.2, "sends", target="exactly 1 each", met=False),
    )

    # When it is printed and written
    met = print_and_write(result, tmp_path)

    # Then it says the target was missed, beside each figure, and the result is on disk
    assert met is False
    printed = capsys.readouterr().out.splitlines()
    assert "  sent: 10 messages, target all 10: met" in printed
    assert "  sends each: 1.2 sends, target exactly 1 each: NOT met" in printed
    assert "  - One note." in printed
    assert BenchResult.read(tmp_path / "example.json") == result


def test_figures_without_targets_meet_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a result whose figures have no target, one with a baseline
    result = result_of(
        Figure("latency p50", 0.25, "s"),
        Figure("rows/s relayed", 900, "rows/s", baseline=1_000),
    )

    # When it is printed and written
    met = print_and_write(result, tmp_path)

    # Then nothing was missed, and the baseline is printed beside its figure
    assert met is True
    printed = capsys.readouterr().out.splitlines()
    assert "  latency p50: 0.25 s" in printed
    assert "  rows/s relayed: 900 rows/s vs 1000 (x0.90)" in printed
