"""``make bench``: every benchmark in turn, each in its own process, then the report.

    .venv/bin/python -m bench              # all of them, then bench/results/REPORT.md
    .venv/bin/python -m bench api relay    # only these, then the report again

A benchmark that fails is reported as failed (its previous result, if any, is removed so
the report never shows stale figures as current) and the others still run; the command
exits non-zero if any failed.
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.report import write_report
from bench.result import RESULTS_DIR

# In the order of issue 9; the machine should be otherwise idle while they run.
BENCHMARKS = ("task_runner", "cold_start", "api", "relay", "end_to_end", "pacing", "faults")


def main(argv: list[str]) -> int:
    unknown = [name for name in argv if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    failed: list[str] = []
    for name in argv or BENCHMARKS:
        print(f"\n=== bench.{name}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", f"bench.{name}"])
        print(f"=== bench.{name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
            (RESULTS_DIR / f"{name}.json").unlink(missing_ok=True)
    report = write_report(failed=failed)
    print(f"\nreport: {report}")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
