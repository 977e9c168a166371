"""Template/search frame pairs for Siamese and regression tracker training (SiamFC++-style).

Follows video_analyst's ``TrackPairSampler``: each item is a negative pair with probability ``negative_ratio``; its
sequence is drawn with probability ∝ its weight (a dataset's ``ratio`` spread over its sequences); a positive pair is
two frames of that sequence at most ``max_distance`` apart (a still image gives its only frame twice); a negative pair
is a random frame of it and a random frame of a *different* sequence, drawn ∝ weight among the others.

**Distance rule (a deliberate departure from the reference).** The reference builds the second frame's candidates as
``range(idx1 - max_diff, L) ∪ range(L + 1, idx1 + max_diff + 1)`` ∩ ``range(L)``, so only the *backward* distance is
limited: the forward distance is unbounded and ``idx2 == idx1`` is allowed (for L=500, max_diff=100: idx2 - idx1
spans [-100, 485], 37 % of pairs are more than 100 frames apart, 0.4 % are the same frame). We implement the intended
rule instead: the template frame ``t`` is uniform over the sequence's visible frames and the search frame ``s`` is
uniform over the *other* visible frames with ``1 <= |s - t| <= max_distance``. When there is no such frame (an
isolated visible frame, a sequence with one visible frame, a still image) ``s == t``: an identical-frame positive is
still a valid (easy) pair, whereas dropping the item or widening the window would bias which frames are trained on.
Both frames are always visible: we choose among visible frames directly instead of resampling until a filter accepts.

Determinism and sharding follow :mod:`data.samplers`: a step's global draw of ``batch_size × world_size`` pairs is a
pure function of (seed, epoch, step), so any step can be computed on its own (exact, cheap mid-epoch resume) and rank
``r`` keeps the r-th slice of ``batch_size`` pairs of that same draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from data.records import DataError
from data.samplers import _check_rank, _rng

_PAIR_STREAM = 0x5041  # this sampler's random stream; differs from _PK_STREAM and _SHUFFLE_STREAM


@dataclass(frozen=True)
class SequenceSource:
    """What the sampler needs to know of one sequence; no images, no paths."""

    visible: np.ndarray
    """(N,) bool: which frames may be sampled (the target is visible)."""
    still: bool = False
    """A still image (N == 1): its positive pairs are (0, 0)."""

    def __post_init__(self) -> None:
        shape = np.shape(self.visible)
        if len(shape) != 1:
            raise ValueError(f"SequenceSource.visible must be a 1-D array of per-frame flags, found shape {shape}")
        if self.still and shape[0] != 1:
            raise ValueError(f"a still SequenceSource must have exactly 1 frame in visible, found {shape[0]}")


@dataclass(frozen=True)
class Pair:
    template: tuple[int, int]
    """(sequence index, frame index)"""
    search: tuple[int, int]
    """(sequence index, frame index)"""
    negative: bool


class PairSampler:
    """Per-rank batches of :class:`Pair` for one epoch of ``pairs_per_epoch`` pairs over all ranks (see module doc).

    ``weights`` are per-source sampling weights (default: uniform over sequences); sequences without a visible frame
    are never chosen.
    """

    def __init__(self, sources: Sequence[SequenceSource], *, pairs_per_epoch: int, batch_size: int,
                 max_distance: int = 100, negative_ratio: float = 0.0, seed: int = 0, rank: int = 0,
                 world_size: int = 1, weights: Optional[Sequence[float]] = None) -> None:
        _check_rank(rank, world_size)
        _check_args(pairs_per_epoch, batch_size, world_size, max_distance, negative_ratio)
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, int(seed)
        self.max_distance, self.negative_ratio = int(max_distance), float(negative_ratio)
        self.steps_per_epoch = pairs_per_epoch // (batch_size * world_size)
        self._index_frames(sources)
        self._index_weights(_check_weights(weights, len(sources)))

    def _index_frames(self, sources: Sequence[SequenceSource]) -> None:
        """Every frame gets a global id (sequence offset + frame); ``_visible`` lists the visible ones in increasing
        order, so a sequence's visible frames, and those within a window of a frame, are contiguous runs of it that
        one vectorised ``searchsorted`` finds for a whole step."""
        flags = [np.asarray(source.visible, dtype=bool) for source in sources]
        lengths = np.array([f.size for f in flags], dtype=np.int64)
        self._base = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self._length = lengths
        self._visible = np.flatnonzero(np.concatenate(flags)) if flags else np.zeros(0, dtype=np.int64)
        self._first_visible = np.searchsorted(self._visible, self._base)
        self._num_visible = np.searchsorted(self._visible, self._base + lengths) - self._first_visible

    def _index_weights(self, weights: np.ndarray) -> None:
        """The candidates are the sequences with a visible frame and a positive weight; ``_cdf`` holds their
        cumulative weights (interval i of a draw in [0, total) is [_lo[i], _cdf[i]))."""
        has_visible = self._num_visible > 0
        if not has_visible.any():
            raise DataError(f"none of the {len(self._length)} tracking sequences has a visible frame to sample; "
                            f"check the annotations (absence/occlusion flags) of the training sequences")
        self._candidates = np.flatnonzero(has_visible & (weights > 0))
        if self._candidates.size == 0:
            raise ValueError(f"weights must be positive for at least one sequence with a visible frame, found all "
                             f"{int(has_visible.sum())} such sequences with weight 0")
        if self.negative_ratio > 0 and self._candidates.size < 2:
            raise DataError(f"negative_ratio={self.negative_ratio} needs at least 2 sequences with a visible frame "
                            f"and a positive weight (negative pairs come from different sequences), found 1; set "
                            f"negative_ratio to 0")
        self._cdf = np.cumsum(weights[self._candidates])
        self._lo = np.concatenate([[0.0], self._cdf[:-1]])

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self):
        raise TypeError("PairSampler has no implicit epoch; call batches(epoch)")

    def batches(self, epoch: int) -> list[list[Pair]]:
        """This rank's batches of one epoch."""
        return [self.batch(epoch, step) for step in range(self.steps_per_epoch)]

    def batch(self, epoch: int, step: int) -> list[Pair]:
        """This rank's batch of one step, drawn from (seed, epoch, step) alone: no earlier step is drawn.

        The whole global draw is made (every rank makes the same one) and this rank's slice is kept.
        """
        if not 0 <= step < self.steps_per_epoch:
            raise ValueError(f"step must be in [0, steps_per_epoch={self.steps_per_epoch}), found {step}")
        rng = _rng(self.seed, epoch, (_PAIR_STREAM << 32) | step)  # the step fills the stream's low 32 bits
        n = self.batch_size * self.world_size
        negative = rng.random(n) < self.negative_ratio
        first = self._draw_candidates(rng, n)
        t_seq = self._candidates[first]
        t_frame = self._draw_frames(rng, t_seq)
        other = self._draw_other(rng, first) if self.negative_ratio > 0 else first  # >= 2 candidates when > 0
        s_seq = np.where(negative, self._candidates[other], t_seq)
        s_frame = np.where(negative, self._draw_frames(rng, s_seq), self._draw_nearby(rng, t_seq, t_frame))
        keep = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return [Pair((ts, tf), (ss, sf), neg) for ts, tf, ss, sf, neg in
                zip(t_seq[keep].tolist(), t_frame[keep].tolist(), s_seq[keep].tolist(), s_frame[keep].tolist(),
                    negative[keep].tolist())]

    def _draw_candidates(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n candidate positions, each ∝ its weight."""
        pos = np.searchsorted(self._cdf, rng.random(n) * self._cdf[-1], side="right")
        return np.minimum(pos, self._cdf.size - 1)  # a draw rounded up to the total belongs to the last interval

    def _draw_other(self, rng: np.random.Generator, first: np.ndarray) -> np.ndarray:
        """Per item a candidate position ∝ weight among those other than ``first``: the excluded interval is cut out
        of [0, total) and a draw beyond its start is shifted past its end. Exact, with no rejection loop (which a
        dominant weight would make long)."""
        lo, hi = self._lo[first], self._cdf[first]
        u = rng.random(first.size) * (self._cdf[-1] - (hi - lo))
        u = np.where(u < lo, u, u - lo + hi)  # rounding keeps u - lo >= 0, hence u >= hi: never lands in `first`
        pos = np.searchsorted(self._cdf, u, side="right")
        last = self._cdf.size - 1
        return np.where(pos > last, np.where(first == last, last - 1, last), pos)  # rounded past the end

    def _draw_frames(self, rng: np.random.Generator, seq: np.ndarray) -> np.ndarray:
        """A frame uniform over each sequence's visible frames."""
        k = self._first_visible[seq] + rng.integers(self._num_visible[seq])
        return self._visible[k] - self._base[seq]

    def _draw_nearby(self, rng: np.random.Generator, seq: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """A visible frame s of the same sequence with 1 <= |s - frame| <= max_distance, uniform over those; ``frame``
        itself when there is none (see the module doc)."""
        base, centre = self._base[seq], self._base[seq] + frame
        start = np.searchsorted(self._visible, np.maximum(centre - self.max_distance, base), side="left")
        stop = np.searchsorted(self._visible, np.minimum(centre + self.max_distance, base + self._length[seq] - 1),
                               side="right")
        own = np.searchsorted(self._visible, centre)  # `frame` is visible, so this is its position
        others = stop - start - 1
        k = start + rng.integers(np.maximum(others, 1))  # (the draw is unused where there are no others)
        k = np.where(others > 0, k + (k >= own), own)  # skip over `frame` itself
        return self._visible[k] - base


def _check_args(pairs_per_epoch: int, batch_size: int, world_size: int, max_distance: int,
                negative_ratio: float) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, found {batch_size}")
    if pairs_per_epoch < batch_size * world_size:
        raise ValueError(f"pairs_per_epoch must be >= batch_size × world_size = {batch_size * world_size} (one step), "
                         f"found {pairs_per_epoch}")
    if max_distance < 1:
        raise ValueError(f"max_distance must be >= 1 frame, found {max_distance}")
    if not 0.0 <= negative_ratio <= 1.0:
        raise ValueError(f"negative_ratio must be in [0, 1], found {negative_ratio}")


def _check_weights(weights: Optional[Sequence[float]], num_sources: int) -> np.ndarray:
    """The per-source weights as an array (uniform when not given), validated."""
    if weights is None:
        return np.ones(num_sources)
    array = np.asarray(weights, dtype=np.float64)
    if array.shape != (num_sources,):
        raise ValueError(f"weights must have one entry per source ({num_sources}), found shape {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any():
        bad = array[~(np.isfinite(array) & (array >= 0))]
        raise ValueError(f"weights must be finite and non-negative, found {bad[:5].tolist()}")
    return array
