"""The SiamFC++ online tracker (video_analyst's ``SiamFCppTracker``, re-written), one class for every way of running the
network: a PyTorch model (:class:`TorchNetwork`) or the two exported ONNX graphs (:class:`OnnxNetwork`).

init: the template crop (context square of the first box, resized to z_size, padded with the first frame's channel
mean) goes through the template path once; its kernels are cached for the sequence.

update: a search crop around the previous position (side = context side × x_size / z_size, so the target keeps the
template's scale), then on the score map (score = sigmoid(cls) · sigmoid(ctr)):

* penalty = exp(−(r·s − 1)·penalty_k), with s the change of the box's context size and r the change of its aspect
  ratio against the previous box (each as max(q, 1/q));
* pscore = penalty · score · (1 − window_influence) + cosine window · window_influence; best = argmax(pscore);
* the best box is mapped back to the frame; the centre moves there and the size is smoothed with
  lr = penalty · score · test_lr; centre clamped into the frame, size into [min_size, frame size].

Differences from the reference, all from the continuous box convention (`data.boxes`): crops are exact (the crop side
is not rounded to whole pixels) and centred at x_size / 2, not (x_size − 1) / 2.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from data.boxes import xyxy_to_xywh
from data.crops import CropWindow, channel_mean, context_side, crop_image, crop_to_frame
from trackers.base import Tracker, TrackOutput
from trackers.siamfcpp.params import SiamFCppTrackerParams


class SiamFCppNetwork(Protocol):
    """What the tracker needs of a network (PyTorch or ONNX Runtime): crops are H×W×3 uint8 RGB arrays."""

    z_size: int

    def template(self, crop: np.ndarray) -> object:
        """The template's kernels, in whatever form `search` takes them."""

    def search(self, crop: np.ndarray, kernels: object) -> tuple[np.ndarray, np.ndarray]:
        """(score (S·S,), boxes (S·S, 4) xyxy in crop pixels) of one search crop."""


def _change(ratio: np.ndarray) -> np.ndarray:
    return np.maximum(ratio, 1.0 / ratio)


def _context_size(w: np.ndarray, h: np.ndarray) -> np.ndarray:
    pad = (w + h) / 2
    return np.sqrt((w + pad) * (h + pad))


def cosine_window(size: int) -> np.ndarray:
    """(size·size,) outer product of Hann windows, row-major like the score map."""
    return np.outer(np.hanning(size), np.hanning(size)).ravel()


def select_box(score: np.ndarray, boxes_xyxy: np.ndarray, previous_size_in_crop: np.ndarray, window: np.ndarray,
               params: SiamFCppTrackerParams) -> tuple[int, np.ndarray, float]:
    """(best index, its box xywh in crop pixels, its smoothing rate lr) of one score map. Locations whose score or box
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
    penalty = np.exp(-(ratio_change * scale_change - 1) * params.penalty_k)
    pscore = penalty * score * (1 - params.window_influence) + window * params.window_influence
    pscore = np.where(usable, pscore, -np.inf)
    best = int(np.argmax(pscore))
    return best, boxes[best], float(penalty[best] * score[best] * params.test_lr)


class SiamFCppTracker(Tracker):
    name = "siamfcpp"

    def __init__(self, network: SiamFCppNetwork, params: SiamFCppTrackerParams, score_size: int) -> None:
        super().__init__()
        self.network, self.params = network, params
        self.window = cosine_window(score_size)

    def _initialize(self, frame: np.ndarray, box: np.ndarray) -> None:
        x, y, w, h = box
        self.center, self.size = np.array([x + w / 2, y + h / 2]), np.array([w, h])
        self.mean = channel_mean(frame)
        side = float(context_side(w, h, self.params.context_amount))
        crop = crop_image(frame, CropWindow(*self.center, side, self.network.z_size), self.mean)
        self.kernels = self.network.template(crop)

    def _track(self, frame: np.ndarray) -> TrackOutput:
        p = self.params
        template_side = float(context_side(*self.size, p.context_amount))
        window = CropWindow(*self.center, template_side * p.x_size / self.network.z_size, p.x_size)
        score, boxes = self.network.search(crop_image(frame, window, self.mean), self.kernels)
        best, box, lr = select_box(score, boxes, self.size * window.scale, self.window, p)
        if best < 0:  # nothing usable on this frame: keep the state (a NaN size would break every later crop)
            return TrackOutput(box=np.concatenate([self.center - self.size / 2, self.size]), score=0.0)
        x, y, w, h = crop_to_frame(box, window)
        height, width = frame.shape[:2]
        self.center = np.clip([x + w / 2, y + h / 2], 0, [width, height])
        self.size = np.clip(self.size * (1 - lr) + np.array([w, h]) * lr, p.min_size, [width, height])
        return TrackOutput(box=np.concatenate([self.center - self.size / 2, self.size]), score=float(score[best]))


class TorchNetwork:
    """A trained `SiamFCpp` in eval mode on its device, in fp32 (as evaluation always runs)."""

    def __init__(self, net, x_size: int) -> None:
        import torch

        self.net, self.torch = net, torch
        self.device = next(net.parameters()).device
        self.z_size = net.z_size
        self.score_size = net.score_size(x_size)

    def _batch(self, crop: np.ndarray):
        # The (1, 3, H, W) view of the 1×H×W×3 crop has channels-last strides (also in the batch dimension, which
        # PyTorch's choice of layout looks at): no transposing copy, and on the CPU the network then runs
        # channels-last, where PyTorch's max-pool is ~10× faster than in NCHW (same outputs; numbers in
        # bench/siamfcpp_tracking_fps.py). Other devices get an NCHW batch, as before.
        tensor = self.torch.from_numpy(crop).reshape(1, *crop.shape).permute(0, 3, 1, 2).float().to(self.device)
        return tensor if self.device.type == "cpu" else tensor.contiguous()

    def template(self, crop: np.ndarray):
        with self.torch.no_grad():
            return self.net.template(self._batch(crop))

    def search(self, crop: np.ndarray, kernels) -> tuple[np.ndarray, np.ndarray]:
        with self.torch.no_grad():
            cls, ctr, boxes = self.net.track(self._batch(crop), *kernels)
            score = self.torch.sigmoid(cls[0].float()) * self.torch.sigmoid(ctr[0].float())
        return score.cpu().numpy().astype(np.float64), boxes[0].float().cpu().numpy().astype(np.float64)
