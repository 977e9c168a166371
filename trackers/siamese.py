"""What the Siamese trackers (SiamFC++, SiamMask) share, as their references do: the target state with the template
and search crops (`SiameseTracker`), and the choice of the box on the score map (`select_box`): a scale/ratio change
penalty, a cosine window, and the size smoothing rate.

* penalty = exp(−(r·s − 1)·penalty_k), with s the change of the box's context size and r the change of its aspect
  ratio against the previous box (each as max(q, 1/q));
* pscore = penalty · score · (1 − window_influence) + cosine window · window_influence; best = argmax(pscore);
* smoothing rate = penalty · score · lr at the best location.
"""

from __future__ import annotations

import numpy as np

from data.boxes import xyxy_to_xywh
from data.crops import CropWindow, channel_mean, context_side, crop_image
from trackers.base import Tracker


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


class SiameseTracker(Tracker):
    """The state of a Siamese tracker: the target's centre and size in the frame, and the first frame's per-channel
    mean, the padding colour of every crop (the references pad with it)."""

    def _template_crop(self, frame: np.ndarray, box: np.ndarray, context_amount: float, z_size: int) -> np.ndarray:
        """Start from `box` in `frame`; returns the template crop: its context square resized to z_size."""
        x, y, w, h = box
        self.center, self.size = np.array([x + w / 2, y + h / 2]), np.array([w, h])
        self.mean = channel_mean(frame)
        side = float(context_side(w, h, context_amount))
        return crop_image(frame, CropWindow(*self.center, side, z_size), self.mean)

    def _search_window(self, context_amount: float, z_size: int, x_size: int) -> CropWindow:
        """The search crop around the current centre: the current context side × x_size / z_size (the target keeps
        the template's scale)."""
        side = float(context_side(*self.size, context_amount))
        return CropWindow(*self.center, side * x_size / z_size, x_size)
