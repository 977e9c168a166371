"""VOT short-term evaluation with the reset-based ("baseline", supervised) protocol: accuracy, robustness and EAO as
pysot reports them for VOT2016–2019 (definitions and sources: `evaluate.vot_metrics`).

Usable on the fly (a tracking task's ``evaluator_input`` hands over a tracker factory) and from evaluator.py
(``"benchmark_type": "vot_evaluate"``, e.g. with ``"model_path": "reference:first_box"``).

What is run, per sequence of the VOT set at ``data_dir`` (read by ``data.mask_sequences.open_vot``):

* The tracker is started on frame 0 from the ground truth and re-started five frames after each failure (a tracked
  frame whose region does not overlap the ground truth at all), as `evaluate.vot_metrics.reset_protocol` states.
  Every (re-)initialisation gets a **fresh tracker** from the factory, called with the sequence as seen from that frame
  on, then ``init(frame, box)``: for the trackers of this project that is what re-initialising means (``init`` resets
  all state), and it keeps oracles such as ``reference:noisy_truth``, which read the sequence's annotations frame by
  frame, aligned with the frames they are given.
* The box given to ``init`` is the sequence's axis-aligned box for that frame (``sequence.boxes``, the reader's box of
  the VOT polygon), or the polygon's bounding box where that box is missing.
* The predicted region of a frame is the tracker's polygon (``tracker.last.polygon``, a rotated rectangle for
  SiamMask) when it gives a usable one, else its box as a 4-corner polygon (a box tracker's polygon).
  ``polygon_frames`` counts the frames (tracked or failed) scored with the tracker's own polygon.
* The ground truth is the sequence's polygon (``sequence.polygons`` or ``sequence.meta["polygons"]``, (N, 8)), or its
  box where a reader gives no polygons. Overlaps are bounded by the image.

Results are written in pysot's VOT layout, ``RESULT_DIR/TRACKER_NAME/baseline/<seq>/<seq>_001.txt``: one line per
frame, ``1`` (initialisation), ``2`` (failure), ``0`` (skipped), or the predicted region (``x1,y1,…,x4,y4`` for a
polygon, ``x,y,w,h`` for a box), numbers as ``%.4f``, in the VOT toolkit's coordinates (polygon vertices shifted back
by the 0.5 that `data.mask_sequences.open_vot` adds when it reads ground truth).

Returned metrics (flat floats): ``eao`` (primary), ``accuracy``, ``robustness`` (failures per 100 frames),
``failures``, ``frames`` (all frames of the evaluated sequences), ``sequences``, ``polygon_frames``, ``fps``
(frames that ran the tracker, initialisations included, divided by the seconds spent in ``init``/``update``; frame
loading and scoring are not timed). EAO averages the expected overlap curve over sequence lengths
``eao_low`` … ``eao_high`` (VOT2017/2018: 100 … 356, VOT2019: 46 … 291); it is NaN when every sequence is shorter
than ``eao_low`` (a warning says so): set a lower interval for short sequences, and know that such a number is not
the benchmark's.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from pydantic import Field, model_validator

from data.mask_sequences import VOT_VERTEX_SHIFT, open_vot
from engine.errors import UserError
from engine.sections import PositiveInt, Section
from evaluate.tracking_run import evenly_spread, tracker_result_dir, tracking_data_dir
from evaluate.vot_metrics import (DEFAULT_EAO_INTERVAL, FAILURE, INIT, SKIPPED, ResetRun, expected_average_overlap,
                                  polygon_iou, region_area, region_vertices, reset_protocol, sequence_accuracy,
                                  vot_accuracy, vot_robustness)

log = logging.getLogger(__name__)

PRIMARY = "eao"
PER_FRAME_FIELDS = ("frames", "boxes", "visible", "cover", "masks", "polygons")
"""Sequence fields that hold one entry per frame (sliced together when a run starts mid-sequence or is cut)."""


class VotOptions(Section):
    """vot_evaluate's options: the same keys on the fly (``evaluation_params``) and offline (``eval_params.json``).
    The keys it shares with got10k_evaluate and davis_evaluate have the same types and defaults, so a task can offer
    all three."""

    subset: str = Field("val", description="VOT: a sub-folder of data_dir holding the VOT set (e.g. VOT2018) when "
                        "data_dir has such a folder; otherwise data_dir itself is the set (a VOT set has no subsets).")
    result_dir: Optional[str] = Field(None, description="Where results are written, as "
                                      "RESULT_DIR/TRACKER_NAME/baseline/<seq>/<seq>_001.txt (pysot's VOT layout). "
                                      "null = <run dir>/tracking_results on the fly; required offline.")
    tracker_name: Optional[str] = Field(None, description="Folder name of this tracker's results; null = "
                                        "step_<global step> on the fly, the model file's name offline.")
    max_sequences: Optional[PositiveInt] = Field(None, description="Evaluate at most this many sequences, evenly "
                                                 "spread over the list (null = all). For quick on-the-fly numbers; "
                                                 "a bounded run is not the benchmark number.")
    max_frames: Optional[PositiveInt] = Field(None, description="Run at most the first max_frames frames of each "
                                              "sequence (null = all); results and scores then cover those frames.")
    eao_low: PositiveInt = Field(DEFAULT_EAO_INTERVAL[0], description="EAO: first sequence length of the averaging "
                                 "interval (VOT2016-2018: 100, VOT2019: 46).")
    eao_high: PositiveInt = Field(DEFAULT_EAO_INTERVAL[1], description="EAO: last sequence length of the averaging "
                                  "interval, inclusive (VOT2016-2018: 356, VOT2019: 291).")

    @model_validator(mode="after")
    def _interval(self):
        if self.eao_high < self.eao_low:
            raise ValueError(f"eao_high ({self.eao_high}) must be >= eao_low ({self.eao_low})")
        return self


OPTIONS = VotOptions


# --------------------------------------------------------------------------------------------------------------------
# Data


def eval_data_dir(params) -> Path:
    return tracking_data_dir(params, "vot_evaluate", "a VOT root: one folder per sequence with its frames and "
                             "groundtruth.txt, and list.txt")


def open_eval_set(params):
    """The VOT SequenceSet an evaluation reads: ``data_dir/subset`` when that folder exists, else ``data_dir``."""
    root = eval_data_dir(params)
    subset = params.evaluation_params.subset
    if subset and (root / subset).is_dir():
        root = root / subset
    return open_vot(root)


def check_inputs(params) -> None:
    """Before training: the evaluation data is a VOT set with a region on every frame (data the run generates itself
    is checked when it exists)."""
    if params.evaluation_params.data_dir is None and getattr(params, "synthetic_data", None) is not None:
        return
    selected(open_eval_set(params), params.evaluation_params)


def ground_truth(sequence) -> np.ndarray:
    """(N, 2K) polygons of a VOT sequence, or its (N, 4) boxes when the reader gives no polygons."""
    polygons = getattr(sequence, "polygons", None)
    if polygons is None:
        polygons = sequence.meta.get("polygons") if isinstance(getattr(sequence, "meta", None), dict) else None
    if polygons is not None:
        return np.asarray(polygons, dtype=np.float64).reshape(len(polygons), -1)
    return np.asarray(sequence.boxes, dtype=np.float64)


def selected(sequence_set, options) -> list:
    """The sequences an evaluation with `options` covers (evenly spread when bounded); refuses sequences whose
    ground truth does not cover every frame."""
    sequences = list(sequence_set.sequences)
    for sequence in sequences:
        truth = ground_truth(sequence)
        if len(truth) != len(sequence):
            raise UserError(f"{sequence.where or sequence.name}: {len(truth)} ground-truth regions for "
                            f"{len(sequence)} frames; the VOT protocol needs a region (or NaN) for every frame")
    if not sequences:
        raise UserError(f"{sequence_set.description}: no sequences to evaluate")
    sequences = evenly_spread(sequences, options.max_sequences)
    return sequences


def sequence_from(sequence, start: int, stop: Optional[int] = None):
    """`sequence` seen from frame `start` to `stop` (exclusive): every per-frame field sliced, the rest kept."""
    if start == 0 and (stop is None or stop >= len(sequence)):
        return sequence
    cut = slice(start, stop)
    changes = {}
    for item in dataclasses.fields(sequence):
        value = getattr(sequence, item.name)
        if item.name in PER_FRAME_FIELDS and value is not None and len(value) == len(sequence):
            changes[item.name] = value[cut]
    meta = getattr(sequence, "meta", None)
    if isinstance(meta, dict) and meta.get("polygons") is not None and len(meta["polygons"]) == len(sequence):
        changes["meta"] = {**meta, "polygons": np.asarray(meta["polygons"])[cut]}
    return dataclasses.replace(sequence, **changes)


def _valid_box(box) -> bool:
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    return box.shape == (4,) and bool(np.isfinite(box).all()) and box[2] > 0 and box[3] > 0


def init_box(sequence, truth: np.ndarray, index: int) -> Optional[np.ndarray]:
    """The box a (re-)initialisation on frame `index` gives the tracker: the sequence's box, else the bounding box
    of the ground-truth polygon; None when neither is usable."""
    boxes = np.asarray(sequence.boxes, dtype=np.float64)
    if len(boxes) == len(sequence) and _valid_box(boxes[index]):
        return boxes[index].copy()
    vertices = region_vertices(truth[index])
    if vertices is None:
        return None
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    box = np.array([low[0], low[1], high[0] - low[0], high[1] - low[1]])
    return box if _valid_box(box) else None


def predicted_region(tracker, box: np.ndarray) -> tuple[np.ndarray, bool]:
    """(region, whether it is the tracker's own polygon): its polygon when usable, else its box."""
    last = getattr(tracker, "last", None)
    polygon = getattr(last, "polygon", None)
    if polygon is not None:
        vertices = region_vertices(np.asarray(polygon, dtype=np.float64).reshape(-1))
        if vertices is not None:
            return vertices, True
    return np.asarray(box, dtype=np.float64).reshape(4), False


# --------------------------------------------------------------------------------------------------------------------
# Running


@dataclasses.dataclass
class SequenceRun:
    name: str
    run: ResetRun
    regions: list
    """Per frame: the predicted region of a tracked frame (a (K, 2) polygon or an (4,) box), else None."""
    seconds: float
    timed_frames: int
    polygon_frames: int
    """Frames (tracked or failed) scored with the tracker's own polygon rather than its box."""


def run_sequence(make_tracker: Callable, sequence_set, sequence, max_frames: Optional[int] = None) -> SequenceRun:
    """Run the reset protocol on one sequence (at most its first `max_frames` frames)."""
    count = len(sequence) if max_frames is None else min(len(sequence), max_frames)
    truth = ground_truth(sequence)
    regions: list = [None] * count
    state = {"tracker": None, "seconds": 0.0, "timed": 0, "polygons": 0, "cached": (None, None)}

    def frame(i: int) -> np.ndarray:
        if state["cached"][0] != i:
            state["cached"] = (i, sequence_set.frame(sequence, i))
        return state["cached"][1]

    def bound(i: int) -> tuple[int, int]:
        image = frame(i)
        return image.shape[1], image.shape[0]

    def can_initialize(i: int) -> bool:
        area = region_area(truth[i], bound(i))
        return bool(area > 0) and init_box(sequence, truth, i) is not None

    def initialize(i: int) -> None:
        tracker = make_tracker(sequence_from(sequence, i))
        image = frame(i)
        start = time.perf_counter()
        tracker.init(image, init_box(sequence, truth, i))
        state["seconds"] += time.perf_counter() - start
        state["timed"] += 1
        state["tracker"] = tracker

    def track(i: int) -> float:
        image = frame(i)
        start = time.perf_counter()
        box = state["tracker"].update(image)
        state["seconds"] += time.perf_counter() - start
        state["timed"] += 1
        region, own = predicted_region(state["tracker"], box)
        regions[i] = region
        state["polygons"] += int(own)
        return polygon_iou(region, truth[i], (image.shape[1], image.shape[0]))

    run = reset_protocol(count, initialize, track, can_initialize=can_initialize)
    return SequenceRun(sequence.name, run, regions, state["seconds"], state["timed"], state["polygons"])


def result_lines(result: SequenceRun) -> list[str]:
    """The pysot/VOT result file of one run: 1 / 2 / 0 status lines, else the region (%.4f) in the VOT toolkit's
    coordinates, as its ground-truth files are written: polygon vertices minus ``VOT_VERTEX_SHIFT`` (the reader's
    shift back), x, y, w, h rectangles as they are."""
    lines = []
    for code, region in zip(result.run.codes, result.regions):
        if code in (INIT, FAILURE, SKIPPED):
            lines.append(str(int(code)))
            continue
        values = np.asarray(region, dtype=np.float64).reshape(-1)
        if values.size == 8:
            values = values - VOT_VERTEX_SHIFT
        lines.append(",".join(f"{v:.4f}" for v in values))
    return lines


def write_result(tracker_dir: Path, result: SequenceRun) -> Path:
    path = tracker_dir / "baseline" / result.name / f"{result.name}_001.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(result_lines(result)) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------------------------
# Scoring and the evaluator


def summarize(results: list[SequenceRun], low: int, high: int) -> tuple[dict[str, float], np.ndarray]:
    """(flat metrics, expected overlap curve) of a set of sequence runs."""
    runs = [r.run for r in results]
    failures, robustness = vot_robustness(runs)
    eao, curve = expected_average_overlap(runs, low, high)
    seconds = sum(r.seconds for r in results)
    timed = sum(r.timed_frames for r in results)
    metrics = {
        "eao": eao,
        "accuracy": vot_accuracy(runs),
        "robustness": robustness,
        "failures": float(failures),
        "frames": float(sum(len(r) for r in runs)),
        "sequences": float(len(runs)),
        "polygon_frames": float(sum(r.polygon_frames for r in results)),
        "fps": timed / seconds if seconds > 0 else float("nan"),
    }
    return metrics, curve


def sequence_table(results: list[SequenceRun]) -> str:
    if not results:
        return "(no sequences)"
    width = max(8, max(len(r.name) for r in results))
    lines = ["sequence".ljust(width) + f"  {'frames':>8}  {'failures':>8}  {'accuracy':>8}"]
    for r in results:
        lines.append(r.name.ljust(width) + f"  {len(r.run):>8}  {len(r.run.failures):>8}  "
                     f"{sequence_accuracy(r.run):>8.4f}")
    return "\n".join(lines)


def run_eval(params, model: Callable, device=None, writer=None, global_step: int = 0, run_dir: Optional[str] = None,
             model_file: Optional[str] = None, sequence_set=None, **context) -> tuple[dict[str, float], str]:
    """Run the tracker factory `model` over the VOT set with the reset protocol; ``(metrics, "eao")``.
    `sequence_set` (programmatic use): evaluate this SequenceSet instead of reading ``data_dir``."""
    ev = params.evaluation_params
    if sequence_set is None:
        sequence_set = open_eval_set(params)
    sequences = selected(sequence_set, ev)
    tracker_dir = tracker_result_dir(ev, global_step, run_dir, model_file, "runs/vot_results")
    results = []
    for number, sequence in enumerate(sequences, 1):
        result = run_sequence(model, sequence_set, sequence, ev.max_frames)
        write_result(tracker_dir, result)
        results.append(result)
        log.debug("VOT %s (%d/%d): %d frames, %d failures", sequence.name, number, len(sequences), len(result.run),
                  len(result.run.failures))
    metrics, curve = summarize(results, ev.eao_low, ev.eao_high)
    if np.isnan(metrics["eao"]):
        log.warning("VOT: EAO is NaN: the longest sequence (%d frames) is shorter than eao_low (%d); lower "
                    "eao_low/eao_high for short sequences", len(curve), ev.eao_low)
    table = sequence_table(results)
    log.info("VOT results in %s\n%s\nEAO %.4f  accuracy %.4f  robustness %.4f (%d failures)", tracker_dir, table,
             metrics["eao"], metrics["accuracy"], metrics["robustness"], int(metrics["failures"]))
    if writer is not None:
        from evaluate.visualize import curve_image

        if len(curve) > 1:
            writer.add_image("eval/expected_overlap_curve", curve_image(curve, "1", f"{len(curve)} frames"),
                             global_step, dataformats="HWC")
        writer.add_text("eval/per_sequence", "    " + table.replace("\n", "\n    "), global_step)
    return metrics, PRIMARY
