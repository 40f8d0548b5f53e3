"""The private sam2 names vssam2 uses: all listed, all present in the installed sam2, and a
clear error naming the name when a sam2 lacks one."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sam2.sam2_image_predictor import SAM2ImagePredictor
from sam2.sam2_video_predictor import SAM2VideoPredictor

from vssam2.masklets import sam2_private
from vssam2.masklets.sam2_private import (
    INIT_STATE_KEYS,
    PRIVATE_API,
    TESTED_SAM2_VERSION,
    check_sam2_private_api,
    installed_sam2_version,
    sam2_private_api_problems,
)
from vssam2.masklets.video_memory import init_state_from_frames

VSSAM2 = Path(__file__).resolve().parents[1] / "vssam2"
# The modules that talk to sam2 objects (the other modules reach sam2 only through them).
SAM2_MODULES = sorted(
    path
    for path in VSSAM2.rglob("*.py")
    if path.name != "sam2_private.py"
    and (re.search(r"^\s*(from|import) sam2\b", path.read_text(), re.M) or path.name in ("sam2_video.py", "sam2.py"))
)


@pytest.fixture
def unverified(monkeypatch: pytest.MonkeyPatch) -> None:
    """The once-per-process shortcut off, so the check really runs."""
    monkeypatch.setattr(sam2_private, "_verified", False)


def _failure(**kwargs: Any) -> str:
    with pytest.raises(RuntimeError) as info:
        check_sam2_private_api(**kwargs)
    message = str(info.value)
    assert f"installed sam2 {installed_sam2_version()}" in message
    assert f"tested with sam2 {TESTED_SAM2_VERSION}" in message
    return message


def test_installed_sam2_is_the_tested_minor_and_has_every_private_name(unverified: None) -> None:
    assert installed_sam2_version().split(".")[:2] == TESTED_SAM2_VERSION.split(".")[:2]
    assert sam2_private_api_problems() == []
    check_sam2_private_api()
    assert sam2_private._verified


def test_a_missing_method_fails_naming_it(monkeypatch: pytest.MonkeyPatch, unverified: None) -> None:
    monkeypatch.delattr(SAM2VideoPredictor, "_get_obj_num")
    message = _failure()
    assert "SAM2VideoPredictor._get_obj_num: missing" in message
    assert message.count("\n  - ") == 1  # nothing else reported
    assert not sam2_private._verified


def test_a_missing_parameter_fails_naming_it(monkeypatch: pytest.MonkeyPatch, unverified: None) -> None:
    def renamed(  # sam2 1.1.0's signature with `reverse` renamed
        self: Any,
        inference_state: Any,
        output_dict: Any,
        frame_idx: Any,
        batch_size: Any,
        is_init_cond_frame: Any,
        point_inputs: Any,
        mask_inputs: Any,
        track_in_reverse: Any,
        run_mem_encoder: Any,
    ) -> None:
        raise AssertionError("never called")

    monkeypatch.setattr(SAM2VideoPredictor, "_run_single_frame_inference", renamed)
    assert "SAM2VideoPredictor._run_single_frame_inference: no parameter reverse" in _failure()


def test_an_instance_attribute_no_longer_set_fails_naming_it(monkeypatch: pytest.MonkeyPatch, unverified: None) -> None:
    def init_without_feature_sizes(self: Any, sam_model: Any) -> None:
        self.model = sam_model
        self._is_image_set = False
        self._features = None
        self._orig_hw = None

    monkeypatch.setattr(SAM2ImagePredictor, "__init__", init_without_feature_sizes)
    message = _failure()
    assert "SAM2ImagePredictor._bb_feat_sizes: not assigned" in message
    assert "_features" not in message


def test_a_missing_module_function_fails_naming_it(monkeypatch: pytest.MonkeyPatch, unverified: None) -> None:
    import sam2.utils.misc

    monkeypatch.delattr(sam2.utils.misc, "_load_img_as_tensor")
    assert "sam2.utils.misc._load_img_as_tensor: missing" in _failure()


def test_new_inference_state_keys_fail_naming_them(monkeypatch: pytest.MonkeyPatch, unverified: None) -> None:
    def init_state(self: Any, video_path: str) -> dict[str, Any]:
        inference_state: dict[str, Any] = {}
        for key in INIT_STATE_KEYS:
            inference_state[key] = None
        inference_state["images"] = []
        inference_state["frame_order"] = []  # a key init_state_from_frames does not build
        return inference_state

    monkeypatch.setattr(SAM2VideoPredictor, "init_state", init_state)
    # The loop's keys are not literal: they read as dropped, which is reported too.
    message = _failure()
    assert "new keys ['frame_order']" in message and "keys no longer written" in message


def test_init_state_from_frames_builds_every_key_of_sam2_init_state() -> None:
    predictor = SimpleNamespace(device="cpu", image_size=32)  # no frames: the model is never called
    state = init_state_from_frames(predictor, None, video_height=4, video_width=6)  # type: ignore[arg-type]
    assert set(INIT_STATE_KEYS) <= set(state)
    assert isinstance(state["obj_id_to_idx"], OrderedDict)


def test_the_list_names_every_private_sam2_use_in_vssam2_and_nothing_else() -> None:
    listed = {use.name for use in PRIVATE_API}
    found: dict[str, set[str]] = {}
    for path in SAM2_MODULES:
        text = path.read_text()
        names = {name for base, name in re.findall(r"\b(\w+)\.(_[a-z]\w*)", text) if base not in ("self", "cls")}
        names |= set(re.findall(r"``(_[a-z]\w*)", text))  # private sam2 code named in docstrings (mirrored)
        for name in names:
            found.setdefault(name, set()).add(path.relative_to(VSSAM2.parent).as_posix())
    unlisted = {name: sorted(where) for name, where in found.items() if name not in listed}
    assert not unlisted, f"private sam2 names used but not in sam2_private.PRIVATE_API: {unlisted}"
    for use in PRIVATE_API:
        for module in use.used_in:
            path = VSSAM2.parent / (module.replace(".", "/") + ".py")
            assert use.name in path.read_text(), f"{use.label} is listed as used in {module}, which does not mention it"
    assert len({(use.owner, use.name) for use in PRIVATE_API}) == len(PRIVATE_API)


def test_entry_points_run_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from vssam2.masklets.fast_proposer import FastProposer
    from vssam2.masklets.sam2_video import SAM2VideoSource
    from vssam2.masklets.stock_proposer import StockProposer

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("sam2 private API check ran")

    for module in ("fast_proposer", "stock_proposer"):
        monkeypatch.setattr(f"vssam2.masklets.{module}.check_sam2_private_api", refuse)
    monkeypatch.setattr(sam2_private, "check_sam2_private_api", refuse)  # imported on first use
    for build in (
        lambda: FastProposer(None),
        lambda: StockProposer(None),
        lambda: SAM2VideoSource("vssam2-tiny-test").predictor,
    ):  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="check ran"):
            build()


def test_pyproject_pins_the_tested_minor_and_the_docs_list_every_name() -> None:
    tomllib = pytest.importorskip("tomllib")
    specifiers = pytest.importorskip("packaging.specifiers")
    root = VSSAM2.parent
    dependencies = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    (sam2,) = [d for d in dependencies if re.match(r"sam2\b", d)]
    allowed = specifiers.SpecifierSet(sam2[len("sam2") :])
    major, minor = (int(v) for v in TESTED_SAM2_VERSION.split(".")[:2])
    assert TESTED_SAM2_VERSION in allowed and f"{major}.{minor + 1}.0" not in allowed, sam2
    docs = (root / "docs" / "dependencies.md").read_text()
    assert sam2[len("sam2") :] in docs
    assert not [use.label for use in PRIVATE_API if f"`{use.label}`" not in docs]
