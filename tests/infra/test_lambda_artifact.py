"""`sam build` makes a lean python3.13 / arm64 artifact offline, without Docker."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.infra.conftest import SamBuild, python313

RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")
ELF_MACHINE_AARCH64 = 183  # EM_AARCH64 in the ELF header's e_machine field
# The zipped artifact's budget (issue 9). It measures 4.6 MB: the dependencies' sources less
# what the task runner never imports (src/Makefile: PRUNED), and python3.13 bytecode for the
# modules it imports at init and on its first batch (src/lambda-init-modules.txt), which
# saves every cold start from compiling powertools and pydantic again. Bytecode for every
# module made it 7.6 MB. The budget catches a dependency that bloats it, or boto3/botocore
# (13 MB zipped) creeping back in.
ZIP_BUDGET_BYTES = 5_000_000
# The dependency modules that ship bytecode; first-party packages always do.
INIT_MODULES = (REPO_ROOT / "src" / "lambda-init-modules.txt").read_text().split()
FIRST_PARTY = ("handlers", "shared")
# Never imported by the task runner, so left out (src/Makefile: PRUNED).
PRUNED = ("pydantic/v1", "dns", "aws_lambda_powertools/event_handler", "wrapt-stubs")


@dataclass(frozen=True)
class BuiltArtifact:
    """The task runner's build folder (what SAM zips) and how long `sam build` took."""

    root: Path
    seconds: float
    log: str


@pytest.fixture(scope="module")
def built(sam_build: SamBuild) -> BuiltArtifact:
    """The task runner's part of the session's one `sam build` of the whole application."""
    return BuiltArtifact(
        sam_build.build_dir / "TaskRunnerFunction", sam_build.seconds, sam_build.log
    )


def elf_machine(path: Path) -> int:
    """The e_machine field of an ELF file's header (little-endian, as on arm64 and x86-64)."""
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return int.from_bytes(header[18:20], "little")


def test_sam_build_succeeds_offline_without_docker(
    built: BuiltArtifact, record_property: Callable[[str, object], None]
) -> None:
    # Given `sam build` ran with no AWS account and no Docker engine
    record_property("sam_build_seconds", round(built.seconds, 1))

    # Then src/Makefile built the function's folder
    assert "CustomMakeBuilder:MakeBuild" in built.log
    assert built.root.is_dir()


def test_artifact_holds_the_handler_and_the_shared_library(built: BuiltArtifact) -> None:
    assert (built.root / "handlers" / "task_runner.py").is_file()
    assert (built.root / "shared" / "__init__.py").is_file()


def test_pydantic_core_is_compiled_for_python_313_on_linux_arm64(built: BuiltArtifact) -> None:
    # Given pydantic_core's compiled extension
    [extension] = (built.root / "pydantic_core").glob("_pydantic_core*.so")

    # Then its name and its ELF header both say CPython 3.13 on aarch64 Linux
    assert extension.name == "_pydantic_core.cpython-313-aarch64-linux-gnu.so"
    assert elf_machine(extension) == ELF_MACHINE_AARCH64


def test_every_native_extension_is_built_for_arm64(built: BuiltArtifact) -> None:
    extensions = list(built.root.rglob("*.so"))

    assert extensions
    for extension in extensions:
        assert elf_machine(extension) == ELF_MACHINE_AARCH64, extension


def test_artifact_leaves_out_what_the_lambda_runtime_provides(built: BuiltArtifact) -> None:
    present = [
        path.name
        for path in built.root.iterdir()
        if path.name in RUNTIME_PROVIDED
        or path.name.startswith(tuple(f"{n}-" for n in RUNTIME_PROVIDED))
    ]
    assert present == []


def compiled_path(source: Path) -> Path:
    return source.parent / "__pycache__" / f"{source.stem}.cpython-313.pyc"


def test_init_modules_ship_as_unchecked_python_313_bytecode_when_a_313_builds_them(
    built: BuiltArtifact,
) -> None:
    # Given the modules the handler imports at init, and the first-party ones
    first_party = [p for name in FIRST_PARTY for p in (built.root / name).rglob("*.py")]
    listed = [built.root / module for module in INIT_MODULES]
    assert first_party
    assert listed

    if python313() is None:
        # Then, without a python3.13 on this machine, the build ships source only rather
        # than bytecode no Lambda can use, and says so
        assert list(built.root.rglob("*.pyc")) == []
        assert "WARNING" in built.log
        return

    # Then each has its 3.13 bytecode, marked "unchecked hash" (PEP 552 flags = 0b01) so
    # unzipping's new mtimes don't make it stale
    for source in [*first_party, *listed]:
        assert source.is_file(), source
        assert compiled_path(source).is_file(), source
    for name in ("handlers/task_runner.py", "shared/__init__.py", "pydantic/main.py"):
        header = compiled_path(built.root / name).read_bytes()[:8]
        assert int.from_bytes(header[4:8], "little") == 0b01, name


def test_modules_never_imported_at_init_ship_as_source_only(built: BuiltArtifact) -> None:
    # Given a dependency module the handler does not import (only type checkers do)
    source = built.root / "aws_lambda_powertools" / "utilities" / "typing" / "lambda_context.py"
    assert str(source.relative_to(built.root)) not in INIT_MODULES

    # Then its source ships, for the rare run that needs it, without bytecode
    assert source.is_file()
    assert not compiled_path(source).exists()


def test_artifact_leaves_out_what_the_task_runner_never_imports(built: BuiltArtifact) -> None:
    assert [name for name in PRUNED if (built.root / name).exists()] == []
    assert list(built.root.rglob("*.pyi")) == []


def test_artifact_carries_no_bytecode_for_other_pythons(built: BuiltArtifact) -> None:
    stray = [path for path in built.root.rglob("*.pyc") if ".cpython-313." not in path.name]

    assert stray == []


def test_artifact_zips_within_its_size_budget(built: BuiltArtifact, tmp_path: Path) -> None:
    # Given the artifact zipped the way SAM zips it (deflate)
    archive = tmp_path / "task-runner.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(built.root.rglob("*")):
            if path.is_file():
                zipped.write(path, path.relative_to(built.root))

    # Then it stays within the budget
    assert archive.stat().st_size <= ZIP_BUDGET_BYTES
