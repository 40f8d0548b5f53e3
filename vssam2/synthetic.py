"""Synthetic VSPW / VIPSeg clips and simulated VSS predictions, for the demo and the tests.

Every clip is a small, seeded "world": a few textured *stuff* regions (wall, sky, road, ...)
laid out on a canvas larger than the frame, a camera that pans smoothly over that canvas,
and a few *thing* objects (person, car, dog, ...) that move, scale and occlude each other in
depth order. Labels use the real VSPW class ids (looked up by name in
:func:`vssam2.labels.vspw_classes`) and the exact on-disk layouts:

- VSPW: ``<root>/data/<video>/origin/<frame>.jpg``, ``<root>/data/<video>/mask/<frame>.png``
  (8-bit palette PNG of raw ids: 0 = others, 1…124 = classes, 255 = void) and
  ``<root>/{train,val,test}.txt``.
- VIPSeg: ``<root>/images/<video>/<frame>.jpg``, ``<root>/panomasks/<video>/<frame>.png``
  (16-bit PNG: stuff = raw id, thing = raw id * 100 + instance, others / void = 0) and the
  same split lists.
- Predictions: ``<out_root>/<model>/<video>/<frame>.png``, 8-bit PNG of evaluation ids 0…123
  (the ``result_submission`` layout of CFFM / MRCFA / TV3S).

Simulated "models" (:data:`PROFILES`) turn ground truth into predictions with realistic
error modes: boundary jitter, low output resolution, look-alike class confusions and
temporal flicker, so that mIoU, boundary IoU and video consistency rank them differently.
One model (``sim_classwise``) also has class-dependent errors, the same in every video and
split (:func:`classwise_classes`): a fixed subset of classes is mostly predicted as its
look-alike, another bleeds into its neighbours, so what a refinement rule learns about them
on the train split holds on val. Predictions are written for the train and val splits
(``SyntheticConfig.prediction_splits``).

Each video's randomness comes from its own seed derived from ``(config.seed, split, index)``,
so adding videos to one split leaves every other video unchanged; each prediction's comes
from ``(config.seed, model, video)``.

Command line: ``python -m vssam2.synthetic --root DIR [--seed 0] [--height H --width W ...]
[--prediction-splits train val]``.
"""

from __future__ import annotations

import argparse
import shutil
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from vssam2.labels import (
    IGNORE_INDEX,
    NUM_CLASSES,
    VIPSEG_INSTANCE_DIVISOR,
    VIPSEG_THING_OFFSET,
    palette,
    raw_to_eval,
    vipseg_panoptic_to_eval,
    vspw_classes,
)

__all__ = [
    "PROFILES",
    "SCENES",
    "PredictionProfile",
    "Scene",
    "SyntheticConfig",
    "SyntheticVideo",
    "classwise_classes",
    "generate_video",
    "iter_videos",
    "main",
    "read_split",
    "read_video_labels",
    "simulate_prediction",
    "to_vipseg_panoptic",
    "video_rng",
    "write_predictions",
    "write_synthetic",
    "write_vipseg",
    "write_vspw",
]

# Raw VSPW ids with a meaning of their own (not classes).
RAW_OTHERS: int = 0
RAW_VOID: int = 255
SPLITS: tuple[str, ...] = ("train", "val", "test")
FRAME_NAME_DIGITS: int = 8


# --------------------------------------------------------------------------------------
# World description: scenes, class appearance
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """A kind of scene: which stuff classes form the background and which things move in it.

    Attributes:
        stuff: VSPW class names of background regions, ordered top to bottom of the image.
        things: VSPW class names of the objects that may appear.
    """

    stuff: tuple[str, ...]
    things: tuple[str, ...]


SCENES: dict[str, Scene] = {
    "indoor": Scene(
        stuff=("ceiling", "wall", "curtain", "floor", "cushion_or_carpet"),
        things=("person", "cat", "dog", "chair_or_seat", "table_or_desk", "sofa"),
    ),
    "street": Scene(
        stuff=("sky", "building", "tree", "path", "road"),
        things=("person", "car", "bicycle", "bus", "motorcycle", "dog"),
    ),
    "park": Scene(
        stuff=("sky", "mountain", "tree", "grass", "path"),
        things=("person", "dog", "bicycle", "horse", "ball"),
    ),
    "beach": Scene(
        stuff=("sky", "sea", "water", "sand", "stone"),
        things=("person", "ship_or_boat", "parasol_or_umbrella", "dog", "ball"),
    ),
    "stadium": Scene(
        stuff=("sky", "grandstand", "athletic_field", "grass", "ground"),
        things=("person", "ball", "flag", "bicycle", "dog"),
    ),
}

# Typical colours (RGB) so frames look like scenes; classes not listed get a colour derived
# from their id. Appearance is a property of the class, not of the seed, so a classifier
# trained on the synthetic train split can transfer to val, as on real data.
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "ceiling": (225, 222, 210),
    "wall": (196, 182, 160),
    "curtain": (150, 60, 70),
    "floor": (140, 100, 70),
    "cushion_or_carpet": (120, 40, 50),
    "sky": (130, 180, 235),
    "building": (150, 140, 135),
    "tree": (50, 110, 45),
    "path": (175, 165, 140),
    "road": (85, 85, 90),
    "mountain": (110, 100, 120),
    "grass": (80, 160, 60),
    "sea": (30, 80, 150),
    "water": (60, 130, 170),
    "sand": (220, 200, 150),
    "stone": (130, 125, 115),
    "grandstand": (170, 60, 60),
    "athletic_field": (190, 90, 60),
    "ground": (150, 120, 85),
    "person": (210, 160, 130),
    "cat": (200, 140, 80),
    "dog": (120, 85, 55),
    "chair_or_seat": (90, 60, 40),
    "table_or_desk": (160, 120, 80),
    "sofa": (70, 90, 140),
    "car": (200, 30, 35),
    "bicycle": (40, 40, 45),
    "bus": (240, 190, 30),
    "motorcycle": (30, 30, 120),
    "horse": (100, 60, 35),
    "ball": (245, 245, 240),
    "ship_or_boat": (235, 235, 235),
    "parasol_or_umbrella": (240, 90, 40),
    "flag": (230, 40, 60),
}

# Width / height of a thing's ellipse (people are tall, cars wide); others are round-ish.
THING_ASPECT: dict[str, float] = {
    "person": 0.42,
    "car": 2.0,
    "bus": 2.4,
    "truck": 2.2,
    "bicycle": 1.5,
    "motorcycle": 1.5,
    "dog": 1.4,
    "cat": 1.3,
    "horse": 1.4,
    "cattle": 1.6,
    "chair_or_seat": 0.8,
    "table_or_desk": 1.7,
    "sofa": 2.1,
    "ship_or_boat": 2.2,
    "parasol_or_umbrella": 1.3,
    "ball": 1.0,
    "flag": 1.3,
}

# Classes a model plausibly mistakes each class for. Classes not listed get a fixed
# partner (see :func:`_lookalike_lut`).
LOOKALIKES: dict[str, str] = {
    "car": "truck",
    "truck": "bus",
    "bus": "truck",
    "bicycle": "motorcycle",
    "motorcycle": "bicycle",
    "dog": "cat",
    "cat": "dog",
    "horse": "cattle",
    "cattle": "horse",
    "other_animal": "dog",
    "person": "sculpture",
    "chair_or_seat": "sofa",
    "sofa": "chair_or_seat",
    "table_or_desk": "cupboard_or_showcase_or_storage_rack",
    "bed": "sofa",
    "ship_or_boat": "raft",
    "parasol_or_umbrella": "tent",
    "ball": "toy",
    "flag": "billboard_or_Bulletin_Board",
    "wall": "building",
    "ceiling": "wall",
    "curtain": "textiles",
    "floor": "ground",
    "ground": "floor",
    "cushion_or_carpet": "floor",
    "road": "path",
    "path": "road",
    "crosswalk": "road",
    "grass": "athletic_field",
    "athletic_field": "grass",
    "tree": "other_plant",
    "other_plant": "tree",
    "sky": "sea",
    "sea": "water",
    "water": "sea",
    "lake": "river",
    "river": "lake",
    "building": "house",
    "house": "building",
    "mountain": "stone",
    "stone": "mountain",
    "sand": "ground",
    "snowfield": "ice",
    "grandstand": "building",
    "window": "wall",
}


@lru_cache(maxsize=1)
def _raw_id_by_name() -> dict[str, int]:
    table = vspw_classes()
    return {name: raw for name, raw in zip(table.names, table.raw_ids)}


def _raw_id(name: str) -> int:
    try:
        return _raw_id_by_name()[name]
    except KeyError:
        raise KeyError(f"unknown VSPW class name {name!r}") from None


def _class_rng(raw_id: int) -> np.random.Generator:
    # A fixed stream per class: its texture style is part of the "world", like real classes.
    return np.random.default_rng(np.random.SeedSequence([_stable_hash("class-style"), raw_id]))


def _class_colour(raw_id: int) -> np.ndarray:
    """Base RGB colour of a class, (3,) float32."""
    name = vspw_classes().names[raw_id - 1]
    if name in CLASS_COLOURS:
        return np.asarray(CLASS_COLOURS[name], dtype=np.float32)
    return _class_rng(raw_id).uniform(40, 220, size=3).astype(np.float32)


def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; seeds must be stable across runs.
    return zlib.crc32(text.encode("utf-8"))


# --------------------------------------------------------------------------------------
# Configuration and the in-memory video
# --------------------------------------------------------------------------------------


@dataclass
class SyntheticConfig:
    """Everything that determines a synthetic dataset.

    Attributes:
        height: frame height in pixels.
        width: frame width in pixels.
        min_frames: fewest frames per video (default > 16, so mVC_16 has windows).
        max_frames: most frames per video.
        videos: number of videos per split.
        num_stuff: textured background regions per video.
        num_things: moving objects per video (at most 99: VIPSeg stores instance < 100).
        seed: the seed every video and prediction is derived from.
        models: simulated prediction profiles (keys of :data:`PROFILES`) to write.
        prediction_splits: splits whose videos get predictions of every model (a refinement
            rule is trained on train and reported on val); all go into the same per-model
            folders, since video names are unique across splits.
        scenes: scene kinds (keys of :data:`SCENES`) videos are drawn from.
        camera_pan: how far the camera may pan, as a fraction of the frame size per axis.
        thing_size: range of an object's half-height, as a fraction of the frame height.
        thing_travel: range of an object's travel over the clip, as a fraction of the width.
        others_regions: unlabelled objects (raw id 0, "others") per video.
        void_width: width in pixels of the void band (raw 255) drawn around some objects.
        void_fraction: fraction of objects that get a void band (at least one per video).
        boundary_roughness: amplitude of the wiggle of stuff boundaries, fraction of height.
        blur_sigma: optical blur of the rendered frames, in pixels.
        noise_std: per-pixel sensor noise of the rendered frames, in grey levels.
        jpeg_quality: quality of the written JPEG frames.
    """

    height: int = 120
    width: int = 216
    min_frames: int = 20
    max_frames: int = 32
    videos: dict[str, int] = field(default_factory=lambda: {"train": 6, "val": 4, "test": 2})
    num_stuff: int = 3
    num_things: int = 3
    seed: int = 0
    models: tuple[str, ...] = ("sim_strong", "sim_boundary", "sim_flicker", "sim_classwise")
    prediction_splits: tuple[str, ...] = ("train", "val")
    scenes: tuple[str, ...] = tuple(SCENES)
    camera_pan: float = 0.15
    thing_size: tuple[float, float] = (0.14, 0.3)
    thing_travel: tuple[float, float] = (0.2, 0.9)
    others_regions: int = 1
    void_width: int = 1
    void_fraction: float = 0.5
    boundary_roughness: float = 0.12
    blur_sigma: float = 0.6
    noise_std: float = 2.0
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8:
            raise ValueError(f"frames must be at least 8x8, got {self.height}x{self.width}")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 1 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.num_stuff < 1:
            raise ValueError("num_stuff must be >= 1")
        if not 0 <= self.num_things < VIPSEG_INSTANCE_DIVISOR:
            raise ValueError(f"num_things must be in 0..{VIPSEG_INSTANCE_DIVISOR - 1}")
        unknown = [m for m in self.models if m not in PROFILES]
        if unknown:
            raise ValueError(f"unknown prediction profiles {unknown}; known: {sorted(PROFILES)}")
        unknown = [s for s in self.scenes if s not in SCENES]
        if unknown or not self.scenes:
            raise ValueError(f"unknown or no scenes {unknown}; known: {sorted(SCENES)}")
        known_splits = set(SPLITS) | set(self.videos)
        unknown = [s for s in self.prediction_splits if s not in known_splits]
        if unknown or len(set(self.prediction_splits)) != len(self.prediction_splits):
            raise ValueError(
                f"prediction_splits must be distinct splits of {sorted(known_splits)}, "
                f"got {list(self.prediction_splits)}"
            )
        self.models = tuple(self.models)
        self.scenes = tuple(self.scenes)
        self.prediction_splits = tuple(self.prediction_splits)


@dataclass
class SyntheticVideo:
    """One generated clip.

    Attributes:
        name: video name (folder name on disk).
        scene: scene kind (key of :data:`SCENES`).
        frames: (T, H, W, 3) uint8 RGB frames.
        raw: (T, H, W) uint8 raw VSPW ids: 0 = others, 1…124 = classes, 255 = void.
        instances: (T, H, W) int32 instance id per pixel: 1…num_things for things, 0 for
            stuff, others and void.
        instance_classes: raw class id of every thing placed in the clip (a thing may be
            off-screen or hidden in some frames).
    """

    name: str
    scene: str
    frames: np.ndarray
    raw: np.ndarray
    instances: np.ndarray
    instance_classes: dict[int, int]

    @property
    def num_frames(self) -> int:
        """Number of frames T."""
        return int(self.raw.shape[0])

    @property
    def eval_labels(self) -> np.ndarray:
        """(T, H, W) uint8 evaluation ids (255 = ignore)."""
        return raw_to_eval(self.raw)

    @property
    def panoptic(self) -> np.ndarray:
        """(T, H, W) uint16 VIPSeg panoptic values (see :func:`to_vipseg_panoptic`)."""
        return to_vipseg_panoptic(self.raw, self.instances)


def to_vipseg_panoptic(raw: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """Encodes raw semantic ids and instance ids as VIPSeg panoptic values.

    Stuff pixels keep their raw id (< 125); thing pixels become ``raw_id * 100 + instance``
    (>= 125); others (0) and void (255) both become 0, because a 255 would decode as class
    255 // 100 = 2 and both are ignored in evaluation anyway.

    Args:
        raw: (..., H, W) raw VSPW ids.
        instances: (..., H, W) instance ids, 0 for non-things, 1…99 for things.

    Returns:
        (..., H, W) uint16 panoptic values.
    """
    raw = np.asarray(raw).astype(np.int64)
    instances = np.asarray(instances).astype(np.int64)
    if instances.max(initial=0) >= VIPSEG_INSTANCE_DIVISOR:
        raise ValueError(f"VIPSeg instance ids must be < {VIPSEG_INSTANCE_DIVISOR}")
    panoptic = np.where(raw == RAW_VOID, 0, raw)
    thing = (instances > 0) & (raw != RAW_VOID) & (raw != RAW_OTHERS)
    panoptic = np.where(thing, raw * VIPSEG_INSTANCE_DIVISOR + instances, panoptic)
    if (panoptic[thing] < VIPSEG_THING_OFFSET).any():
        raise ValueError("a thing's panoptic value is < 125 and would decode as stuff")
    return panoptic.astype(np.uint16)


# --------------------------------------------------------------------------------------
# Noise and geometry helpers
# --------------------------------------------------------------------------------------


def _interpolate_axis(
    values: np.ndarray, axis: int, left: np.ndarray, right: np.ndarray, frac: np.ndarray
) -> np.ndarray:
    """Blends ``values[left]`` and ``values[right]`` along `axis` with weights `frac`.

    Gathers rather than interpolation-matrix products: OpenBLAS threads spin and slow down
    several-fold when the cores are shared (parallel test runs), and these products are tiny.
    """
    shape = [1] * values.ndim
    shape[axis] = -1
    low = np.take(values, left, axis=axis)
    high = np.take(values, right, axis=axis)
    return low + (high - low) * frac.reshape(shape)


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], cell: float | Sequence[float]) -> np.ndarray:
    """Smooth random field of roughly unit variance: separable value noise.

    Args:
        rng: random generator.
        shape: output shape, any number of axes.
        cell: correlation length in samples, one for all axes or one per axis (<= 1: white).

    Returns:
        float32 array of `shape`.
    """
    cells = [float(cell)] * len(shape) if np.isscalar(cell) else [float(c) for c in cell]  # type: ignore[arg-type]
    knots = []
    for n, c in zip(shape, cells):
        pos = np.arange(int(n), dtype=np.float64) / max(c, 1.0)
        left = np.floor(pos).astype(np.int64)
        frac = pos - left
        frac = (frac * frac * (3.0 - 2.0 * frac)).astype(np.float32)  # smoothstep: C1, no visible kinks
        knots.append((left, left + 1, frac))
    out = rng.standard_normal([int(k[0].max()) + 2 for k in knots]).astype(np.float32)
    for axis, ((left, right, frac), c) in enumerate(zip(knots, cells)):
        if c <= 1.0:  # white along this axis: one knot per sample
            out = out[(slice(None),) * axis + (slice(0, left.size),)]
        else:
            out = _interpolate_axis(out, axis, left, right, frac)
    return np.ascontiguousarray(out)


def _ellipse(
    shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float], angle: float
) -> np.ndarray:
    """(H, W) bool mask of a rotated ellipse; centre and radii as (y, x) in pixels."""
    yy = np.arange(shape[0], dtype=np.float32)[:, None] - centre[0]
    xx = np.arange(shape[1], dtype=np.float32)[None, :] - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (xx * cos + yy * sin) / radii[1]
    v = (-xx * sin + yy * cos) / radii[0]
    return u * u + v * v < 1.0


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _texture(rng: np.random.Generator, raw_id: int, shape: tuple[int, int], height: int) -> np.ndarray:
    """A class-styled texture: (H, W, 3) float32 RGB around the class colour.

    The style (colour, stripe period and direction, contrast) is fixed per class; the noise
    realisation and a small colour shift come from the video's `rng`.
    """
    style = _class_rng(raw_id)
    low_cell = style.uniform(0.05, 0.25) * height
    low_amp = style.uniform(8.0, 22.0)
    stripe_period = style.uniform(0.04, 0.3) * height
    stripe_angle = style.uniform(0.0, np.pi)
    stripe_amp = style.uniform(0.0, 18.0)
    grain_amp = style.uniform(2.0, 8.0)
    tint = style.uniform(-0.25, 0.25, size=3).astype(np.float32)

    yy = np.arange(shape[0], dtype=np.float32)[:, None]
    xx = np.arange(shape[1], dtype=np.float32)[None, :]
    phase = rng.uniform(0.0, 2.0 * np.pi)
    stripes = np.sin(2.0 * np.pi * (xx * np.cos(stripe_angle) + yy * np.sin(stripe_angle)) / stripe_period + phase)
    luminance = (
        low_amp * _smooth_noise(rng, shape, low_cell)
        + stripe_amp * stripes
        + grain_amp * rng.standard_normal(shape, dtype=np.float32)
    )  # (H, W)
    colour = _class_colour(raw_id) + rng.normal(0.0, 8.0, size=3).astype(np.float32)
    return colour[None, None, :] + luminance[..., None] * (1.0 + tint[None, None, :])


def _stuff_layout(rng: np.random.Generator, config: SyntheticConfig, shape: tuple[int, int]) -> np.ndarray:
    """(Hc, Wc) int64 region index 0…num_stuff−1, ordered top to bottom with wiggly boundaries."""
    canvas_h, canvas_w = shape
    n = config.num_stuff
    amplitude = config.boundary_roughness * config.height
    yy = np.arange(canvas_h, dtype=np.float32)[:, None]
    # A 2-D warp makes regions irregular blobs rather than bands with wavy edges.
    warped_y = yy + 0.5 * amplitude * _smooth_noise(rng, shape, 0.25 * config.height)
    spacing = canvas_h / n
    region = np.zeros(shape, dtype=np.int64)
    for k in range(1, n):
        base = k * spacing + rng.uniform(-0.3, 0.3) * spacing
        edge = base + amplitude * _smooth_noise(rng, (canvas_w,), 0.35 * config.height)  # (Wc,)
        region += warped_y > edge[None, :]
    return region


def _camera_path(rng: np.random.Generator, num_frames: int, margin: tuple[int, int]) -> np.ndarray:
    """(T, 2) int64 top-left corner (y, x) of the frame on the canvas, a smooth pan."""
    start = np.array([rng.integers(0, 2 * m + 1) for m in margin], dtype=np.float64)
    end = np.array([rng.integers(0, 2 * m + 1) for m in margin], dtype=np.float64)
    s = np.linspace(0.0, 1.0, num_frames)[:, None]
    ease = s * s * (3.0 - 2.0 * s)  # accelerate and decelerate like a hand-held pan
    return np.rint(start + (end - start) * ease).astype(np.int64)


@dataclass
class _Blob:
    """A moving object: trajectory in canvas coordinates and shape/appearance parameters."""

    raw_id: int
    instance: int
    centre: np.ndarray  # (T, 2) float (y, x) on the canvas
    radii: np.ndarray  # (T, 2) float half-height, half-width
    angle: np.ndarray  # (T,) float rotation
    harmonics: np.ndarray  # (K, 3) order, amplitude, phase of the outline wobble
    colour: np.ndarray  # (3,) float32
    stripe_freq: float
    stripe_amp: float


def _make_thing(
    rng: np.random.Generator,
    config: SyntheticConfig,
    raw_id: int,
    instance: int,
    num_frames: int,
    camera: np.ndarray,
) -> _Blob:
    h, w = config.height, config.width
    name = vspw_classes().names[raw_id - 1]
    t = np.arange(num_frames, dtype=np.float64)
    t_mid = rng.uniform(0.3, 0.7) * (num_frames - 1)
    mid_index = int(round(t_mid))
    # In the frame at mid-clip, so every object is seen; objects near the edges enter or leave.
    mid_frame = np.array([rng.uniform(0.3, 0.9) * h, rng.uniform(0.1, 0.9) * w])
    mid_canvas = mid_frame + camera[mid_index]
    direction = rng.normal(0.0, 0.35) + (np.pi if rng.random() < 0.5 else 0.0)
    speed = rng.uniform(*config.thing_travel) * w / max(num_frames - 1, 1)
    velocity = speed * np.array([np.sin(direction), np.cos(direction)])
    bob = rng.uniform(0.0, 0.03) * h * np.sin(rng.uniform(0.2, 0.6) * t + rng.uniform(0, 2 * np.pi))
    centre = mid_canvas[None, :] + velocity[None, :] * (t - t_mid)[:, None]
    centre[:, 0] += bob
    # Approaching or receding objects change size.
    scale = np.exp(rng.uniform(-0.3, 0.3) * (t - t_mid) / max(num_frames - 1, 1))
    half_h = rng.uniform(*config.thing_size) * h
    aspect = THING_ASPECT.get(name, 1.0) * rng.uniform(0.85, 1.15)
    radii = np.stack([half_h * scale, half_h * aspect * scale], axis=1)
    angle = rng.uniform(-0.2, 0.2) + rng.uniform(-0.01, 0.01) * (t - t_mid)
    orders = np.arange(2, 5, dtype=np.float64)
    harmonics = np.stack(
        [orders, rng.uniform(0.0, 0.08, size=orders.size), rng.uniform(0.0, 2 * np.pi, size=orders.size)], axis=1
    )
    style = _class_rng(raw_id)
    return _Blob(
        raw_id=raw_id,
        instance=instance,
        centre=centre,
        radii=radii,
        angle=angle,
        harmonics=harmonics,
        colour=_class_colour(raw_id) + rng.normal(0.0, 10.0, size=3).astype(np.float32),
        stripe_freq=float(style.uniform(0.5, 4.0)),
        stripe_amp=float(style.uniform(0.0, 25.0)),
    )


def _make_others(rng: np.random.Generator, config: SyntheticConfig, num_frames: int, camera: np.ndarray) -> _Blob:
    """A static unlabelled object placed where the camera sees it in every frame."""
    h, w = config.height, config.width
    low = camera.max(axis=0) + np.array([0.2 * h, 0.2 * w])
    high = camera.min(axis=0) + np.array([0.8 * h, 0.8 * w])
    centre = rng.uniform(np.minimum(low, high), np.maximum(low, high))
    half = rng.uniform(0.06, 0.12) * h
    radii = np.array([half, half * rng.uniform(0.7, 1.5)])
    return _Blob(
        raw_id=RAW_OTHERS,
        instance=0,
        centre=np.repeat(centre[None, :], num_frames, axis=0),
        radii=np.repeat(radii[None, :], num_frames, axis=0),
        angle=np.full(num_frames, rng.uniform(0, np.pi)),
        harmonics=np.array([[3.0, rng.uniform(0.0, 0.1), rng.uniform(0, 2 * np.pi)]]),
        colour=rng.uniform(30, 230, size=3).astype(np.float32),
        stripe_freq=float(rng.uniform(0.5, 4.0)),
        stripe_amp=float(rng.uniform(0.0, 20.0)),
    )


def _render_blob(
    blob: _Blob, camera: np.ndarray, shape: tuple[int, int]
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """Rasterises a blob in every frame, within the box it can reach over the whole clip.

    Returns:
        box: (rows, cols) slices of the frame that can contain the blob.
        mask: (T, h, w) bool, where the blob covers the box.
        rgb: (T, h, w, 3) float32, its shaded texture (valid where `mask`).
    """
    h, w = shape
    centre = blob.centre - camera  # (T, 2) in frame coordinates
    reach = blob.radii.max(axis=1) * (1.0 + blob.harmonics[:, 1].sum())  # (T,) no outline goes further
    top, left = np.floor((centre - reach[:, None]).min(axis=0)).astype(int)
    bottom, right = np.ceil((centre + reach[:, None]).max(axis=0)).astype(int) + 1
    rows = slice(min(max(top, 0), h), min(max(bottom, 0), h))
    cols = slice(min(max(left, 0), w), min(max(right, 0), w))
    # Box pixel -> offset from the blob centre.
    dy = np.arange(rows.start, rows.stop, dtype=np.float32)[None, :, None] - centre[:, 0, None, None].astype(np.float32)
    dx = np.arange(cols.start, cols.stop, dtype=np.float32)[None, None, :] - centre[:, 1, None, None].astype(np.float32)
    cos = np.cos(blob.angle).astype(np.float32)[:, None, None]
    sin = np.sin(blob.angle).astype(np.float32)[:, None, None]
    u = (dx * cos + dy * sin) / blob.radii[:, 1].astype(np.float32)[:, None, None]  # (T, h, w) across
    v = (-dx * sin + dy * cos) / blob.radii[:, 0].astype(np.float32)[:, None, None]  # (T, h, w) down
    rho = np.sqrt(u * u + v * v)
    phi = np.arctan2(v, u)
    limit = np.ones_like(rho)
    for order, amplitude, phase in blob.harmonics:
        limit += np.float32(amplitude) * np.cos(np.float32(order) * phi + np.float32(phase))
    mask = rho < limit
    # Lit from above, with a class-specific pattern that moves with the object.
    shade = 1.0 - 0.25 * np.clip(v, -1.0, 1.0)
    pattern = blob.stripe_amp * np.sin(2.0 * np.pi * blob.stripe_freq * u)
    rgb = blob.colour[None, None, None, :] * shade[..., None] + pattern[..., None]
    return (rows, cols), mask, rgb


def generate_video(
    rng: np.random.Generator,
    config: SyntheticConfig,
    num_frames: int,
    scene: str | None = None,
    name: str = "video",
) -> SyntheticVideo:
    """Generates one clip: frames, raw VSPW labels and instance ids.

    Args:
        rng: the video's random generator (everything random is drawn from it).
        config: sizes and content parameters.
        num_frames: number of frames T.
        scene: scene kind (key of :data:`SCENES`); drawn from ``config.scenes`` if None.
        name: video name stored on the result.

    Returns:
        The clip; see :class:`SyntheticVideo` for shapes and dtypes.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if scene is None:
        scene = str(rng.choice(list(config.scenes)))
    kind = SCENES[scene]
    h, w = config.height, config.width
    margin = (int(round(config.camera_pan * h)), int(round(config.camera_pan * w)))
    canvas_shape = (h + 2 * margin[0], w + 2 * margin[1])

    # Stuff: choose classes keeping the scene's top-to-bottom order (sky above road).
    take = min(config.num_stuff, len(kind.stuff))
    picked = sorted(rng.choice(len(kind.stuff), size=take, replace=False).tolist())
    picked += sorted(rng.integers(0, len(kind.stuff), size=config.num_stuff - take).tolist())
    stuff_ids = np.array([_raw_id(kind.stuff[i]) for i in sorted(picked)], dtype=np.uint8)
    region = _stuff_layout(rng, config, canvas_shape)  # (Hc, Wc) int64
    canvas_raw = stuff_ids[region]  # (Hc, Wc) uint8
    canvas_rgb = np.zeros(canvas_shape + (3,), dtype=np.float32)  # (Hc, Wc, 3)
    for index, raw_id in enumerate(stuff_ids.tolist()):
        inside = region == index
        if inside.any():
            canvas_rgb[inside] = _texture(rng, raw_id, canvas_shape, h)[inside]

    camera = _camera_path(rng, num_frames, margin)  # (T, 2)
    rows = camera[:, 0, None] + np.arange(h)[None, :]  # (T, H)
    cols = camera[:, 1, None] + np.arange(w)[None, :]  # (T, W)
    raw = canvas_raw[rows[:, :, None], cols[:, None, :]]  # (T, H, W) uint8
    rgb = canvas_rgb[rows[:, :, None], cols[:, None, :]]  # (T, H, W, 3) float32
    instances = np.zeros(raw.shape, dtype=np.int32)  # (T, H, W)

    # Others first (they sit on the background), then things far to near so near ones occlude.
    blobs = [_make_others(rng, config, num_frames, camera) for _ in range(config.others_regions)]
    things = [
        _make_thing(rng, config, _raw_id(str(rng.choice(list(kind.things)))), i + 1, num_frames, camera)
        for i in range(config.num_things)
    ]
    blobs += [things[i] for i in rng.permutation(len(things))]
    for blob in blobs:
        (rows_box, cols_box), mask, colour = _render_blob(blob, camera, (h, w))
        # Basic slicing gives views, so these writes land in the full arrays.
        raw[:, rows_box, cols_box][mask] = blob.raw_id
        instances[:, rows_box, cols_box][mask] = blob.instance
        rgb[:, rows_box, cols_box][mask] = colour[mask]

    # VSPW leaves a thin void band along some object outlines.
    if things and config.void_width > 0:
        banded = rng.random(len(things)) < config.void_fraction
        banded[rng.integers(len(things))] = True
        around = np.zeros((1, 3, 3), dtype=bool)
        around[0] = True  # dilate within each frame only
        for thing, use in zip(things, banded):
            visible = instances == thing.instance
            if not use or not visible.any():
                continue
            band = ndimage.binary_dilation(visible, structure=around, iterations=config.void_width) & ~visible
            raw[band] = RAW_VOID
            instances[band] = 0

    if config.blur_sigma > 0:
        rgb = ndimage.gaussian_filter(rgb, sigma=(0, config.blur_sigma, config.blur_sigma, 0))
    if config.noise_std > 0:
        rgb += config.noise_std * rng.standard_normal(rgb.shape, dtype=np.float32)
    frames = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)  # (T, H, W, 3)
    return SyntheticVideo(
        name=name,
        scene=scene,
        frames=frames,
        raw=raw,
        instances=instances,
        instance_classes={t.instance: t.raw_id for t in things},
    )


def video_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator for one item (video, prediction) derived from the dataset seed and keys.

    Args:
        seed: dataset seed.
        keys: what identifies the item (strings are hashed stably, ints used as they are).

    Returns:
        An independent, reproducible generator.
    """
    entropy = [int(seed)] + [_stable_hash(k) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def iter_videos(config: SyntheticConfig) -> Iterator[tuple[str, SyntheticVideo]]:
    """Generates every video of the dataset, split by split.

    Video ``index`` of ``split`` is named ``<split>_<index:03d>_<scene>`` and drawn from
    ``video_rng(config.seed, split, index)``, so adding videos to one split changes no other.

    Yields:
        (split, video) pairs.
    """
    for split, count in config.videos.items():
        for index in range(count):
            rng = video_rng(config.seed, split, index)
            num_frames = int(rng.integers(config.min_frames, config.max_frames + 1))
            scene = str(rng.choice(list(config.scenes)))
            name = f"{split}_{index:03d}_{scene}"
            yield split, generate_video(rng, config, num_frames, scene=scene, name=name)


# --------------------------------------------------------------------------------------
# Simulated predictions
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionProfile:
    """Error model of a simulated VSS model. Every term defaults to "off".

    Attributes:
        downsample: output stride of the simulated head; > 1 rounds corners, shifts
            boundaries and drops thin structures (class scores are area-pooled by this
            factor, then bilinearly upsampled and arg-maxed).
        jitter_px: amplitude (std) of a smooth displacement field warping the labels.
        jitter_cell: spatial correlation length of that field, in pixels.
        jitter_period: frames between independent displacement fields (1 = new every frame,
            which flickers; large = slow drift, which does not).
        dilate_px: one object-like class per video bleeds this many pixels into its surroundings.
        confusion_prob: chance per object-like class of a stretch of frames labelled as its
            look-alike (e.g. dog as cat).
        confusion_frames: (min, max) length of such a stretch.
        persistent_blobs: expected number of wrong blobs per video that stay a few frames.
        persistent_frames: (min, max) frames such a blob lasts.
        blob_radius: (min, max) blob radius as a fraction of the frame height.
        switch_prob: chance per frame that one present class switches to its look-alike.
        switch_frames: (min, max) frames a switch lasts.
        flicker_blobs: expected number of one-frame wrong blobs per frame.
        class_swap_fraction: fraction of all classes that the model systematically mistakes
            for their look-alike, in every video and split (which classes: a fixed function of
            the class id and ``class_seed``, :func:`classwise_classes`).
        class_swap_coverage: share of such a class's pixels (in each video) predicted as its
            look-alike: a spatially coherent part, the low values of a smooth noise field; above
            0.5, the majority vote inside a pure region of the class picks the look-alike.
        class_swap_cell: spatial correlation length of that noise field, in pixels.
        class_swap_period: frames over which that noise field drifts (large = a steady error).
        class_bleed_fraction: fraction of all classes (disjoint from the swapped ones) that
            bleed into their neighbours in every video.
        class_bleed_px: how far such a class bleeds, in pixels (per-frame dilation).
        class_seed: chooses the classes of the two class-dependent terms; fixed per profile so
            the same classes are affected in every video, split and dataset seed.
    """

    downsample: int = 1
    jitter_px: float = 0.0
    jitter_cell: float = 24.0
    jitter_period: int = 8
    dilate_px: int = 0
    confusion_prob: float = 0.0
    confusion_frames: tuple[int, int] = (4, 10)
    persistent_blobs: float = 0.0
    persistent_frames: tuple[int, int] = (4, 12)
    blob_radius: tuple[float, float] = (0.03, 0.08)
    switch_prob: float = 0.0
    switch_frames: tuple[int, int] = (1, 2)
    flicker_blobs: float = 0.0
    class_swap_fraction: float = 0.0
    class_swap_coverage: float = 0.8
    class_swap_cell: float = 16.0
    class_swap_period: int = 16
    class_bleed_fraction: float = 0.0
    class_bleed_px: int = 4
    class_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("class_swap_fraction", "class_swap_coverage", "class_bleed_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"PredictionProfile.{name} must be in [0, 1], got {value}")
        if self.class_swap_fraction + self.class_bleed_fraction > 1.0:
            raise ValueError(
                "PredictionProfile: class_swap_fraction + class_bleed_fraction must be <= 1 (the two class "
                f"subsets are disjoint), got {self.class_swap_fraction} + {self.class_bleed_fraction}"
            )
        if self.class_bleed_px < 0:
            raise ValueError(f"PredictionProfile.class_bleed_px must be >= 0, got {self.class_bleed_px}")
        if self.class_swap_cell <= 0 or self.class_swap_period < 1:
            raise ValueError(
                "PredictionProfile: class_swap_cell must be > 0 and class_swap_period >= 1, got "
                f"{self.class_swap_cell}, {self.class_swap_period}"
            )


PROFILES: dict[str, PredictionProfile] = {
    # A good model: 1-2 px boundary drift that changes slowly, rare small persistent mistakes.
    "sim_strong": PredictionProfile(
        jitter_px=1.5, jitter_period=16, confusion_prob=0.05, persistent_blobs=2.0, blob_radius=(0.03, 0.07)
    ),
    # A low-resolution head: coarse, displaced boundaries, bleeding objects, look-alike mix-ups.
    "sim_boundary": PredictionProfile(
        downsample=8, jitter_px=3.0, jitter_period=8, dilate_px=3, confusion_prob=0.3, persistent_blobs=1.0
    ),
    # A per-frame model: decent frames, but classes and blobs come and go from frame to frame.
    "sim_flicker": PredictionProfile(
        jitter_px=1.5, jitter_period=1, switch_prob=0.25, flicker_blobs=1.0, blob_radius=(0.05, 0.12)
    ),
    # A decent model with class-dependent blind spots, the same in every video and split: a
    # fixed fifth of the classes is mostly predicted as its look-alike, another fifth bleeds
    # into its neighbours. What a refinement rule learns about these classes on train holds on val.
    # class_seed 16 affects both things and stuff of every scene (swapped: car, chair, grass, horse,
    # motorcycle, umbrella, sofa, stone, table, water; bleeding: ball, bicycle, bus, ground,
    # mountain, wall), so most train and val videos of the default datasets show both terms.
    "sim_classwise": PredictionProfile(
        jitter_px=1.5,
        jitter_period=16,
        persistent_blobs=1.0,
        blob_radius=(0.03, 0.07),
        class_swap_fraction=0.2,
        class_bleed_fraction=0.2,
        class_seed=16,
    ),
}


@lru_cache(maxsize=4)
def _lookalike_lut(num_classes: int) -> np.ndarray:
    """(num_classes,) int64: the class each class is mistaken for (never itself)."""
    lut = (np.arange(num_classes) + num_classes // 2) % num_classes
    table = vspw_classes()
    if num_classes == table.num_classes:
        index = {name: i for i, name in enumerate(table.names)}
        for name, other in LOOKALIKES.items():
            lut[index[name]] = index[other]
    lut.setflags(write=False)
    return lut


@lru_cache(maxsize=8)
def _class_draws(class_seed: int, num_classes: int) -> np.ndarray:
    """(num_classes,) float64 in [0, 1): one fixed draw per class id, from its own stream.

    Each class's draw depends only on ``(class_seed, class id)``, never on a video, a split or
    the dataset seed, nor on how many classes there are.
    """
    key = _stable_hash("classwise")
    draws = [np.random.default_rng(np.random.SeedSequence([key, class_seed, c])).random() for c in range(num_classes)]
    out = np.asarray(draws, dtype=np.float64)
    out.setflags(write=False)
    return out


def classwise_classes(
    profile: str | PredictionProfile, num_classes: int = NUM_CLASSES
) -> tuple[np.ndarray, np.ndarray]:
    """The classes a profile's class-dependent error terms affect, the same in every video.

    A class is *swapped* (mostly predicted as its look-alike) when its fixed draw
    (:func:`_class_draws` of ``profile.class_seed``) is below ``class_swap_fraction``, and
    *bleeding* when the draw lies in ``[class_swap_fraction, class_swap_fraction +
    class_bleed_fraction)``: two disjoint subsets, each about that fraction of all classes.

    Args:
        profile: a key of :data:`PROFILES` or a :class:`PredictionProfile`.
        num_classes: number of classes C.

    Returns:
        (swapped, bleeding): sorted int64 evaluation ids, each possibly empty.
    """
    params = PROFILES[profile] if isinstance(profile, str) else profile
    draws = _class_draws(params.class_seed, num_classes)
    swap_end = params.class_swap_fraction
    bleed_end = swap_end + params.class_bleed_fraction
    swapped = np.flatnonzero(draws < swap_end)
    bleeding = np.flatnonzero((draws >= swap_end) & (draws < bleed_end))
    return swapped.astype(np.int64), bleeding.astype(np.int64)


def _fill_ignore(gt: np.ndarray) -> np.ndarray:
    """(T, H, W) int64 labels with every ignore pixel given the nearest valid class."""
    filled = gt.astype(np.int64)
    ignore = gt == IGNORE_INDEX  # (T, H, W)
    previous = np.zeros(gt.shape[1:], dtype=np.int64)  # what a frame with no valid pixel repeats
    for frame in range(gt.shape[0]):
        if ignore[frame].all():
            filled[frame] = previous
        elif ignore[frame].any():
            # Per frame (2-D) is about 3x faster than one 3-D transform and never looks across time.
            rows, cols = ndimage.distance_transform_edt(ignore[frame], return_distances=False, return_indices=True)
            filled[frame] = filled[frame][rows, cols]
        previous = filled[frame]
    return filled


def _low_resolution(pred: np.ndarray, factor: int) -> np.ndarray:
    """Simulates a head with output stride `factor`: area-pool class scores, upsample, argmax."""
    t, h, w = pred.shape
    classes = _present(pred)
    if classes.size == 1:
        return pred
    to_index = np.zeros(int(classes.max()) + 1, dtype=np.int64)
    to_index[classes] = np.arange(classes.size)
    index = to_index[pred]  # (T, H, W) position of each pixel's class in `classes`
    k = classes.size
    small_h, small_w = max(1, -(-h // factor)), max(1, -(-w // factor))
    cell_y = np.arange(h) * small_h // h  # (H,) low-resolution row of each row
    cell_x = np.arange(w) * small_w // w  # (W,)
    # Area pooling of the one-hot class scores as one histogram: bin = (frame, class, cell).
    bins = (np.arange(t)[:, None, None] * k + index) * small_h + cell_y[None, :, None]
    bins = bins * small_w + cell_x[None, None, :]  # (T, H, W)
    counts = np.bincount(bins.ravel(), minlength=t * k * small_h * small_w).astype(np.float32)
    area = np.outer(np.bincount(cell_y, minlength=small_h), np.bincount(cell_x, minlength=small_w))  # (h', w')
    small = counts.reshape(t, k, small_h, small_w) / area.astype(np.float32)  # (T, K, h', w')
    rows, cols = _bilinear_knots(h, small_h), _bilinear_knots(w, small_w)
    # Running arg-max over classes: never holds all (T, K, H, W) scores in memory.
    best = np.full(pred.shape, -1.0, dtype=np.float32)  # (T, H, W)
    winner = np.zeros(pred.shape, dtype=np.int64)  # (T, H, W) index into `classes`
    for position in range(k):
        score = _interpolate_axis(_interpolate_axis(small[:, position], 1, *rows), 2, *cols)  # (T, H, W)
        better = score > best  # strict: ties keep the lower class, as argmax does
        best[better] = score[better]
        winner[better] = position
    return classes[winner]


def _bilinear_knots(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left / right source index and weight of each output sample, pixel centres aligned."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1.0)
    left = np.floor(pos).astype(np.int64)
    return left, np.minimum(left + 1, n_in - 1), (pos - left).astype(np.float32)


def _present(labels: np.ndarray) -> np.ndarray:
    """Sorted class ids present in a non-negative integer label array (faster than np.unique)."""
    return np.flatnonzero(np.bincount(labels.ravel()))


def _object_like(pred: np.ndarray) -> np.ndarray:
    """Classes covering the smaller half of the present classes' areas: objects rather than background."""
    counts = np.bincount(pred.ravel())
    classes = np.flatnonzero(counts)
    order = np.argsort(counts[classes], kind="stable")
    return classes[order[: max(1, classes.size // 2)]]


def _random_ellipse(rng: np.random.Generator, shape: tuple[int, int], radius: tuple[float, float]) -> np.ndarray:
    """(H, W) bool: an ellipse at a random place with radii drawn from `radius` (fraction of H)."""
    h, w = shape
    centre = (rng.uniform(0, h), rng.uniform(0, w))
    radii = (rng.uniform(*radius) * h, rng.uniform(*radius) * h)
    return _ellipse(shape, centre, radii, rng.uniform(0, np.pi))


def simulate_prediction(
    gt_eval: np.ndarray,
    profile: str | PredictionProfile,
    rng: np.random.Generator,
    num_classes: int = NUM_CLASSES,
) -> np.ndarray:
    """Simulates a VSS model's prediction of a video from its ground truth.

    Ignore pixels first take the nearest valid class (a model predicts everywhere); then the
    profile's error terms apply in order: low resolution, bleeding, class-dependent bleeding,
    class-dependent look-alike swaps, boundary warp, look-alike stretches, persistent blobs,
    per-frame class switches, per-frame blobs.

    Args:
        gt_eval: (T, H, W) evaluation ids, 255 = ignore.
        profile: a key of :data:`PROFILES` or a :class:`PredictionProfile`.
        rng: random generator (the result is a function of the GT, the profile and its state).
        num_classes: number of classes C.

    Returns:
        (T, H, W) uint8 evaluation ids in 0…C−1.

    Raises:
        KeyError: unknown profile name.
        ValueError: wrong shape, ids outside 0…C−1 and 255, or C > 255.
    """
    params = PROFILES[profile] if isinstance(profile, str) else profile
    if not 1 <= num_classes <= IGNORE_INDEX:
        raise ValueError(f"num_classes must be in 1..{IGNORE_INDEX} (ids are uint8, 255 = ignore), got {num_classes}")
    gt = np.asarray(gt_eval)
    if gt.ndim != 3:
        raise ValueError(f"gt_eval must be (T, H, W), got shape {gt.shape}")
    bad = (gt >= num_classes) & (gt != IGNORE_INDEX) | (gt < 0)
    if bad.any():
        raise ValueError(f"gt_eval ids must be in 0..{num_classes - 1} or 255, got {np.unique(gt[bad])[:10].tolist()}")
    t, h, w = gt.shape
    lookalike = _lookalike_lut(num_classes)
    pred = _fill_ignore(gt)  # (T, H, W) int64

    if params.downsample > 1:
        pred = _low_resolution(pred, params.downsample)

    if params.dilate_px > 0:
        bleeding = rng.choice(_object_like(pred))
        around = np.zeros((1, 3, 3), dtype=bool)
        around[0] = True
        grown = ndimage.binary_dilation(pred == bleeding, structure=around, iterations=params.dilate_px)
        pred[grown] = bleeding

    # The class-dependent terms draw from `rng` only when on, so the other profiles' draws
    # (and predictions) are exactly what they were before these terms existed.
    if params.class_bleed_fraction > 0 and params.class_bleed_px > 0:
        _, bleeding_classes = classwise_classes(params, num_classes)
        around = np.zeros((1, 3, 3), dtype=bool)
        around[0] = True  # within each frame
        for cls in np.intersect1d(bleeding_classes, _present(pred)):
            grown = ndimage.binary_dilation(pred == cls, structure=around, iterations=params.class_bleed_px)
            pred[grown] = cls

    if params.class_swap_fraction > 0 and params.class_swap_coverage > 0:
        swapped_classes, _ = classwise_classes(params, num_classes)
        hit = np.intersect1d(swapped_classes, _present(pred))
        if hit.size:
            cells = (float(params.class_swap_period), params.class_swap_cell, params.class_swap_cell)
            field = _smooth_noise(rng, (t, h, w), cells)  # (T, H, W) float32
            before = pred.copy()  # a class swapped into another swapped class is not swapped twice
            for cls in hit:
                inside = before == cls  # (T, H, W)
                # Threshold at the coverage quantile of the class's own pixels: exactly that share
                # of its area, in coherent patches where the field is low.
                level = np.quantile(field[inside], params.class_swap_coverage)
                pred[inside & (field <= level)] = lookalike[cls]

    if params.jitter_px > 0:
        cells = (float(params.jitter_period), params.jitter_cell, params.jitter_cell)
        dy = params.jitter_px * _smooth_noise(rng, (t, h, w), cells)  # (T, H, W)
        dx = params.jitter_px * _smooth_noise(rng, (t, h, w), cells)
        rows = np.clip(np.rint(np.arange(h)[None, :, None] + dy), 0, h - 1).astype(np.int64)
        cols = np.clip(np.rint(np.arange(w)[None, None, :] + dx), 0, w - 1).astype(np.int64)
        pred = pred[np.arange(t)[:, None, None], rows, cols]

    if params.confusion_prob > 0:
        for cls in _object_like(pred):
            if rng.random() >= params.confusion_prob:
                continue
            length = int(rng.integers(params.confusion_frames[0], params.confusion_frames[1] + 1))
            start = int(rng.integers(0, max(1, t - length + 1)))
            window = pred[start : start + length]
            window[window == cls] = lookalike[cls]

    def paint_blob(frames: slice, mask: np.ndarray) -> None:
        # A wrong blob relabels whatever lies under it as its look-alike.
        window = pred[frames]
        window[:, mask] = lookalike[window[:, mask]]

    for _ in range(rng.poisson(params.persistent_blobs) if params.persistent_blobs > 0 else 0):
        length = int(rng.integers(params.persistent_frames[0], params.persistent_frames[1] + 1))
        start = int(rng.integers(0, max(1, t - length + 1)))
        paint_blob(slice(start, start + length), _random_ellipse(rng, (h, w), params.blob_radius))

    if params.switch_prob > 0:
        for frame in range(t):
            if rng.random() >= params.switch_prob:
                continue
            cls = rng.choice(_present(pred[frame]))
            length = int(rng.integers(params.switch_frames[0], params.switch_frames[1] + 1))
            window = pred[frame : frame + length]
            window[window == cls] = lookalike[cls]

    if params.flicker_blobs > 0:
        for frame in range(t):
            for _ in range(rng.poisson(params.flicker_blobs)):
                paint_blob(slice(frame, frame + 1), _random_ellipse(rng, (h, w), params.blob_radius))

    return pred.astype(np.uint8)


# --------------------------------------------------------------------------------------
# Writing and reading
# --------------------------------------------------------------------------------------


def _frame_name(index: int) -> str:
    return f"{index:0{FRAME_NAME_DIGITS}d}"


@lru_cache(maxsize=1)
def _raw_palette() -> list[int]:
    # Raw id k shows the colour of evaluation id k-1; others black, void white (like VSPW's viewer).
    colours = np.zeros((256, 3), dtype=np.uint8)
    colours[1 : NUM_CLASSES + 1] = palette()[:NUM_CLASSES]
    colours[RAW_VOID] = 255
    return colours.reshape(-1).tolist()


def _save_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    Image.fromarray(np.ascontiguousarray(rgb)).save(path, format="JPEG", quality=quality)


def _write_split_lists(root: Path, names: dict[str, list[str]]) -> None:
    for split in sorted(set(SPLITS) | set(names)):
        lines = names.get(split, [])
        (root / f"{split}.txt").write_text("".join(f"{n}\n" for n in lines))


def _write_vspw_video(root: Path, video: SyntheticVideo, config: SyntheticConfig) -> None:
    origin = root / "data" / video.name / "origin"
    masks = root / "data" / video.name / "mask"
    origin.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for index in range(video.num_frames):
        name = _frame_name(index)
        _save_jpeg(origin / f"{name}.jpg", video.frames[index], config.jpeg_quality)
        mask = Image.fromarray(video.raw[index])  # mode L ...
        mask.putpalette(_raw_palette())  # ... becomes P, like the real VSPW masks
        mask.save(masks / f"{name}.png")


def _write_vipseg_video(root: Path, video: SyntheticVideo, config: SyntheticConfig) -> None:
    images = root / "images" / video.name
    panomasks = root / "panomasks" / video.name
    images.mkdir(parents=True, exist_ok=True)
    panomasks.mkdir(parents=True, exist_ok=True)
    panoptic = video.panoptic  # (T, H, W) uint16
    for index in range(video.num_frames):
        name = _frame_name(index)
        _save_jpeg(images / f"{name}.jpg", video.frames[index], config.jpeg_quality)
        Image.fromarray(panoptic[index]).save(panomasks / f"{name}.png")  # mode I;16


def _write_datasets(config: SyntheticConfig, vspw_root: Path | None, vipseg_root: Path | None) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for split, video in iter_videos(config):
        names.setdefault(split, []).append(video.name)
        if vspw_root is not None:
            _write_vspw_video(vspw_root, video, config)
        if vipseg_root is not None:
            _write_vipseg_video(vipseg_root, video, config)
    for root in (vspw_root, vipseg_root):
        if root is not None:
            _write_split_lists(root, names)
    return names


def write_vspw(root: str | Path, config: SyntheticConfig) -> Path:
    """Writes the dataset in the VSPW layout.

    Args:
        root: dataset root; gets ``data/<video>/{origin,mask}/<frame>`` and ``<split>.txt``.
        config: what to generate.

    Returns:
        The root as a Path.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _write_datasets(config, root, None)
    return root


def write_vipseg(root: str | Path, config: SyntheticConfig) -> Path:
    """Writes the dataset in the VIPSeg layout (same videos as :func:`write_vspw`).

    Args:
        root: dataset root; gets ``images/<video>/<frame>.jpg``,
            ``panomasks/<video>/<frame>.png`` and ``<split>.txt``.
        config: what to generate.

    Returns:
        The root as a Path.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _write_datasets(config, None, root)
    return root


def read_split(dataset_root: str | Path, split: str) -> list[str]:
    """Video names listed in ``<dataset_root>/<split>.txt``."""
    text = (Path(dataset_root) / f"{split}.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_video_labels(dataset_root: str | Path, video: str, layout: str = "vspw") -> tuple[list[str], np.ndarray]:
    """Reads a video's ground truth as evaluation ids.

    Args:
        dataset_root: dataset root.
        video: video name.
        layout: "vspw" (raw masks) or "vipseg" (panoptic masks).

    Returns:
        Frame names (sorted) and (T, H, W) uint8 evaluation ids (255 = ignore).
    """
    if layout == "vspw":
        folder = Path(dataset_root) / "data" / video / "mask"
        decode = raw_to_eval
    elif layout == "vipseg":
        folder = Path(dataset_root) / "panomasks" / video
        decode = vipseg_panoptic_to_eval
    else:
        raise ValueError(f"layout must be 'vspw' or 'vipseg', got {layout!r}")
    paths = sorted(folder.glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"no masks in {folder}")
    labels = np.stack([decode(np.array(Image.open(p))) for p in paths])
    return [p.stem for p in paths], labels


def write_predictions(
    dataset_root: str | Path,
    out_root: str | Path,
    config: SyntheticConfig,
    split: str = "val",
    layout: str = "vspw",
) -> dict[str, Path]:
    """Writes simulated predictions of every model in ``config.models`` for one split.

    The ground truth is read back from `dataset_root`; predictions depend only on it and on
    ``video_rng(config.seed, "prediction", model, video)``, so both layouts give identical
    predictions.

    Args:
        dataset_root: dataset written by :func:`write_vspw` or :func:`write_vipseg`.
        out_root: gets ``<model>/<video>/<frame>.png`` (8-bit evaluation ids).
        config: seed and models.
        split: split to predict.
        layout: layout of `dataset_root`, "vspw" or "vipseg".

    Returns:
        Model name → its prediction folder.
    """
    out_root = Path(out_root)
    folders = {model: out_root / model for model in config.models}
    for video in read_split(dataset_root, split):
        frame_names, gt = read_video_labels(dataset_root, video, layout)
        for model, folder in folders.items():
            pred = simulate_prediction(gt, model, video_rng(config.seed, "prediction", model, video))
            target = folder / video
            target.mkdir(parents=True, exist_ok=True)
            for name, frame in zip(frame_names, pred):
                Image.fromarray(np.ascontiguousarray(frame)).save(target / f"{name}.png")
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return folders


def write_synthetic(root: str | Path, config: SyntheticConfig | None = None) -> dict[str, Path]:
    """Writes the whole synthetic benchmark: both layouts and the predictions of each model.

    Layout: ``<root>/vspw``, ``<root>/vipseg``, ``<root>/predictions/vspw/<model>`` and
    ``<root>/predictions/vipseg/<model>`` (each ``<video>/<frame>.png``). Every video of
    every split in ``config.prediction_splits`` (default train and val) gets a prediction of
    every model in ``config.models``, in the one folder per model (video names are unique
    across splits).

    Args:
        root: output folder.
        config: what to generate; defaults to ``SyntheticConfig()``.

    Returns:
        ``{"vspw": ..., "vipseg": ..., "predictions/vspw/<model>": ..., "predictions/vipseg/<model>": ...}``.
    """
    config = config or SyntheticConfig()
    root = Path(root)
    paths = {"vspw": root / "vspw", "vipseg": root / "vipseg"}
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    _write_datasets(config, paths["vspw"], paths["vipseg"])
    for split in config.prediction_splits:
        write_predictions(paths["vspw"], root / "predictions" / "vspw", config, split=split, layout="vspw")
    for model in config.models:
        folder = root / "predictions" / "vspw" / model
        folder.mkdir(parents=True, exist_ok=True)
        paths[f"predictions/vspw/{model}"] = folder
        # Both layouts decode to the same evaluation ids, so write_predictions(layout="vipseg")
        # would produce the same files (a test holds this); copying halves the cost.
        paths[f"predictions/vipseg/{model}"] = Path(
            shutil.copytree(folder, root / "predictions" / "vipseg" / model, dirs_exist_ok=True)
        )
    return paths


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(
        prog="python -m vssam2.synthetic",
        description="Write a synthetic VSPW/VIPSeg benchmark with simulated model predictions.",
    )
    parser.add_argument("--root", required=True, type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--height", type=int, default=defaults.height)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--min-frames", type=int, default=defaults.min_frames)
    parser.add_argument("--max-frames", type=int, default=defaults.max_frames)
    for split in SPLITS:
        parser.add_argument(f"--videos-{split}", type=int, default=defaults.videos[split], help=f"videos in {split}")
    parser.add_argument("--num-stuff", type=int, default=defaults.num_stuff)
    parser.add_argument("--num-things", type=int, default=defaults.num_things)
    parser.add_argument("--models", nargs="+", default=list(defaults.models), choices=sorted(PROFILES))
    parser.add_argument(
        "--prediction-splits",
        nargs="*",
        default=list(defaults.prediction_splits),
        choices=SPLITS,
        help="splits whose videos get model predictions (none: no predictions)",
    )
    parser.add_argument("--scenes", nargs="+", default=list(defaults.scenes), choices=sorted(SCENES))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: writes :func:`write_synthetic` output and prints a summary.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).
    """
    args = _parse_args(argv)
    config = SyntheticConfig(
        height=args.height,
        width=args.width,
        min_frames=args.min_frames,
        max_frames=args.max_frames,
        videos={split: getattr(args, f"videos_{split}") for split in SPLITS},
        num_stuff=args.num_stuff,
        num_things=args.num_things,
        seed=args.seed,
        models=tuple(args.models),
        prediction_splits=tuple(args.prediction_splits),
        scenes=tuple(args.scenes),
    )
    start = time.perf_counter()
    paths = write_synthetic(args.root, config)
    elapsed = time.perf_counter() - start
    per_split = {split: read_split(paths["vspw"], split) for split in config.videos}
    frames = {
        split: sum(len(list((paths["vspw"] / "data" / v / "mask").glob("*.png"))) for v in names)
        for split, names in per_split.items()
    }
    print(
        f"synthetic benchmark (seed {config.seed}, {config.height}x{config.width}) "
        f"written in {elapsed:.1f} s to {args.root}"
    )
    for split, names in per_split.items():
        print(f"  {split:<5} {len(names):3d} videos {frames[split]:5d} frames")
    for key, path in paths.items():
        print(f"  {key:<32} {path}")


if __name__ == "__main__":
    main()
