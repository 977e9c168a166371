"""SiamMask training targets: anchor labels and box deltas (the RPN's), and the mask windows and weights (the mask
branch's). Reference: SiamMask's ``AnchorTargetLayer`` and the mask part of its dataset (notes
``trackers-and-got10k.md`` §3.3), re-written, vectorised over the batch.

Conventions: ``anchors.py`` (continuous coordinates; boxes xyxy in search-crop pixels, x2 = x + w; anchors (k, S, S, 4)
cxcywh from ``anchors.training_anchors``). IoU is the continuous one (w = x2 − x1, no "+1"), as the reference's.

Anchor targets, per pair (``anchor_targets``):

* positive pair: IoU > 0.6 → positive, at most 16 of them, drawn uniformly without replacement when more qualify;
  IoU < 0.3 → negative, drawn to fill 64 labelled anchors in all (64 − #positives); every other anchor (including
  qualifying ones not drawn) is ignored (−1);
* negative pair (the search crop shows another object): every anchor of the central 7 × 7 locations (S // 2 ± 3) is a
  candidate negative regardless of IoU, 16 of them drawn; everything else is ignored. No positives;
* ``delta`` (B, 4, k, S, S) = ``anchors.encode_deltas`` of the pair's box against every anchor (also for negative
  pairs, where no loss reads it); ``delta_weight`` = 1 / #positives at the positives, 0 elsewhere, so the weighted L1
  loss averages over a pair's positives. The reference divides by #positives + 1e-6; we use 1 / #positives exactly
  (and 0 everywhere for a pair without positives);
* ``mask_weight`` (B, S, S) = 1 at the locations with at least one drawn positive anchor, only in positive pairs
  whose data set has masks (``has_mask``), else 0 — the reference's ``cls.max(axis=0)`` after sampling.

Sampling draws from the given ``numpy.random.Generator``: two (B, k·S·S) uniform arrays per call, whatever the labels,
so a seeded generator gives the same targets on every run and platform.

Mask targets: a {−1, +1} label per pixel of the search crop (``mask_labels``: +1 where the mask is > 0.5), and per
location its 127 × 127 window (``mask_windows``, ``anchors.crop_windows``; the reference's ``F.unfold(kernel 127,
padding 32, stride 8)`` for 255 crops), centred on the location's anchors. Window pixels outside the crop are 0:
"no label", which the soft-margin loss turns into a constant log 2 with no gradient (the reference's zero padding).
Only the locations with ``mask_weight`` 1 (``mask_positions``) are cut, in the same order as the model's
``refine_at`` and the mask loss read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from data.boxes import xyxy_to_cxcywh
from trackers.siammask.anchors import STRIDE, WINDOW, crop_windows, cxcywh_to_xyxy, encode_deltas, window_padding

POSITIVE, NEGATIVE, IGNORED = 1.0, 0.0, -1.0
"""Values of the anchor label."""


@dataclass(frozen=True)
class TargetConfig:
    """The reference's ``AnchorTargetLayer`` settings."""

    positive_iou: float = 0.6          # IoU > this → positive candidate
    negative_iou: float = 0.3          # IoU < this → negative candidate
    max_positives: int = 16
    total: int = 64                    # labelled anchors per positive pair (positives + negatives)
    negative_pair_samples: int = 16    # negatives drawn in a negative pair
    negative_pair_radius: int = 3      # ... from the central (2r + 1)² locations


@dataclass(frozen=True)
class AnchorTargets:
    """NumPy float32 targets of a batch: ``cls`` (B, k, S, S) in {1, 0, −1}; ``delta`` (B, 4, k, S, S);
    ``delta_weight`` (B, k, S, S); ``mask_weight`` (B, S, S) in {0, 1}."""

    cls: NDArray[np.float32]
    delta: NDArray[np.float32]
    delta_weight: NDArray[np.float32]
    mask_weight: NDArray[np.float32]


def box_iou(anchors_xyxy: NDArray[np.float64], boxes_xyxy: NDArray[np.float64]) -> NDArray[np.float64]:
    """Continuous IoU of every box (B, 4) with every anchor (N, 4): (B, N)."""
    a, b = anchors_xyxy[None, :, :], boxes_xyxy[:, None, :]
    inter_w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    inter_h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = inter_w * inter_h
    union = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (union - inter)


def sample(candidates: NDArray[np.bool_], limit: ArrayLike, rng: np.random.Generator) -> NDArray[np.bool_]:
    """Per row of ``candidates`` (B, N), min(#candidates, limit[b]) of them drawn uniformly without replacement:
    each candidate gets a uniform key and the ``limit`` smallest keys are kept. Draws exactly B · N numbers."""
    keys = np.where(candidates, rng.random(candidates.shape), np.inf)
    ranks = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    return candidates & (ranks < np.asarray(limit)[:, None])


def anchor_targets(boxes_xyxy: ArrayLike, negative: ArrayLike, anchors: NDArray[np.float64],
                   rng: np.random.Generator, has_mask: Optional[ArrayLike] = None,
                   config: TargetConfig = TargetConfig()) -> AnchorTargets:
    """Anchor targets of a batch (see the module docstring).

    Args:
        boxes_xyxy: (B, 4) each search crop's box, xyxy in crop pixels (width and height > 0).
        negative: (B,) bool, True for a negative pair.
        anchors: (k, S, S, 4) cxcywh in crop pixels (``anchors.training_anchors``).
        rng: the generator the sampling draws from.
        has_mask: (B,) bool, whether the pair's data set has masks (default: none has).
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    negative = np.asarray(negative, dtype=bool).reshape(-1)
    batch = boxes.shape[0]
    has_mask = np.zeros(batch, bool) if has_mask is None else np.asarray(has_mask, dtype=bool).reshape(-1)
    if negative.shape != (batch,) or has_mask.shape != (batch,) or anchors.ndim != 4 or anchors.shape[-1] != 4:
        raise ValueError(f"need boxes (B, 4), negative (B,), has_mask (B,), anchors (k, S, S, 4); got "
                         f"{boxes.shape}, {negative.shape}, {has_mask.shape}, {anchors.shape}")
    if not (np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])):
        raise ValueError(f"boxes must have positive width and height: {boxes.tolist()}")
    k, size = anchors.shape[0], anchors.shape[1]
    flat = anchors.reshape(-1, 4)
    iou = box_iou(cxcywh_to_xyxy(flat), boxes)                                    # (B, N)

    centre = np.zeros((k, size, size), bool)
    low, high = size // 2 - config.negative_pair_radius, size // 2 + config.negative_pair_radius + 1
    centre[:, low:high, low:high] = True
    positive_candidates = (iou > config.positive_iou) & ~negative[:, None]
    positives = sample(positive_candidates, np.full(batch, config.max_positives), rng)
    positive_count = positives.sum(axis=1)
    negative_candidates = np.where(negative[:, None], centre.reshape(1, -1), iou < config.negative_iou)
    negative_limit = np.where(negative, config.negative_pair_samples, config.total - positive_count)
    negatives = sample(negative_candidates, negative_limit, rng)

    shape = (batch, k, size, size)
    cls = np.full(shape, IGNORED, np.float32)
    cls[negatives.reshape(shape)] = NEGATIVE
    cls[positives.reshape(shape)] = POSITIVE
    weight = positives / np.maximum(positive_count, 1)[:, None]
    delta = encode_deltas(xyxy_to_cxcywh(boxes)[:, None, :], flat[None])          # (B, N, 4)
    delta = np.moveaxis(delta.reshape(*shape, 4), -1, 1)
    mask_weight = positives.reshape(shape).any(axis=1) & (has_mask & ~negative)[:, None, None]
    return AnchorTargets(cls, delta.astype(np.float32), weight.reshape(shape).astype(np.float32),
                         mask_weight.astype(np.float32))


def mask_labels(masks: torch.Tensor) -> torch.Tensor:
    """{−1, +1} float32 labels of search-crop masks (B, X, X): +1 where the mask is > 0.5."""
    return torch.where(torch.as_tensor(masks) > 0.5, 1.0, -1.0)


def mask_positions(mask_weight: torch.Tensor) -> torch.Tensor:
    """(N, 3) int64 (batch index, row, column) of the locations with mask weight 1, in row-major order: the
    locations the mask loss trains and the sharp stage refines (``SiamMask.forward(refine_at=...)``)."""
    return torch.nonzero(torch.as_tensor(mask_weight) == 1)


def mask_windows(labels: torch.Tensor, positions: torch.Tensor, size: int, stride: int = STRIDE,
                 window: int = WINDOW) -> torch.Tensor:
    """The ``window`` × ``window`` label windows (N, window, window) of search-crop labels (B, X, X) at
    ``positions`` (N, 3) of an S × S score map (S = ``size``), zero outside the crop (see the module docstring)."""
    padding = window_padding(labels.shape[-1], size, stride, window)
    return crop_windows(labels[:, None], positions, window, stride, padding)[:, 0]


@dataclass(frozen=True)
class SiamMaskTargets:
    """Torch targets for ``losses.SiamMaskLoss``: ``cls`` (B, k, S, S), ``delta`` (B, 4, k, S, S), ``delta_weight``
    (B, k, S, S), ``mask_positions`` (N, 3) int64 and ``mask_windows`` (N, 127, 127) labels in {−1, 0, +1}."""

    cls: torch.Tensor
    delta: torch.Tensor
    delta_weight: torch.Tensor
    mask_positions: torch.Tensor
    mask_windows: torch.Tensor


def siammask_targets(targets: AnchorTargets, labels: Optional[torch.Tensor],
                     device: torch.device | str | None = None) -> SiamMaskTargets:
    """The loss's targets from ``anchor_targets``' and the search crops' mask labels (B, X, X) (``mask_labels``;
    None when no pair has a mask, which ``mask_weight`` must then say), on ``device``."""
    def tensor(array: NDArray) -> torch.Tensor:
        return torch.as_tensor(array, device=device)

    size = targets.cls.shape[-1]
    positions = mask_positions(tensor(targets.mask_weight))
    if labels is None:
        if positions.numel():
            raise ValueError("mask_weight has positive locations but no mask labels were given")
        windows = torch.zeros(0, WINDOW, WINDOW, device=device)
    else:
        windows = mask_windows(torch.as_tensor(labels, dtype=torch.float32, device=device), positions, size)
    return SiamMaskTargets(tensor(targets.cls), tensor(targets.delta), tensor(targets.delta_weight), positions, windows)
