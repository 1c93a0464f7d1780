"""ruff's lint and format pass on the whole tree (the rules: pyproject.toml's [tool.ruff])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import missing_tool

ROOT = Path(__file__).resolve().parents[2]


def ruff(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "ruff"
    if not exe.exists():
        missing_tool(f"ruff is not installed beside {sys.executable}; run `make test` (it installs the dev extras)")
    return subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ruff_finds_nothing_to_lint():
    result = ruff("check", "--output-format", "concise", ".")
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\nfix: .venv/bin/ruff check --fix ."


def test_the_tree_is_formatted_as_ruff_formats_it():
    result = ruff("format", "--check", ".")
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\nfix: .venv/bin/ruff format ."
