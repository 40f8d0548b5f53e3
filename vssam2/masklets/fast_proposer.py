"""Fast automatic mask proposals: sam2's automatic mask generator, decoded and filtered cheaply.

:class:`FastProposer` reproduces ``sam2.automatic_mask_generator.SAM2AutomaticMaskGenerator``
(sam2 1.1.0) for ``crop_n_layers=0``, ``multimask_output=True``, ``use_m2m=False``: the same
point grid (``build_all_layer_point_grids``), the same point → model-input transform, the
same prompt encoder and mask decoder weights, and the same filters in the same order:

1. predicted IoU ``> pred_iou_thresh`` (only when the threshold is > 0, as sam2),
2. stability score ``>= stability_score_thresh`` (only when > 0), computed with
   ``calculate_stability_score(logits, mask_threshold, stability_score_offset)`` on the
   low-res logits **bilinearly upsampled to the frame's size** (that is where sam2 computes
   it: ``SAM2ImagePredictor._predict`` upsamples every candidate before the generator
   filters),
3. binary mask ``logits > mask_threshold``, its box (``batched_mask_to_box``); the "box near
   crop edge" filter is a no-op without crops and is skipped,
4. box NMS (``torchvision.ops.batched_nms`` on the predicted IoU, ``box_nms_thresh``),
5. optionally (``min_mask_region_area > 0``) sam2's ``postprocess_small_regions`` (hole /
   island removal with OpenCV, then NMS preferring unchanged masks) on the survivors only.

Where the time goes in sam2 and what this module does instead (measured on 2 CPU cores):

* **Decoder.** sam2's ``MaskDecoder.predict_masks`` copies the image embedding and the dense
  positional encoding once per prompt (``repeat_interleave``), adds the dense "no mask"
  embedding per prompt and runs every projection of the two-way transformer per prompt, and
  computes 4 masks (token 0 is discarded with ``multimask_output``). Here
  (:class:`FastMaskDecoder`, same weights, same maths up to float rounding):

  - per frame, once: ``src = image_embedding + no_mask_embed``, the dense PE, ``src + PE``
    and, for the first two-way block (where the image side is still prompt-independent),
    the query projection of the image→token attention; the first token→image attention
    of all prompts of a batch is one GEMM against the shared image tokens; the high-res
    skip features re-laid out channel-last with the transposed-convolution biases folded in;
  - per prompt, batched (no copies of the image side): token→image attention is folded
    into the image tokens' channel space (``scores = (q W_k) · (keys + pe)``,
    ``ctx = softmax · keys`` then ``W_v``; the key bias is a per-row constant that softmax
    ignores), image→token attention folds the query projection and the output projection
    into per-prompt ``(C, heads·T)`` / ``(heads·T, C)`` matrices, so no ``(B, HW, 128)``
    projections of the image tokens are ever materialised;
  - the upscaling runs channel-last as plain matmuls (transposed convolutions with kernel
    = stride = 2 are per-pixel linear maps) in chunks of prompts, and only the 3 multimask
    outputs are computed.

* **Post-processing.** sam2 upsamples all 3·B candidates of a batch to full resolution before
  any filter. Here only candidates that pass the predicted-IoU filter are upsampled (exact
  stability, default), or with ``lowres_stability=True`` the stability score is computed on
  the low-res logits and only survivors are upsampled (faster, stability values differ
  slightly; see the tests/benchmark for numbers). Each candidate is upsampled once, a few at a
  time into one reused buffer; its stability counts, binary mask and box come from that one
  upsampling, the stable candidates' masks are kept bit-packed, and the NMS survivors are
  unpacked once into the output; no RLE round trip. Nothing full-resolution is allocated per
  candidate: on a CPU every fresh page costs a fault that outweighs the compare itself.

Options that depart from sam2: ``bf16`` (autocast of encoder and decoder in bfloat16) and
``skip_covered`` (points are decoded in batches of ``points_per_batch``; a later point that
lies inside a mask that already passed the IoU and stability filters is not decoded; a
departure from the paper's protocol, off by default).

Threshold sweeps: :meth:`FastProposer.propose_many` gives several parameter sets' proposals of
one frame, each exactly what its own :meth:`FastProposer.propose` gives, encoding once,
decoding the grid once per group of equal ``points_per_side`` / ``points_per_batch`` /
``mask_threshold`` / ``stability_score_offset``, and running the full-resolution pass once for
the candidates the group's lowest predicted-IoU threshold passes; only each value's filters,
NMS and clean-up are its own (``benchmarks/bench_threshold_sharing.py``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sam2.modeling.sam2_base import SAM2Base
from sam2.utils.amg import build_all_layer_point_grids, calculate_stability_score
from sam2.utils.transforms import SAM2Transforms
from torchvision.ops.boxes import batched_nms

from vssam2.host_kernels import host_kernels
from vssam2.masklets.proposals import ProposalParams, Proposals
from vssam2.masklets.sam2_private import check_sam2_private_api

__all__ = ["FastMaskDecoder", "FastProposer", "point_grid"]


# Full-resolution logits held at once, in pixels: 8 × 480 × 853 float32 ≈ 13 MB stays in the
# last-level cache across the upsampling, stability, box and threshold passes, while small
# frames still go in large batches (per-op overhead); benchmarks/README.md has the measurement.
UPSAMPLE_PIXELS: int = 8 * 480 * 853


def point_grid(points_per_side: int, height: int, width: int) -> np.ndarray:
    """sam2's grid of prompts for a (height, width) frame, (N, 2) float64 (x, y) pixels."""
    grid = build_all_layer_point_grids(points_per_side, 0, 1)[0]
    return grid * np.array([[width, height]])


class _FrameCache:
    """Prompt-independent tensors of one frame (computed once, shared by all prompts)."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


class FastMaskDecoder:
    """Batched, prompt-sharing re-implementation of sam2's ``MaskDecoder`` for multimask output.

    Uses the weights of ``model.sam_mask_decoder`` (a ``MaskDecoder`` with a
    ``TwoWayTransformer``); gives the same low-res logits and predicted IoUs as
    ``model.sam_mask_decoder(..., multimask_output=True, repeat_image=True)`` up to float
    rounding (max abs logit difference ~4e-7 on the tiny model and Hiera-T at 1024).

    Args:
        model: the SAM2 model.
        upscale_chunk: prompts upscaled at once (memory of the 4x-upscaled features).
    """

    def __init__(self, model: SAM2Base, upscale_chunk: int = 4) -> None:
        self.model = model
        self.md = model.sam_mask_decoder
        self.tr = self.md.transformer
        self.upscale_chunk = upscale_chunk

    # ------------------------------------------------------------------ per frame
    @torch.no_grad()
    def prepare(self, image_embed: torch.Tensor, high_res_feats: list[torch.Tensor] | None) -> _FrameCache:
        """Prompt-independent part of decoding, once per frame.

        Args:
            image_embed: (1, C, h, w) lowest-resolution features (after no_mem_embed).
            high_res_feats: [(1, C/8, 4h, 4w), (1, C/4, 2h, 2w)] (already through
                conv_s0 / conv_s1, as ``forward_image`` returns them) or None.
        """
        md, tr, pe_enc = self.md, self.tr, self.model.sam_prompt_encoder
        _, c, h, w = image_embed.shape
        dense = pe_enc.no_mask_embed.weight.reshape(1, -1, 1, 1)
        src = (image_embed + dense).flatten(2).permute(0, 2, 1)[0]  # (HW, C)
        pe = pe_enc.get_dense_pe().to(src.dtype)
        pe = pe.flatten(2).permute(0, 2, 1)[0]  # (HW, C)
        src, pe = src.contiguous(), pe.contiguous()
        kp0 = src + pe
        layer0 = tr.layers[0]
        # i2t query projection of the (still shared) image tokens: (HW, I)
        q_img0 = layer0.cross_attn_image_to_token.q_proj(kp0)

        dc1, ln1, act1, dc2, act2 = md.output_upscaling
        c1, c2 = dc1.out_channels, dc2.out_channels
        # ConvTranspose2d(k=2, s=2) as a per-pixel linear map: (Cin) -> (a, b, Cout)
        w1 = dc1.weight.permute(0, 2, 3, 1).reshape(dc1.in_channels, 4 * c1)
        w2 = dc2.weight.permute(0, 2, 3, 1).reshape(dc2.in_channels, 4 * c2)
        if md.use_high_res_features and high_res_feats is not None:
            s0, s1 = high_res_feats
            # s1[o, 2i+a, 2j+b] -> (h, w, a, b, o)
            s1 = s1.view(1, c1, h, 2, w, 2).permute(0, 2, 4, 3, 5, 1)[0]
            # s0[o, 4i+2a+c, 4j+2b+d] -> (h, w, a, b, c, d, o)
            s0 = s0.view(1, c2, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1)[0]
            add1 = (s1 + dc1.bias).reshape(h * w, 4 * c1).contiguous()
            add2 = (s0 + dc2.bias).reshape(h * w * 4, 4 * c2).contiguous()
        else:
            add1 = dc1.bias.repeat(4).view(1, 4 * c1)
            add2 = dc2.bias.repeat(4).view(1, 4 * c2)
        return _FrameCache(
            h=h,
            w=w,
            c=c,
            src=src,
            pe=pe,
            kp0=kp0,
            q_img0=q_img0,
            w1=w1,
            w2=w2,
            add1=add1,
            add2=add2,
            c1=c1,
            c2=c2,
            ln1=ln1,
            act1=act1,
            act2=act2,
        )

    # ------------------------------------------------------------------ attention pieces
    @staticmethod
    def _heads(attn: torch.nn.Module) -> tuple[int, int]:
        return attn.num_heads, attn.internal_dim // attn.num_heads

    def _token_to_image(
        self, attn: torch.nn.Module, q: torch.Tensor, kp: torch.Tensor, keys: torch.Tensor
    ) -> torch.Tensor:
        """``attn(q=q, k=kp, v=keys)`` with tokens as queries, folded into image channels.

        q: (B, T, C) tokens (+PE). kp: keys + PE, keys: (B, HW, C) or shared (HW, C).
        """
        b, t, _ = q.shape
        nh, d = self._heads(attn)
        scale = 1.0 / math.sqrt(d)
        qp = attn.q_proj(q).view(b, t, nh, d)
        wk = attn.k_proj.weight.view(nh, d, -1)  # (nh, d, C)
        # (q W_k) per head: (B, T*nh, C); the key bias adds a per-row constant (softmax-invariant)
        qf = torch.einsum("bthd,hdc->bthc", qp, wk).reshape(b, t * nh, -1) * scale
        if kp.dim() == 2:  # shared image side: one GEMM for all prompts
            scores = (qf.reshape(b * t * nh, -1) @ kp.T).view(b, t * nh, -1)
        else:
            scores = torch.bmm(qf, kp.transpose(1, 2))
        probs = scores.softmax(dim=-1)
        if keys.dim() == 2:
            ctx = (probs.reshape(b * t * nh, -1) @ keys).view(b, t, nh, -1)
        else:
            ctx = torch.bmm(probs, keys).view(b, t, nh, -1)  # (B, T, nh, C)
        wv = attn.v_proj.weight.view(nh, d, -1)
        out = torch.einsum("bthc,hdc->bthd", ctx, wv).reshape(b, t, nh * d) + attn.v_proj.bias
        return attn.out_proj(out)

    def _image_to_token(
        self,
        attn: torch.nn.Module,
        kp: torch.Tensor | None,
        q_img_shared: torch.Tensor | None,
        k_tok: torch.Tensor,
        v_tok: torch.Tensor,
        residual: torch.Tensor,
    ) -> torch.Tensor:
        """``residual + attn(q=kp, k=k_tok, v=v_tok)`` with image tokens as queries.

        Either ``kp`` (B, HW, C) per prompt, or ``q_img_shared`` = q_proj(kp) (HW, I) shared.
        k_tok, v_tok: (B, T, C). residual: (B, HW, C) or shared (HW, C).
        """
        b, t, _ = k_tok.shape
        nh, d = self._heads(attn)
        scale = 1.0 / math.sqrt(d)
        kt = attn.k_proj(k_tok).view(b, t, nh, d) * scale
        vt = attn.v_proj(v_tok).view(b, t, nh, d)
        if q_img_shared is not None:
            # block-diagonal (I, nh*T) per prompt: scores = q_img @ blk
            blk = q_img_shared.new_zeros(b, nh, d, nh, t)
            idx = torch.arange(nh, device=blk.device)
            blk[:, idx, :, idx, :] = kt.permute(2, 0, 3, 1)  # (nh, B, d, T)
            blk = blk.view(b, nh * d, nh * t)
            scores = torch.matmul(q_img_shared, blk)  # (B, HW, nh*T)
        else:
            wq = attn.q_proj.weight.view(nh, d, -1)  # (nh, d, C)
            # M[b, c, h*T+t] = sum_d wq[h, d, c] kt[b, t, h, d]
            m = torch.einsum("hdc,bthd->bcht", wq, kt).reshape(b, -1, nh * t)
            c0 = torch.einsum("hd,bthd->bht", attn.q_proj.bias.view(nh, d), kt).reshape(b, 1, nh * t)
            scores = torch.baddbmm(c0, kp, m)
        # softmax over each head's T tokens, hand-written: torch's .softmax is slow on a last
        # dim this short on the CPU
        s4 = scores.view(b, -1, nh, t)
        e = (s4 - s4.amax(dim=-1, keepdim=True)).exp_()
        probs = e.div_(e.sum(dim=-1, keepdim=True)).view(b, -1, nh * t)
        wo = attn.out_proj.weight.view(-1, nh, d)  # (C, nh, d)
        vo = torch.einsum("bthd,chd->bhtc", vt, wo).reshape(b, nh * t, -1)  # (B, nh*T, C)
        base = (
            (residual + attn.out_proj.bias).expand(b, *residual.shape[-2:])
            if residual.dim() == 2
            else residual + attn.out_proj.bias
        )
        return torch.baddbmm(base, probs, vo)

    # ------------------------------------------------------------------ per batch of prompts
    @torch.no_grad()
    def __call__(self, cache: _FrameCache, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decodes a batch of prompts.

        Args:
            cache: from :meth:`prepare`.
            sparse: (B, P, C) sparse prompt embeddings (``sam_prompt_encoder`` output).

        Returns:
            low-res logits (B, 3, 4h, 4w) and predicted IoU (B, 3) of the 3 multimask outputs.
        """
        md, tr = self.md, self.tr
        b = sparse.shape[0]
        if md.pred_obj_scores:
            out_tok = torch.cat([md.obj_score_token.weight, md.iou_token.weight, md.mask_tokens.weight], 0)
            s = 1
        else:
            out_tok = torch.cat([md.iou_token.weight, md.mask_tokens.weight], 0)
            s = 0
        tokens = torch.cat([out_tok.unsqueeze(0).expand(b, -1, -1).to(sparse.dtype), sparse], dim=1)
        queries, qpe = tokens, tokens
        keys = cache.src  # shared until the first image update
        kp = cache.kp0
        for i, layer in enumerate(tr.layers):
            if layer.skip_first_layer_pe:
                queries = layer.self_attn(q=queries, k=queries, v=queries)
            else:
                q = queries + qpe
                queries = queries + layer.self_attn(q=q, k=q, v=queries)
            queries = layer.norm1(queries)
            queries = layer.norm2(
                queries + self._token_to_image(layer.cross_attn_token_to_image, queries + qpe, kp, keys)
            )
            queries = layer.norm3(queries + layer.mlp(queries))
            a = layer.cross_attn_image_to_token
            k_tok = queries + qpe
            if i == 0 and keys.dim() == 2:
                keys = self._image_to_token(a, None, cache.q_img0, k_tok, queries, keys)
            else:
                keys = self._image_to_token(a, kp, None, k_tok, queries, keys)
            keys = layer.norm4(keys)
            kp = keys + cache.pe
        queries = tr.norm_final_attn(
            queries + self._token_to_image(tr.final_attn_token_to_image, queries + qpe, kp, keys)
        )
        iou = md.iou_prediction_head(queries[:, s, :])[:, 1:]
        mask_tok = queries[:, s + 2 : s + 1 + md.num_mask_tokens, :]  # tokens 1..3
        hyper = torch.stack(
            [md.output_hypernetworks_mlps[j + 1](mask_tok[:, j, :]) for j in range(mask_tok.shape[1])], dim=2
        )  # (B, C/8, 3)
        if keys.dim() == 2:
            keys = keys.unsqueeze(0).expand(b, -1, -1)
        masks = torch.cat(
            [
                self._upscale(cache, keys[i : i + self.upscale_chunk], hyper[i : i + self.upscale_chunk])
                for i in range(0, b, self.upscale_chunk)
            ],
            dim=0,
        )
        return masks, iou

    def _upscale(self, cache: _FrameCache, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """(B, HW, C) image tokens -> (B, 3, 4h, 4w) mask logits, channel-last matmuls."""
        b = keys.shape[0]
        h, w, c1, c2 = cache.h, cache.w, cache.c1, cache.c2
        hw = h * w
        dt = keys.dtype
        if torch.is_autocast_enabled(keys.device.type):
            dt = torch.get_autocast_dtype(keys.device.type)
        keys = keys.to(dt)
        # transposed conv 1 (+ skip features + bias), LayerNorm2d over channels, GELU
        y = torch.baddbmm(cache.add1.to(dt).view(1, -1, 4 * c1), keys, cache.w1.to(dt).expand(b, -1, -1))
        ln = cache.ln1
        y = F.layer_norm(y.view(b, hw, 4, c1), (c1,), ln.weight.to(dt), ln.bias.to(dt), ln.eps)
        y = cache.act1(y)
        # transposed conv 2 (+ skip features + bias), GELU
        y = torch.baddbmm(
            cache.add2.to(dt).view(1, -1, 4 * c2), y.view(b, hw * 4, c1), cache.w2.to(dt).expand(b, -1, -1)
        )
        y = cache.act2(y)
        # hypernetwork dot products, channels-first: (B, 3, HW*16)
        m = torch.bmm(hyper.to(dt).transpose(1, 2), y.view(b, hw * 16, c2).transpose(1, 2))
        k = m.shape[1]
        # (B, k, h, w, a, b, c, d) -> (B, k, h, a, c, w, b, d)
        m = m.view(b, k, h, w, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
        return m.reshape(b, k, 4 * h, 4 * w)


class FastProposer:
    """Automatic mask proposals with sam2's generator semantics at lower cost.

    Args:
        model: a SAM2 model (``load_sam2``), in eval mode.
        params: proposal parameters.
        bf16: run encoder and decoder under bfloat16 autocast (post-processing in float32).
        skip_covered: do not decode grid points that lie inside a mask already kept (after
            the IoU / stability filters) by an earlier batch of ``points_per_batch`` points.
            Departs from sam2 / the paper; off by default.
        lowres_stability: compute the stability score on the low-res logits (4x the
            embedding size, e.g. 256² at 1024) instead of on the logits upsampled to the frame
            size as sam2 does; only survivors are then upsampled. Faster, slightly different
            stability values. Off by default (exact).
        upscale_chunk: prompts upscaled at once in the decoder (memory only).

    Attributes:
        stats: counts of the last call (of its last params for :meth:`propose_many`):
            ``points``, ``decoded``, ``candidates``, ``after_iou``, ``after_stability``, ``kept``.
        stats_many: the counts of every params of the last call, in its order.
    """

    def __init__(
        self,
        model: SAM2Base,
        params: ProposalParams | None = None,
        bf16: bool = False,
        skip_covered: bool = False,
        lowres_stability: bool = False,
        upscale_chunk: int = 4,
    ) -> None:
        check_sam2_private_api()
        self.model = model
        self.params = params if params is not None else ProposalParams()
        self.bf16 = bf16
        self.skip_covered = skip_covered
        self.lowres_stability = lowres_stability
        self.decoder = FastMaskDecoder(model, upscale_chunk=upscale_chunk)
        self.transforms = SAM2Transforms(resolution=model.image_size, mask_threshold=self.params.mask_threshold)
        self.stats: dict[str, int] = {}
        self.stats_many: list[dict[str, int]] = []

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def encode(self, image: torch.Tensor) -> dict[str, Any]:
        """``model.forward_image`` of the frame, preprocessed as sam2's image predictor does."""
        x = self.transforms(_as_numpy(image))[None].to(self.device)
        with torch.no_grad(), self._autocast():
            return self.model.forward_image(x)

    def _features(self, backbone_out: dict[str, Any]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """As ``SAM2ImagePredictor.set_image``: (1, C, h, w) embedding + high-res features."""
        _, vision_feats, _, feat_sizes = self.model._prepare_backbone_features(backbone_out)
        vision_feats = list(vision_feats)
        if self.model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
        feats = [f.permute(1, 2, 0).reshape(1, -1, *s) for f, s in zip(vision_feats, feat_sizes)]
        return feats[-1], feats[:-1]

    def _full_res_pass(
        self,
        up: torch.Tensor,
        out: np.ndarray | None,
        py: torch.Tensor,
        px: torch.Tensor,
        group: Sequence[ProposalParams],
        chosen: torch.Tensor,
    ) -> tuple[
        torch.Tensor | None,
        torch.Tensor,
        torch.Tensor | None,
        torch.Tensor,
        np.ndarray | torch.Tensor,
        torch.Tensor | None,
    ]:
        """Filters and keeps full-resolution candidates for a group of params: exact stability
        score and each member's stability filter (unless ``lowres_stability``), the binary masks
        of the rows some member keeps, their boxes and, with ``skip_covered``, which grid
        points they cover.

        Args:
            up: (n, H, W) float full-resolution logits.
            out: (n, H, W) bool host scratch for the compares (None off the host).
            py, px: (P,) int64 pixel rows / columns of the grid points.
            group: params sharing ``mask_threshold`` and ``stability_score_offset``.
            chosen: (G, n) bool, the rows each member keeps so far (its IoU filter; with
                ``lowres_stability`` its stability filter too).

        Returns:
            (n,) stability scores of all rows (None with ``lowres_stability``); (G, n) bool rows
            each member keeps after its stability filter; the (k,) int64 rows some member keeps
            (None: all); their (k, 4) boxes; their masks as stored by :class:`_MaskStore`; their
            (k, P) bool grid-point hits (None without ``skip_covered``).
        """
        first = group[0]
        stab = None
        if not self.lowres_stability:
            stab = _stability_score(up, first.mask_threshold, first.stability_score_offset, out)
            chosen = _stable(chosen, stab, group)
        needed = chosen.any(dim=0)  # (n,) bool
        rows = None if bool(needed.all()) else needed.nonzero().flatten()
        # Kept, not recomputed after NMS: the survivors' masks are these very pixels. All rows
        # are thresholded, then the small results picked: gathering the kept rows' logits
        # first cost a fresh float copy per batch (page faults) for no gain.
        binary = _above(up, first.mask_threshold, out)  # (n, H, W) bool, in ``out`` on the host
        boxes = _mask_boxes(binary)
        hits = binary[:, py, px] if self.skip_covered else None  # (n, P) bool
        if rows is not None:
            boxes = boxes[rows]
            hits = None if hits is None else hits[rows]
        return stab, chosen, rows, boxes, _MaskStore.pack(binary, rows), hits

    @torch.no_grad()
    def propose(self, image: torch.Tensor, backbone_out: dict[str, Any] | None = None) -> Proposals:
        """(H, W, 3) uint8 RGB frame -> proposals (see the module docstring).

        ``timings`` has the keys ``encoder``, ``decoder`` (prompt encoding and decoding),
        ``postprocess`` and its parts ``upsample`` (bilinear upsampling of the candidates),
        ``candidates`` (the rest of the per-candidate work: filters, stability, thresholds,
        boxes, packing) and ``nms`` (NMS, the survivors' masks, small-region clean-up).
        """
        return self.propose_many(image, [self.params], backbone_out)[0]

    @torch.no_grad()
    def propose_many(
        self, image: torch.Tensor, params: Sequence[ProposalParams], backbone_out: dict[str, Any] | None = None
    ) -> list[Proposals]:
        """Proposals of one frame for several params (the values of a threshold sweep), sharing
        the work they share.

        Element ``k`` is exactly (bit for bit, same order) what
        ``FastProposer(model, params[k], ...same options...).propose(image, backbone_out)``
        returns. Shared: the encoder (once, or ``backbone_out``) and the decoder's per-frame
        preparation; prompt encoding and decoding once per group of params with equal
        ``points_per_side``, ``points_per_batch``, ``mask_threshold`` and
        ``stability_score_offset`` (``points_per_batch`` does not change the proposals, but
        the decoder's matmuls may round differently with the batch's shape, so it splits groups
        to keep the results bit-identical); within a group, the candidates some member's
        predicted-IoU filter passes are upsampled, scored and thresholded once, and each
        member then takes its own subset (its IoU and stability filters, in decode order, as
        ``propose`` orders them), NMS, small-region clean-up and masks.

        With ``skip_covered`` which points are decoded depends on each member's thresholds, so
        past the encoder and the decoder's per-frame preparation nothing is shared: each
        params is decoded and filtered as ``propose`` does it.

        Args:
            image: (H, W, 3) uint8 RGB frame.
            params: the parameter sets; ``self.params`` is neither used nor changed.
            backbone_out: ``model.forward_image`` of the frame (see :meth:`propose`), or None.

        Returns:
            One :class:`Proposals` per params, in the order of ``params``. Their ``timings``
            (keys as :meth:`propose`'s) count shared work in every result that shares it: the
            encoder in all, a group's decoding, ``upsample`` and ``candidates`` in each of its
            members; ``nms`` is the member's own. ``self.stats`` is set to the last params'
            counts and ``self.stats_many`` to the list of all.
        """
        params = list(params)
        for i, p in enumerate(params):
            if not isinstance(p, ProposalParams):
                raise TypeError(f"FastProposer.propose_many: params[{i}] is a {type(p).__name__}, not ProposalParams")
        if not params:
            return []
        height, width = int(image.shape[0]), int(image.shape[1])

        t0 = time.perf_counter()
        if backbone_out is None:
            backbone_out = self.encode(image)
        encoder_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        with self._autocast():
            image_embed, high_res = self._features(backbone_out)
            cache = self.decoder.prepare(image_embed, high_res)
        prepare_s = time.perf_counter() - t0

        groups: dict[Any, list[int]] = {}
        for i, p in enumerate(params):
            key = i if self.skip_covered else _group_key(p)
            groups.setdefault(key, []).append(i)
        results: dict[int, tuple[Proposals, dict[str, int]]] = {}
        scratch = _Scratch()  # shared by the groups: fresh full-resolution buffers cost their page faults
        for members in groups.values():
            outputs = self._propose_group(cache, [params[i] for i in members], height, width, scratch)
            for i, (proposals, counts) in zip(members, outputs):
                proposals.timings["encoder"] = encoder_s
                proposals.timings["decoder"] += prepare_s
                results[i] = proposals, counts
        self.stats_many = [results[i][1] for i in range(len(params))]
        self.stats = self.stats_many[-1]
        return [results[i][0] for i in range(len(params))]

    def _propose_group(
        self,
        cache: _FrameCache,
        group: Sequence[ProposalParams],
        height: int,
        width: int,
        scratch: _Scratch,
    ) -> list[tuple[Proposals, dict[str, int]]]:
        """Decodes the point grid once for params of one group (equal :func:`_group_key`) and
        returns each member's proposals and counts (``stats``), in the order of ``group``."""
        first = group[0]
        dev = self.device
        shared = dict.fromkeys(("decoder", "upsample", "candidates"), 0.0)

        t0 = time.perf_counter()
        with self._autocast():
            # Prompts exactly as SAM2AutomaticMaskGenerator._process_batch builds them.
            points = torch.as_tensor(
                point_grid(first.points_per_side, height, width), dtype=torch.float32, device=dev
            )  # (P, 2) x, y pixels
            coords = points.clone()
            coords[..., 0] = coords[..., 0] / width
            coords[..., 1] = coords[..., 1] / height
            coords = coords * self.model.image_size
            labels = torch.ones(coords.shape[0], dtype=torch.int, device=dev)
            sparse_all, _ = self.model.sam_prompt_encoder(
                points=(coords[:, None, :], labels[:, None]), boxes=None, masks=None
            )
        shared["decoder"] += time.perf_counter() - t0

        n_points = points.shape[0]
        px = points[:, 0].long().clamp_(0, width - 1)
        py = points[:, 1].long().clamp_(0, height - 1)
        covered = torch.zeros(n_points, dtype=torch.bool, device=dev)
        # sam2 filters on a threshold only when it is > 0: the candidates any member can keep
        # pass the lowest threshold, or all of them when some member does not filter.
        iou_floor = min(p.pred_iou_thresh for p in group)
        kept_iou, kept_stab, kept_box, kept_chosen, n_iou = [], [], [], [], []
        kept_masks = _MaskStore(height, width, dev)
        n_decoded = n_cand = 0
        for start in range(0, n_points, first.points_per_batch):
            idx = torch.arange(start, min(start + first.points_per_batch, n_points), device=dev)
            if self.skip_covered:
                idx = idx[~covered[idx]]
                if idx.numel() == 0:
                    continue
            t0 = time.perf_counter()
            with self._autocast():
                low, iou = self.decoder(cache, sparse_all[idx])
            low, iou = low.float(), iou.float()
            shared["decoder"] += time.perf_counter() - t0
            n_decoded += idx.numel()

            t0 = time.perf_counter()
            low = low.flatten(0, 1)  # (3B, 4h, 4w)
            iou = iou.flatten(0, 1)  # (3B,)
            n_cand += iou.numel()
            if iou_floor > 0.0:
                keep = iou > iou_floor
                low, iou = low[keep], iou[keep]
            chosen = torch.stack(
                [
                    iou > p.pred_iou_thresh if p.pred_iou_thresh > 0.0 else torch.ones_like(iou, dtype=torch.bool)
                    for p in group
                ]
            )  # (G, n) bool
            n_iou.append(chosen.sum(dim=1))
            stab = None
            if self.lowres_stability:
                stab = calculate_stability_score(low, first.mask_threshold, first.stability_score_offset)
                chosen = _stable(chosen, stab, group)
                needed = chosen.any(dim=0)
                if not bool(needed.all()):
                    low, iou, stab, chosen = low[needed], iou[needed], stab[needed], chosen[:, needed]
            batch = max(1, UPSAMPLE_PIXELS // (height * width))
            for j in range(0, low.shape[0], batch):  # full-res logits of a few masks at a time
                t1 = time.perf_counter()
                up = scratch.upsample(low[j : j + batch], height, width)
                shared["upsample"] += time.perf_counter() - t1
                out = scratch.bools(tuple(up.shape)) if host_kernels(up) else None
                # Not split over threads: numpy's compares and counts here did not scale on 2 cores.
                stab_part, chosen_part, rows, box, packed, hits = self._full_res_pass(
                    up, out, py, px, group, chosen[:, j : j + batch]
                )
                iou_part = iou[j : j + batch]
                if stab is not None:
                    stab_part = stab[j : j + batch]
                if rows is not None:
                    iou_part, stab_part, chosen_part = iou_part[rows], stab_part[rows], chosen_part[:, rows]
                kept_iou.append(iou_part)
                kept_stab.append(stab_part)
                kept_chosen.append(chosen_part)
                kept_box.append(box)
                kept_masks.append(packed)
                if hits is not None:
                    covered |= hits.any(dim=0)
            shared["candidates"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        iou_all = torch.cat(kept_iou) if kept_iou else torch.zeros(0, device=dev)  # (K,) float32
        stab_all = torch.cat(kept_stab) if kept_stab else torch.zeros(0, device=dev)  # (K,) float32
        box_all = torch.cat(kept_box) if kept_box else torch.zeros(0, 4, device=dev, dtype=torch.long)  # (K, 4)
        chosen_all = (
            torch.cat(kept_chosen, dim=1) if kept_chosen else torch.zeros(len(group), 0, dtype=torch.bool, device=dev)
        )  # (G, K) bool
        n_iou_all = torch.stack(n_iou).sum(dim=0).tolist() if n_iou else [0] * len(group)
        shared["candidates"] += time.perf_counter() - t0
        shared["candidates"] -= shared["upsample"]

        outputs = []
        for g, p in enumerate(group):
            t0 = time.perf_counter()
            index = chosen_all[g].nonzero().flatten()  # (k,) this member's candidates, in decode order
            masks, iou, stab = _nms_and_masks(p, kept_masks, index, iou_all[index], stab_all[index], box_all[index])
            timings = dict(shared, nms=time.perf_counter() - t0)
            timings["postprocess"] = timings["upsample"] + timings["candidates"] + timings["nms"]
            counts = {
                "points": n_points,
                "decoded": n_decoded,
                "candidates": n_cand,
                "after_iou": int(n_iou_all[g]),
                "after_stability": int(index.numel()),
                "kept": int(masks.shape[0]),
            }
            outputs.append((Proposals(masks=masks, predicted_iou=iou, stability=stab, timings=timings), counts))
        return outputs


def _group_key(p: ProposalParams) -> tuple[int, int, float, float]:
    """What fixes the decoded candidates and their full-resolution pass (see ``propose_many``)."""
    return (p.points_per_side, p.points_per_batch, p.mask_threshold, p.stability_score_offset)


def _stable(chosen: torch.Tensor, stab: torch.Tensor, group: Sequence[ProposalParams]) -> torch.Tensor:
    """(G, n) bool ``chosen`` and, for each member whose threshold is > 0 (sam2 filters only
    then), ``stab >= stability_score_thresh`` of the (n,) scores."""
    chosen = chosen.clone()
    for g, p in enumerate(group):
        if p.stability_score_thresh > 0.0:
            chosen[g] &= stab >= p.stability_score_thresh
    return chosen


def _nms_and_masks(
    p: ProposalParams,
    store: _MaskStore,
    index: torch.Tensor,
    iou: torch.Tensor,
    stab: torch.Tensor,
    boxes: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Box NMS, the survivors' masks and the optional small-region clean-up of one params.

    Args:
        p: the params (``box_nms_thresh``, ``min_mask_region_area``).
        store: the candidates' masks.
        index: (k,) int64 positions in ``store`` of this params' candidates, in decode order.
        iou, stab: (k,) float32; boxes: (k, 4) int64, of those candidates.

    Returns:
        (N, H, W) bool masks, (N,) float32 predicted IoU and stability, by decreasing predicted IoU.
    """
    if iou.numel():
        keep = batched_nms(boxes.float(), iou, torch.zeros_like(boxes[:, 0]), iou_threshold=p.box_nms_thresh)
        if p.min_mask_region_area <= 0:
            # NMS keeps by descending score: order by predicted IoU (stable) before the one
            # gather of the survivors' full-res masks.
            keep = keep[torch.argsort(iou[keep], descending=True, stable=True)]
        iou, stab, boxes = iou[keep], stab[keep], boxes[keep]
        masks = store.gather(index[keep])  # (K, H, W) bool
    else:
        masks = torch.zeros(0, *store.shape, dtype=torch.bool, device=store.device)
    if p.min_mask_region_area > 0 and masks.shape[0]:
        masks, iou, stab = _small_regions(masks, iou, stab, boxes, p.min_mask_region_area, p.box_nms_thresh)
        order = torch.argsort(iou, descending=True, stable=True)
        masks, iou, stab = masks[order], iou[order], stab[order]
    return masks, iou.float(), stab.float()


def _as_numpy(image: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)


def _upsample_into(
    low: torch.Tensor, height: int, width: int, buffer: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, h, w) low-res logits -> (N, H, W) as ``SAM2Transforms.postprocess_masks`` upsamples
    them (``F.interpolate``, bilinear, ``align_corners=False``: the same ATen kernel and values),
    written into ``buffer``.

    Returns:
        (N, H, W) view of the buffer, and the buffer: a new, larger one when ``buffer`` is too
        small (its storage cannot be resized once numpy has viewed it).
    """
    shape = (low.shape[0], 1, height, width)
    if buffer.numel() < math.prod(shape):
        buffer = torch.empty(shape, device=low.device)
    out = buffer.view(-1)[: math.prod(shape)].view(shape)
    torch.ops.aten.upsample_bilinear2d.out(low[:, None].float(), [height, width], False, None, None, out=out)
    return out[:, 0], buffer


class _Scratch:
    """Buffers reused by the full-resolution passes of one frame: the upsampled logits and (on
    the host) the compares' bools.

    A fresh byte costs a page fault, which costs more than the compare that writes it, so the
    compares write into one buffer and only what is kept is copied out, bit-packed; a fresh
    ~50 MB upsampling output per batch would cost its page faults again.
    """

    def __init__(self) -> None:
        self.buffer = np.empty(0, dtype=bool)
        self.logits = torch.empty(0)

    def upsample(self, low: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(N, h, w) low-res logits -> (N, H, W) float32 (:func:`_upsample_into`) in the reused
        buffer; overwritten by the next call."""
        if self.logits.device != low.device:
            self.logits = torch.empty(0, device=low.device)
        up, self.logits = _upsample_into(low, height, width, self.logits)
        return up

    def bools(self, shape: tuple[int, ...]) -> np.ndarray:
        """A bool array of ``shape`` over the buffer (grown when too small); overwritten by the next call."""
        size = math.prod(shape)
        if self.buffer.size < size:
            self.buffer = np.empty(size, dtype=bool)
        return self.buffer[:size].reshape(shape)


class _MaskStore:
    """Binary masks of the candidates that passed the filters, in candidate order; the NMS
    survivors are gathered once at the end.

    On the host each mask is kept bit-packed (``np.packbits``, 1/8 of the memory: a bool copy
    per candidate cost ≈ 0.3 ms at 480p in page faults alone, packing ≈ 0.03 ms) and the
    survivors are unpacked straight into the output; elsewhere the bool tensors are kept as
    they are and stacked.
    """

    UNPACK_ROWS = 8  # masks unpacked at a time in ``gather`` (≈ 3 MB at 480p)

    def __init__(self, height: int, width: int, device: torch.device) -> None:
        self.shape = (height, width)
        self.device = device
        self.parts: list[np.ndarray] | list[torch.Tensor] = []

    def append(self, part: np.ndarray | torch.Tensor) -> None:
        """Adds masks in the form :meth:`pack` returns, after those added before."""
        self.parts.append(part)

    @staticmethod
    def pack(binary: torch.Tensor, rows: torch.Tensor | None = None) -> np.ndarray | torch.Tensor:
        """The stored form of the masks ``binary[rows]`` (all when ``rows`` is None) of (N, H, W)
        bool masks, to :meth:`append` in candidate order; a copy, so ``binary`` may be a
        scratch view."""
        if host_kernels(binary):
            packed = np.packbits(binary.numpy().reshape(binary.shape[0], -1), axis=1)  # (N, ⌈HW/8⌉) uint8
            return packed if rows is None else packed[rows.numpy()]
        return binary.clone() if rows is None else binary[rows]

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """(K,) int64 positions in the order masks were added -> (K, H, W) bool."""
        if not self.parts:
            return torch.zeros(0, *self.shape, dtype=torch.bool, device=self.device)
        if isinstance(self.parts[0], np.ndarray):
            packed = self._packed_rows(index.cpu().numpy())  # (K, ⌈HW/8⌉) uint8
            masks = torch.empty(packed.shape[0], *self.shape, dtype=torch.bool)
            bits = masks.numpy().reshape(packed.shape[0], -1).view(np.uint8)  # (K, HW), 0 / 1 are bools
            # Unpacked a few masks at a time through a small temporary into torch's memory: numpy's
            # own large (hugepage-advised) output can stall on the kernel's page compaction.
            for start in range(0, packed.shape[0], self.UNPACK_ROWS):
                stop = start + self.UNPACK_ROWS
                bits[start:stop] = np.unpackbits(packed[start:stop], axis=1, count=bits.shape[1])
            return masks
        if len(self.parts) > 1:  # gathered once per params of a sweep: concatenated once
            self.parts = [torch.cat(self.parts)]
        return self.parts[0][index]

    def _packed_rows(self, index: np.ndarray) -> np.ndarray:
        """(K,) positions -> (K, ⌈HW/8⌉) uint8 packed rows, picked part by part: concatenating
        the whole store first would copy every candidate's mask for the few survivors, once per
        gather (once per params of a sweep)."""
        sizes = np.array([part.shape[0] for part in self.parts])
        ends = np.cumsum(sizes)
        part_of = np.searchsorted(ends, index, side="right")  # (K,) the part holding each position
        local = index - (ends - sizes)[part_of]
        packed = np.empty((index.shape[0], self.parts[0].shape[1]), dtype=np.uint8)
        for k in np.unique(part_of):
            at = part_of == k
            packed[at] = self.parts[k][local[at]]
        return packed


def _above(logits: torch.Tensor, threshold: float, out: np.ndarray | None = None) -> torch.Tensor:
    """``logits > threshold`` as a bool tensor.

    On the CPU through numpy, whose float32 compare is faster than torch's (same result); with
    ``out`` (a bool array of the logits' shape, e.g. from :class:`_Scratch`) written there.
    """
    if host_kernels(logits):
        return torch.from_numpy(np.greater(logits.numpy(), np.float32(threshold), out=out))
    return logits > threshold


def _stability_score(
    logits: torch.Tensor, threshold: float, offset: float, out: np.ndarray | None = None
) -> torch.Tensor:
    """sam2's ``calculate_stability_score`` (same int32 counts, same float32 ratio): on the CPU
    the two compares and counts run in numpy, faster than torch's, in ``out`` when given (a bool
    array of the logits' shape)."""
    if not host_kernels(logits):
        return calculate_stability_score(logits, threshold, offset)
    values = logits.numpy()
    above = np.empty(values.shape, dtype=bool) if out is None else out  # (N, H, W), both thresholds
    counts = []
    for level in (threshold + offset, threshold - offset):
        np.greater(values, np.float32(level), out=above)
        counts.append([np.count_nonzero(mask) for mask in above])
    inter, union = torch.tensor(counts, dtype=torch.int32).reshape(2, -1)
    return inter / union


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """XYXY int64 boxes of bool masks, as sam2's ``batched_mask_to_box``; (0, 0, 0, 0) when empty.

    A row (column) holds a mask pixel iff its ``any`` is true, so the boxes come from two
    ``any`` reductions and the first / last true entry of each, instead of sam2's two
    index-returning reductions over the masks; on the CPU all of it in numpy, whose bool
    reductions are faster than torch's and whose small-array ops cost far less per call.

    Args:
        masks: (N, H, W) bool.
    """
    n, height, width = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.long, device=masks.device)
    if host_kernels(masks):
        values = masks.numpy()
        extents = []
        for axis in (-2, -1):  # columns (x), then rows (y)
            hit = values.any(axis=axis)  # (N, W) or (N, H) bool
            first = hit.argmax(axis=1)
            last = hit.shape[1] - 1 - hit[:, ::-1].argmax(axis=1)
            extents.append((first, last))
        (left, right), (top, bottom) = extents
        boxes = np.stack([left, top, right, bottom], axis=1) * hit.any(axis=1, keepdims=True)
        return torch.from_numpy(boxes.astype(np.int64))
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)  # (N, H), (N, W) bool
    ys = torch.arange(height, device=masks.device)
    xs = torch.arange(width, device=masks.device)
    bottom = (rows * ys).amax(dim=-1)
    top = torch.where(rows, ys, height).amin(dim=-1)
    right = (cols * xs).amax(dim=-1)
    left = torch.where(cols, xs, width).amin(dim=-1)
    return torch.stack([left, top, right, bottom], dim=-1) * rows.any(dim=-1, keepdim=True)


def _small_regions(
    masks: torch.Tensor, iou: torch.Tensor, stab: torch.Tensor, boxes: torch.Tensor, min_area: int, nms_thresh: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sam2's ``postprocess_small_regions`` on the NMS survivors (holes, islands, NMS)."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.utils.amg import MaskData, mask_to_rle_pytorch, rle_to_mask

    data = MaskData(
        rles=mask_to_rle_pytorch(masks.cpu()), boxes=boxes.cpu(), iou_preds=iou.cpu(), stability_score=stab.cpu()
    )
    data = SAM2AutomaticMaskGenerator.postprocess_small_regions(data, min_area, nms_thresh)
    out = torch.stack([torch.as_tensor(rle_to_mask(r)) for r in data["rles"]]).to(masks.device)
    return out, data["iou_preds"].to(iou.device), data["stability_score"].to(stab.device)
