"""Several masklet sources over one video in one pass, sharing the work their configurations share.

The values of a sweep (Tables 4–7) are masklet sources that differ in one or a few parameters.
Run one after another, each value decodes every frame, runs SAM2's image encoder on every
frame and decodes the point grid of every keyframe again. :class:`SourceSet` runs them
together, frame by frame:

- frames are decoded once (the caller's chunk) and fed to every source;
- SAM2 sources of the same model (config, checkpoint, image size, overrides, device, bf16)
  share one model object and one image-encoder pass per frame (:class:`SharedFrameWork`),
  whatever their windows: every frame is encoded once, and a value's keyframe or propagation
  step reads the shared encoding;
- on a frame that is a keyframe of several values with the ``fast`` proposer, the point grid
  is decoded once for all of them (``FastProposer.propose_many``: prompt encoding, mask
  decoding and the full-resolution candidates are shared; only the filters, NMS and
  clean-up differ per value);
- tracking (the memory bank, propagation, stitching) is per value: its objects differ.

The maps of every source are exactly those it gives on its own (SAM2 sources do not depend
on how a video is chunked, so feeding frame by frame changes nothing; tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vssam2.masklets.base import MaskletSource, MaskletTable
from vssam2.masklets.proposals import Proposals
from vssam2.masklets.sam2_video import EncodedFrame, OwnWork, SAM2VideoSource, checkpoint_fingerprint


def model_key(source: SAM2VideoSource) -> tuple[Any, ...]:
    """What fixes a SAM2 source's model and its encoder output: sources with equal keys share both."""
    return (
        source.sam2_config,
        repr(checkpoint_fingerprint(source.checkpoint)),
        source.image_size,
        tuple(source.overrides),
        str(source.device),
        source.bf16,
    )


class SharedFrameWork:
    """The current frame's encoding and proposals, computed once for a group of SAM2 sources.

    The group is fed frame by frame (every source takes frame ``t`` before any takes
    ``t + 1``); what was computed for frame ``t`` is dropped when frame ``t + 1`` is asked for,
    so memory holds one frame's encoder output.

    Args:
        sources: SAM2 sources sharing one model (equal :func:`model_key`, same model object).

    Attributes:
        encoder_passes: image-encoder passes run (one per frame of the video).
        decodes: prompt decodings run (``propose`` / ``propose_many`` calls).
    """

    def __init__(self, sources: Sequence[SAM2VideoSource]) -> None:
        self.sources = list(sources)
        self.encoder_passes = 0
        self.decodes = 0
        self._t: int | None = None
        self._encoded: EncodedFrame | None = None
        self._proposals: dict[int, Proposals] = {}

    def _at(self, t: int) -> None:
        if t != self._t:
            self._t, self._encoded, self._proposals = t, None, {}

    def encoded(self, source: SAM2VideoSource, frame: torch.Tensor, t: int) -> EncodedFrame:
        self._at(t)
        if self._encoded is None:
            self._encoded = source.encode(frame)
            self.encoder_passes += 1
        return self._encoded

    def proposals(self, source: SAM2VideoSource, frame: torch.Tensor, t: int, encoded: EncodedFrame) -> Proposals:
        self._at(t)
        if id(source) not in self._proposals:
            if _shares_decoding(source):
                # Every value whose window starts here decodes the grid in this one call.
                group = [
                    s for s in self.sources if _shares_decoding(s) and s.is_keyframe(t) and id(s) not in self._proposals
                ]
                results = source.proposer.propose_many(
                    frame, [s.proposal for s in group], backbone_out=encoded.backbone_out
                )
                self._proposals.update({id(s): r for s, r in zip(group, results)})
            else:
                self._proposals[id(source)] = source.proposer.propose(frame, backbone_out=encoded.backbone_out)
            self.decodes += 1
        return self._proposals.pop(id(source))


def _shares_decoding(source: SAM2VideoSource) -> bool:
    """The fast proposer decodes once for many threshold values; sam2's stock generator cannot."""
    return source.proposer_name == "fast" and not getattr(source.proposer, "skip_covered", False)


class SourceSet:
    """Runs several masklet sources over the same video, sharing frames, encoder and decoding.

    Same streaming protocol as one :class:`MaskletSource`, with one map (and one table) per
    source::

        sources = SourceSet([a, b, c])
        sources.begin_video("video_000", height, width)
        maps = sources.add_chunk(frames, start, gt=gt)   # [(T, H, W) int32] × 3
        tables = sources.end_video()                     # [MaskletTable] × 3

    Args:
        sources: the sources (e.g. the values of a sweep). SAM2 sources of one model are made
            to share its model object (the first one's).
        share: share encoder passes and decoding between SAM2 sources (False: each source
            computes its own, as run one after another; for benchmarks).

    Attributes:
        works: one :class:`SharedFrameWork` per SAM2 model.
    """

    def __init__(self, sources: Sequence[MaskletSource], share: bool = True) -> None:
        if not sources:
            raise ValueError("SourceSet needs at least one source")
        self.sources = list(sources)
        self.share = bool(share)
        self.works: list[SharedFrameWork] = []
        groups: dict[tuple[Any, ...], list[SAM2VideoSource]] = {}
        for source in self.sources:
            if isinstance(source, SAM2VideoSource) and share:
                groups.setdefault(model_key(source), []).append(source)
        for members in groups.values():
            model = members[0].predictor
            for member in members:
                if member._predictor is not model:
                    member._predictor, member._proposer = model, None
            work = SharedFrameWork(members)
            for member in members:
                member.work = work
            self.works.append(work)
        self._framewise = [
            s for s in self.sources if isinstance(s, SAM2VideoSource) and isinstance(s.work, SharedFrameWork)
        ]

    def release(self) -> None:
        """Gives every SAM2 source back its own work (after the sweep)."""
        for source in self._framewise:
            source.work = OwnWork()

    def begin_video(self, video: str, height: int, width: int) -> None:
        """Starts a video in every source."""
        for source in self.sources:
            source.begin_video(video, height, width)

    def add_chunk(self, frames: torch.Tensor, start: int, gt: torch.Tensor | None = None) -> list[torch.Tensor]:
        """(T, H, W) int32 maps of the chunk, one per source (in the order of ``sources``)."""
        maps: dict[int, list[torch.Tensor]] = {id(s): [] for s in self._framewise}
        with torch.inference_mode():
            # Frame by frame across the sources that share work: frame t's encoding and decoding
            # serve them all before frame t + 1 is encoded.
            for i in range(frames.shape[0]):
                frame_gt = None if gt is None else gt[i : i + 1]
                for source in self._framewise:
                    maps[id(source)].append(source.add_chunk(frames[i : i + 1], start + i, gt=frame_gt))
            out = []
            for source in self.sources:
                if id(source) in maps:
                    out.append(torch.cat(maps[id(source)]))
                else:
                    out.append(source.add_chunk(frames, start, gt=gt))
        return out

    def end_video(self) -> list[MaskletTable]:
        """Every source's score table of the video."""
        return [source.end_video() for source in self.sources]
