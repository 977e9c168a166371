"""The choice of the box on a Siamese tracker's score map, shared by SiamFC++ and SiamMask (their references use the
same formulas): a scale/ratio change penalty, a cosine window, and the size smoothing rate.

* penalty = exp(−(r·s − 1)·penalty_k), with s the change of the box's context size and r the change of its aspect
  ratio against the previous box (each as max(q, 1/q));
* pscore = penalty · score · (1 − window_influence) + cosine window · window_influence; best = argmax(pscore);
* smoothing rate = penalty · score · lr at the best location.
"""

from __future__ import annotations

import numpy as np

from data.boxes import xyxy_to_xywh


def _change(ratio: np.ndarray) -> np.ndarray:
    return np.maximum(ratio, 1.0 / ratio)


def _context_size(w: np.ndarray, h: np.ndarray) -> np.ndarray:
    pad = (w + h) / 2
    return np.sqrt((w + pad) * (h + pad))


def cosine_window(size: int) -> np.ndarray:
    """(size·size,) outer product of Hann windows, row-major like the score map."""
    return np.outer(np.hanning(size), np.hanning(size)).ravel()


def select_box(score: np.ndarray, boxes_xyxy: np.ndarray, previous_size_in_crop: np.ndarray, window: np.ndarray,
               penalty_k: float, window_influence: float, lr: float) -> tuple[int, np.ndarray, float]:
    """(best index, its box xywh in crop pixels, its smoothing rate) of one score map: penalty = exp(−(r·s − 1)·
    penalty_k), pscore = penalty·score·(1 − window_influence) + window·window_influence, smoothing rate =
    penalty·score·lr at the best location (SiamFC++ and SiamMask alike). Locations whose score or box
    is not finite (a diverged network, an overflowing box regression) are never chosen; best is -1 when no location is
    usable."""
    boxes = xyxy_to_xywh(boxes_xyxy)
    usable = np.isfinite(score) & np.isfinite(boxes).all(axis=1)
    if not usable.any():
        return -1, np.full(4, np.nan), 0.0
    boxes, score = np.where(usable[:, None], boxes, 1.0), np.where(usable, score, 0.0)  # placeholders, never chosen
    w, h = np.maximum(boxes[:, 2], 1e-6), np.maximum(boxes[:, 3], 1e-6)
    tw, th = previous_size_in_crop
    scale_change = _change(_context_size(w, h) / _context_size(np.float64(tw), np.float64(th)))
    ratio_change = _change((tw / th) / (w / h))
    penalty = np.exp(-(ratio_change * scale_change - 1) * penalty_k)
    pscore = penalty * score * (1 - window_influence) + window * window_influence
    pscore = np.where(usable, pscore, -np.inf)
    best = int(np.argmax(pscore))
    return best, boxes[best], float(penalty[best] * score[best] * lr)
