"""The GOTURN online tracker (reference notes §2.5), one class for every way of running the network: a PyTorch model
(:class:`TorchRegressor`) or the exported ONNX graph (`trackers.goturn.onnx_network.OnnxRegressor`).

update: crop the previous frame and the current frame with the same window, the previous box's (context × its size,
`trackers.goturn.geometry.crop_window`; zero padding), regress the box in the search crop, un-scale and un-centre it
into the frame, clip it into the frame; it becomes the prior of the next frame. No window, penalty, smoothing or
re-detection: that is the method. Differences from the reference: crops are exact (not rounded to whole pixels) and
the box is kept in continuous coordinates rather than truncated to integers; a box the network turns inside out (x2 <
x1) is read with its corners sorted, and every box is clipped into the frame with at least one pixel per side (the
interface's promise, `trackers.base`).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from data.boxes import clip_xywh
from data.crops import crop_image
from trackers.base import Tracker, TrackOutput
from trackers.crop_batches import torch_batch
from trackers.goturn.geometry import crop_window, target_to_box


class GoturnNetwork(Protocol):
    """What the tracker needs of a network (PyTorch or ONNX Runtime): crops are S×S×3 uint8 RGB arrays."""

    input_size: int
    context: float

    def regress(self, target: np.ndarray, search: np.ndarray) -> np.ndarray:
        """(4,) float64 regression output for one pair of crops."""


class GoturnTracker(Tracker):
    name = "goturn"

    def __init__(self, network: GoturnNetwork) -> None:
        super().__init__()
        self.network = network

    def _initialize(self, frame: np.ndarray, box: np.ndarray) -> None:
        self.previous_frame = frame
        self.box = clip_xywh(box, frame.shape[1], frame.shape[0])

    def _track(self, frame: np.ndarray) -> TrackOutput:
        window = crop_window(self.box, self.network.context, self.network.input_size)
        output = self.network.regress(crop_image(self.previous_frame, window, "zero"), crop_image(frame, window, "zero"))
        box = target_to_box(output, window)
        if np.isfinite(box).all():  # a diverged network keeps the previous box (the base class does the same)
            x1, y1 = box[:2]
            x2, y2 = box[:2] + box[2:]
            box = np.array([min(x1, x2), min(y1, y2), abs(x2 - x1), abs(y2 - y1)])
            self.box = clip_xywh(box, frame.shape[1], frame.shape[0])
        self.previous_frame = frame
        return TrackOutput(box=self.box.copy())


class TorchRegressor:
    """A trained `Goturn` in eval mode on its device, in fp32."""

    def __init__(self, net, context: float) -> None:
        import torch

        self.net, self.torch = net, torch
        self.device = next(net.parameters()).device
        self.input_size, self.context = net.input_size, context

    def regress(self, target: np.ndarray, search: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            output = self.net.regress(*self.net.features(torch_batch(target, self.device), torch_batch(search, self.device)))
        return output[0].float().cpu().numpy().astype(np.float64)
