"""Lambda cold start of the task runner, and the size of its zipped artifact.

What it measures
    Lambda's init of the task runner: in a fresh python3.13, the time to import
    ``handlers.task_runner``, which validates its settings and builds its boto3 clients at
    import. The floor is ``import boto3`` measured the same way, in the same run.

How
    The artifact is built with ``src/Makefile``'s recipe (what ``sam build`` runs) for this
    machine's architecture: Lambda's is arm64, whose compiled wheels (pydantic_core) cannot
    be imported here, so ``LAMBDA_PLATFORM`` is overridden; everything else is the same
    recipe. boto3, which the Lambda runtime provides, is installed beside it at
    ``uv.lock``'s versions, with bytecode, as the runtime has it. Each build is copied
    read-only, and every run is a new process as Lambda's init is: ``python3.13 -I -S -B``
    (none of this machine's site-packages; no bytecode written: ``-I`` ignores
    ``PYTHONDONTWRITEBYTECODE``, so ``-B`` says it), ``sys.path`` = the artifact, then the
    runtime's boto3, then the standard library; the environment is
    the function's (fake credentials, region, queue URLs, table, sender). Runs of the floor
    and of each build are interleaved, in rotating order; figures are medians and p90s.

    Three builds are compared: the default recipe (bytecode only for the modules listed in
    ``src/lambda-init-modules.txt``, never-imported packages pruned), bytecode for every
    module (the recipe before), and source only. The zipped size is that of the real,
    arm64 build of each recipe, zipped as SAM zips it (deflate). ``-X importtime`` of one
    more run says which packages the handler's init spends its time in.

Run
    .venv/bin/python -m bench.cold_start [--runs 30]
    .venv/bin/python -m bench.cold_start --write-manifest   # regenerate the module list
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.lambda_support import artifact
from bench.result import RESULTS_DIR, BenchResult, Figure

NAME = "cold_start"
TARGET_FACTOR = 1.5
ZIP_BUDGET_MB = 5.0
LAMBDA_PLATFORM = "manylinux2014_aarch64"
MANIFEST_NAME = str(artifact.MANIFEST.relative_to(artifact.REPO))
FLOOR = "import boto3 (floor)"
CHOSEN = "bytecode for init modules, pruned (default)"
# label: (BYTECODE, PRUNE) of src/Makefile
BUILDS = {
    CHOSEN: ("init", True),
    "bytecode for every module (before)": ("all", False),
    "source only": ("none", False),
}
TIMED_IMPORT = """
import json, time
started = time.perf_counter()
import {module}
print(json.dumps({{"seconds": time.perf_counter() - started}}))
"""


@dataclass
class Subject:
    """One thing timed: the floor or a build; its init times and zipped size."""

    label: str
    module: str
    path: list[Path]
    zipped_mb: float | None = None
    seconds: list[float] = field(default_factory=list)

    def median_ms(self) -> float:
        return 1000 * statistics.median(self.seconds)

    def p90_ms(self) -> float:
        return 1000 * percentile(self.seconds, 90)


def percentile(values: list[float], pct: float) -> float:
    """The ``pct``th percentile, interpolated between the closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def zipped_megabytes(root: Path, scratch: Path) -> float:
    """The size of ``root`` zipped as SAM zips it (deflate, files only), in MB (10^6 bytes)."""
    archive = scratch / f"{root.name}.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zipped.write(path, path.relative_to(root))
    size = archive.stat().st_size / 1e6
    archive.unlink()
    return size


def write_manifest(scratch: Path) -> int:
    """Regenerate src/lambda-init-modules.txt from a source-only host build."""
    runtime = artifact.install_runtime_boto3(scratch / "runtime")
    built = artifact.build(scratch / "manifest-build", bytecode="none")
    modules = artifact.init_modules(built, runtime)
    artifact.MANIFEST.write_text("\n".join(modules) + "\n", encoding="utf-8")
    print(f"{artifact.MANIFEST}: {len(modules)} modules")
    return 0


@dataclass
class Prepared:
    """The floor and the builds to time, the default build's import profile, and how the
    committed module list compares with what the default build loads."""

    subjects: list[Subject]
    profile: dict[str, float]
    unlisted: list[str]  # loaded but not in the list: shipped without bytecode
    stale: list[str]  # listed but no longer loaded: bytecode shipped for nothing


def prepare(scratch: Path, labels: list[str]) -> Prepared:
    """Build each recipe (host copy, read-only) and its arm64 twin; the floor first.

    The builds and the runtime's boto3 install run three at a time: they are pip and
    compileall processes, mostly waiting on the disk and the package index.
    """
    with ThreadPoolExecutor(max_workers=3) as pool:
        runtime_job = pool.submit(artifact.install_runtime_boto3, scratch / "runtime")
        jobs = []
        for index, label in enumerate(labels):
            bytecode, prune = BUILDS[label]
            options: dict[str, Any] = {"bytecode": bytecode, "prune": prune}
            host = pool.submit(artifact.build, scratch / f"host-{index}", **options)
            arm64 = pool.submit(
                artifact.build,
                scratch / f"arm64-{index}",
                **options,
                pip_platform=LAMBDA_PLATFORM,
            )
            jobs.append((label, host, arm64))
        runtime = runtime_job.result()
        built = [(label, host.result(), arm64.result()) for label, host, arm64 in jobs]

    listed = set(artifact.MANIFEST.read_text(encoding="utf-8").split())
    loaded = set(artifact.init_modules(built[0][1], runtime))
    subjects = [
        Subject(
            label,
            "handlers.task_runner",
            [artifact.read_only_copy(host, scratch / f"task-{index}"), runtime],
            zipped_mb=zipped_megabytes(arm64, scratch),
        )
        for index, (label, host, arm64) in enumerate(built)
    ]
    chosen_path = subjects[0].path
    subjects.insert(0, Subject(FLOOR, "boto3", chosen_path))
    profile = artifact.import_profile(chosen_path)
    return Prepared(subjects, profile, sorted(loaded - listed), sorted(listed - loaded))


def measure(subjects: list[Subject], runs: int) -> None:
    """Time ``runs`` inits of each subject, interleaved, in rotating order."""
    for run in range(runs):
        shift = run % len(subjects)
        for subject in subjects[shift:] + subjects[:shift]:
            result = artifact.run_isolated(TIMED_IMPORT.format(module=subject.module), subject.path)
            subject.seconds.append(float(result["seconds"]))


def plot(subjects: list[Subject], directory: Path) -> str:
    """A box plot of every run's init time per subject, in ``directory``; its file name."""
    import matplotlib  # noqa: PLC0415 - only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    name = "cold_start_runs.png"
    figure, axes = plt.subplots(figsize=(8, 3.5))
    axes.boxplot(
        [[1000 * s for s in subject.seconds] for subject in subjects],
        orientation="horizontal",
        tick_labels=[subject.label for subject in subjects],
    )
    axes.set_xlabel("init time (ms): import the module in a fresh python3.13 -I -S")
    figure.tight_layout()
    directory.mkdir(parents=True, exist_ok=True)
    figure.savefig(directory / name, dpi=110)
    plt.close(figure)
    return name


def report(prepared: Prepared, runs: int) -> BenchResult:
    subjects, profile = prepared.subjects, prepared.profile
    floor, chosen, *others = subjects
    assert chosen.zipped_mb is not None
    before = next((s for s in others if s.label.endswith("(before)")), None)
    met_init = chosen.median_ms() <= TARGET_FACTOR * floor.median_ms()
    met_size = chosen.zipped_mb <= ZIP_BUDGET_MB
    top = [f"{package} {ms:.0f} ms" for package, ms in list(profile.items())[:8]]
    rows = [
        f"{s.label}: zip {s.zipped_mb:.2f} MB, init median {s.median_ms():.0f} ms, "
        f"p90 {s.p90_ms():.0f} ms"
        for s in subjects[1:]
    ]
    notes = [
        f"Init at {chosen.median_ms() / floor.median_ms():.2f} x the floor "
        f"({chosen.median_ms():.0f} ms against {floor.median_ms():.0f} ms for import boto3); "
        f"target <= {TARGET_FACTOR} x: {'met' if met_init else 'NOT met'}.",
        "Builds compared (size: arm64 build zipped; init: host build): " + "; ".join(rows) + ".",
        "Where the handler's init goes (-X importtime, self time by top-level package; "
        "'handlers' is the module's own code, i.e. building the three boto3 clients): "
        + ", ".join(top)
        + ".",
        "No X-Ray SDK at init: the runner writes its X-Ray subsegments itself "
        "(shared.tracing.XRayTracing); the SDK, which Powertools' Tracer imported, built two "
        "X-Ray clients and cost ~130 ms. Settings read the environment without "
        "pydantic-settings (asyncio, argparse, dotenv: ~35 ms).",
        "Measured on this machine's architecture (the same recipe with LAMBDA_PLATFORM "
        "overridden): arm64 Lambda CPUs differ, so compare the ratio, not the milliseconds.",
    ]
    if prepared.unlisted or prepared.stale:
        notes.insert(
            0,
            f"{MANIFEST_NAME} is stale ({len(prepared.unlisted)} modules loaded but not "
            f"listed, {len(prepared.stale)} listed but not loaded): regenerate it with "
            "`python -m bench.cold_start --write-manifest`.",
        )
    figures = [
        Figure(
            name="handler init, median",
            value=round(chosen.median_ms(), 1),
            unit="ms",
            baseline=round(floor.median_ms(), 1),
            baseline_name="import boto3",
            target=f"<= {TARGET_FACTOR} x baseline",
            met=met_init,
            higher_is_better=False,
        ),
        Figure(
            name="handler init, p90",
            value=round(chosen.p90_ms(), 1),
            unit="ms",
            baseline=round(floor.p90_ms(), 1),
            baseline_name="import boto3",
            higher_is_better=False,
        ),
        Figure(
            name="zipped artifact (arm64)",
            value=round(chosen.zipped_mb, 2),
            unit="MB",
            baseline=round(before.zipped_mb, 2) if before and before.zipped_mb else None,
            baseline_name="bytecode for every module" if before else None,
            target=f"<= {ZIP_BUDGET_MB:g} MB",
            met=met_size,
            higher_is_better=False,
        ),
    ]
    return BenchResult(
        name=NAME,
        title="Lambda cold start and artifact size",
        command="python -m bench.cold_start",
        method=(
            "`src/Makefile`'s recipe built for this machine's architecture, copied read-only; "
            "each run a fresh `python3.13 -I -S -B` (no bytecode written), only the "
            "artifact and a boto3 install (uv.lock's versions) standing in for the runtime's "
            "on `sys.path`, and the function's environment; the time to import "
            "`handlers.task_runner` (settings and boto3 clients built at import) against "
            f"`import boto3`, {runs} runs each, interleaved. Size: the arm64 build, deflated."
        ),
        figures=figures,
        notes=notes,
        extra={
            "runs": runs,
            "subjects": {
                s.label: {
                    "zipped_mb": s.zipped_mb,
                    "median_ms": round(s.median_ms(), 1),
                    "p90_ms": round(s.p90_ms(), 1),
                    "seconds": [round(x, 4) for x in s.seconds],
                }
                for s in subjects
            },
            "import_profile_ms": {k: round(v, 1) for k, v in profile.items()},
            "manifest_unlisted": prepared.unlisted,
            "manifest_stale": prepared.stale,
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="inits of each build and the floor")
    parser.add_argument(
        "--only-default",
        action="store_true",
        help="build and time only the default recipe (quicker; no comparison of builds)",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help=argparse.SUPPRESS)
    parser.add_argument(
        "--write-manifest",
        action="store_true",
        help=f"regenerate {artifact.MANIFEST.relative_to(artifact.REPO)} and exit",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    with tempfile.TemporaryDirectory(prefix="herald-cold-start-") as scratch_name:
        scratch = Path(scratch_name)
        try:
            if args.write_manifest:
                return write_manifest(scratch)
            labels = [CHOSEN] if args.only_default else list(BUILDS)
            prepared = prepare(scratch, labels)
            subjects = prepared.subjects
            before = {s.label: artifact.snapshot(s.path[0]) for s in subjects[1:]}
            measure(subjects, args.runs)
            written = [
                s.label for s in subjects[1:] if artifact.snapshot(s.path[0]) != before[s.label]
            ]
            if written:
                raise RuntimeError(f"a run wrote into the read-only artifact of {written}")
        finally:
            artifact.make_writable(scratch)

    for subject in subjects:
        size = f", zip {subject.zipped_mb:.2f} MB" if subject.zipped_mb is not None else ""
        print(
            f"{subject.label}: median {subject.median_ms():.0f} ms, "
            f"p90 {subject.p90_ms():.0f} ms{size}"
        )
    if prepared.unlisted or prepared.stale:
        print(f"WARNING: {MANIFEST_NAME} is stale: regenerate it with --write-manifest")
    result = report(prepared, args.runs)
    result.plots.append(plot(subjects, args.results_dir))
    for figure in result.figures:
        ratio = f" ({figure.ratio:.2f} x {figure.baseline_name})" if figure.ratio else ""
        verdict = "" if figure.met is None else (": met" if figure.met else ": NOT met")
        target = f", target {figure.target}" if figure.target else ""
        print(f"{figure.name}: {figure.value} {figure.unit}{ratio}{target}{verdict}")
    result.write(args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
