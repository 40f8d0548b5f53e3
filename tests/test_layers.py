"""The library sits below the Lightning wrappers: nothing under vssam2/ imports datamodules/ or
callbacks/ (at module level or inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WRAPPERS = ("datamodules", "callbacks")


def upward_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of a wrapper package in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] in WRAPPERS]
    return found


def test_the_check_sees_every_form_of_import():
    code = "import datamodules\nfrom callbacks.run_dir import x\ndef f():\n    from datamodules import VSPWDataModule\n"
    assert upward_imports(code) == [(1, "datamodules"), (2, "callbacks.run_dir"), (4, "datamodules")]
    assert upward_imports("from vssam2.datasets import VideoSplits\nimport callbacks_extra\n") == []


def test_library_does_not_import_the_lightning_wrappers():
    offenders = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in sorted((REPO / "vssam2").rglob("*.py"))
        for line, module in upward_imports(path.read_text())
    ]
    assert not offenders, "vssam2/ must not import datamodules/ or callbacks/:\n" + "\n".join(offenders)
