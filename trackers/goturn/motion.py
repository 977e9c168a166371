"""GOTURN's motion model (reference notes §2.3: ``BoundingBox.shift`` with ``shift_motion_model`` on): a randomly moved
and resized copy of a box, around which a synthetic training sample's search crop is taken, teaching the network
that small motions are likelier than large ones.

For a w × h box centred at (cx, cy) in a W × H frame:

* size: ``w' = w · (1 + clip(Laplace(0, 1/lambda_scale), min_scale, max_scale))``, then clamped to [1, W − 1]
  (``h'`` likewise with H). The reference wraps this in a retry loop that tests the clamped value against the same
  range, so it never retries; we draw once.
* centre: ``cx' = cx + w · Laplace(0, 1/lambda_shift)``, clamped to [w'/2, W − w'/2] so that the box stays in the
  frame; a try whose centre moved by more than ``context/2 · w`` (w, with GOTURN's context of 2) is drawn again, up to
  ``max_tries`` = 10 tries, after which the last try is kept even though it moved too far (the reference's loop
  ends the same way). ``cy'`` likewise with h and H.

The reference's two-sided exponential, ``±ln(U)/λ`` with a random sign, is Laplace(0, 1/λ); we draw it with NumPy's
Laplace sampler. Every try is drawn up front from the caller's generator (sizes, then x shifts, then y shifts), so a
sample is a pure function of the generator's state: the loader seeds one generator per pair from (seed, epoch, step,
position).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from data.boxes import as_boxes


@dataclass(frozen=True)
class MotionModel:
    lambda_shift: float = 5.0
    lambda_scale: float = 15.0
    min_scale: float = -0.4
    max_scale: float = 0.4
    context: float = 2.0
    max_tries: int = 10

    def __post_init__(self) -> None:
        if not (self.lambda_shift > 0 and self.lambda_scale > 0):
            raise ValueError(f"lambda_shift and lambda_scale must be > 0, found {self.lambda_shift}, "
                             f"{self.lambda_scale}")
        if not -1 < self.min_scale <= self.max_scale:
            raise ValueError(f"need -1 < min_scale <= max_scale, found {self.min_scale}, {self.max_scale}")
        if self.max_tries < 1 or self.context <= 0:
            raise ValueError(f"need max_tries >= 1 and context > 0, found {self.max_tries}, {self.context}")

    def sample(self, rng: np.random.Generator, box_xywh: ArrayLike, frame_size: tuple[int, int]) -> np.ndarray:
        """The moved xywh box for `box_xywh` in a frame of `frame_size` = (W, H); see the module docstring."""
        x, y, w, h = (float(v) for v in as_boxes(box_xywh))
        width, height = frame_size
        scales = np.clip(rng.laplace(0.0, 1.0 / self.lambda_scale, size=2), self.min_scale, self.max_scale)
        new_w = min(max(w * (1 + scales[0]), 1.0), max(width - 1.0, 1.0))
        new_h = min(max(h * (1 + scales[1]), 1.0), max(height - 1.0, 1.0))
        shifts = rng.laplace(0.0, 1.0 / self.lambda_shift, size=(2, self.max_tries))
        cx = self._centre(x + w / 2, w, new_w, width, shifts[0])
        cy = self._centre(y + h / 2, h, new_h, height, shifts[1])
        return np.array([cx - new_w / 2, cy - new_h / 2, new_w, new_h])

    def _centre(self, centre: float, size: float, new_size: float, limit: float, shifts: np.ndarray) -> float:
        """The first try (centre + size · shift, clamped into the frame) within context/2 · size of `centre`; the last
        try when none is."""
        tries = np.clip(centre + size * shifts, new_size / 2, limit - new_size / 2)
        accepted = np.abs(tries - centre) <= self.context / 2 * size
        return float(tries[int(np.argmax(accepted))] if accepted.any() else tries[-1])
