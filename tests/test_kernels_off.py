"""Without the compiled label-map kernels, everything runs and gives the same numbers.

``VSSAM2_NO_KERNELS=1`` switches the compiled kernels off; a missing extension (no C compiler
at install time) does the same with one warning that names the faster path. Both only set
``label_kernels.AVAILABLE`` to False, which every caller reads at call time. :func:`compute_all`
runs every caller of the kernels on seeded label maps — the VSS metrics (mIoU, WIoU,
per-class IoU, mBIoU in both modes, mVC8 / mVC16 over chunked videos), the majority vote
(direct, int64 and compacted ids, with its votes), the class histogram, the raw→eval remap and
the id checks with their errors — and the numbers with and without the kernels must be equal
bit for bit (floats travel as hex). The fast tests switch the kernels off in this process
(with every kernel made to fail if called) and check in small subprocesses what the variable
and a missing extension do; the slow one runs the whole computation in a subprocess under
``VSSAM2_NO_KERNELS=1`` (importing torchmetrics takes most of its time).

Run as a script (``python tests/test_kernels_off.py``), this file prints that computation as
JSON, with whether the kernels ran.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vssam2.refine as refine
from vssam2 import label_kernels
from vssam2.labels import out_of_range_ids, raw_to_eval
from vssam2.metrics import MetricConfig, VSSMetrics
from vssam2.metrics.functional import boundary_band, confusion_matrix, video_consistency_scores
from vssam2.refine import class_histogram, majority_vote

ROOT = Path(__file__).resolve().parent.parent
IGNORE = 255
NUM_CLASSES = 7


def _hex(values: torch.Tensor | float) -> list[str] | str:
    """Floats as exact hex strings (NaN included), so JSON equality is bit equality."""
    if isinstance(values, torch.Tensor):
        flat = values.double().reshape(-1).tolist()
        return [float.hex(v) for v in flat] if values.ndim else float.hex(flat[0])
    return float.hex(float(values))


def _digest(x: torch.Tensor) -> str:
    """dtype, shape and SHA-256 of a tensor's bytes: a whole map compared without printing it."""
    array = np.ascontiguousarray(x.numpy())
    return f"{x.dtype} {tuple(x.shape)} {hashlib.sha256(array.tobytes()).hexdigest()}"


def _video(rng: np.random.Generator, frames: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W) uint8 predictions and GT: blocky GT that changes slowly (stable windows for
    mVC), ignore pixels in the GT and "no prediction" in the prediction."""
    gt = np.repeat(np.repeat(rng.integers(0, NUM_CLASSES, (height // 4 + 1, width // 6 + 1)), 4, 0), 6, 1)
    gt = gt[:height, :width]
    gts, preds = [], []
    for _ in range(frames):
        gt = gt.copy()
        change = rng.random(gt.shape) < 0.01
        gt[change] = rng.integers(0, NUM_CLASSES, int(change.sum()))
        g = np.where(rng.random(gt.shape) < 0.03, IGNORE, gt)
        p = np.where(rng.random(gt.shape) < 0.06, rng.integers(0, NUM_CLASSES, gt.shape), gt)
        p[rng.random(gt.shape) < 0.01] = IGNORE
        gts.append(g)
        preds.append(p)
    return np.array(preds, np.uint8), np.array(gts, np.uint8)


def _error(call) -> str:
    """The message of the ValueError ``call`` raises."""
    try:
        call()
    except ValueError as error:
        return str(error)
    raise AssertionError("expected a ValueError")


def compute_all() -> dict[str, object]:
    """Every caller of the compiled kernels on seeded maps, as JSON-ready values."""
    rng = np.random.default_rng(13)
    videos = [_video(rng, frames, 37, 70) for frames in (20, 9, 17)]
    out: dict[str, object] = {}

    for mode in ("image", "class"):
        for windows in ("scripts", "paper"):
            config = MetricConfig(
                NUM_CLASSES, boundary_width=3, boundary_mode=mode, vc_lengths=(8, 16), vc_windows=windows
            )
            metrics = VSSMetrics(config)
            for k, (pred, gt) in enumerate(videos):
                for a in range(0, len(gt), 6):  # chunks that split windows and band frames
                    chunk = slice(a, a + 6)
                    metrics.update(
                        torch.from_numpy(pred[chunk]), torch.from_numpy(gt[chunk]), f"v{k}", a, a + 6 >= len(gt)
                    )
            out[f"metrics_{mode}_{windows}"] = {name: _hex(value) for name, value in metrics.compute().items()}
    pred, gt = (torch.from_numpy(x) for x in videos[0])
    out["confusion"] = confusion_matrix(pred, gt, NUM_CLASSES).tolist()
    out["band"] = _digest(boundary_band(gt, 2))
    out["vc8_scores"] = _hex(video_consistency_scores(pred, gt, 8))
    bad = pred.clone()
    bad[3, 5, 7], bad[0, 0, 0] = 9, 200
    out["id_error"] = _error(lambda: VSSMetrics(MetricConfig(NUM_CLASSES)).update(bad, gt, "v"))

    seg = np.repeat(np.repeat(rng.integers(0, 12, (3, 8, 6)), 5, 1), 12, 2)[:, :37, :70]
    seg = (seg * (rng.random(seg.shape) < 0.95)).astype(np.int32)  # (3, 37, 70), 0 = no masklet
    base = np.where(rng.random(seg.shape) < 0.1, IGNORE, rng.integers(0, 3, seg.shape) + seg % 4).astype(np.uint8)

    def votes(refined: torch.Tensor, result) -> dict[str, object]:
        return {
            "refined": _digest(refined),
            "ids": result.ids.tolist(),
            "winner": result.winner.tolist(),
            "share": _hex(result.share),
            "area": result.area.tolist(),
            "applied": result.applied.tolist(),
        }

    seg_t, base_t = torch.from_numpy(seg), torch.from_numpy(base)
    out["vote"] = votes(*majority_vote(seg_t, base_t, NUM_CLASSES, min_share=0.4, min_area=20, return_votes=True))
    out["vote_int64"] = votes(*majority_vote(seg_t.long(), base_t.long(), NUM_CLASSES, return_votes=True))
    out["vote_map"] = _digest(majority_vote(seg_t, base_t, NUM_CLASSES))
    direct_bins = refine.MAX_DIRECT_BINS
    refine.MAX_DIRECT_BINS = 64  # sparse huge ids: the compacted rows
    try:
        out["vote_compacted"] = votes(*majority_vote(seg_t * 10_000, base_t, NUM_CLASSES, return_votes=True))
    finally:
        refine.MAX_DIRECT_BINS = direct_bins
    ids, hist = class_histogram(seg_t, torch.from_numpy(videos[0][1][:3]), NUM_CLASSES)
    out["class_histogram"] = {"ids": ids.tolist(), "hist": hist.tolist()}
    out["vote_error"] = _error(lambda: majority_vote(seg_t, torch.full_like(base_t, 8), NUM_CLASSES))

    raw = rng.integers(0, NUM_CLASSES + 1, (3, 37, 70)).astype(np.uint8)
    raw[rng.random(raw.shape) < 0.05] = 255
    out["raw_to_eval"] = [
        _digest(torch.from_numpy(raw_to_eval(raw[0], NUM_CLASSES))),
        _digest(torch.from_numpy(raw_to_eval(raw, NUM_CLASSES))),
    ]
    corrupt = raw.copy()
    corrupt[1, 2, 3], corrupt[2, 0, 0] = 99, NUM_CLASSES + 1
    out["out_of_range"] = [
        out_of_range_ids(raw, NUM_CLASSES),
        out_of_range_ids(corrupt, NUM_CLASSES),
        out_of_range_ids(corrupt, 254, also=0),
        out_of_range_ids(corrupt, 3, also=NUM_CLASSES + 1, limit=3),
    ]
    out["raw_error"] = _error(lambda: raw_to_eval(corrupt, NUM_CLASSES))
    return out


def _python(args: list[str], **env: str) -> subprocess.CompletedProcess:
    """This interpreter (all warnings shown) on ``args`` in the repository root, with ``env``
    added (an empty value removes the variable)."""
    environment = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    for key, value in env.items():
        if value:
            environment[key] = value
        else:
            environment.pop(key, None)
    return subprocess.run([sys.executable, "-W", "always", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _as_json(numbers: dict[str, object]) -> dict[str, object]:
    """What the numbers read as after a trip through JSON (tuples become lists)."""
    return json.loads(json.dumps(numbers))


needs_kernels = pytest.mark.skipif(
    not label_kernels.AVAILABLE, reason="the compiled kernels are not built (or switched off): nothing to compare with"
)


@needs_kernels
def test_fallbacks_give_identical_numbers(monkeypatch):
    """With AVAILABLE False (what the variable and a missing extension set) no kernel is
    called and every number equals the compiled one."""
    on = compute_all()
    monkeypatch.setattr(label_kernels, "AVAILABLE", False)
    for name in label_kernels.KERNELS:

        def called(*args: object, name: str = name) -> None:
            raise AssertionError(f"compiled kernel {name} called with the kernels off")

        monkeypatch.setattr(label_kernels, name, called)
    off = compute_all()
    assert off.keys() == on.keys()
    for key in on:
        assert _as_json(off)[key] == _as_json(on)[key], key
    assert "9, 200" in on["id_error"] and "[8]" in on["vote_error"] and "[8, 99]" in on["raw_error"]


@needs_kernels
@pytest.mark.slow
def test_kernels_off_in_a_subprocess_give_identical_numbers():
    """End to end as a user switches them off: a fresh interpreter under VSSAM2_NO_KERNELS=1
    never imports the compiled module, says nothing about it, and prints the same numbers."""
    done = _python([__file__], VSSAM2_NO_KERNELS="1")
    assert done.returncode == 0, done.stderr
    assert "KernelsMissingWarning" not in done.stderr
    off = json.loads(done.stdout)
    assert (off["available"], off["compiled_module_loaded"]) == (False, False)
    on = _as_json(compute_all())
    for key in on:
        assert off["numbers"][key] == on[key], key
    assert off["numbers"].keys() == on.keys()


def test_variable_switches_the_kernels_off_without_a_warning():
    """VSSAM2_NO_KERNELS=1: the compiled module is not imported, no warning, and a kernel's
    name says why it is missing; 0 keeps the kernels; other values are an error."""
    code = (
        "import sys\n"
        "from vssam2 import label_kernels as k\n"
        "print(k.AVAILABLE, 'vssam2._label_kernels' in sys.modules)\n"
        "try:\n    k.vote_histogram\nexcept AttributeError as e:\n    print(e)\n"
    )
    done = _python(["-c", code], VSSAM2_NO_KERNELS="1")
    assert done.returncode == 0, done.stderr
    available, why = done.stdout.splitlines()
    assert available == "False False"
    assert "switched off by VSSAM2_NO_KERNELS=1" in why and "AVAILABLE" in why
    assert "Warning" not in done.stderr
    done = _python(["-c", "from vssam2 import label_kernels as k; print(k.AVAILABLE)"], VSSAM2_NO_KERNELS="0")
    built = importlib.util.find_spec("vssam2._label_kernels") is not None
    assert (done.returncode, done.stdout.strip()) == (0, str(built))
    done = _python(["-c", "import vssam2.label_kernels"], VSSAM2_NO_KERNELS="yes")
    assert done.returncode != 0 and "VSSAM2_NO_KERNELS='yes'" in done.stderr


def test_missing_extension_warns_once_naming_the_build_step():
    """No compiled module (no compiler at install time): AVAILABLE is False, one warning (also
    when the module is imported again) tells how to build the kernels, the numpy id check runs,
    and a kernel's name says it is not built."""
    code = (
        "import sys\n"
        "sys.modules['vssam2._label_kernels'] = None\n"  # its import fails
        "import importlib, numpy as np\n"
        "from vssam2 import label_kernels as k\n"
        "importlib.import_module('vssam2.label_kernels')\n"
        "print(k.AVAILABLE)\n"
        "try:\n    k.joint_histogram\nexcept AttributeError as e:\n    print(e)\n"
    )
    done = _python(["-c", code], VSSAM2_NO_KERNELS="")
    assert done.returncode == 0, done.stderr
    available, why = done.stdout.splitlines()
    assert available == "False"
    assert "not built" in why and "build_ext --inplace" in why
    assert done.stderr.count("KernelsMissingWarning") == 1, done.stderr
    assert label_kernels.BUILD_HINT in done.stderr


if __name__ == "__main__":
    numbers = compute_all()
    print(
        json.dumps(
            {
                "available": label_kernels.AVAILABLE,
                "compiled_module_loaded": "vssam2._label_kernels" in sys.modules,
                "numbers": numbers,
            }
        )
    )


def test_kernels_are_built_where_a_compiler_is():
    """The build is optional, so a broken _label_kernels.c would only slow the suite down: where
    a C compiler and the Python headers are present (CI, the developers' machines), the
    extension must have been built unless it was switched off on purpose."""
    import shutil
    import sysconfig

    if os.environ.get("VSSAM2_NO_KERNELS") == "1":
        pytest.skip("kernels switched off with VSSAM2_NO_KERNELS=1")
    compiler = shutil.which(os.environ.get("CC", "") or "cc") or shutil.which("gcc")
    headers = Path(sysconfig.get_paths()["include"], "Python.h").is_file()
    if compiler is None or not headers:
        pytest.skip("no C compiler or Python headers here: the kernels are optional")
    assert label_kernels.AVAILABLE, (
        f"a C compiler ({compiler}) and the Python headers are present but vssam2._label_kernels is not "
        "built: run `pip install -e .` (or `python setup.py build_ext --inplace`) and read the compiler's errors"
    )
