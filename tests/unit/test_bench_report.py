"""The benchmark report: every figure beside its baseline, ratio and target, failures shown."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.report import write_report
from bench.result import BenchResult, Figure

if TYPE_CHECKING:
    from pathlib import Path


def api_result() -> BenchResult:
    return BenchResult(
        name="api",
        title="API",
        command="make bench ONLY=api",
        method="wrk against the api and a bare baseline.",
        figures=[
            Figure(
                name="POST /v1/messages",
                value=600.0,
                unit="req/s",
                baseline=1000.0,
                baseline_name="bare INSERT",
                target=">= 0.5 x baseline",
                met=True,
            ),
            Figure(
                name="POST p99",
                value=80.0,
                unit="ms",
                target="< 50 ms",
                met=False,
                higher_is_better=False,
            ),
        ],
        notes=["p99 is limited by the machine's two cores."],
    )


def test_a_result_survives_the_round_trip_through_its_file(tmp_path: Path) -> None:
    # Given a result written to a folder
    path = api_result().write(tmp_path)

    # Then reading it back gives the same result
    assert path == tmp_path / "api.json"
    assert BenchResult.read(path) == api_result()


def test_the_report_puts_each_figure_beside_its_baseline_ratio_and_target(
    tmp_path: Path,
) -> None:
    # Given one benchmark's result
    api_result().write(tmp_path)

    # When the report is written
    report = write_report(directory=tmp_path).read_text(encoding="utf-8")

    # Then the summary row has value, baseline, ratio, target and a tick
    assert (
        "| API | POST /v1/messages | 600 req/s | 1,000 req/s (bare INSERT) | 0.60 x "
        "| >= 0.5 x baseline | ✓ |"
    ) in report
    # and a missed target is marked as missed, with the note that says why
    assert "| API | POST p99 | 80 ms |  |  | < 50 ms | ✗ |" in report
    assert "- p99 is limited by the machine's two cores." in report
    # and the machine is named
    assert "logical cores" in report


def test_the_report_draws_a_chart_of_the_figures_with_a_baseline(tmp_path: Path) -> None:
    # Given a result with a baseline figure
    api_result().write(tmp_path)

    # When the report is written
    report = write_report(directory=tmp_path).read_text(encoding="utf-8")

    # Then a PNG chart is saved and linked from the section
    assert (tmp_path / "api.png").read_bytes().startswith(b"\x89PNG")
    assert "![API: api.png](api.png)" in report


def test_a_failed_benchmark_is_reported_as_failed(tmp_path: Path) -> None:
    # Given no results and a benchmark that failed
    # When the report is written
    report = write_report(failed=["relay"], directory=tmp_path).read_text(encoding="utf-8")

    # Then the summary says it failed
    assert "| relay | **the benchmark failed**" in report
