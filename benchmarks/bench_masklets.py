"""Benchmark: per-frame cost of masklet generation, stock sam2 pipeline vs vssam2's SAM2VideoSource.

Usage::

    python benchmarks/bench_masklets.py                      # tiny random model @256, 240x427 clip, W=8
    python benchmarks/bench_masklets.py --window 32          # one 32-frame window
    python benchmarks/bench_masklets.py --size 1024 --frames 3 --window 3 --max-objects 4 --points 8
                                                             # Hiera-T (sam2.1-tiny) random weights @1024, 480x853

Pipelines (same model object and weights, same frames, same proposal parameters, same
number of tracked objects, same torch thread count):

(a) **stock**: the clip is written as a JPEG folder (not timed); per window of W frames,
    sam2's ``SAM2AutomaticMaskGenerator`` on the keyframe (via ``StockProposer`` without
    shared features, so it runs its own ``set_image``), the top ``max_objects`` proposals
    (by predicted IoU); sam2's ``SAM2VideoPredictor.init_state(folder)`` (JPEG decode +
    PIL resize, eager encoding of frame 0), ``add_new_mask`` per object,
    ``propagate_in_video`` over the window; masks painted with vssam2's ``aggregate_masks``.
(b) **ours**: ``SAM2VideoSource(proposer="fast")`` fed the decoded JPEG frames from memory
    (one ``add_chunk`` per frame).

Both pipelines write their segment maps with the cache's ``VideoWriter`` (16-bit PNG per frame).

Stages are measured the same way for both, with hooks on the shared model: ``forward_image``
(image encoder), ``sam_mask_decoder``, ``memory_attention``, ``memory_encoder`` and
``sam_prompt_encoder`` forwards, each attributed to the phase it runs in (proposals,
prompts / propagation, loading). "proposal post-processing" is the proposal phase's time less
its encoder and decoder time; "propagation, other" is what propagation spends outside the
model components (state bookkeeping, upsampling to video resolution, hole filling, ...).
Propagation is also given per tracked object per propagated frame.

Random weights give noise-like masks: as in ``bench_proposals.py`` the hypernetwork output
layers are scaled by ``--hyper-scale 30`` and low thresholds are used (predicted IoU 0,
stability 0.5 with offset 0.5, NMS 1.0); as in ``tests/test_sam2_sources.py`` the object-score
head bias is set to +10 so that propagation keeps objects (otherwise random weights predict
"no object" and propagation is trivially cheap). The speed of the model components does not
depend on the weights; the amount of post-processing does (number of surviving masks).

Agreement: per window, stock objects are matched to ours by Hungarian matching on mask IoU
summed over the window's frames; reported: mean per-object per-frame IoU of matched pairs,
and segment-map agreement (fraction of pixels with the same covered / uncovered state, and
fraction where additionally the masklet ids correspond under the matching). The two differ by
design in resizing only: sam2's video predictor resizes JPEG frames with PIL (bicubic), ours
with torch bilinear-antialias (as sam2's image predictor does), so masks are close, not equal.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import vssam2.masklets.sam2_video as sam2_video_mod  # noqa: E402
from vssam2.masklets.aggregator import aggregate_masks  # noqa: E402
from vssam2.masklets.cache import MaskletCache  # noqa: E402
from vssam2.masklets.proposals import ProposalParams  # noqa: E402
from vssam2.masklets.random_weights import keep_objects, random_weight_params, sharpen_masks  # noqa: E402
from vssam2.masklets.sam2_model import TINY_TEST_CONFIG  # noqa: E402
from vssam2.masklets.sam2_video import SAM2VideoSource  # noqa: E402
from vssam2.masklets.stock_proposer import StockProposer  # noqa: E402
from vssam2.synthetic import SyntheticConfig, generate_video  # noqa: E402

COMPONENTS = ("encoder", "mask_decoder", "prompt_encoder", "memory_attention", "memory_encoder")


class Profiler:
    """Accumulates model-component time per (phase, component) with hooks on the shared model."""

    def __init__(self, model) -> None:
        self.model = model
        self.phase = "other"
        self.times: dict[tuple[str, str], float] = {}
        self.calls: dict[tuple[str, str], int] = {}
        self.phase_times: dict[str, float] = {}
        self._handles = []
        self._starts: dict[str, list[float]] = {}
        for name, module in (
            ("mask_decoder", model.sam_mask_decoder),
            ("prompt_encoder", model.sam_prompt_encoder),
            ("memory_attention", model.memory_attention),
            ("memory_encoder", model.memory_encoder),
        ):
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name)))
        original = type(model).forward_image

        def forward_image(img_batch):
            t0 = time.perf_counter()
            out = original(model, img_batch)
            self._add("encoder", time.perf_counter() - t0)
            return out

        model.forward_image = forward_image  # instance attribute shadows the method

    def _pre(self, name):
        def hook(*_):
            self._starts.setdefault(name, []).append(time.perf_counter())

        return hook

    def _post(self, name):
        def hook(*_):
            self._add(name, time.perf_counter() - self._starts[name].pop())

        return hook

    def _add(self, name: str, dt: float) -> None:
        key = (self.phase, name)
        self.times[key] = self.times.get(key, 0.0) + dt
        self.calls[key] = self.calls.get(key, 0) + 1

    def reset(self) -> None:
        self.times, self.calls, self.phase_times = {}, {}, {}

    @contextmanager
    def in_phase(self, phase: str):
        previous, self.phase = self.phase, phase
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phase_times[phase] = self.phase_times.get(phase, 0.0) + time.perf_counter() - t0
            self.phase = previous

    def get(self, phase: str | None, name: str) -> float:
        return sum(v for (p, n), v in self.times.items() if n == name and (phase is None or p == phase))

    def count(self, phase: str | None, name: str) -> int:
        return sum(v for (p, n), v in self.calls.items() if n == name and (phase is None or p == phase))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        del self.model.forward_image


def random_weight_tricks(predictor, hyper_scale: float, obj_bias: float) -> None:
    if hyper_scale != 1.0:
        sharpen_masks(predictor, hyper_scale)
    if obj_bias is not None:
        keep_objects(predictor, obj_bias)


# ----------------------------------------------------------------------------- pipelines


def run_stock(
    predictor, prof: Profiler, params, frames: np.ndarray, folders: list[Path], window: int, max_objects: int, writer
) -> tuple[dict, list, torch.Tensor]:
    """(a): returns timings, per-window per-object masks [(N, T, H, W) bool], segment maps."""
    proposer = StockProposer(predictor, params)
    timings: dict[str, float] = {}
    per_window = []
    maps = []

    def tick(key, t0):
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0

    num_frames, height, width = frames.shape[:3]
    for w, start in enumerate(range(0, num_frames, window)):
        stop = min(start + window, num_frames)
        with prof.in_phase("proposals"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                prop = proposer.propose(torch.from_numpy(frames[start]))
        keep = min(len(prop), max_objects)
        t0 = time.perf_counter()
        with prof.in_phase("load"):
            state = predictor.init_state(str(folders[w]))
        tick("load (init_state)", t0)
        masks = torch.zeros((keep, stop - start, height, width), dtype=torch.bool)
        if keep:
            t0 = time.perf_counter()
            with prof.in_phase("prompts"):
                for k in range(keep):
                    predictor.add_new_mask(state, 0, k + 1, prop.masks[k])
            tick("prompts", t0)
            t0 = time.perf_counter()
            with prof.in_phase("propagation"):
                for idx, _obj_ids, logits in predictor.propagate_in_video(state):
                    masks[:, idx] = (logits[:, 0] > 0).cpu()
            tick("propagation", t0)
        predictor.reset_state(state)
        del state
        per_window.append(masks)
        ids = torch.arange(1, keep + 1, dtype=torch.int64) + 1000 * w
        t0 = time.perf_counter()
        segs = torch.stack(
            [aggregate_masks(masks[:, i], ids, prop.predicted_iou[:keep].float(), "area") for i in range(stop - start)]
        ).to(torch.int32)
        tick("aggregate", t0)
        t0 = time.perf_counter()
        writer.write([f"{i:05d}" for i in range(start, stop)], segs)
        tick("cache write", t0)
        maps.append(segs)
    return timings, per_window, torch.cat(maps)


def run_ours(source: SAM2VideoSource, frames: np.ndarray, writer) -> tuple[dict, list, torch.Tensor]:
    """(b): returns timings, per-window per-object masks, segment maps."""
    recorded: list[tuple[int, torch.Tensor]] = []
    window = source.window
    # The keyframe's prompt output goes through video_memory.track_frame; later frames through
    # source._track (per-object or batched, whichever the source uses).
    original_track_frame = sam2_video_mod.track_frame
    original_track = source._track

    def track_frame(predictor, state, frame_idx):
        out = original_track_frame(predictor, state, frame_idx)
        if frame_idx == 0:
            recorded.append((frame_idx, (out[:, 0] > 0).cpu()))
        return out

    def track(state, frame_idx):
        out = original_track(state, frame_idx)
        if 0 < frame_idx < window:  # not the stitching step onto the next keyframe
            recorded.append((frame_idx, (out[:, 0] > 0).cpu()))
        return out

    sam2_video_mod.track_frame = track_frame
    source._track = track
    timings: dict[str, float] = {}
    maps = []
    try:
        num_frames, height, width = frames.shape[:3]
        source.begin_video("bench", height, width)
        for t in range(num_frames):
            segs = source.add_chunk(torch.from_numpy(frames[t : t + 1]), t)
            t0 = time.perf_counter()
            writer.write([f"{t:05d}"], segs)
            timings["cache write"] = timings.get("cache write", 0.0) + time.perf_counter() - t0
            maps.append(segs)
        src_timings = dict(source.timings)
        source.end_video()
    finally:
        sam2_video_mod.track_frame = original_track_frame
        del source._track  # back to the class's method
    # recorded frames come in video order (one track_frame call per frame of a window with objects)
    by_window: list[list[torch.Tensor]] = []
    for idx, m in recorded:
        if idx == 0:
            by_window.append([])
        by_window[-1].append(m)
    per_window = [torch.stack(ms, dim=1) for ms in by_window]
    timings.update(src_timings)
    return timings, per_window, torch.cat(maps)


# ----------------------------------------------------------------------------- agreement


def agreement(stock_windows, ours_windows, stock_maps, ours_maps, window) -> list[str]:
    from scipy.optimize import linear_sum_assignment

    lines = []
    ious = []
    n_stock = n_ours = n_matched = 0
    covered_same = 0.0
    id_same = 0.0
    pixels = 0
    for w, (a, b) in enumerate(zip(stock_windows, ours_windows)):
        n_stock += a.shape[0]
        n_ours += b.shape[0]
        start = w * window
        sm, om = stock_maps[start : start + a.shape[1]], ours_maps[start : start + a.shape[1]]
        if a.shape[0] and b.shape[0]:
            af = a.flatten(2).float()  # (Na, T, P)
            bf = b.flatten(2).float()
            inter = torch.einsum("atp,btp->abt", af, bf)
            union = af.sum(2)[:, None] + bf.sum(2)[None] - inter
            iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))  # (Na, Nb, T)
            rows, cols = linear_sum_assignment(-iou.sum(2).numpy())
            n_matched += len(rows)
            for r, c in zip(rows, cols):
                ious.append(iou[r, c])
        else:
            rows, cols = [], []
        # segment maps: ids of stock object r ↔ ours id of object c in this window
        s_ids = torch.unique(sm[sm > 0])
        o_ids = torch.unique(om[om > 0])
        covered_same += float(((sm > 0) == (om > 0)).sum())
        if len(s_ids) and len(o_ids):
            # id matching on the maps themselves (Hungarian on pixel overlap)
            ov = torch.zeros(len(s_ids), len(o_ids))
            for i, s in enumerate(s_ids):
                ms = sm == s
                for j, o in enumerate(o_ids):
                    ov[i, j] = float((ms & (om == o)).sum())
            r2, c2 = linear_sum_assignment(-ov.numpy())
            same = float(((sm == 0) & (om == 0)).sum()) + float(ov[r2, c2].sum())
        else:
            same = float(((sm == 0) & (om == 0)).sum())
        id_same += same
        pixels += sm.numel()
    if ious:
        all_iou = torch.cat(ious)
        lines.append(
            f"objects: stock {n_stock}, ours {n_ours}, matched {n_matched} (Hungarian on window IoU); "
            f"per-object per-frame mask IoU of matched pairs: mean {all_iou.mean():.4f}, "
            f"min {all_iou.min():.4f}, frames with IoU>=0.9: {(all_iou >= 0.9).float().mean():.1%}"
        )
    else:
        lines.append(f"objects: stock {n_stock}, ours {n_ours}: nothing to match")
    lines.append(
        f"segment maps: covered/uncovered state agrees on {covered_same / pixels:.2%} of pixels; "
        f"same state and corresponding masklet (Hungarian id matching per window) on {id_same / pixels:.2%}"
    )
    return lines


# ----------------------------------------------------------------------------- report


def stage_rows(
    kind: str,
    timings: dict,
    prof_times: dict,
    prof_calls: dict,
    num_frames: int,
    num_prop_frames: int,
    num_objects: int,
) -> tuple[list[tuple[str, float]], float, float]:
    """[(stage, seconds total)], total seconds, seconds per encoder forward."""

    def g(phase, name):
        return sum(v for (p, n), v in prof_times.items() if n == name and (phase is None or p == phase))

    enc_total = g(None, "encoder")
    enc_calls = sum(v for (p, n), v in prof_calls.items() if n == "encoder")
    enc_per_call = enc_total / max(enc_calls, 1)
    prop_phase = timings["proposals_phase"]
    prop_dec = g("proposals", "mask_decoder") + g("proposals", "prompt_encoder")
    if kind == "ours":  # FastProposer calls the decoder's parts directly (no module hook): its own timer
        prop_dec = max(prop_dec, timings.get("proposals/decoder", 0.0))
    prop_enc = g("proposals", "encoder")
    prop_post = prop_phase - prop_dec - prop_enc
    track = timings["track_phase"]  # prompts + propagation (incl. stitch step for ours)
    track_enc = g("track", "encoder")
    memattn = g("track", "memory_attention")
    memenc = g("track", "memory_encoder")
    dec = g("track", "mask_decoder") + g("track", "prompt_encoder")
    other = track - track_enc - memattn - memenc - dec
    rows = [
        (f"image encoder ({enc_calls} forwards)", enc_total),
        ("prompt decoding (proposal grid: prompt enc + mask dec)", prop_dec),
        ("proposal post-processing", prop_post),
    ]
    if kind == "stock":
        rows.append(("video loading (init_state: JPEG decode + resize)", timings.get("load_nonenc", 0.0)))
    rows += [
        ("propagation: memory attention", memattn),
        ("propagation: mask decoder (+prompt enc)", dec),
        ("propagation: memory encoder", memenc),
        ("propagation: other (bookkeeping, upsampling, prompts)", other),
        ("aggregate (paint segment map)", timings.get("aggregate", 0.0)),
        ("cache write (16-bit PNG)", timings.get("cache write", 0.0)),
    ]
    return rows, enc_total, enc_per_call


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="256: tiny test config; 1024: sam2.1-tiny (Hiera-T)")
    ap.add_argument("--config", default=None)
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--frames", type=int, default=None, help="clip length (default: one window)")
    ap.add_argument("--max-objects", type=int, default=8)
    ap.add_argument("--points", type=int, default=16, help="points per side")
    ap.add_argument("--points-per-batch", type=int, default=64)
    ap.add_argument("--hyper-scale", type=float, default=30.0)
    ap.add_argument("--obj-bias", type=float, default=10.0)
    ap.add_argument("--study-params", action="store_true", help="study thresholds (0.6/0.8/0.9/0.7)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--batch-objects",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ours tracks all objects of a window in one batch (SAM2VideoSource's default); "
        "--no-batch-objects: one object at a time, as stock",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    config = args.config or (TINY_TEST_CONFIG if args.size == 256 else "sam2.1-tiny")
    height = args.height or (240 if args.size == 256 else 480)
    width = args.width or (427 if args.size == 256 else 853)
    num_frames = args.frames or args.window
    if args.study_params:
        params = ProposalParams(points_per_side=args.points, points_per_batch=args.points_per_batch)
    else:
        params = random_weight_params(args.points, args.points_per_batch)

    source = SAM2VideoSource(
        config,
        None,
        image_size=args.size,
        window=args.window,
        proposal=params,
        proposer="fast",
        max_objects=args.max_objects,
        batch_objects=args.batch_objects,
    )
    predictor = source.predictor  # seeded random weights; shared by both pipelines
    random_weight_tricks(predictor, args.hyper_scale, args.obj_bias)

    video = generate_video(np.random.default_rng(args.seed), SyntheticConfig(height=height, width=width), num_frames)
    work = Path(tempfile.mkdtemp(prefix="bench_masklets_"))
    try:
        folders = []
        for w, start in enumerate(range(0, num_frames, args.window)):
            folder = work / "jpeg" / f"w{w}"
            folder.mkdir(parents=True)
            for i in range(start, min(start + args.window, num_frames)):
                Image.fromarray(video.frames[i]).save(folder / f"{i - start:05d}.jpg", quality=95)
            folders.append(folder)
        # both pipelines see the decoded JPEG pixels
        frames = np.stack(
            [np.array(Image.open(f).convert("RGB")) for folder in folders for f in sorted(folder.glob("*.jpg"))]
        )

        print(
            f"model {config} (random weights, hypernet out x{args.hyper_scale:g}, obj-score bias "
            f"{args.obj_bias:+g}) @ {args.size}; clip {num_frames} frames {height}x{width}; window {args.window}; "
            f"max_objects {args.max_objects}; {args.points}x{args.points} points (batch {args.points_per_batch}); "
            f"torch threads {torch.get_num_threads()}; params {params}"
        )

        prof = Profiler(predictor)

        cache = MaskletCache(work / "cache", "bench")
        # warm-up (not timed): both pipelines once on the first 2 frames
        warm = work / "jpeg" / "warm"
        warm.mkdir(parents=True)
        nw = min(2, num_frames)
        for i in range(nw):
            Image.fromarray(frames[i]).save(warm / f"{i:05d}.jpg", quality=95)
        run_stock(
            predictor,
            prof,
            params,
            frames[:nw],
            [warm],
            args.window,
            args.max_objects,
            cache.writer("warm_stock", height, width),
        )
        run_ours(source, frames[:nw], cache.writer("warm_ours", height, width))
        results = {}
        for kind in ("stock", "ours"):
            prof.reset()
            writer = cache.writer(kind, height, width)
            t0 = time.perf_counter()
            if kind == "stock":
                timings, windows, maps = run_stock(
                    predictor, prof, params, frames, folders, args.window, args.max_objects, writer
                )
            else:
                # phases from the source's own structure: proposals via the proposer, the rest "track"
                proposer = source.proposer
                original_propose = proposer.propose

                def propose(*a, original_propose=original_propose, **kw):
                    with prof.in_phase("proposals"):
                        return original_propose(*a, **kw)

                proposer.propose = propose
                try:
                    with prof.in_phase("track"):
                        timings, windows, maps = run_ours(source, frames, writer)
                finally:
                    del proposer.propose
            total = time.perf_counter() - t0
            pt = prof.phase_times
            timings["proposals_phase"] = pt.get("proposals", 0.0)
            if kind == "stock":
                # JPEG loading outside the encoder (init_state also encodes frame 0 eagerly: encoder)
                timings["load_nonenc"] = pt.get("load", 0.0) - prof.get("load", "encoder")
                # everything of the tracker: loading + prompts + propagation (encoder forwards included)
                for (p, n), v in list(prof.times.items()):
                    if p in ("prompts", "propagation", "load"):
                        prof.times[("track", n)] = prof.times.get(("track", n), 0.0) + v
                        prof.calls[("track", n)] = prof.calls.get(("track", n), 0) + prof.calls[(p, n)]
                        del prof.times[(p, n)]
                        del prof.calls[(p, n)]
                timings["track_phase"] = pt.get("prompts", 0.0) + pt.get("propagation", 0.0) + pt.get("load", 0.0)
            else:
                timings["track_phase"] = (
                    pt.get("track", 0.0)
                    - pt.get("proposals", 0.0)
                    - timings.get("cache write", 0.0)
                    - timings.get("aggregate", 0.0)
                )
            results[kind] = dict(
                timings=timings, windows=windows, maps=maps, total=total, times=dict(prof.times), calls=dict(prof.calls)
            )
        prof.remove()

        s = results["stock"]
        num_objects = {k: sum(int(w.shape[0]) for w in r["windows"]) for k, r in results.items()}
        prop_frames = {
            k: sum(int(w.shape[0]) * max(int(w.shape[1]) - 1, 0) for w in r["windows"]) for k, r in results.items()
        }

        tables = {}
        for kind, r in results.items():
            rows, enc_total, enc_per_call = stage_rows(
                kind, r["timings"], r["times"], r["calls"], num_frames, prop_frames[kind], num_objects[kind]
            )
            if kind == "stock":  # JPEG loading is listed on its own: take it out of "propagation: other"
                load = r["timings"]["load_nonenc"]
                rows = [(n, v - load if n.startswith("propagation: other") else v) for n, v in rows]
            tables[kind] = (rows, enc_total, enc_per_call)

        print(f"\n### Per-stage cost, seconds per frame (and / one encoder forward), {num_frames} frames\n")
        print("| stage | stock s/frame | stock ÷ enc | ours s/frame | ours ÷ enc |")
        print("|---|---|---|---|---|")
        s_rows, _, s_enc = tables["stock"]
        o_rows, _, o_enc = tables["ours"]
        o_map = dict((n.split(" (")[0] if n.startswith("image encoder") else n, v) for n, v in o_rows)
        for n, v in s_rows:
            key = n.split(" (")[0] if n.startswith("image encoder") else n
            ov = o_map.get(key)
            if n.startswith("image encoder"):
                oname = [m for m, _ in o_rows if m.startswith("image encoder")][0]
                stock_n, ours_n = n.split("(")[1].split()[0], oname.split("(")[1].split()[0]
                n = f"image encoder (stock {stock_n} / ours {ours_n} forwards)"
            ocell = f"{ov / num_frames:.4f} | {ov / num_frames / o_enc:.2f}" if ov is not None else "— | —"
            print(f"| {n} | {v / num_frames:.4f} | {v / num_frames / s_enc:.2f} | {ocell} |")
        for kind in ("stock", "ours"):
            r = results[kind]
            accounted = sum(v for _, v in tables[kind][0])
            r["unaccounted"] = r["total"] - accounted
        print(
            f"| unaccounted (loop overhead, stitching, ...) | {results['stock']['unaccounted'] / num_frames:.4f} | "
            f"{results['stock']['unaccounted'] / num_frames / s_enc:.2f} | "
            f"{results['ours']['unaccounted'] / num_frames:.4f} | "
            f"{results['ours']['unaccounted'] / num_frames / o_enc:.2f} |"
        )
        print(
            f"| **total** | **{s['total'] / num_frames:.4f}** | {s['total'] / num_frames / s_enc:.2f} | "
            f"**{results['ours']['total'] / num_frames:.4f}** | {results['ours']['total'] / num_frames / o_enc:.2f} |"
        )

        print("\n### Propagation per tracked object per propagated frame (non-keyframe)\n")
        print("| | stock | ours |")
        print("|---|---|---|")
        for label, prefix in (
            ("memory attention s", "propagation: memory attention"),
            ("mask decoder s", "propagation: mask decoder"),
            ("memory encoder s", "propagation: memory encoder"),
            ("all propagation (incl. other) s", "propagation:"),
        ):
            cells = []
            for kind in ("stock", "ours"):
                v = sum(val for n, val in tables[kind][0] if n.startswith(prefix))
                cells.append(f"{v / max(prop_frames[kind], 1):.5f}")
            print(f"| {label} | {cells[0]} | {cells[1]} |")
        print(f"| object-frames | {prop_frames['stock']} | {prop_frames['ours']} |")
        print(
            "\n(memory encoding is separable: sam2 runs `memory_encoder` once per object per frame; its time is the "
            "row above. Propagation rows include the keyframe prompts and, for ours, the stitching step.)"
        )

        s_fps = num_frames / s["total"]
        o_fps = num_frames / results["ours"]["total"]
        print("\n### Throughput\n")
        print("| pipeline | total s | frames/s | encoder forward s |")
        print("|---|---|---|---|")
        print(
            "| (a) stock sam2 (AMG + SAM2VideoPredictor on JPEG folder) | "
            f"{s['total']:.3f} | {s_fps:.3f} | {s_enc:.4f} |"
        )
        print(
            f'| (b) ours SAM2VideoSource(proposer="fast"), frames in memory | {results["ours"]["total"]:.3f} | '
            f"{o_fps:.3f} | {o_enc:.4f} |"
        )
        print(f"\nspeed-up (b)/(a): {o_fps / s_fps:.2f}x")
        print(
            "\nours, SAM2VideoSource.timings (s): "
            + ", ".join(
                f"{k} {v:.3f}"
                for k, v in results["ours"]["timings"].items()
                if k not in ("proposals_phase", "track_phase")
            )
        )

        print("\n### Agreement (a) vs (b)\n")
        for line in agreement(
            s["windows"], results["ours"]["windows"], s["maps"], results["ours"]["maps"], args.window
        ):
            print("- " + line)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
