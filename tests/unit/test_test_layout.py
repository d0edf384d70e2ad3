"""Where test code lives and who may import it (issue 16): what tests share is in
tests/support/ (or a conftest), a test module never imports another, and nothing outside
tests/ (the benchmarks, the packages) imports test code."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT


def imported_modules(path: Path) -> set[str]:
    """The absolute module names ``path`` imports (``from a.b import c``: a.b and a.b.c)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def python_files(*folders: str) -> list[Path]:
    return [
        path
        for folder in folders
        for path in sorted((REPO_ROOT / folder).rglob("*.py"))
        if ".venv" not in path.parts and "node_modules" not in path.parts
    ]


def test_no_test_module_imports_another_test_module() -> None:
    # Given every Python file under tests/
    files = python_files("tests")

    # When their imports are read
    test_modules = [
        (str(path.relative_to(REPO_ROOT)), name)
        for path in files
        for name in imported_modules(path)
        if name.startswith("tests.") and name.rpartition(".")[2].startswith("test_")
    ]

    # Then none names a test module
    assert test_modules == []


def test_the_benchmarks_and_the_packages_import_no_test_code() -> None:
    # Given the benchmarks and every package the project ships
    files = python_files("bench", "src", "ecs_service", "tools")

    # When their imports are read
    into_tests = [
        (str(path.relative_to(REPO_ROOT)), name)
        for path in files
        for name in imported_modules(path)
        if name == "tests" or name.startswith("tests.")
    ]

    # Then none reaches into tests/
    assert into_tests == []
