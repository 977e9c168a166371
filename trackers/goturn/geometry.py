"""GOTURN's crops and regression targets (reference notes §2.2), in the project's continuous box convention.

A crop covers ``context · w × context · h`` frame pixels (at least one pixel per side) centred on the box centre, is
resampled to ``out_size × out_size`` and padded with zeros where it leaves the frame (the reference copies the part
inside the image into a zero canvas at the matching offset and resizes: the same picture, without its rounding to
whole pixels). The network regresses the box in that crop as ``(x1, y1, x2, y2) / crop side × 10`` (kScaleFactor), so
a box that fills the middle half of the crop (the previous box, when nothing moved) is (2.5, 2.5, 7.5, 7.5).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from data.boxes import as_boxes, xywh_to_xyxy, xyxy_to_xywh
from data.crops import RectWindow, crop_to_frame, frame_to_crop

OUTPUT_SCALE = 10.0
"""The regression output per crop side (the reference's kScaleFactor)."""


def crop_window(box_xywh: ArrayLike, context: float, out_size: int) -> RectWindow:
    """The window of the crop around `box_xywh`: its centre, `context` × its size (at least 1 pixel per side)."""
    x, y, w, h = (float(v) for v in as_boxes(box_xywh))
    return RectWindow(x + w / 2, y + h / 2, max(context * w, 1.0), max(context * h, 1.0), out_size)


def box_to_target(boxes_xywh: ArrayLike, window: RectWindow) -> np.ndarray:
    """Frame xywh boxes (..., 4) → regression targets (..., 4): xyxy in the crop, per crop side × OUTPUT_SCALE."""
    return xywh_to_xyxy(frame_to_crop(boxes_xywh, window)) * (OUTPUT_SCALE / window.out_size)


def target_to_box(targets: ArrayLike, window: RectWindow) -> np.ndarray:
    """Regression outputs (..., 4) → frame xywh boxes: the inverse of :func:`box_to_target` (un-scale, un-centre). A
    box with x2 < x1 (or y2 < y1) keeps its negative width (height); callers clip."""
    crop_xyxy = np.asarray(targets, dtype=np.float64) * (window.out_size / OUTPUT_SCALE)
    return crop_to_frame(xyxy_to_xywh(crop_xyxy), window)
