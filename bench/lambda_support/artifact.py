"""The task runner's Lambda artifact, built for this machine, and Python run as Lambda's init.

``build`` runs ``src/Makefile``'s recipe (the one ``sam build`` runs) with
``LAMBDA_PLATFORM`` set to this machine's architecture, since arm64's compiled wheels
cannot be imported here. ``install_runtime_boto3`` installs the boto3 that stands in for
the Lambda runtime's (the versions of ``uv.lock``). ``run_isolated`` runs a snippet the
way Lambda's init does: python3.13 with ``-I -S`` (no site-packages of this machine),
``-B`` and ``PYTHONDONTWRITEBYTECODE=1`` (``-I`` ignores the variable), only the artifact
and the runtime's boto3 on ``sys.path``, and the environment the handler reads.
``init_modules`` lists the artifact's modules the handler imports at init and on its first
batches: ``src/lambda-init-modules.txt``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

from bench.lambda_support.fakes import LAMBDA_ENV

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
MANIFEST = SRC / "lambda-init-modules.txt"
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer")
HOST_PLATFORMS = {"x86_64": "manylinux2014_x86_64", "aarch64": "manylinux2014_aarch64"}
BUILD_TIMEOUT = 300  # seconds; pip may have to download the host's wheels once


def python313() -> Path:
    """A python3.13, as ``scripts/find-python 3.13`` finds it (HERALD_PYTHON313 first)."""
    if os.environ.get("HERALD_PYTHON313"):
        return Path(os.environ["HERALD_PYTHON313"])
    found = subprocess.run(
        [str(REPO / "scripts" / "find-python"), "3.13"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return Path(found.stdout.strip())


def host_platform() -> str:
    """The pip platform tag of this machine's architecture."""
    machine = platform.machine()
    if machine not in HOST_PLATFORMS:
        raise RuntimeError(f"no manylinux platform known for {machine}")
    return HOST_PLATFORMS[machine]


def build(
    artifacts_dir: Path, *, bytecode: str = "init", prune: bool = True, pip_platform: str = ""
) -> Path:
    """Build the artifact into ``artifacts_dir`` with src/Makefile, for this machine.

    ``pip_platform`` overrides the machine (``manylinux2014_aarch64``: what Lambda runs).
    """
    subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-s",
            "-C",
            str(SRC),
            "build-TaskRunnerFunction",
            f"ARTIFACTS_DIR={artifacts_dir}",
            f"LAMBDA_PLATFORM={pip_platform or host_platform()}",
            f"BYTECODE={bytecode}",
            f"PRUNE={int(prune)}",
        ],
        env={**os.environ, "HERALD_PYTHON313": str(python313())},
        capture_output=True,
        text=True,
        check=True,
        timeout=BUILD_TIMEOUT,
    )
    return artifacts_dir


def locked_versions(names: tuple[str, ...] = RUNTIME_PACKAGES) -> dict[str, str]:
    """The versions ``uv.lock`` pins for ``names``."""
    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    return {p["name"]: p["version"] for p in lock["package"] if p["name"] in names}


def install_runtime_boto3(target: Path) -> Path:
    """Install boto3 (uv.lock's versions) for python3.13 into ``target``, with bytecode.

    The Lambda runtime ships boto3 compiled; pip compiles what it installs, so the floor
    (``import boto3``) and the handler both import it from bytecode, as in Lambda.
    """
    pins = [f"{name}=={version}" for name, version in sorted(locked_versions().items())]
    subprocess.run(
        [
            str(python313()),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--target",
            str(target),
            *pins,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=BUILD_TIMEOUT,
    )
    return target


def read_only_copy(source: Path, destination: Path) -> Path:
    """Copy ``source`` to ``destination`` and take write permission off every file and folder.

    As root the permission bits do not stop writes, so callers also check that nothing
    was written (``snapshot``); ``PYTHONDONTWRITEBYTECODE=1`` is what keeps Python from it.
    """
    shutil.copytree(source, destination, symlinks=True)
    for root, folders, files in os.walk(destination):
        for name in [*folders, *files]:
            path = Path(root) / name
            if not path.is_symlink():
                path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    destination.chmod(destination.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return destination


def make_writable(path: Path) -> None:
    """Give write permission back, so that a read-only copy can be removed."""
    for root, folders, _files in os.walk(path):
        Path(root).chmod(Path(root).stat().st_mode | stat.S_IWUSR)
        for name in folders:
            (Path(root) / name).chmod((Path(root) / name).stat().st_mode | stat.S_IWUSR)


def snapshot(root: Path) -> frozenset[str]:
    """Every path under ``root``, to show that a run wrote nothing there."""
    return frozenset(str(path.relative_to(root)) for path in root.rglob("*"))


def lambda_environment(**extra: str) -> dict[str, str]:
    """The environment of Lambda's init for the task runner: nothing from this shell."""
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        **LAMBDA_ENV,
        **extra,
    }


def run_isolated(
    code: str, path: list[Path], *, timeout: float = 60, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``code`` in a fresh python3.13 as Lambda's init would; return its JSON output.

    ``code`` sees only ``path`` (then the standard library) and prints one JSON object
    as its last line of stdout.
    """
    prelude = f"import sys; sys.path[:0] = {[str(p) for p in path]!r}\n"
    completed = subprocess.run(
        [str(python313()), "-I", "-S", "-B", "-c", prelude + code],
        env=env or lambda_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd="/",
    )
    if completed.returncode != 0:
        raise RuntimeError(f"isolated run failed ({completed.returncode}):\n{completed.stderr}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


# Imports the handler with its boto3 clients on the in-memory fakes, handles a batch of new
# tasks, the same batch again (replays) and a batch with a body that is not a task, an
# unknown kind and an invalid payload, then lists the artifact's modules that were loaded.
_MANIFEST_CODE = """
import json, os, sys
from pathlib import Path
from unittest import mock
import fakes
artifact = Path(sys.path[0]).resolve()
aws = fakes.FakeAws()
with mock.patch("boto3.session.Session.client", aws.client):
    import handlers.task_runner as module
os.environ["_X_AMZN_TRACE_ID"] = (
    "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=0"
)
event = fakes.sqs_event(1, 10)
bad = fakes.sqs_event(100, 3)
bad["Records"][0]["body"] = "not a task"
bad["Records"][1]["body"] = bad["Records"][1]["body"].replace("email.send", "sms.send")
bad["Records"][2]["body"] = bad["Records"][2]["body"].replace(
    '"to":["reader102@example.org"]', '"to":[]'
)
responses = [module.lambda_handler(e, fakes.LambdaContext()) for e in (event, event, bad)]
assert all(r == {"batchItemFailures": []} for r in responses), responses
assert len(aws.sesv2.sent) == 10, len(aws.sesv2.sent)
root = str(artifact) + "/"
loaded = sorted(
    m.__file__[len(root):] for m in list(sys.modules.values())
    if getattr(m, "__file__", None) and m.__file__.startswith(root)
)
print(json.dumps({"modules": loaded}))
"""


_IMPORT_TIME_CODE = """
import json
import handlers.task_runner
print(json.dumps({}))
"""


def import_profile(path: list[Path]) -> dict[str, float]:
    """Milliseconds the handler's import spends in each top-level package (``-X importtime``).

    Self times, summed by top-level package: ``handlers`` is the handler module's own code,
    which builds the boto3 clients.
    """
    prelude = f"import sys; sys.path[:0] = {[str(p) for p in path]!r}\n"
    completed = subprocess.run(
        [str(python313()), "-I", "-S", "-B", "-X", "importtime", "-c", prelude + _IMPORT_TIME_CODE],
        env=lambda_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd="/",
    )
    by_package: dict[str, float] = {}
    for line in completed.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = line.removeprefix("import time:").split("|")
        package = name.strip().split(".")[0]
        by_package[package] = by_package.get(package, 0.0) + int(self_us) / 1000
    return dict(sorted(by_package.items(), key=lambda item: item[1], reverse=True))


def init_modules(artifact: Path, runtime: Path) -> list[str]:
    """The artifact's dependency modules the handler loads at init and on its first batches.

    First-party modules (``shared``, ``handlers``) are left out: the build compiles them all.
    """
    result = run_isolated(
        _MANIFEST_CODE,
        [artifact, runtime, REPO / "bench" / "lambda_support"],
        env=lambda_environment(),
        timeout=120,
    )
    return [
        module
        for module in result["modules"]
        if module.endswith(".py") and not module.startswith(("shared/", "handlers/"))
    ]
