"""VOT short-term ("baseline", reset-based) metrics: polygon overlap, the supervised reset protocol, accuracy,
robustness and expected average overlap (EAO), as the pysot toolkit computes them for VOT2016–2019.

Pure functions over plain arrays: nothing here reads a dataset or knows a tracker. `evaluate.vot_evaluate` runs
trackers through :func:`reset_protocol` and scores the runs with the functions below. Shapely (the geometry engine the
GOT-10k toolkit uses for its polygon IoU) is imported on first use.

Sources: pysot (STVIR/pysot ``toolkit/utils/statistics.py``, ``toolkit/evaluation/ar_benchmark.py``,
``toolkit/evaluation/eao_benchmark.py``, ``tools/test.py``), the copy SiamMask ships (foolwood/SiamMask
``utils/pysot``, ``tools/test.py``; the same computations), and ``../shared/reference/trackers-and-got10k.md`` §3.7.
Nothing was copied; the definitions are restated here and re-implemented.

**Regions and coordinates.** A region is an axis-aligned box ``x, y, w, h`` (4 numbers), a polygon as VOT writes it
(``x1, y1, x2, y2, …``: 2K numbers, K >= 3, VOT ground truth has K = 4) or a (K, 2) array of vertices. Coordinates are
continuous, as in :mod:`data.boxes`: pixel (i, j) covers [i, i+1) × [j, j+1), the image is the rectangle
[0, W] × [0, H], a box's corners are (x, y), (x + w, y), (x + w, y + h), (x, y + h) (pysot's ``vot_overlap`` turns a
4-number region into the same four corners, without a "−1"). VOT's polygon files are read as given.

**Overlap** (:func:`polygon_iou`): both regions are first intersected with the image rectangle [0, W] × [0, H]
(``bound=(W, H)``; ``None`` = unbounded), then IoU = area(A ∩ B) / area(A ∪ B), computed exactly by Shapely.
A region that holds a NaN, or has fewer than 3 vertices (VOT's one-number status lines ``0``/``1``/``2``), gives
NaN, as pysot's ``vot_overlap`` does for its one-element entries. Two regions that are both empty inside the image
give NaN (nothing to compare); one empty region against a non-empty one gives 0. A self-intersecting polygon is
repaired with ``shapely.make_valid``. pysot computes the overlap with VOT's C ``region`` library, which rasterises
both polygons into pixel masks inside the bounds; the exact areas used here differ from it by rasterisation error
(about a pixel's share of the region), which is the stated choice of this module.

**Reset protocol** (:func:`reset_protocol`; pysot ``tools/test.py`` and SiamMask ``tools/test.py`` ``L318-366``): the
tracker is initialised on frame 0 from the ground truth (status ``1``) and tracks the following frames; a tracked frame
whose overlap with the ground truth is exactly 0 is a *failure* (status ``2``). After a failure at frame f the frames
f+1 … f+4 are skipped (status ``0``) and the tracker is re-initialised from the ground truth on frame f + 5
(``SKIP_FRAMES``: counting the failure frame, five frames are lost and the sixth re-initialises; pysot
``frame_counter = idx + 5``). A tracked frame whose overlap is NaN (no ground-truth region) is not a failure: no
overlap can be measured (SiamMask's ``if b_overlap:`` agrees; pysot's ``if overlap > 0`` would count it as one). If the frame due for a
(re-)initialisation has no usable ground truth, the initialisation moves to the next frame that has one and the frames
in between are skipped (VOT ground truth has a region on every frame, so this never happens there).

Per run the protocol records ``codes`` (``INIT`` 1, ``FAILURE`` 2, ``SKIPPED`` 0, ``TRACKED`` −1) and ``overlaps``: the
overlap of each tracked frame, NaN on every other frame, as pysot gets them when it re-reads a result file (its status
lines give NaN overlaps).

**Accuracy** (:func:`vot_accuracy`; pysot ``calculate_accuracy(burnin=10)`` and ``AccuracyRobustnessBenchmark``):
the overlaps of a run with the ``BURNIN`` = 10 frames starting at each (re-)initialisation set to NaN (the
initialisation frame and the 9 tracked frames after it), then the NaN-ignoring mean over all frames of all sequences
pooled (pysot concatenates the per-sequence overlaps before ``np.nanmean``: a long sequence weighs more).

**Robustness** (:func:`vot_robustness`; pysot ``ar_benchmark.show_result``): two numbers.
``failures``: the number of failures summed over the sequences (pysot's "Lost Number"). ``robustness``: failures per
hundred frames, ``failures / frames × 100``, frames being all frames of all evaluated sequences, initialisation and
skipped ones included (pysot's printed "Robustness"; ``§3.7``: SiamFC++-AlexNet's 0.183 on VOT2018 ⇔ ≈39 failures
over 21 356 frames). pysot averages both over repetitions of a stochastic tracker; we run once.

**EAO** (:func:`expected_average_overlap`; pysot ``EAOBenchmark._calculate_eao`` and
``statistics.calculate_expected_overlap``, tag ``all``), on the overlaps without burn-in:

* Fragments. A run without failure is one fragment: its overlaps over its own length, **not** padded (the cells past
  its end are missing). A run with failures at f₁ < f₂ < … is cut at the points p₀ = 0 and pₖ = fₖ + ``SKIP_FRAMES``
  (kept when pₖ <= N, N the run's length). Fragment k < last is ``overlaps[pₖ : pₖ₊₁ + 1]`` (it ends with the next
  initialisation frame, inclusive) followed by zeros up to the longest run's length ``max_len``: after a failure the
  overlap counts as 0 at every longer length. The last fragment is ``overlaps[p_last:]`` and, like a run without
  failure, is not padded. Inside fragments a NaN overlap (status frames) becomes 0.
* Weights: 1 per fragment, except pysot's edge cases, reproduced: a cut fragment whose slice is truncated by the run's
  end (pₖ₊₁ = N) weighs (N − pₖ) / (pₖ₊₁ − pₖ + 1), and an empty last fragment (p_last = N) weighs 0. pysot multiplies
  every weight by 1 / (repetitions) of one sequence, a constant that cancels.
* Expected overlap curve Φ (length ``max_len``): Φ[0] = 1; for i >= 1, over the fragments that have a cell at column
  i, the weighted mean of each fragment's mean over columns 1 … i (column 0, the initialisation frame, never counts);
  Φ[i] = 0 where no fragment reaches i (pysot's initial zeros). Index i is a sequence length of i + 1 frames.
* EAO = the mean of Φ over the lengths ``low`` … ``high`` inclusive, i.e. indices ``low − 1`` … ``high − 1``,
  cut to the curve's length; NaN when the interval lies past the longest run (pysot prints NaN then too).
  Intervals (``EAO_INTERVALS``): pysot uses [100, 356] for VOT2017/VOT2018, [46, 291] for VOT2019 and [108, 371] for
  VOT2016; SiamMask's copy uses [100, 356] for VOT2016 as well ("TODO" in its code).

Deviations from pysot, on purpose: (1) pysot keeps a NaN overlap (a frame without a ground-truth region) in a
fragment of a run without failure, which turns Φ into NaN at every longer length and drops those lengths from the
average; here every NaN inside a fragment is 0, as pysot already does in runs with failures (identical wherever every
tracked frame has a region, as in VOT2016–2019). (2) pysot's EAO bounds overlaps by (W − 1, H − 1) while its
accuracy uses (W, H); here both use the image [0, W] × [0, H]. (3) pysot stores Φ in float32; here float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

INIT, FAILURE, SKIPPED, TRACKED = 1, 2, 0, -1
"""Per-frame status codes. The first three are VOT's result-file lines; TRACKED frames carry the predicted region."""
SKIP_FRAMES = 5
"""Re-initialisation happens this many frames after a failure (the failure frame f, then f + 5)."""
BURNIN = 10
"""Frames from each (re-)initialisation, that frame included, excluded from accuracy."""
EAO_INTERVALS = {"VOT2016": (108, 371), "VOT2017": (100, 356), "VOT2018": (100, 356), "VOT2019": (46, 291)}
"""pysot's [low, high] sequence-length interval of the EAO average per VOT edition (SiamMask's copy: VOT2016 as
VOT2018)."""
DEFAULT_EAO_INTERVAL = EAO_INTERVALS["VOT2018"]


# --------------------------------------------------------------------------------------------------------------------
# Regions and overlap


def region_vertices(region) -> Optional[np.ndarray]:
    """The (K, 2) float64 vertices of `region` (a box ``x, y, w, h``, a flat polygon ``x1, y1, …`` of 2K >= 6 numbers,
    or a (K, 2) array), or None when it is no region: a NaN or infinite coordinate, or fewer than 3 vertices (VOT's
    status lines). A box's corners are (x, y), (x + w, y), (x + w, y + h), (x, y + h)."""
    if region is None:
        return None
    array = np.asarray(region, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 2:
        vertices = array
    elif array.ndim == 1 and array.size == 4:
        x, y, w, h = array
        vertices = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
    elif array.ndim == 1 and array.size >= 6 and array.size % 2 == 0:
        vertices = array.reshape(-1, 2)
    elif array.size <= 2:
        return None
    else:
        raise ValueError(f"a region is 4 numbers (x, y, w, h), 2K >= 6 numbers (a polygon) or a (K, 2) array; found "
                         f"shape {array.shape}")
    if len(vertices) < 3 or not np.isfinite(vertices).all():
        return None
    return vertices


def _shape(vertices: np.ndarray, bound):
    import shapely
    from shapely.geometry import Polygon, box

    shape = Polygon(vertices)
    if not shape.is_valid:
        shape = shapely.make_valid(shape)
    if bound is not None:
        shape = shape.intersection(box(0.0, 0.0, float(bound[0]), float(bound[1])))
    return shape


def region_area(region, bound=None) -> float:
    """Area of `region` inside the image ``bound = (W, H)`` (None = unbounded); NaN when it is no region."""
    vertices = region_vertices(region)
    if vertices is None:
        return float("nan")
    return float(_shape(vertices, bound).area)


def polygon_iou(a, b, bound=None) -> float:
    """Intersection over union of two regions after intersecting each with the image ``bound = (W, H)`` (None =
    unbounded). NaN when either is no region (:func:`region_vertices`) or when both are empty inside the image."""
    va, vb = region_vertices(a), region_vertices(b)
    if va is None or vb is None:
        return float("nan")
    sa, sb = _shape(va, bound), _shape(vb, bound)
    inter = sa.intersection(sb).area
    union = sa.area + sb.area - inter
    if union <= 0:
        return float("nan")
    return float(min(max(inter / union, 0.0), 1.0))


def box_polygon(box) -> np.ndarray:
    """The (4, 2) corners of an ``x, y, w, h`` box (a box tracker's polygon)."""
    x, y, w, h = np.asarray(box, dtype=np.float64).reshape(4)
    return np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]])


# --------------------------------------------------------------------------------------------------------------------
# The reset protocol


@dataclass(frozen=True)
class ResetRun:
    """One sequence run under the reset protocol."""

    codes: np.ndarray
    """(N,) int8: INIT, FAILURE, SKIPPED or TRACKED per frame."""
    overlaps: np.ndarray
    """(N,) float64: overlap of each TRACKED frame with the ground truth; NaN on every other frame."""

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def failures(self) -> np.ndarray:
        """Frame indices of the failures."""
        return np.flatnonzero(self.codes == FAILURE)

    @property
    def initializations(self) -> np.ndarray:
        """Frame indices of the (re-)initialisations, frame 0 included."""
        return np.flatnonzero(self.codes == INIT)

    @property
    def skipped(self) -> np.ndarray:
        return np.flatnonzero(self.codes == SKIPPED)


def reset_protocol(num_frames: int, initialize: Callable[[int], None], track: Callable[[int], float], *,
                   can_initialize: Optional[Callable[[int], bool]] = None, skip: int = SKIP_FRAMES) -> ResetRun:
    """Run VOT's supervised reset protocol over frames 0 … num_frames − 1.

    ``initialize(i)`` (re-)initialises the tracker on frame i from the ground truth; ``track(i)`` tracks frame i and
    returns the overlap of the prediction with the ground truth (NaN when there is no ground-truth region).
    ``can_initialize(i)`` (default: always) says whether frame i's ground truth can start the tracker; when it cannot,
    the initialisation moves to the next frame. A failure (overlap exactly 0) on frame f skips f+1 … f+skip−1 and
    re-initialises on f + skip."""
    if skip < 1:
        raise ValueError(f"skip must be >= 1, found {skip}")
    codes = np.full(num_frames, SKIPPED, dtype=np.int8)
    overlaps = np.full(num_frames, np.nan)
    next_init = 0
    for i in range(num_frames):
        if i < next_init:
            continue
        if i == next_init:
            if can_initialize is not None and not can_initialize(i):
                next_init = i + 1
                continue
            initialize(i)
            codes[i] = INIT
            continue
        overlap = float(track(i))
        if overlap <= 0.0:  # NaN compares False: a frame without a ground-truth region is no failure
            codes[i] = FAILURE
            next_init = i + skip
        else:
            codes[i] = TRACKED
            overlaps[i] = overlap
    return ResetRun(codes, overlaps)


def run_from_codes(codes: Sequence[int], overlaps: Sequence[float]) -> ResetRun:
    """A ResetRun from per-frame codes and overlaps (overlaps of non-TRACKED frames are set to NaN)."""
    codes = np.asarray(codes, dtype=np.int8)
    overlaps = np.asarray(overlaps, dtype=np.float64).copy()
    if codes.shape != overlaps.shape or codes.ndim != 1:
        raise ValueError(f"codes and overlaps must be two 1-D arrays of one length; found {codes.shape} and "
                         f"{overlaps.shape}")
    overlaps[codes != TRACKED] = np.nan
    return ResetRun(codes, overlaps)


# --------------------------------------------------------------------------------------------------------------------
# Accuracy and robustness


def burnin_mask(codes, burnin: int = BURNIN) -> np.ndarray:
    """(N,) bool: frames within `burnin` frames from a (re-)initialisation, that frame included."""
    codes = np.asarray(codes)
    mask = np.zeros(len(codes), dtype=bool)
    for start in np.flatnonzero(codes == INIT):
        mask[start:start + burnin] = True
    return mask


def accuracy_overlaps(run: ResetRun, burnin: int = BURNIN) -> np.ndarray:
    """The overlaps that count for accuracy: burn-in frames set to NaN."""
    overlaps = run.overlaps.copy()
    overlaps[burnin_mask(run.codes, burnin)] = np.nan
    return overlaps


def sequence_accuracy(run: ResetRun, burnin: int = BURNIN) -> float:
    """Mean overlap of one run over its valid tracked frames after burn-in; NaN when there is none."""
    values = accuracy_overlaps(run, burnin)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def vot_accuracy(runs: Iterable[ResetRun], burnin: int = BURNIN) -> float:
    """Mean overlap over the valid tracked frames after burn-in of all runs pooled; NaN when there is none."""
    pooled = [accuracy_overlaps(run, burnin) for run in runs]
    values = np.concatenate(pooled) if pooled else np.zeros(0)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def vot_robustness(runs: Iterable[ResetRun]) -> tuple[int, float]:
    """(failures, failures per 100 frames) over all runs; the rate is NaN when there is no frame."""
    runs = list(runs)
    failures = int(sum(len(run.failures) for run in runs))
    frames = int(sum(len(run) for run in runs))
    return failures, (100.0 * failures / frames if frames else float("nan"))


# --------------------------------------------------------------------------------------------------------------------
# Expected average overlap


def eao_fragments(runs: Sequence[ResetRun], skip: int = SKIP_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """(fragments (F, max_len) with NaN where a fragment has no cell, weights (F,)) of pysot's EAO (module
    docstring)."""
    runs = list(runs)
    if not runs:
        return np.zeros((0, 0)), np.zeros(0)
    max_len = max(len(run) for run in runs)
    rows, weights = [], []
    for run in runs:
        overlaps, n = np.nan_to_num(run.overlaps, nan=0.0), len(run)
        failures = run.failures
        if len(failures) == 0:
            row = np.full(max_len, np.nan)
            row[:n] = overlaps
            rows.append(row)
            weights.append(1.0)
            continue
        points = [0] + [int(f) + skip for f in failures if int(f) + skip <= n]
        for k, start in enumerate(points):
            if k < len(points) - 1:
                stop = points[k + 1]
                piece = overlaps[start:stop + 1]
                row = np.zeros(max_len)
                row[:len(piece)] = piece
                weights.append(len(piece) / (stop - start + 1))
            else:
                piece = overlaps[start:]
                row = np.full(max_len, np.nan)
                row[:len(piece)] = piece
                weights.append(1.0 if len(piece) else 0.0)
            rows.append(row)
    return np.asarray(rows), np.asarray(weights, dtype=np.float64)


def expected_overlap_curve(fragments: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Φ[i], i = 0 … max_len − 1: Φ[0] = 1; Φ[i] = weighted mean over fragments with a cell at column i of the mean
    of columns 1 … i; 0 where no fragment reaches i; NaN where those fragments weigh 0 in total."""
    fragments = np.asarray(fragments, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    count, max_len = fragments.shape if fragments.ndim == 2 else (0, 0)
    curve = np.zeros(max_len)
    if max_len == 0:
        return curve
    curve[0] = 1.0
    if max_len == 1 or count == 0:
        return curve
    present = ~np.isnan(fragments[:, 1:])  # (F, max_len - 1): column i = 1 … max_len - 1
    sums = np.cumsum(np.nan_to_num(fragments[:, 1:], nan=0.0), axis=1)
    lengths = np.arange(1, max_len, dtype=np.float64)
    means = sums / lengths
    weight = present * weights[:, None]
    total = weight.sum(axis=0)
    numerator = (weight * means).sum(axis=0)
    reached = present.any(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve[1:] = np.where(reached, numerator / total, 0.0)
    return curve


def eao_from_curve(curve: np.ndarray, low: int, high: int) -> float:
    """Mean of Φ over sequence lengths low … high (indices low − 1 … high − 1), NaN entries left out; NaN when no
    entry is left (the interval lies past the curve)."""
    if low < 1 or high < low:
        raise ValueError(f"the EAO interval must satisfy 1 <= low <= high, found [{low}, {high}]")
    window = np.asarray(curve, dtype=np.float64)[low - 1:high]
    window = window[~np.isnan(window)]
    return float(window.mean()) if len(window) else float("nan")


def expected_average_overlap(runs: Sequence[ResetRun], low: int = DEFAULT_EAO_INTERVAL[0],
                             high: int = DEFAULT_EAO_INTERVAL[1], skip: int = SKIP_FRAMES) -> tuple[float, np.ndarray]:
    """(EAO over sequence lengths [low, high], the expected overlap curve Φ) of a set of runs."""
    fragments, weights = eao_fragments(runs, skip)
    curve = expected_overlap_curve(fragments, weights)
    return eao_from_curve(curve, low, high), curve
