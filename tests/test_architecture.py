"""The house keeps its shape: three floors with data flowing one way, imports at module level.

The layer contracts live in pyproject.toml ([tool.importlinter]) and are checked by import-linter;
this file runs them, so a change that makes the core import the method, the method import the app
floor, or two sibling modules import each other fails the test suite.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "semhint"


def test_layer_contracts_hold(capsys, monkeypatch):
    lint = pytest.importorskip("importlinter.cli")  # in the test extra; a bare install may lack it
    monkeypatch.chdir(REPO)
    code = lint.lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out[-3000:]


def _nested_imports(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every import inside a function or class body of a module."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    found.append((sub.lineno, lines[sub.lineno - 1].strip()))
    return sorted(set(found))


def test_imports_sit_at_module_level_unless_a_comment_says_why():
    """A hidden import inside a function can hide a circle between modules; the few that must stay
    (optional extras, matplotlib, the CLI's per-command import) say why on the same line."""
    unexplained = [f"{path.relative_to(REPO)}:{line}: {text}" for path in sorted(PACKAGE.rglob("*.py"))
                   for line, text in _nested_imports(path) if "# lazy:" not in text]
    cli = (PACKAGE / "app" / "cli.py").read_text()
    assert "# lazy:" in cli  # the one dynamic import (importlib) is explained too
    assert not unexplained, "\n".join(unexplained)


def test_the_checker_sees_a_nested_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\n\ndef f():\n    import json\n    return json\n")
    assert _nested_imports(module) == [(5, "import json")]


def test_every_package_folder_is_a_package():
    """A folder without __init__.py imports as a namespace package in a clone but is left out of a wheel."""
    for folder, _, files in os.walk(PACKAGE):
        if any(f.endswith(".py") for f in files) and "__pycache__" not in folder:
            assert (Path(folder) / "__init__.py").is_file(), f"{folder} has no __init__.py"
