"""The single-object tracker interface every tracker of this project satisfies, whether it runs a PyTorch network,
ONNX Runtime graphs or no network at all.

    tracker.init(frame, box_xywh)       # first frame and the target's box
    box = tracker.update(frame)         # every later frame -> x, y, w, h
    tracker.last                        # TrackOutput of the last frame: box plus optional score, mask, polygon

Frames are H×W×3 uint8 **RGB** arrays (the GOT-10k toolkit hands trackers RGB images; a network trained on BGR must
convert itself). Boxes are ``x, y, w, h`` in continuous pixel coordinates (see :mod:`data.boxes`).

The base class makes a promise the toolkit's scoring relies on: ``update`` always returns a finite box inside the
frame with a width and height of at least one pixel. A subclass's non-finite box is replaced by the previous box and
any box is clipped into the frame, so one bad frame cannot turn a whole benchmark's AO into NaN.

Subclasses implement ``_initialize(frame, box)`` and ``_track(frame) -> TrackOutput`` (or a bare box). A network's
split between a stateless model (template / search graphs) and this stateful object follows pysot.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Union

import numpy as np

from data.boxes import clip_xywh

if TYPE_CHECKING:  # pragma: no cover
    from data.sequences import Sequence


@dataclass(frozen=True)
class TrackOutput:
    """What a tracker says about one frame. Only ``box`` is required."""

    box: np.ndarray
    """(4,) float64 x, y, w, h."""
    score: Optional[float] = None
    """Confidence of the box (a Siamese tracker's peak score), if the tracker has one."""
    mask: Optional[np.ndarray] = None
    """H×W bool segmentation of the target in the frame (SiamMask)."""
    polygon: Optional[np.ndarray] = None
    """(K, 2) float64 vertices of a rotated box in frame coordinates (VOT-style output)."""


class TrackerError(ValueError):
    """A frame or box a tracker cannot start from (wrong shape or dtype, a box with no area)."""


def as_frame(frame) -> np.ndarray:
    """`frame` as an H×W×3 uint8 array, or TrackerError saying what it is instead."""
    array = np.asarray(frame)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise TrackerError(f"expected an H×W×3 uint8 RGB frame, found an array of shape {array.shape} and dtype "
                           f"{array.dtype}")
    return array


class Tracker(ABC):
    name: str = "tracker"
    is_deterministic: bool = True

    def __init__(self) -> None:
        self.last: Optional[TrackOutput] = None
        self._frame_size: Optional[tuple[int, int]] = None

    def init(self, frame, box) -> None:
        frame = as_frame(frame)
        box = np.asarray(box, dtype=np.float64).reshape(-1)
        if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
            raise TrackerError(f"the initial box must be 4 finite numbers x, y, w, h with w, h > 0; found "
                               f"{box.tolist()}")
        self.last, self._frame_size = None, (frame.shape[1], frame.shape[0])
        self._initialize(frame, box)
        self.last = TrackOutput(box=clip_xywh(box, *self._frame_size))

    def update(self, frame) -> np.ndarray:
        if self.last is None:
            raise TrackerError("update() before init(): call init(frame, box) on the first frame")
        frame = as_frame(frame)
        output = self._track(frame)
        if not isinstance(output, TrackOutput):
            output = TrackOutput(box=np.asarray(output, dtype=np.float64))
        box = np.asarray(output.box, dtype=np.float64).reshape(-1)
        if box.shape != (4,) or not np.isfinite(box).all():
            box = self.last.box
        box = clip_xywh(box, frame.shape[1], frame.shape[0])
        self.last = TrackOutput(box=box, score=output.score, mask=output.mask, polygon=output.polygon)
        return box.copy()

    @abstractmethod
    def _initialize(self, frame: np.ndarray, box: np.ndarray) -> None:
        """Start tracking the target at `box` (as given, not clipped) in `frame`."""

    @abstractmethod
    def _track(self, frame: np.ndarray) -> Union[TrackOutput, np.ndarray]:
        """The target in the next frame."""


TrackerFactory = Callable[["Sequence"], Tracker]
"""What tracking evaluators receive: a fresh tracker for a sequence. A real tracker ignores the sequence (it is
given only the first frame's box through ``init``); oracles used as references (`trackers.reference`) read its
annotations, which is what makes them oracles."""
