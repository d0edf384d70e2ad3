"""The API, relay and end-to-end benchmarks run end to end at tiny sizes and write sane
results (into a temp folder: the real bench/results/ is left alone)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from bench import api, end_to_end, relay
from bench.result import BenchResult


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"


def read_result(results_dir: Path, name: str) -> BenchResult:
    result = BenchResult.read(results_dir / f"{name}.json")
    for figure in result.figures:
        assert math.isfinite(figure.value) and figure.value >= 0, figure
        if figure.baseline is not None:
            assert math.isfinite(figure.baseline) and figure.baseline > 0, figure
    for plot in result.plots:
        assert (results_dir / plot).stat().st_size > 0
    return result


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")
def test_api_benchmark_measures_herald_beside_the_baseline(results_dir: Path) -> None:
    # When
    code = api.main(
        ["--seconds", "1", "--warmup", "1", "--profile-requests", "20"]
        + ["--results-dir", str(results_dir)]
    )

    # Then
    assert code == 0
    result = read_result(results_dir, "api")
    figures = {figure.name: figure for figure in result.figures}
    for endpoint in ("POST", "GET"):
        assert figures[f"{endpoint} requests/s"].value > 0
        assert figures[f"{endpoint} requests/s"].met is not None
        assert (
            0 < figures[f"{endpoint} p50 latency"].value <= figures[f"{endpoint} p99 latency"].value
        )
    assert set(result.extra["profiles"]) == {"POST", "GET"}
    assert not any("errors" in note for note in result.notes)


def test_relay_benchmark_moves_every_row(results_dir: Path) -> None:
    # When
    code = relay.main(["--rows", "60", "--rounds", "1", "--results-dir", str(results_dir)])

    # Then
    assert code == 0
    result = read_result(results_dir, "relay")
    (figure,) = result.figures
    assert figure.value > 0 and figure.baseline
    assert [phase["rows"] for phase in result.extra["phases"]] == [60, 60]


def test_end_to_end_benchmark_sends_every_email_once(results_dir: Path) -> None:
    # When
    code = end_to_end.main(
        ["--emails", "20", "--concurrency", "4", "--timeout", "120"]
        + ["--results-dir", str(results_dir)]
    )

    # Then
    assert code == 0
    result = read_result(results_dir, "end_to_end")
    figures = {figure.name: figure for figure in result.figures}
    assert figures["messages sent"].value == 20 and figures["messages sent"].met
    assert figures["SES sends per message"].value == 1 and figures["SES sends per message"].met
    assert 0 < figures["due-to-sent latency p50"].value <= figures["due-to-sent latency p99"].value
