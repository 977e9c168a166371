"""Two tiny reference trackers that bound what a benchmark number means on a dataset.

* ``first_box``: keeps the initial box for ever. Any real tracker must beat it; on a set where it scores well the
  targets barely move and the set says little.
* ``noisy_truth``: an **oracle** that reads the sequence's annotations and returns each true box with its centre
  shifted by ``N(0, sigma · size)`` and its width and height scaled by ``exp(N(0, sigma))`` (default sigma 0.1); on a
  frame without a usable annotation it repeats its previous box. It is a ceiling for a good tracker and a check that
  the evaluation pipeline scores a near-perfect tracker near the top. Its noise is a function of (seed, sequence name),
  so the same command gives the same boxes.

Both are selected by name (`python evaluator.py` with ``"model_path": "reference:first_box"``, or
``python -m trackers.track --tracker first_box``) through :func:`reference_factory`.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import UserError
from trackers.base import Tracker, TrackerFactory

if TYPE_CHECKING:  # pragma: no cover
    from data.sequences import Sequence

PREFIX = "reference:"


class FirstBoxTracker(Tracker):
    name = "first_box"

    def _initialize(self, frame: np.ndarray, box: np.ndarray) -> None:
        self._box = box.copy()

    def _track(self, frame: np.ndarray) -> np.ndarray:
        return self._box


class NoisyTruthTracker(Tracker):
    name = "noisy_truth"

    def __init__(self, truth: np.ndarray, sigma: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, found {sigma}")
        self.truth = np.asarray(truth, dtype=np.float64)
        self.sigma, self.seed = float(sigma), int(seed)

    def _initialize(self, frame: np.ndarray, box: np.ndarray) -> None:
        self._index, self._previous = 0, box.copy()
        self._rng = np.random.default_rng(self.seed)

    def _track(self, frame: np.ndarray) -> np.ndarray:
        self._index += 1
        shift, log_scale = self._rng.normal(0.0, self.sigma, 2), self._rng.normal(0.0, self.sigma, 2)
        if self._index >= len(self.truth):
            return self._previous
        x, y, w, h = self.truth[self._index]
        if not (np.isfinite([x, y, w, h]).all() and w > 0 and h > 0):
            return self._previous
        cx, cy = x + w / 2 + shift[0] * w, y + h / 2 + shift[1] * h
        w, h = w * np.exp(log_scale[0]), h * np.exp(log_scale[1])
        self._previous = np.array([cx - w / 2, cy - h / 2, w, h])
        return self._previous


def sequence_seed(name: str, seed: int = 0) -> list[int]:
    """A seed for the noise of sequence `name` that does not depend on Python's hash randomisation."""
    return [seed, zlib.crc32(name.encode("utf-8"))]


REFERENCE_TRACKERS = ("first_box", "noisy_truth")


def reference_factory(name: str, sigma: float = 0.1, seed: int = 0) -> TrackerFactory:
    """A TrackerFactory for reference tracker `name` (``first_box`` or ``noisy_truth``; a ``reference:`` prefix is
    accepted)."""
    bare = name.removeprefix(PREFIX)
    if bare == "first_box":
        return lambda sequence: FirstBoxTracker()
    if bare == "noisy_truth":
        def make(sequence: "Sequence") -> Tracker:
            if not sequence.fully_annotated:
                raise UserError(f"{sequence.where}: the noisy_truth oracle needs every frame's box, but the sequence "
                                 "has only the first one")
            seed_seq = np.random.SeedSequence(sequence_seed(sequence.name, seed))
            return NoisyTruthTracker(sequence.boxes, sigma, int(seed_seq.generate_state(1)[0]))
        return make
    raise UserError(f"unknown reference tracker {name!r}; available: {', '.join(REFERENCE_TRACKERS)}")
