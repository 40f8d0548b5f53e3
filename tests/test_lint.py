"""The code passes ruff (lint rules and formatting as configured in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    return [exe]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff(command: list[str]) -> None:
    proc = subprocess.run([*_ruff(), *command, "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"ruff {' '.join(command)} found problems (run `make lint`):\n{proc.stdout[-4000:]}"
