"""SiamMask score-map geometry: the anchors, their grid on the search crop, the box deltas, and the square windows
that tie a score location to the search crop (mask targets and the refine module's crops).

Reference: SiamMask's ``Anchors`` class, its training ``AnchorTargetLayer`` and ``tools/test.py`` (notes
``trackers-and-got10k.md`` §3.3), re-written.

Conventions (``data/boxes.py``): continuous pixel coordinates, as the GOT-10k toolkit. Pixel p covers [p, p + 1), so
its centre is p + 0.5 and a search crop of side X is [0, X] with centre X / 2. Boxes are xyxy with x2 = x + w or
cxcywh with cx = x + w / 2 (no "+1").

Anchors. Stride 8, ratios (0.33, 0.5, 1, 2, 3), one scale 8, so k = 5 anchors per location. With the reference's
integer rounding, ``ws = int(sqrt(stride² / r))``, ``hs = int(ws · r)``, each times the scale:

    r = 0.33 → 104 × 32,  0.5 → 88 × 40,  1 → 64 × 64,  2 → 40 × 80,  3 → 32 × 96   (w × h, pixels)

(the rounding moves them off the exact area 64² and ratio: r = 0.33 would be 111.4 × 36.8 unrounded; we keep the
reference's sizes, so a model trained here regresses against the same anchors as the reference's).

Grid. Score size S = (X − Z) / stride + 1 + base_size (255 / 127 / 8 / 8 → 25): the template's adjusted map is cut
from 15 to 7, which adds ``base_size`` = 8 locations. Location (i, j) (row i, column j) has its anchors centred at

    (c + stride · (j − S // 2),  c + stride · (i − S // 2))

with c = X / 2 during training (the crop's centre: 31.5 … 223.5 for 255, middle 127.5) and c = 0 at test time (the
reference's ``ori = −(S // 2) · stride``: displacements from the search crop's centre, −96 … 96). The reference places
its training anchors at the pixel INDEX 127 (``im_c = 255 // 2``), i.e. at the centre of the crop's middle pixel in
its own convention, where pixel p's centre is the coordinate p; ours is the same pixel's centre, 127.5, in the
continuous convention, so every anchor is the reference's shifted by +0.5 together with the boxes, and IoUs, deltas
and targets are unchanged. Its ``IoU``, ``corner2center`` and deltas use plain differences (w = x2 − x1), as we do.

Layouts (the reference's): anchors (k, S, S, 4) cxcywh, index [a, i, j]; the classification output (B, 2k, S, S) has
channel ``c · k + a`` for class c (0 background, 1 object) of anchor a; the regression output (B, 4k, S, S) has channel
``d · k + a`` for delta d of anchor a, i.e. it reshapes to (B, 4, k, S, S) as the targets' deltas.

Deltas: ((tcx − cx) / w, (tcy − cy) / h, ln(tw / w), ln(th / h)) of a target box against an anchor (cx, cy, w, h);
``decode_deltas`` inverts ``encode_deltas``.

Windows. Location (i, j) owns the 127 × 127 square of the search crop centred on its anchors (the mask it predicts):
rows ``stride · i − P … stride · i − P + 126`` with P = (127 + stride · (S − 1) − X) / 2 (32 for 255 / 25; 0 for the
reference's sharp-stage 143 / 3), the same as ``F.unfold(kernel 127, padding P, stride 8)``; pixels outside the crop
read as zero padding. The refine module crops its backbone maps the same way (``crop_windows``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray

STRIDE = 8
RATIOS = (0.33, 0.5, 1.0, 2.0, 3.0)
SCALES = (8.0,)
ANCHOR_NUM = len(RATIOS) * len(SCALES)
TEMPLATE_SIZE = 127
SEARCH_SIZE = 255
BASE_SIZE = 8      # locations added by cutting the template's adjusted map from 15 to 7 (0 when neither map is cut)
WINDOW = 127       # side of the search-crop square a location's mask covers


def anchor_shapes(stride: int = STRIDE, ratios: Sequence[float] = RATIOS,
                  scales: Sequence[float] = SCALES) -> NDArray[np.float64]:
    """(k, 2) anchor widths and heights in pixels, ratio-major (k = len(ratios) · len(scales)), with the reference's
    integer rounding: ``ws = int(sqrt(stride² / r))``, ``hs = int(ws · r)``, then times each scale."""
    shapes = []
    for ratio in ratios:
        ws = int(math.sqrt(stride * stride / ratio))
        hs = int(ws * ratio)
        shapes.extend((ws * scale, hs * scale) for scale in scales)
    return np.asarray(shapes, dtype=np.float64)


def score_size(x_size: int = SEARCH_SIZE, z_size: int = TEMPLATE_SIZE, stride: int = STRIDE,
               base_size: int = BASE_SIZE) -> int:
    """Side of the score map: (x_size − z_size) / stride + 1 + base_size (255 / 127 / 8 / 8 → 25; the sharp stage's
    143 / 127 / 8 / 0 → 3). The crop sides must differ by a multiple of the stride, as in the reference."""
    if (x_size - z_size) % stride or x_size < z_size:
        raise ValueError(f"search {x_size} and template {z_size} must differ by a non-negative multiple of {stride}")
    return (x_size - z_size) // stride + 1 + base_size


def grid_axis(size: int, stride: int = STRIDE, centre: float = 0.0) -> NDArray[np.float64]:
    """Coordinates of the S anchor centres along one axis: ``centre + stride · (arange(S) − S // 2)``."""
    return centre + stride * (np.arange(size, dtype=np.float64) - size // 2)


def anchor_grid(size: int, centre: float = 0.0, stride: int = STRIDE, ratios: Sequence[float] = RATIOS,
                scales: Sequence[float] = SCALES) -> NDArray[np.float64]:
    """All anchors, (k, S, S, 4) cxcywh; entry [a, i, j] is anchor a at row i, column j (see the module doc).

    ``centre`` is the coordinate of the middle location: ``search_size / 2`` for training targets in search-crop
    pixels (``training_anchors``), 0 for the tracker's displacements from the crop centre (``tracking_anchors``)."""
    shapes = anchor_shapes(stride, ratios, scales)
    axis = grid_axis(size, stride, centre)
    out = np.empty((len(shapes), size, size, 4), dtype=np.float64)
    out[..., 0] = axis[None, None, :]
    out[..., 1] = axis[None, :, None]
    out[..., 2] = shapes[:, 0, None, None]
    out[..., 3] = shapes[:, 1, None, None]
    return out


def training_anchors(x_size: int = SEARCH_SIZE, z_size: int = TEMPLATE_SIZE,
                     base_size: int = BASE_SIZE) -> NDArray[np.float64]:
    """Anchors in search-crop pixels, centred on the crop (middle location at x_size / 2): the training targets'."""
    return anchor_grid(score_size(x_size, z_size, STRIDE, base_size), centre=x_size / 2)


def tracking_anchors(size: int) -> NDArray[np.float64]:
    """Anchors as displacements from the search crop's centre (middle location at 0), the reference's test time."""
    return anchor_grid(size, centre=0.0)


def _lib(x):
    return torch if isinstance(x, torch.Tensor) else np


def encode_deltas(boxes_cxcywh, anchors_cxcywh):
    """Deltas (..., 4) of boxes against anchors, both cxcywh and broadcast against each other: ((tcx − cx) / w,
    (tcy − cy) / h, ln(tw / w), ln(th / h)). NumPy arrays or torch tensors (not mixed)."""
    lib = _lib(boxes_cxcywh)
    b, a = boxes_cxcywh, anchors_cxcywh
    return lib.stack([(b[..., 0] - a[..., 0]) / a[..., 2], (b[..., 1] - a[..., 1]) / a[..., 3],
                      lib.log(b[..., 2] / a[..., 2]), lib.log(b[..., 3] / a[..., 3])], -1)


def decode_deltas(deltas, anchors_cxcywh):
    """Boxes (..., 4) cxcywh from deltas against anchors: the inverse of :func:`encode_deltas`."""
    lib = _lib(deltas)
    d, a = deltas, anchors_cxcywh
    return lib.stack([a[..., 0] + d[..., 0] * a[..., 2], a[..., 1] + d[..., 1] * a[..., 3],
                      a[..., 2] * lib.exp(d[..., 2]), a[..., 3] * lib.exp(d[..., 3])], -1)


def cxcywh_to_xyxy(boxes: ArrayLike) -> NDArray[np.float64]:
    """(cx, cy, w, h) → (cx − w/2, cy − h/2, cx + w/2, cy + h/2), float64."""
    b = np.asarray(boxes, dtype=np.float64)
    return np.concatenate([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], axis=-1)


def window_padding(x_size: int, size: int, stride: int = STRIDE, window: int = WINDOW) -> int:
    """Zero padding P around a crop of side ``x_size`` such that S windows of side ``window``, ``stride`` apart,
    cover it centred on the anchors: P = (window + stride · (S − 1) − x_size) / 2 (255 / 25 → 32, 143 / 3 → 0)."""
    twice = window + stride * (size - 1) - x_size
    if twice < 0 or twice % 2:
        raise ValueError(f"{size} windows of {window} at stride {stride} cannot be centred on a crop of {x_size}")
    return twice // 2


def all_positions(batch: int, size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Every (batch index, row, column) of a batch of S × S score maps, (B · S · S, 3) int64, row-major per pair."""
    b, i, j = torch.meshgrid(torch.arange(batch, device=device), torch.arange(size, device=device),
                             torch.arange(size, device=device), indexing="ij")
    return torch.stack([b.reshape(-1), i.reshape(-1), j.reshape(-1)], dim=1)


def as_positions(position: torch.Tensor) -> torch.Tensor:
    """``position`` as (N, 3) int64 (batch index, row, column): a (2,) (row, column) means pair 0 (the tracker's
    single location), an (N, 3) is kept."""
    position = torch.as_tensor(position)
    if position.dim() == 1 and position.shape[0] == 2:
        return torch.cat([torch.zeros_like(position[:1]), position]).reshape(1, 3).long()
    if position.dim() != 2 or position.shape[1] != 3:
        raise ValueError(f"position must be (row, column) of shape (2,) or (N, 3) (batch index, row, column); "
                         f"got shape {tuple(position.shape)}")
    return position.long()


def crop_windows(maps: torch.Tensor, positions: torch.Tensor, size: int, step: int, padding: int) -> torch.Tensor:
    """Square crops (N, C, size, size) of ``maps`` (B, C, H, W), one per row (b, i, j) of ``positions`` (N, 3) int64:
    ``zero_pad(maps, padding)[b, :, step·i : step·i + size, step·j : step·j + size]``.

    Equal to ``F.unfold(maps, size, padding=padding, stride=step)`` at those locations, without materialising the
    others (a 255 search crop has 625). A gather, differentiable (its backward scatters into ``maps``) and exported
    to ONNX as such, with ``positions`` as a graph input."""
    if padding:
        maps = F.pad(maps, (padding, padding, padding, padding))
    if not torch.jit.is_tracing() and positions.numel():
        first, last = positions.amin(0), positions.amax(0)
        height, width = maps.shape[-2:]
        if (first < 0).any() or last[0] >= maps.shape[0] or step * last[1] + size > height \
                or step * last[2] + size > width:
            raise ValueError(f"positions {positions.tolist()} fall outside maps of shape {tuple(maps.shape)} "
                             f"(padded by {padding}) for windows of {size} at step {step}")
    batch, row, col = positions[:, 0], positions[:, 1], positions[:, 2]
    offsets = torch.arange(size, device=maps.device)
    rows = (step * row)[:, None] + offsets                               # (N, size)
    cols = (step * col)[:, None] + offsets
    hwc = maps.permute(0, 2, 3, 1)                                       # index three leading dims at once
    out = hwc[batch[:, None, None], rows[:, :, None], cols[:, None, :]]  # (N, size, size, C)
    return out.permute(0, 3, 1, 2)
