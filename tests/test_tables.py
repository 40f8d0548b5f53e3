"""python -m vssam2.tables joins results of several runs into one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vssam2.tables import combine_results, main


def write(path: Path, methods: dict[str, float]) -> Path:
    rows = {
        m: {"mIoU": v, "WIoU": v, "mBIoU": v, "mVC8": v, "mVC16": v, "per_class_iou": {}} for m, v in methods.items()
    }
    path.write_text(json.dumps({"units": "fraction in [0, 1]", "methods": rows}))
    return path


def test_rows_of_several_runs_join_and_shared_rows_appear_once(tmp_path: Path, capsys) -> None:
    a = write(tmp_path / "a.json", {"I-SAM2": 0.18, "I-SAM2_base": 0.209, "cffm": 0.3})
    b = write(tmp_path / "b.json", {"I-CFFM-B1": 0.25, "cffm": 0.3})
    rows = combine_results([a, b])
    assert list(rows) == ["I-SAM2", "I-SAM2_base", "cffm", "I-CFFM-B1"]
    main([str(a), str(b), "--out", str(tmp_path / "t.md"), "--json", str(tmp_path / "t.json")])
    table = (tmp_path / "t.md").read_text()
    assert "| I-SAM2_base | 20.9 |" in table and table.count("| cffm |") == 1
    assert json.loads((tmp_path / "t.json").read_text())["methods"]["I-CFFM-B1"]["mIoU"] == 0.25
    assert "I-CFFM-B1" in capsys.readouterr().out


def test_conflicting_rows_and_bad_files_are_errors(tmp_path: Path) -> None:
    a = write(tmp_path / "a.json", {"cffm": 0.3})
    b = write(tmp_path / "b.json", {"cffm": 0.31})
    with pytest.raises(ValueError, match="different numbers"):
        combine_results([a, b])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json"):
        combine_results([tmp_path / "bad.json"])


def test_a_run_folder_stands_for_its_latest_version(tmp_path: Path) -> None:
    run = tmp_path / "isam3"
    for n, value in ((0, 0.1), (2, 0.3), (10, 0.5)):
        (run / f"version_{n}").mkdir(parents=True)
        write(run / f"version_{n}" / "results.json", {"I-SAM3": value})
    (run / "version_11").mkdir()  # a run that has not finished
    assert combine_results([run])["I-SAM3"]["mIoU"] == 0.5  # version 10, not 2 (numeric order)
    flat = tmp_path / "flat"
    flat.mkdir()
    write(flat / "results.json", {"x": 0.2})
    assert combine_results([flat])["x"]["mIoU"] == 0.2
    with pytest.raises(FileNotFoundError, match=r"empty: no results.json"):
        (tmp_path / "empty").mkdir()
        combine_results([tmp_path / "empty"])
