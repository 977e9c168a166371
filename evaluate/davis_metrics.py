"""DAVIS video object segmentation measures: region similarity J, boundary accuracy F and their per-sequence
statistics (mean, recall, decay), as the official DAVIS evaluation computes them.

Pure NumPy plus ``cv2.dilate`` on plain H×W masks; nothing here reads a dataset. `evaluate.davis_evaluate` runs
trackers over mask sequences and scores them with these functions.

Sources: the DAVIS 2017 evaluation code (davisvideochallenge/davis2017-evaluation ``davis2017/metrics.py``
``db_eval_iou``, ``f_measure``, ``_seg2bmap``; ``davis2017/utils.py`` ``db_statistics``; ``davis2017/evaluation.py``),
which ``davisinteractive`` repeats (``davisinteractive/metrics/jaccard.py``: ``batched_jaccard``, ``f_measure``).
Nothing was copied; the definitions are restated and re-implemented.

**J, region similarity** (:func:`jaccard`): |P ∩ G| / |P ∪ G| over pixels (P prediction, G ground truth, boolean
H×W masks), with pixels marked void (optional) left out of both counts. When the union is empty (both masks empty)
J = 1, as ``db_eval_iou`` does.

**F, boundary accuracy** (:func:`boundary_f`):

* Boundaries (:func:`seg2bmap`, D. Martin's ``seg2bmap`` as DAVIS ports it): pixel (r, c) is a boundary pixel when its
  value differs from its right, lower or lower-right neighbour (a neighbour outside the image counts as background);
  in the last row only the right neighbour is compared, in the last column only the lower one, and the bottom-right
  pixel is never a boundary. So a mask that touches the image's right or bottom border has no boundary along it.
* Tolerance: ``bound_pix = ceil(bound_th · sqrt(H² + W²))`` with ``bound_th`` = 0.008 (a ``bound_th`` >= 1 is taken as
  pixels). Each boundary map is dilated (``cv2.dilate``) with a disk of that radius: the pixels (dy, dx) with
  dy² + dx² <= bound_pix² (``skimage.morphology.disk``).
* Precision = |B_P ∩ dil(B_G)| / |B_P|, recall = |B_G ∩ dil(B_P)| / |B_G|. Empty cases as DAVIS: no predicted
  boundary and some true boundary → P = 1, R = 0; a predicted boundary and no true one → P = 0, R = 1; neither →
  P = R = 1. F = 2PR / (P + R), and 0 when P + R = 0. Void pixels (optional) are cleared from both masks before the
  boundaries are taken.

**Statistics of one sequence's per-frame values** (:func:`db_statistics`, DAVIS 2017's ``db_statistics``):
``mean`` = NaN-ignoring mean; ``recall`` = fraction of frames with a value strictly above 0.5 (a NaN frame counts as
not above: DAVIS takes ``nanmean`` of a boolean array); ``decay`` = mean of the first quarter minus mean of the last
quarter, with the quarters cut at ``ids = round(linspace(1, N, 5) + 1e-10) − 1`` and bin k =
``values[ids[k] : ids[k+1] + 1]`` (neighbouring bins share their boundary frame). DAVIS casts ``ids`` to uint8, which
wraps around for sequences longer than 256 frames; we keep the indices exact (equal for N <= 256).

Overall numbers (DAVIS 2017 semi-supervised): the statistics are computed per object (here per sequence, one object
each) and averaged over objects, each weighing the same; J&F-mean = (J-mean + F-mean) / 2. DAVIS 2017 scores the
frames between the first and the last (both excluded); which frames are scored is the evaluator's choice
(`evaluate.davis_evaluate` states its own).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

BOUND_TH = 0.008
"""DAVIS's boundary tolerance as a fraction of the image diagonal."""


def _mask(mask, what: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{what}: expected an H×W mask, found shape {array.shape}")
    return array.astype(bool)


def _pair(prediction, truth, void) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    pred, gt = _mask(prediction, "prediction"), _mask(truth, "ground truth")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    if void is not None:
        void = _mask(void, "void")
        if void.shape != gt.shape:
            raise ValueError(f"void {void.shape} and ground truth {gt.shape} differ in size")
    return pred, gt, void


def jaccard(prediction, truth, void=None) -> float:
    """Region similarity J of two H×W masks (1 when both are empty)."""
    pred, gt, void = _pair(prediction, truth, void)
    keep = np.ones_like(gt) if void is None else ~void
    inter = int(np.count_nonzero(pred & gt & keep))
    union = int(np.count_nonzero((pred | gt) & keep))
    return 1.0 if union == 0 else inter / union


def seg2bmap(mask) -> np.ndarray:
    """The one-pixel-wide boundary map of an H×W mask (module docstring)."""
    seg = _mask(mask, "mask")
    right = np.zeros_like(seg)
    below = np.zeros_like(seg)
    diagonal = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    below[:-1, :] = seg[1:, :]
    diagonal[:-1, :-1] = seg[1:, 1:]
    boundary = (seg ^ right) | (seg ^ below) | (seg ^ diagonal)
    boundary[-1, :] = seg[-1, :] ^ right[-1, :]
    boundary[:, -1] = seg[:, -1] ^ below[:, -1]
    boundary[-1, -1] = False
    return boundary


def disk(radius: int) -> np.ndarray:
    """(2r+1)×(2r+1) uint8 disk: 1 where dy² + dx² <= r²."""
    r = int(radius)
    dy, dx = np.ogrid[-r:r + 1, -r:r + 1]
    return (dy * dy + dx * dx <= r * r).astype(np.uint8)


def bound_pixels(shape, bound_th: float = BOUND_TH) -> int:
    """The boundary tolerance in pixels for an image of `shape` (H, W)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def _dilate(boundary: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    return cv2.dilate(boundary.astype(np.uint8), disk(radius)).astype(bool)


def boundary_precision_recall(prediction, truth, void=None, bound_th: float = BOUND_TH) -> tuple[float, float]:
    """(precision, recall) of the predicted boundary against the true one, with DAVIS's empty cases."""
    pred, gt, void = _pair(prediction, truth, void)
    if void is not None:
        pred, gt = pred & ~void, gt & ~void
    radius = bound_pixels(gt.shape, bound_th)
    pred_boundary, gt_boundary = seg2bmap(pred), seg2bmap(gt)
    n_pred, n_gt = int(np.count_nonzero(pred_boundary)), int(np.count_nonzero(gt_boundary))
    if n_pred == 0 and n_gt == 0:
        return 1.0, 1.0
    if n_pred == 0:
        return 1.0, 0.0
    if n_gt == 0:
        return 0.0, 1.0
    precision = np.count_nonzero(pred_boundary & _dilate(gt_boundary, radius)) / n_pred
    recall = np.count_nonzero(gt_boundary & _dilate(pred_boundary, radius)) / n_gt
    return float(precision), float(recall)


def boundary_f(prediction, truth, void=None, bound_th: float = BOUND_TH) -> float:
    """Boundary accuracy F = 2PR / (P + R) (0 when P + R = 0)."""
    precision, recall = boundary_precision_recall(prediction, truth, void, bound_th)
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def db_statistics(values) -> tuple[float, float, float]:
    """(mean, recall, decay) of one sequence's per-frame values (module docstring); NaNs when there is no value."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    finite = values[~np.isnan(values)]
    mean = float(finite.mean()) if len(finite) else float("nan")
    recall = float(np.mean(values > 0.5))
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.int64)
    bins = [values[ids[k]:ids[k + 1] + 1] for k in range(4)]
    first, last = bins[0][~np.isnan(bins[0])], bins[3][~np.isnan(bins[3])]
    decay = float(first.mean() - last.mean()) if len(first) and len(last) else float("nan")
    return mean, recall, decay


# --------------------------------------------------------------------------------------------------------------------
# Boxes and masks


def box_mask(box, height: int, width: int) -> np.ndarray:
    """The H×W mask of an ``x, y, w, h`` box (continuous coordinates, :mod:`data.boxes`): the pixels whose centre
    (c + 0.5, r + 0.5) lies in [x, x + w) × [y, y + h). A box tracker's mask ("filled box")."""
    x, y, w, h = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    mask = np.zeros((height, width), dtype=bool)
    if not (np.isfinite([x, y, w, h]).all() and w > 0 and h > 0):
        return mask
    c0, c1 = max(math.ceil(x - 0.5), 0), min(math.ceil(x + w - 0.5), width)
    r0, r1 = max(math.ceil(y - 0.5), 0), min(math.ceil(y + h - 0.5), height)
    if c1 > c0 and r1 > r0:
        mask[r0:r1, c0:c1] = True
    return mask


def mask_box(mask) -> Optional[np.ndarray]:
    """The tight ``x, y, w, h`` box of a mask's pixels (x = first column, w = last column + 1 − x), or None for an
    empty mask. ``box_mask(mask_box(m), H, W)`` is the filled bounding rectangle of m."""
    m = _mask(mask, "mask")
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if len(rows) == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]], dtype=np.float64)
