"""The private parts of sam2 that vssam2 relies on, listed in one place, and a check for them.

The masklet engine goes below sam2's public API where that API cannot do what the study
needs: sam2 1.1.0's video predictor only reads whole videos from disk and tracks one object
per forward pass, and its image predictor hard-codes the feature sizes of 1024 input. So
vssam2 calls private methods of ``SAM2VideoPredictor`` and ``SAM2Base``, writes private
attributes of ``SAM2ImagePredictor``, builds sam2's ``inference_state`` dict itself, and
re-implements a few private functions to share their work. None of this is covered by sam2's
versioning; pyproject pins the tested minor (``sam2>=1.1,<1.2``), and
:func:`check_sam2_private_api`, called where the SAM2 masklet source and the proposers start,
fails at once with every missing name (instead of an ``AttributeError`` or a silently
different result deep inside a run) when another sam2 is installed. docs/dependencies.md says
why each name is used.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

#: The sam2 release the masklet engine is tested with.
TESTED_SAM2_VERSION = "1.1.0"

UseKind = Literal["method", "attribute", "function"]

_VIDEO = "sam2.sam2_video_predictor:SAM2VideoPredictor"
_IMAGE = "sam2.sam2_image_predictor:SAM2ImagePredictor"
_BASE = "sam2.modeling.sam2_base:SAM2Base"
_GENERATOR = "sam2.automatic_mask_generator:SAM2AutomaticMaskGenerator"
_MISC = "sam2.utils.misc"


@dataclass(frozen=True)
class PrivateUse:
    """One private sam2 name vssam2 depends on.

    Attributes:
        owner: ``"module:Class"`` for a class member, ``"module"`` for a module function.
        name: the private name.
        kind: ``"method"`` (looked up on the class, with ``parameters`` in its signature),
            ``"attribute"`` (an instance attribute: assigned as ``self.<name> = ...`` in the
            class's ``__init__``) or ``"function"`` (a module-level function).
        used_in: the vssam2 modules that use it.
        why: what vssam2 needs it for.
        parameters: parameter names vssam2 passes by keyword (checked in the signature).
        mirrored: vssam2 re-implements (part of) it rather than calling it; its existence is
            checked because a sam2 that renamed or removed it has probably changed what it
            does, which the copy would no longer match.
    """

    owner: str
    name: str
    kind: UseKind
    used_in: tuple[str, ...]
    why: str
    parameters: tuple[str, ...] = ()
    mirrored: bool = False

    @property
    def label(self) -> str:
        """``Class.name`` or ``module.name``, as error messages name it."""
        module, _, cls = self.owner.partition(":")
        return f"{cls or module}.{self.name}"


#: Every private sam2 name vssam2 uses (grep ``vssam2/`` for ``predictor._``, ``model._``).
PRIVATE_API: tuple[PrivateUse, ...] = (
    PrivateUse(
        _VIDEO,
        "_run_single_frame_inference",
        "method",
        ("vssam2.masklets.video_memory", "vssam2.masklets.batched_tracking"),
        "track one object on one frame (track_frame) and add a mask prompt without sam2's "
        "consolidation of every object at video resolution (add_mask_prompt); "
        "batched_tracking mirrors its compact output",
        parameters=(
            "inference_state",
            "output_dict",
            "frame_idx",
            "batch_size",
            "is_init_cond_frame",
            "point_inputs",
            "mask_inputs",
            "reverse",
            "run_mem_encoder",
        ),
    ),
    PrivateUse(
        _VIDEO,
        "_get_image_feature",
        "method",
        ("vssam2.masklets.batched_tracking",),
        "a frame's backbone features expanded to the batch of objects; video_memory.encode_frame "
        "fills the same state['cached_features'] cache",
    ),
    PrivateUse(
        _VIDEO,
        "_get_obj_num",
        "method",
        ("vssam2.masklets.video_memory", "vssam2.masklets.batched_tracking"),
        "number of objects in a state",
    ),
    PrivateUse(
        _VIDEO,
        "_obj_id_to_idx",
        "method",
        ("vssam2.masklets.video_memory",),
        "register a new object id in a state (add_mask_prompt)",
    ),
    PrivateUse(
        _VIDEO,
        "_get_orig_video_res_output",
        "method",
        ("vssam2.masklets.video_memory", "vssam2.masklets.batched_tracking"),
        "mask logits at the video's resolution",
    ),
    PrivateUse(
        _VIDEO,
        "_get_maskmem_pos_enc",
        "method",
        ("vssam2.masklets.batched_tracking",),
        "memory position encoding of a batched step, shared through state['constants']",
    ),
    PrivateUse(
        _BASE,
        "_prepare_backbone_features",
        "method",
        ("vssam2.masklets.fast_proposer", "vssam2.masklets.stock_proposer"),
        "flatten forward_image's output into the decoder's inputs, so a keyframe's features "
        "(computed once) serve the proposer and the video predictor",
    ),
    PrivateUse(
        _BASE,
        "_encode_new_memory",
        "method",
        ("vssam2.masklets.batched_tracking",),
        "applies non_overlap_masks_for_mem_enc across the batch; batched tracking switches that "
        "off because it is a no-op with sam2's one object per call",
        mirrored=True,
    ),
    PrivateUse(
        _IMAGE,
        "_bb_feat_sizes",
        "attribute",
        ("vssam2.masklets.sam2_model", "vssam2.masklets.stock_proposer"),
        "hard-coded for 1024 input; reset for the model's image size (image_predictor, "
        "sam2_generator), read when priming the predictor",
    ),
    PrivateUse(
        _IMAGE,
        "_features",
        "attribute",
        ("vssam2.masklets.stock_proposer",),
        "set from precomputed backbone features, as set_image does (prime_image_predictor)",
    ),
    PrivateUse(
        _IMAGE,
        "_orig_hw",
        "attribute",
        ("vssam2.masklets.stock_proposer",),
        "the frame size set_image would record (prime_image_predictor)",
    ),
    PrivateUse(
        _IMAGE,
        "_is_image_set",
        "attribute",
        ("vssam2.masklets.stock_proposer",),
        "marks the primed predictor ready, as set_image does (prime_image_predictor)",
    ),
    PrivateUse(
        _IMAGE,
        "_predict",
        "method",
        ("vssam2.masklets.fast_proposer",),
        "FastProposer computes the stability score where this upsamples every candidate",
        mirrored=True,
    ),
    PrivateUse(
        _GENERATOR,
        "_process_batch",
        "method",
        ("vssam2.masklets.fast_proposer",),
        "FastProposer builds the point prompts and applies the filters in this order",
        mirrored=True,
    ),
    PrivateUse(
        _MISC,
        "_load_img_as_tensor",
        "function",
        ("vssam2.masklets.video_memory",),
        "resize='pil' reproduces this JPEG loader's preprocessing on frames in memory",
        mirrored=True,
    ),
)

#: The keys sam2 1.1.0's ``SAM2VideoPredictor.init_state`` writes into ``inference_state``;
#: ``video_memory.init_state_from_frames`` builds the same dict from frames in memory.
INIT_STATE_KEYS: tuple[str, ...] = (
    "images",
    "num_frames",
    "offload_video_to_cpu",
    "offload_state_to_cpu",
    "video_height",
    "video_width",
    "device",
    "storage_device",
    "point_inputs_per_obj",
    "mask_inputs_per_obj",
    "cached_features",
    "constants",
    "obj_id_to_idx",
    "obj_idx_to_id",
    "obj_ids",
    "output_dict_per_obj",
    "temp_output_dict_per_obj",
    "frames_tracked_per_obj",
)

_STATE_KEY = re.compile(r"""inference_state\[["'](\w+)["']\]\s*=(?!=)""")


def installed_sam2_version() -> str:
    """The installed sam2's version, or a note when its metadata is missing."""
    try:
        return importlib.metadata.version("sam2")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (no package metadata)"


def _resolve(owner: str) -> object:
    module_name, _, class_name = owner.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name) if class_name else module


def _problem(use: PrivateUse) -> str | None:
    """Why ``use`` is not available in the installed sam2, or None when it is."""
    try:
        owner = _resolve(use.owner)
    except (ImportError, AttributeError) as err:
        return f"{use.label}: its owner {use.owner} cannot be imported ({err})"
    if use.kind == "attribute":
        try:
            source = inspect.getsource(owner.__init__)  # type: ignore[misc]
        except (OSError, TypeError) as err:
            return f"{use.label}: {use.owner}.__init__ has no readable source to verify it ({err})"
        if not re.search(rf"self\.{re.escape(use.name)}\s*=(?!=)", source):
            return f"{use.label}: not assigned in {use.owner}.__init__ any more"
        return None
    member = inspect.getattr_static(owner, use.name, None)
    if member is None:
        return f"{use.label}: missing"
    function = getattr(owner, use.name)
    if not callable(function):
        return f"{use.label}: no longer a {use.kind}"
    if use.parameters:
        try:
            accepted = inspect.signature(function).parameters
        except (TypeError, ValueError) as err:
            return f"{use.label}: signature unreadable ({err})"
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
        absent = [name for name in use.parameters if name not in accepted and not takes_any]
        if absent:
            return f"{use.label}: no parameter {', '.join(absent)}"
    return None


def _state_key_problem(expected: Sequence[str]) -> str | None:
    """How the keys of sam2's ``init_state`` differ from ``expected``, or None."""
    try:
        init_state = _resolve(_VIDEO).init_state  # type: ignore[attr-defined]
        source = inspect.getsource(init_state)
    except (ImportError, AttributeError, OSError, TypeError) as err:
        return f"SAM2VideoPredictor.init_state: cannot read it ({err})"
    written = set(_STATE_KEY.findall(source))
    added = sorted(written - set(expected))
    dropped = sorted(set(expected) - written)
    if not added and not dropped:
        return None
    parts = [f"new keys {added} (init_state_from_frames does not build them)"] if added else []
    parts += [f"keys no longer written {dropped}"] if dropped else []
    return "SAM2VideoPredictor.init_state's inference_state: " + "; ".join(parts)


def sam2_private_api_problems(
    uses: Sequence[PrivateUse] = PRIVATE_API, state_keys: Sequence[str] | None = INIT_STATE_KEYS
) -> list[str]:
    """Every private sam2 name in ``uses`` that the installed sam2 lacks, one line each.

    Args:
        uses: the names to check.
        state_keys: the ``inference_state`` keys ``init_state`` must write; None skips that.

    Returns:
        One line per problem (empty when everything is there).
    """
    problems = [problem for use in uses if (problem := _problem(use)) is not None]
    if state_keys is not None and (problem := _state_key_problem(state_keys)) is not None:
        problems.append(problem)
    return problems


_verified = False


def check_sam2_private_api(
    uses: Sequence[PrivateUse] = PRIVATE_API, state_keys: Sequence[str] | None = INIT_STATE_KEYS
) -> None:
    """Raises when the installed sam2 lacks a private name vssam2 uses.

    The default check runs once per process (later calls return at once).

    Args:
        uses: the names to check.
        state_keys: the ``inference_state`` keys ``init_state`` must write; None skips that.

    Raises:
        RuntimeError: naming every missing or changed name, the installed sam2 version and
            the tested one.
    """
    global _verified
    default = uses is PRIVATE_API and state_keys is INIT_STATE_KEYS
    if default and _verified:
        return
    problems = sam2_private_api_problems(uses, state_keys)
    if problems:
        raise RuntimeError(
            f"the installed sam2 {installed_sam2_version()} lacks private parts of sam2 that vssam2's "
            f"masklet engine uses (tested with sam2 {TESTED_SAM2_VERSION}, which `make venv` installs; "
            "see docs/dependencies.md):\n  - " + "\n  - ".join(problems)
        )
    if default:
        _verified = True
