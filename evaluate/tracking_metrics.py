"""Single-object tracking metrics, equal to the official GOT-10k toolkit (``got10k==0.1.3``) to rounding.

Pure NumPy and vectorised; importing it loads nothing else. Boxes are ``x, y, w, h`` rows in continuous pixel
coordinates (right edge ``x + w``), as the toolkit's ``rect_iou`` reads them.

GOT-10k (:func:`got10k_summary`, ``ExperimentGOT10k._evaluate``) on IoUs already pooled by the caller:

* ``ao`` = mean IoU; ``sr50`` / ``sr75`` = fraction of IoUs **strictly** above 0.5 / 0.75 (an IoU of exactly 0.5
  fails SR@0.5);
* ``succ_curve[k]`` = fraction of IoUs strictly above ``np.linspace(0, 1, 101)[k]``, so ``succ_curve[0]`` is
  P(IoU > 0) and ``succ_curve[50]`` / ``succ_curve[75]`` equal ``sr50`` / ``sr75`` bit for bit (the grid holds 0.5
  and 0.75 exactly);
* ``fps`` = mean over frames of ``1 / t`` (not frames / total time), after dropping NaN and ``t <= 0``; -1 when no
  time is left.

OPE, one-pass evaluation as OTB / LaSOT report it (:func:`ope_sequence_metrics`, :func:`ope_summary`;
``ExperimentOTB.report`` in 0.1.3, ``ExperimentLaSOT.report`` in the toolkit's GitHub version, which 0.1.3 lacks):

* Frames: every frame, **including frame 0**, whose predicted box is replaced by the ground truth first (so it
  always scores IoU ~1 and centre error 0). No clipping to the image. ``protocol="otb"`` keeps frames whose annotation
  holds a NaN: their IoU and centre error are NaN, which fail every threshold, so they count as failures.
  ``protocol="lasot"`` drops those frames (the toolkit's LaSOT / UAV123 rule). Neither looks at LaSOT's
  ``full_occlusion.txt`` / ``out_of_view.txt``: a ``0,0,0,0`` annotation is scored (IoU 0: a failure).
* Success curve: fraction of frames with IoU strictly above each of ``np.linspace(0, 1, 21)``; success score = the
  mean of that curve (an approximation of the AO); success rate = the curve at 0.5 (index 10).
* Precision curve: fraction of frames with centre error ``<=`` each of 0, 1, …, 50 px; precision score = the value
  at 20 px. Normalised precision (LaSOT only): centre error ``<=`` each of ``np.linspace(0, 0.5, 51)`` after dividing
  the offset by the ground-truth size; its score is the mean of that curve (not a value at one threshold).
* Pooling: each sequence gets its own curves, and the reported curves are the **mean of the per-sequence curves**
  (every sequence weighs the same, whatever its length); the scores are taken from those mean curves.
* FPS: per sequence mean of ``1 / t`` over times ``t > 0`` (NaN dropped), -1 when none (or when that mean is 0: all
  times infinite); overall the mean of the per-sequence values over the sequences that have one (-1 when none).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

EPS = np.finfo(float).eps
"""Added to the union, as the toolkit does (a zero-area pair scores 0, not NaN)."""
GOT10K_IOU_THRESHOLDS = np.linspace(0, 1, 101)
OPE_IOU_THRESHOLDS = np.linspace(0, 1, 21)
OPE_PIXEL_THRESHOLDS = np.arange(0, 51, dtype=np.float64)
OPE_NORMALIZED_THRESHOLDS = np.linspace(0, 0.5, 51)
OPE_PROTOCOLS = ("otb", "lasot")
OPE_PRECISION_PIXELS = 20
"""The precision score is the precision curve at 20 px."""


# --------------------------------------------------------------------------------------------------------------------
# Per-frame measures


def _as_boxes(boxes, what: str) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{what}: expected an (N, 4) array of x, y, w, h boxes, found shape {array.shape}")
    return array


def _clipped_columns(boxes: np.ndarray, bound) -> tuple[np.ndarray, ...]:
    """x, y, w, h of `boxes` clipped into the image ``bound = (W, H)`` (or an (N, 2) array of per-box bounds) as the
    toolkit's bounded ``rect_iou`` does: ``x`` to [0, W], ``y`` to [0, H], then ``w`` to [0, W - x] and ``h`` to
    [0, H - y] with the clipped x, y. A box sticking out of the frame is cut at the border; one left of the frame is
    moved to x = 0 and keeps its width. ``minimum(maximum(v, lo), hi)`` is what ``np.clip`` computes, cheaper."""
    x, y, w, h = boxes.T
    if bound is None:
        return x, y, w, h
    limit = np.asarray(bound, dtype=np.float64)
    width, height = limit[..., 0], limit[..., 1]
    x, y = np.minimum(np.maximum(x, 0), width), np.minimum(np.maximum(y, 0), height)
    return x, y, np.minimum(np.maximum(w, 0), width - x), np.minimum(np.maximum(h, 0), height - y)


def rect_iou(a, b, bound=None) -> np.ndarray:
    """IoU of corresponding ``x, y, w, h`` boxes (two (N, 4) arrays), the toolkit's ``rect_iou`` to the bit.

    Continuous coordinates: the intersection is ``max(min(right edges) - max(left edges), 0)`` times the same for y;
    ``iou = inter / (area_a + area_b - inter + eps)`` with ``eps = np.finfo(float).eps``, clipped to [0, 1]. With
    ``bound = (W, H)`` (or per-box (N, 2) bounds) both box sets are first clipped to the image (see
    :func:`_clipped_columns`). Unlike the toolkit, which clips its arguments **in place**, the inputs are never
    modified. A NaN coordinate gives a NaN IoU (as in the toolkit)."""
    a = _as_boxes(a, "rect_iou: first boxes")
    b = _as_boxes(b, "rect_iou: second boxes")
    if a.shape != b.shape:
        raise ValueError(f"rect_iou: box arrays differ in shape: {a.shape} vs {b.shape}")
    ax, ay, aw, ah = _clipped_columns(a, bound)
    bx, by, bw, bh = _clipped_columns(b, bound)
    inter_w = np.maximum(np.minimum(ax + aw, bx + bw) - np.maximum(ax, bx), 0)
    inter_h = np.maximum(np.minimum(ay + ah, by + bh) - np.maximum(ay, by), 0)
    inter = inter_w * inter_h
    union = aw * ah + bw * bh - inter
    return np.clip(inter / (union + EPS), 0.0, 1.0)


def _centers(boxes: np.ndarray) -> np.ndarray:
    """The toolkit's centre ``x + (w - 1) / 2``, ``y + (h - 1) / 2`` (the pixel-inclusive convention, although its
    IoU is continuous). It is the geometric centre shifted by half a pixel up-left for every box, so the shift
    cancels in a difference; it is kept for bit-level parity."""
    return boxes[:, :2] + (boxes[:, 2:] - 1) / 2


def center_error(a, b) -> np.ndarray:
    """Euclidean distance in pixels between the centres ``(x + (w - 1) / 2, y + (h - 1) / 2)`` of corresponding
    boxes, as the toolkit's ``center_error``."""
    a, b = _as_boxes(a, "center_error: first boxes"), _as_boxes(b, "center_error: second boxes")
    offset = _centers(a) - _centers(b)
    return np.sqrt(offset[:, 0] ** 2 + offset[:, 1] ** 2)


def normalized_center_error(a, b) -> np.ndarray:
    """Centre error of predictions `a` against ground truth `b` with the x (y) offset divided by the ground-truth
    width (height), each at least 1 (the toolkit's ``normalized_center_error``, LaSOT's normalised precision). Same
    centre convention as :func:`center_error`."""
    a, b = _as_boxes(a, "normalized_center_error: predictions"), _as_boxes(b, "normalized_center_error: ground truth")
    offset = (_centers(a) - _centers(b)) / np.maximum(1.0, b[:, 2:])
    return np.sqrt(offset[:, 0] ** 2 + offset[:, 1] ** 2)


# --------------------------------------------------------------------------------------------------------------------
# Curves and speed


def fraction_above(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each threshold, the fraction of `values` strictly above it (NaN is never above); NaN for no values.
    Equal to ``np.mean(values[:, None] > thresholds, axis=0)`` bit for bit, by counting on the sorted values."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return np.full(len(thresholds), np.nan)
    ordered = np.sort(values)                       # NaN sorts last
    finite = ordered[: len(ordered) - np.count_nonzero(np.isnan(ordered))]
    return (len(finite) - np.searchsorted(finite, thresholds, side="right")) / values.size


def fraction_at_most(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each threshold, the fraction of `values` ``<=`` it (NaN never is); NaN for no values."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return np.full(len(thresholds), np.nan)
    ordered = np.sort(values)
    finite = ordered[: len(ordered) - np.count_nonzero(np.isnan(ordered))]
    return np.searchsorted(finite, thresholds, side="right") / values.size


def valid_times(times) -> np.ndarray:
    """All of `times` (any shape, flattened row by row) without NaN and values ``<= 0``: the toolkit's filter (a
    missing or failed timing is written as 0 or NaN)."""
    flat = np.asarray(times, dtype=np.float64).ravel()
    return flat[flat > 0]


def mean_fps(times) -> float:
    """Mean of ``1 / t`` over :func:`valid_times` (a per-frame average, not frames / total time); -1 when none."""
    kept = valid_times(times)
    return float(np.mean(1.0 / kept)) if kept.size else -1.0


# --------------------------------------------------------------------------------------------------------------------
# GOT-10k


def got10k_scores(ious, times) -> dict:
    """``ao``, ``sr50``, ``sr75``, ``fps`` and ``frames`` (the number of IoUs) of per-frame IoUs and times (see the
    module docstring). With no IoU, ao / sr50 / sr75 are NaN, as the toolkit's mean of nothing."""
    ious = np.asarray(ious, dtype=np.float64).ravel()
    count = ious.size
    if count == 0:
        return {"ao": float("nan"), "sr50": float("nan"), "sr75": float("nan"), "fps": mean_fps(times), "frames": 0}
    # sum / count and count_nonzero / count are np.mean's exact results, without its overhead
    return {"ao": float(ious.sum() / count), "sr50": np.count_nonzero(ious > 0.5) / count,
            "sr75": np.count_nonzero(ious > 0.75) / count, "fps": mean_fps(times), "frames": count}


def got10k_summary(ious, times) -> dict:
    """GOT-10k numbers of pooled per-frame IoUs and times: :func:`got10k_scores` and ``succ_curve`` (101 floats,
    NaN with no IoU)."""
    return {**got10k_scores(ious, times), "succ_curve": fraction_above(ious, GOT10K_IOU_THRESHOLDS).tolist()}


# --------------------------------------------------------------------------------------------------------------------
# OPE (OTB / LaSOT)


def _check_protocol(protocol: str) -> None:
    if protocol not in OPE_PROTOCOLS:
        raise ValueError(f"OPE protocol: expected one of {', '.join(OPE_PROTOCOLS)}, found {protocol!r}")


def ope_sequence_metrics(boxes, anno, times=None, protocol: str = "otb") -> dict:
    """One sequence's OPE curves and scores (see the module docstring for frames and thresholds).

    `boxes`: the tracker's (N, 4) output, row 0 ignored (replaced by ``anno[0]``); `anno`: (N, 4) ground truth;
    `times`: per-frame seconds or None. Returns ``success_curve`` (21), ``precision_curve`` (51),
    ``success_score``, ``success_rate``, ``precision_score``, ``fps``, ``frames`` (frames scored) and, for
    ``protocol="lasot"``, ``normalized_precision_curve`` (51) and ``normalized_precision_score``; curves are
    arrays."""
    _check_protocol(protocol)
    pred = _as_boxes(boxes, "ope_sequence_metrics: boxes").copy()
    anno = _as_boxes(anno, "ope_sequence_metrics: anno")
    if pred.shape != anno.shape or len(anno) == 0:
        raise ValueError(f"ope_sequence_metrics: need one box per annotated frame, found {len(pred)} boxes for "
                         f"{len(anno)} annotations")
    pred[0] = anno[0]
    if protocol == "lasot":
        kept = ~np.isnan(anno).any(axis=1)
        pred, anno = pred[kept], anno[kept]
    success = fraction_above(rect_iou(pred, anno), OPE_IOU_THRESHOLDS)
    precision = fraction_at_most(center_error(pred, anno), OPE_PIXEL_THRESHOLDS)
    fps = -1.0 if times is None else mean_fps(times)
    result = {"success_curve": success, "precision_curve": precision, **_ope_scores(success, precision),
              "fps": fps if fps > 0 else -1.0, "frames": len(anno)}
    if protocol == "lasot":
        normalized = fraction_at_most(normalized_center_error(pred, anno), OPE_NORMALIZED_THRESHOLDS)
        result.update(normalized_precision_curve=normalized, normalized_precision_score=float(np.mean(normalized)))
    return result


def _ope_scores(success: np.ndarray, precision: np.ndarray) -> dict:
    return {"success_score": float(np.mean(success)),
            "success_rate": float(success[len(OPE_IOU_THRESHOLDS) // 2]),
            "precision_score": float(precision[OPE_PRECISION_PIXELS])}


def ope_overall(per_sequence: Sequence[dict]) -> dict:
    """Overall OPE numbers from :func:`ope_sequence_metrics` results: curves averaged over sequences (each sequence
    weighs the same), scores from the averaged curves, fps = mean of the per-sequence fps over the sequences that
    have one (> 0), -1 when none. Curves are lists."""
    if not per_sequence:
        raise ValueError("ope_overall: no sequences")
    curves = [key for key in ("success_curve", "precision_curve", "normalized_precision_curve")
              if key in per_sequence[0]]
    mean = {key: np.mean(np.stack([seq[key] for seq in per_sequence]), axis=0) for key in curves}
    speeds = np.array([seq["fps"] for seq in per_sequence], dtype=np.float64)
    speeds = speeds[speeds > 0]
    result = {**{key: value.tolist() for key, value in mean.items()},
              **_ope_scores(mean["success_curve"], mean["precision_curve"]),
              "fps": float(np.mean(speeds)) if speeds.size else -1.0,
              "frames": int(sum(seq["frames"] for seq in per_sequence)), "sequences": len(per_sequence)}
    if "normalized_precision_curve" in mean:
        result["normalized_precision_score"] = float(np.mean(mean["normalized_precision_curve"]))
    return result


def ope_summary(per_sequence_boxes: Sequence, per_sequence_annos: Sequence,
                per_sequence_times: Optional[Sequence] = None, protocol: str = "otb") -> dict:
    """OPE report of several sequences: ``{"overall": ope_overall(...), "per_sequence": [ope_sequence_metrics(...),
    ...]}`` (per-sequence curves converted to lists), sequences in the given order."""
    if len(per_sequence_boxes) != len(per_sequence_annos):
        raise ValueError(f"ope_summary: {len(per_sequence_boxes)} box arrays for {len(per_sequence_annos)} "
                         f"annotation arrays")
    times = per_sequence_times if per_sequence_times is not None else [None] * len(per_sequence_boxes)
    if len(times) != len(per_sequence_boxes):
        raise ValueError(f"ope_summary: {len(times)} time arrays for {len(per_sequence_boxes)} sequences")
    per_sequence = [ope_sequence_metrics(b, a, t, protocol)
                    for b, a, t in zip(per_sequence_boxes, per_sequence_annos, times)]
    return {"overall": ope_overall(per_sequence),
            "per_sequence": [{k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in seq.items()}
                             for seq in per_sequence]}
