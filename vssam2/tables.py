"""``python -m vssam2.tables``: one paper-style table from the results of several runs.

Table 3 compares classifiers trained in separate runs (I-SAM2, I-SAM2_base, I-CFFM-B0, …)
with the base models they were tested next to. Each run's ``results.json`` already holds its
rows; this joins them, keeping a row that several runs share (the same base model scored on
the same data) once, and refusing to merge two different numbers under one name::

    python -m vssam2.tables runs/isam2/version_0/results.json runs/icffm_b1/version_0/results.json \
        --out table3.md --json table3.json

A run folder (``runs/isam2``) stands for the results.json of its latest ``version_N``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vssam2.report import METRIC_NAMES, markdown_table


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-9)


def results_file(path: str | Path) -> Path:
    """A results.json, or the one of a run folder (itself, or its highest ``version_N`` that has one).

    Raises:
        FileNotFoundError: naming the folder, when it holds no results.json.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    if (path / "results.json").is_file():
        return path / "results.json"
    versions = [p for p in path.glob("version_*") if p.name[8:].isdigit() and (p / "results.json").is_file()]
    if not versions:
        raise FileNotFoundError(f"{path}: no results.json in it or in a version_N folder (has the run finished?)")
    return max(versions, key=lambda p: int(p.name[8:])) / "results.json"


def combine_results(paths: Sequence[str | Path]) -> dict[str, dict[str, Any]]:
    """``{method: {metric: fraction}}`` from several ``results.json`` files, in order of appearance.

    Raises:
        ValueError: a file is not a results file, or two files give one method different numbers
            (name them apart, e.g. with ``model.name``).
    """
    rows: dict[str, dict[str, Any]] = {}
    origin: dict[str, Path] = {}
    for path in map(results_file, paths):
        try:
            data = json.loads(path.read_text())
            methods = data["methods"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a results.json written by evaluate.py / train.py ({error})") from error
        for method, values in methods.items():
            values = {m: values.get(m) for m in METRIC_NAMES}
            if method in rows:
                if not all(_same(rows[method][m], values[m]) for m in METRIC_NAMES):
                    raise ValueError(
                        f"method {method!r} has different numbers in {origin[method]} and {path}; "
                        "give the runs distinct model names"
                    )
                continue
            rows[method] = values
            origin[method] = path
    return rows


def main(args: Sequence[str] | None = None) -> str:
    """Prints the joined table (and writes ``--out`` Markdown / ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m vssam2.tables", description=__doc__.splitlines()[0])
    parser.add_argument(
        "results", nargs="+", help="results.json files of evaluate.py / train.py runs, or run folders (latest version)"
    )
    parser.add_argument("--out", help="write the Markdown table here")
    parser.add_argument("--json", help="write the rows as JSON here (fractions)")
    parsed = parser.parse_args(args)
    rows = combine_results(parsed.results)
    nan = float("nan")
    table = markdown_table({m: {k: nan if v is None else v for k, v in values.items()} for m, values in rows.items()})
    print(table)
    if parsed.out:
        Path(parsed.out).write_text(table + "\n")
    if parsed.json:
        Path(parsed.json).write_text(json.dumps({"units": "fraction in [0, 1]", "methods": rows}, indent=2) + "\n")
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
