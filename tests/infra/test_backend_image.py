"""The backend image: its Dockerfile lints, and it installs exactly the locked set the tests use.

No Docker engine is needed: the image's dependency set is installed into a fresh
virtualenv, with the code copied the way the Dockerfile copies it, and imported there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from ecs_service.settings import RDS_CA_BUNDLE
from tests.conftest import REPO_ROOT, require_tool

DOCKERFILE = REPO_ROOT / "ecs_service" / "Dockerfile"
RDS_BUNDLE_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
REQUIREMENTS = REPO_ROOT / "ecs_service" / "requirements.txt"
EXPORT_ARGS = [
    "export",
    "--frozen",
    "--no-dev",
    "--extra",
    "service",
    "--no-emit-project",
    "--format",
    "requirements-txt",
]


def body(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [require_tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_requirements_match_a_fresh_export_of_the_lock(tmp_path: Path) -> None:
    fresh = tmp_path / "requirements.txt"
    subprocess.run(
        [require_tool("uv"), *EXPORT_ARGS, "-o", str(fresh)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    assert body(REQUIREMENTS.read_text()) == body(fresh.read_text()), "run `make lock`"


def test_dockerfile_installs_the_hashed_requirements_and_runs_unprivileged() -> None:
    dockerfile = DOCKERFILE.read_text()
    assert "pip install --no-deps --require-hashes -r /tmp/requirements.txt" in dockerfile
    assert "FROM python:3.13-slim AS build" in dockerfile
    assert "USER 10001:10001" in dockerfile
    assert "HEALTHCHECK" in dockerfile


def test_image_ships_the_rds_ca_bundle_where_the_settings_verify_the_server_with_it() -> None:
    # Given the Dockerfile's final stage (after the build stage's FROM)
    final_stage = DOCKERFILE.read_text().split("\nFROM ")[-1]

    # When its remote ADDs are read (source and destination, across a continued line)
    fetched = re.findall(r"^ADD --chmod=0644 (\S+)\s+\\?\s*(\S+)$", final_stage, re.MULTILINE)

    # Then it fetches AWS's global RDS bundle, readable by the non-root user, to the path
    # verify-full connections name by default
    assert fetched == [(RDS_BUNDLE_URL, RDS_CA_BUNDLE)]


def test_image_dependency_set_runs_every_command(tmp_path: Path) -> None:
    # Given a virtualenv of only the image's requirements, and the code laid out as in the image
    python = subprocess.run(
        [str(REPO_ROOT / "scripts" / "find-python")], capture_output=True, text=True, check=True
    ).stdout.strip()
    venv = tmp_path / "image"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [
            require_tool("uv"),
            "pip",
            "install",
            "--python",
            str(venv / "bin" / "python"),
            "--no-deps",
            "--require-hashes",
            "-q",
            "-r",
            str(REQUIREMENTS),
        ],
        check=True,
        capture_output=True,
    )
    app = venv / "app"
    shutil.copytree(REPO_ROOT / "src" / "shared", app / "shared")
    shutil.copytree(REPO_ROOT / "ecs_service", app / "ecs_service")

    # When each command's modules are imported there, Then nothing is missing
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(app), "HOME": str(tmp_path)}
    modules = ["ecs_service.cli", "ecs_service.api.app", "ecs_service.worker.process"]
    modules += ["ecs_service.db.migrations", "uvicorn", "uvloop", "httptools"]
    probe = "import " + ", ".join(modules)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "ecs_service", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "{api,worker,migrate,db,tenants,keys,suppressions}" in result.stdout
