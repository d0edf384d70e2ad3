"""What every benchmark hands to the report: figures beside their baselines and targets.

A benchmark module (``bench/<name>.py``) measures, builds one ``BenchResult`` and calls
``write()``; ``bench/results/<name>.json`` is then read by ``bench/report.py``, which
renders every section of ``bench/results/REPORT.md`` and draws a bar chart of each
figure against its baseline. A benchmark may add plots of its own (``plot_path``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    """One measured figure.

    ``baseline`` is the same quantity measured in the same run on the baseline (None when
    the figure has none, e.g. a size). ``target`` says the goal in words (``">= 0.5 x
    baseline"``, ``"< 50 ms"``) and ``met`` whether the figure reached it (None: no target).
    ``higher_is_better`` orients the ratio in the report.
    """

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    target: str | None = None
    met: bool | None = None
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        """value / baseline, when there is a non-zero baseline."""
        if not self.baseline:  # None or 0
            return None
        return self.value / self.baseline


@dataclass
class BenchResult:
    """One section of the report."""

    name: str  # file stem: bench/results/<name>.json
    title: str  # section heading
    command: str  # how to run this one alone
    method: str  # what was measured and how, in a few sentences of markdown
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # gaps, what limits a figure, caveats
    plots: list[str] = field(default_factory=list)  # file names in bench/results/
    extra: dict[str, Any] = field(default_factory=dict)  # raw data worth keeping

    def write(self, directory: Path = RESULTS_DIR) -> Path:
        """Write ``<directory>/<name>.json`` (``bench/results/``) and return its path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.json"
        data = asdict(self)
        path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> BenchResult:
        data = json.loads(path.read_text(encoding="utf-8"))
        figures = [Figure(**figure) for figure in data.pop("figures")]
        return cls(figures=figures, **data)


def plot_path(name: str, directory: Path = RESULTS_DIR) -> Path:
    """Where a benchmark saves a plot of its own (then lists ``name`` in ``plots``)."""
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


def at_least(value: float, baseline: float, factor: float) -> bool:
    """Whether ``value`` is at least ``factor`` x ``baseline``."""
    return value >= factor * baseline


def print_and_write(result: BenchResult, directory: Path = RESULTS_DIR) -> bool:
    """Print ``result`` as a run ends (its title, each figure beside its baseline and
    target, its notes), write it to ``directory``, and return whether it met every target
    it has."""
    print(f"\n{result.title}")
    for figure in result.figures:
        line = f"  {figure.name}: {figure.value:g} {figure.unit}"
        if figure.baseline is not None:
            line += f" vs {figure.baseline:g}"
            line += f" (x{figure.ratio:.2f})" if figure.ratio is not None else ""
        if figure.target is not None:
            line += f", target {figure.target}"
        if figure.met is not None:
            line += ": met" if figure.met else ": NOT met"
        print(line)
    for note in result.notes:
        print(f"  - {note}")
    print(f"written: {result.write(directory)}")
    return all(figure.met is not False for figure in result.figures)
