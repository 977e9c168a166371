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

from data.crops import crop_image, crop_to_frame
from trackers.base import TrackOutput
from trackers.crop_batches import torch_batch
from trackers.siamese import SiameseTracker, cosine_window, select_box
from trackers.siamfcpp.params import SiamFCppTrackerParams


class SiamFCppNetwork(Protocol):
    """What the tracker needs of a network (PyTorch or ONNX Runtime): crops are H×W×3 uint8 RGB arrays."""

    z_size: int

    def template(self, crop: np.ndarray) -> object:
        """The template's kernels, in whatever form `search` takes them."""

    def search(self, crop: np.ndarray, kernels: object) -> tuple[np.ndarray, np.ndarray]:
        """(score (S·S,), boxes (S·S, 4) xyxy in crop pixels) of one search crop."""


class SiamFCppTracker(SiameseTracker):
    name = "siamfcpp"

    def __init__(self, network: SiamFCppNetwork, params: SiamFCppTrackerParams, score_size: int) -> None:
        super().__init__()
        self.network, self.params = network, params
        self.window = cosine_window(score_size)

    def _initialize(self, frame: np.ndarray, box: np.ndarray) -> None:
        crop = self._template_crop(frame, box, self.params.context_amount, self.network.z_size)
        self.kernels = self.network.template(crop)

    def _track(self, frame: np.ndarray) -> TrackOutput:
        p = self.params
        window = self._search_window(p.context_amount, self.network.z_size, p.x_size)
        score, boxes = self.network.search(crop_image(frame, window, self.mean), self.kernels)
        best, box, lr = select_box(score, boxes, self.size * window.scale, self.window, p.penalty_k, p.window_influence,
                                  p.test_lr)
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

    def template(self, crop: np.ndarray):
        with self.torch.no_grad():
            return self.net.template(torch_batch(crop, self.device))

    def search(self, crop: np.ndarray, kernels) -> tuple[np.ndarray, np.ndarray]:
        with self.torch.no_grad():
            cls, ctr, boxes = self.net.track(torch_batch(crop, self.device), *kernels)
            score = self.torch.sigmoid(cls[0].float()) * self.torch.sigmoid(ctr[0].float())
        return score.cpu().numpy().astype(np.float64), boxes[0].float().cpu().numpy().astype(np.float64)
