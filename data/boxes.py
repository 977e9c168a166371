"""Axis-aligned box conventions and conversions shared by the single-object trackers (SiamFC++, GOTURN, SiamMask).

Convention: continuous pixel coordinates, as in the GOT-10k toolkit. Pixel (i, j) (column i, row j) covers the square
[i, i+1) × [j, j+1), so the image of width W and height H is the rectangle [0, W] × [0, H] and pixel centres sit at
half-integers. Three box layouts, all in that coordinate system:

* ``xywh``   = (x, y, w, h): top-left corner and size; the right edge is x + w and the bottom edge y + h
  (the GOT-10k annotation and result-file format).
* ``xyxy``   = (x1, y1, x2, y2) with x2 = x + w, y2 = y + h (no "+1").
* ``cxcywh`` = (cx, cy, w, h) with cx = x + w/2, cy = y + h/2.

video_analyst (SiamFC++) uses the pixel-inclusive convention w = x1 - x0 + 1, cx = x + (w - 1)/2; we do NOT. Every
width is a plain difference of edges, so conversions are exact inverses and scaling a box scales its edges.

All functions take array-likes of shape (..., 4) (a single box, a list of boxes, any batch shape) and return float64
arrays of the same shape; nothing is modified in place.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

Boxes = NDArray[np.float64]


def as_boxes(boxes: ArrayLike) -> Boxes:
    """``boxes`` as a float64 array of shape (..., 4); ValueError for any other trailing dimension."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim == 0 or array.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (..., 4), got {array.shape}")
    return array


def xywh_to_xyxy(boxes: ArrayLike) -> Boxes:
    """(x, y, w, h) → (x, y, x + w, y + h)."""
    b = as_boxes(boxes)
    return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:]], axis=-1)


def xyxy_to_xywh(boxes: ArrayLike) -> Boxes:
    """(x1, y1, x2, y2) → (x1, y1, x2 - x1, y2 - y1)."""
    b = as_boxes(boxes)
    return np.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], axis=-1)


def xywh_to_cxcywh(boxes: ArrayLike) -> Boxes:
    """(x, y, w, h) → (x + w/2, y + h/2, w, h)."""
    b = as_boxes(boxes)
    return np.concatenate([b[..., :2] + b[..., 2:] / 2, b[..., 2:]], axis=-1)


def cxcywh_to_xywh(boxes: ArrayLike) -> Boxes:
    """(cx, cy, w, h) → (cx - w/2, cy - h/2, w, h)."""
    b = as_boxes(boxes)
    return np.concatenate([b[..., :2] - b[..., 2:] / 2, b[..., 2:]], axis=-1)


def xyxy_to_cxcywh(boxes: ArrayLike) -> Boxes:
    """(x1, y1, x2, y2) → ((x1 + x2)/2, (y1 + y2)/2, x2 - x1, y2 - y1)."""
    b = as_boxes(boxes)
    return np.concatenate([(b[..., :2] + b[..., 2:]) / 2, b[..., 2:] - b[..., :2]], axis=-1)


def cxcywh_to_xyxy(boxes: ArrayLike) -> Boxes:
    """(cx, cy, w, h) → (cx - w/2, cy - h/2, cx + w/2, cy + h/2)."""
    b = as_boxes(boxes)
    half = b[..., 2:] / 2
    return np.concatenate([b[..., :2] - half, b[..., :2] + half], axis=-1)


def is_valid_xywh(boxes: ArrayLike) -> NDArray[np.bool_]:
    """Per box (shape ``boxes.shape[:-1]``): all four values finite and w > 0, h > 0."""
    b = as_boxes(boxes)
    return np.isfinite(b).all(axis=-1) & (b[..., 2] > 0) & (b[..., 3] > 0)


def clip_xywh(boxes: ArrayLike, width: float, height: float, min_size: float = 1.0) -> Boxes:
    """Boxes guaranteed to lie inside the frame [0, width] × [0, height] with w, h >= min_size (trackers' output rule).

    Each axis is handled independently (x with w and ``width``, y with h and ``height``):

    1. the box is intersected with the frame: lo = clip(x, 0, W), hi = clip(x + w, 0, W); a box inside the frame and
       at least ``min_size`` wide is returned unchanged;
    2. the size becomes hi - lo, raised to ``min_size`` (capped at W when min_size > W); a negative size counts as 0;
    3. the box of that size is centred on (lo + hi)/2, the centre of the visible part, then slid the least distance
       that puts it inside [0, W]. So a too-small box grows about its centre, and a box entirely outside the frame
       becomes a ``min_size`` box touching the nearest border, inside.

    A box with any non-finite value (NaN, ±inf) carries no position and becomes the whole frame (0, 0, W, H).
    Results satisfy ``is_valid_xywh`` and the bounds up to floating-point rounding (~1 ulp of W or H).
    """
    if not (width > 0 and height > 0 and min_size > 0):
        raise ValueError(f"need width, height, min_size > 0, got {width}, {height}, {min_size}")
    b = as_boxes(boxes)
    frame = np.array([0.0, 0.0, width, height])
    b = np.where(np.isfinite(b).all(axis=-1, keepdims=True), b, frame)
    x, w = _clip_axis(b[..., 0], b[..., 2], float(width), min_size)
    y, h = _clip_axis(b[..., 1], b[..., 3], float(height), min_size)
    return np.stack([x, y, w, h], axis=-1)


def _clip_axis(start: Boxes, size: Boxes, limit: float, min_size: float) -> tuple[Boxes, Boxes]:
    """One axis of ``clip_xywh``: (start, size) of the visible part, grown to min_size and slid inside [0, limit]."""
    lo = np.clip(start, 0.0, limit)
    hi = np.clip(start + size, 0.0, limit)
    new_size = np.minimum(np.maximum(hi - lo, min_size), limit)
    new_start = np.clip((lo + hi - new_size) / 2, 0.0, limit - new_size)
    return new_start, new_size
