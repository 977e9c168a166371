"""Semi-supervised video object segmentation evaluation on DAVIS-style mask sequences: region similarity J and
boundary accuracy F with DAVIS's per-sequence statistics (definitions and sources: `evaluate.davis_metrics`).

Usable on the fly (a tracking task's ``evaluator_input`` hands over a tracker factory) and from evaluator.py
(``"benchmark_type": "davis_evaluate"``, e.g. with ``"model_path": "reference:first_box"``).

Protocol, per sequence (one target object each) of the set at ``data_dir`` / ``subset`` (read by
``data.mask_sequences``: ``open_youtube_vos`` for a YouTube-VOS root or subset folder, else ``open_davis``):

* DAVIS's semi-supervised protocol gives the method the first frame's mask. Our trackers start from a box, so the
  tracker gets **the mask's box** (the tight box of its pixels, `evaluate.davis_metrics.mask_box`) on the first
  annotated frame where the object is visible (frame 0 on DAVIS; an object that appears later, as in YouTube-VOS,
  starts where it appears). A fresh tracker from the factory, called with the sequence as seen from that frame on.
* The tracker runs on every later frame; every later **annotated** frame is scored (DAVIS 2017's toolkit also leaves
  out the last frame; we score it).
* The predicted mask is the tracker's mask (``tracker.last.mask``, H×W bool) when it gives one, else its box filled
  (`evaluate.davis_metrics.box_mask`: the pixels whose centres lie in the box), the "trivial mask" of a box tracker.
  ``j_mean_box`` is J of the filled predicted box on every scored frame, whatever the tracker gives, so that a mask
  tracker's gain over its own box is visible (for a box tracker it equals ``j_mean``); ``mask_frames`` counts the
  scored frames where the tracker gave its own mask.

Returned metrics (flat floats): ``jf_mean`` (primary: (J-mean + F-mean) / 2), ``j_mean``, ``j_recall``, ``j_decay``,
``f_mean``, ``f_recall``, ``f_decay``, ``j_mean_box``, ``mask_frames``, ``frames`` (scored frames), ``sequences``
(sequences with a scored frame), ``fps`` (frames that ran the tracker, initialisation included, divided by the seconds
spent in ``init``/``update``). Each statistic is computed per sequence and averaged over sequences, each weighing the
same (DAVIS 2017).

Written when a result directory is known (``result_dir``, or ``<run dir>/tracking_results`` on the fly; nothing
offline without ``result_dir``): ``RESULT_DIR/TRACKER_NAME/per_sequence.csv`` and ``results.json`` (overall and
per-sequence numbers), and with ``save_masks`` the predicted masks as PNGs in DAVIS's result layout,
``masks/<seq>/<frame>.png`` holding the object id where the object is predicted.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from pydantic import Field

from data import mask_sequences
from engine.errors import UserError
from engine.sections import PositiveInt, Section
from evaluate.davis_metrics import box_mask, boundary_f, db_statistics, jaccard, mask_box
from evaluate.tracking_run import evenly_spread, tracker_result_dir, tracking_data_dir
from evaluate.vot_evaluate import sequence_from

log = logging.getLogger(__name__)

PRIMARY = "jf_mean"
SEQUENCE_COLUMNS = ("frames", "j_mean", "j_recall", "j_decay", "f_mean", "f_recall", "f_decay", "j_mean_box",
                    "mask_frames")


class DavisOptions(Section):
    """davis_evaluate's options: the same keys on the fly (``evaluation_params``) and offline (``eval_params.json``).
    The keys it shares with got10k_evaluate and vot_evaluate have the same types and defaults."""

    subset: str = Field("val", description="DAVIS: the ImageSets list (val, train); YouTube-VOS: the subset folder "
                        "under data_dir (train, valid).")
    result_dir: Optional[str] = Field(None, description="Where per_sequence.csv, results.json and (save_masks) the "
                                      "masks go, under RESULT_DIR/TRACKER_NAME. null = <run dir>/tracking_results on "
                                      "the fly, nothing written offline.")
    tracker_name: Optional[str] = Field(None, description="Folder name of this tracker's results; null = "
                                        "step_<global step> on the fly, the model file's name offline.")
    max_sequences: Optional[PositiveInt] = Field(None, description="Evaluate at most this many sequences, evenly "
                                                 "spread over the list (null = all). For quick on-the-fly numbers; "
                                                 "a bounded run is not the benchmark number.")
    max_frames: Optional[PositiveInt] = Field(None, description="Run at most the first max_frames frames of each "
                                              "sequence (null = all); scores then cover those frames.")
    save_masks: bool = Field(False, description="Also write the predicted masks as PNGs (DAVIS result layout: "
                             "masks/<seq>/<frame>.png) into the result directory.")


OPTIONS = DavisOptions


# --------------------------------------------------------------------------------------------------------------------
# Data


def eval_data_dir(params) -> Path:
    return tracking_data_dir(params, "davis_evaluate", "a DAVIS root with JPEGImages/, Annotations/ and ImageSets/, "
                             "or a YouTube-VOS root")


def open_eval_set(params):
    """The mask SequenceSet an evaluation reads: YouTube-VOS when ``data_dir`` is a YouTube-VOS root or subset folder
    (meta.json and JPEGImages/) and not a DAVIS root, else DAVIS."""
    root, subset = eval_data_dir(params), params.evaluation_params.subset
    if not mask_sequences.is_davis_root(root) and mask_sequences.is_youtube_vos_root(root):
        return mask_sequences.open_youtube_vos(root, subset)
    return mask_sequences.open_davis(root, subset)


def check_inputs(params) -> None:
    """Before training: the evaluation data is a mask dataset (data the run generates itself is checked when it
    exists)."""
    if params.evaluation_params.data_dir is None and getattr(params, "synthetic_data", None) is not None:
        return
    selected(open_eval_set(params), params.evaluation_params)


def annotated_frames(sequence) -> list[int]:
    """Indices of the frames with a ground-truth mask."""
    masks = getattr(sequence, "masks", None)
    if masks is None:
        raise UserError(f"{sequence.where or sequence.name}: no segmentation masks (davis_evaluate needs mask "
                        "sequences: DAVIS or YouTube-VOS)")
    return [i for i, key in enumerate(masks) if key is not None]


def selected(sequence_set, options) -> list:
    sequences = list(sequence_set.sequences)
    if not sequences:
        raise UserError(f"{sequence_set.description}: no sequences to evaluate")
    if not any(len(annotated_frames(s)) > 1 for s in sequences):
        raise UserError(f"{sequence_set.description}: no sequence has an annotated frame after its first one; "
                        "nothing can be scored (a subset whose masks are withheld is scored by its server only)")
    sequences = evenly_spread(sequences, options.max_sequences)
    return sequences


# --------------------------------------------------------------------------------------------------------------------
# Running


@dataclasses.dataclass
class SequenceScores:
    name: str
    frame_indices: list = dataclasses.field(default_factory=list)
    j: list = dataclasses.field(default_factory=list)
    f: list = dataclasses.field(default_factory=list)
    j_box: list = dataclasses.field(default_factory=list)
    mask_frames: int = 0
    seconds: float = 0.0
    timed_frames: int = 0

    def row(self) -> dict[str, float]:
        j_mean, j_recall, j_decay = db_statistics(self.j)
        f_mean, f_recall, f_decay = db_statistics(self.f)
        return {"frames": float(len(self.j)), "j_mean": j_mean, "j_recall": j_recall, "j_decay": j_decay,
                "f_mean": f_mean, "f_recall": f_recall, "f_decay": f_decay,
                "j_mean_box": db_statistics(self.j_box)[0], "mask_frames": float(self.mask_frames)}


def predicted_mask(tracker, box: np.ndarray, height: int, width: int) -> tuple[np.ndarray, bool]:
    """(mask, whether it is the tracker's own): ``tracker.last.mask`` when given, else the filled box."""
    mask = getattr(getattr(tracker, "last", None), "mask", None)
    if mask is None:
        return box_mask(box, height, width), False
    mask = np.asarray(mask)
    if mask.shape != (height, width):
        raise UserError(f"tracker {getattr(tracker, 'name', type(tracker).__name__)!r} returned a mask of shape "
                        f"{mask.shape} for a {height}×{width} frame")
    return mask.astype(bool), True


def run_sequence(make_tracker: Callable, sequence_set, sequence, max_frames: Optional[int] = None,
                 keep_masks: bool = False) -> tuple[SequenceScores, dict[int, np.ndarray]]:
    """Track one sequence and score its annotated frames; also the predicted masks by frame when `keep_masks`."""
    count = len(sequence) if max_frames is None else min(len(sequence), max_frames)
    annotated = [i for i in annotated_frames(sequence) if i < count]
    scores, kept = SequenceScores(sequence.name), {}
    start, first_mask = None, None
    for i in annotated:
        truth = np.asarray(sequence_set.mask(sequence, i), dtype=bool)
        if truth.any():
            start, first_mask = i, truth
            break
    if start is None:
        return scores, kept
    tracker = make_tracker(sequence_from(sequence, start))
    frame = sequence_set.frame(sequence, start)
    began = time.perf_counter()
    tracker.init(frame, mask_box(first_mask))
    scores.seconds += time.perf_counter() - began
    scores.timed_frames += 1
    scored = set(annotated)
    for i in range(start + 1, count):
        frame = sequence_set.frame(sequence, i)
        began = time.perf_counter()
        box = tracker.update(frame)
        scores.seconds += time.perf_counter() - began
        scores.timed_frames += 1
        if i not in scored:
            continue
        height, width = frame.shape[:2]
        truth = np.asarray(sequence_set.mask(sequence, i), dtype=bool)
        if truth.shape != (height, width):
            raise UserError(f"{sequence.where or sequence.name}: the mask of frame {i} is {truth.shape[1]}×"
                            f"{truth.shape[0]}, the frame {width}×{height}")
        prediction, own = predicted_mask(tracker, box, height, width)
        scores.frame_indices.append(i)
        j = jaccard(prediction, truth)
        scores.j.append(j)
        scores.f.append(boundary_f(prediction, truth))
        scores.j_box.append(jaccard(box_mask(box, height, width), truth) if own else j)
        scores.mask_frames += int(own)
        if keep_masks:
            kept[i] = prediction
    return scores, kept


# --------------------------------------------------------------------------------------------------------------------
# Scoring and the evaluator


def summarize(results: list[SequenceScores]) -> dict[str, float]:
    """Overall metrics: each statistic averaged over the sequences that have a scored frame."""
    rows = [r.row() for r in results if r.j]
    metrics: dict[str, float] = {}
    for key in ("j_mean", "j_recall", "j_decay", "f_mean", "f_recall", "f_decay", "j_mean_box"):
        values = np.array([row[key] for row in rows], dtype=np.float64)
        values = values[~np.isnan(values)]
        metrics[key] = float(values.mean()) if len(values) else float("nan")
    metrics = {"jf_mean": (metrics["j_mean"] + metrics["f_mean"]) / 2, **metrics}
    seconds = sum(r.seconds for r in results)
    timed = sum(r.timed_frames for r in results)
    metrics.update(mask_frames=float(sum(r.mask_frames for r in results)),
                   frames=float(sum(len(r.j) for r in results)), sequences=float(len(rows)),
                   fps=timed / seconds if seconds > 0 else float("nan"))
    return metrics


def sequence_table(results: list[SequenceScores]) -> str:
    if not results:
        return "(no sequences)"
    width = max(8, max(len(r.name) for r in results))
    lines = ["sequence".ljust(width) + "".join(f"  {c:>10}" for c in SEQUENCE_COLUMNS)]
    for r in results:
        row = r.row()
        cells = [str(int(row[c])) if c in ("frames", "mask_frames") else f"{row[c]:.4f}" for c in SEQUENCE_COLUMNS]
        lines.append(r.name.ljust(width) + "".join(f"  {cell:>10}" for cell in cells))
    return "\n".join(lines)


def write_results(out: Path, results: list[SequenceScores], metrics: dict[str, float]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "per_sequence.csv", "w", newline="", encoding="utf-8") as file:
        table = csv.writer(file)
        table.writerow(("sequence", *SEQUENCE_COLUMNS))
        for r in results:
            row = r.row()
            table.writerow((r.name, *(row[c] for c in SEQUENCE_COLUMNS)))
    per_sequence = {r.name: {**r.row(), "frame_indices": r.frame_indices, "j": r.j, "f": r.f, "j_box": r.j_box}
                    for r in results}
    document = {"overall": metrics, "per_sequence": per_sequence}
    (out / "results.json").write_text(json.dumps(document, indent=2, allow_nan=True) + "\n", encoding="utf-8")


def write_masks(out: Path, sequence, masks: dict[int, np.ndarray]) -> None:
    from PIL import Image

    folder = out / "masks" / sequence.name
    folder.mkdir(parents=True, exist_ok=True)
    value = int(getattr(sequence, "object_id", None) or 1)
    for i, mask in masks.items():
        Image.fromarray(mask.astype(np.uint8) * value, mode="L").save(folder / f"{Path(sequence.frames[i]).stem}.png")


def run_eval(params, model: Callable, device=None, writer=None, global_step: int = 0, run_dir: Optional[str] = None,
             model_file: Optional[str] = None, sequence_set=None, **context) -> tuple[dict[str, float], str]:
    """Run the tracker factory `model` over the mask sequences; ``(metrics, "jf_mean")``. `sequence_set`
    (programmatic use): evaluate this SequenceSet instead of reading ``data_dir``."""
    ev = params.evaluation_params
    if sequence_set is None:
        sequence_set = open_eval_set(params)
    sequences = selected(sequence_set, ev)
    out = tracker_result_dir(ev, global_step, run_dir, model_file, "runs/davis_results") if (ev.result_dir or run_dir) else None
    results = []
    for number, sequence in enumerate(sequences, 1):
        scores, masks = run_sequence(model, sequence_set, sequence, ev.max_frames, keep_masks=ev.save_masks)
        if not scores.j:
            log.warning("DAVIS %s: no scored frame (the object is never visible, or no annotated frame follows its "
                        "first)", sequence.name)
        if out is not None and masks:
            write_masks(out, sequence, masks)
        results.append(scores)
        log.debug("DAVIS %s (%d/%d): %d scored frames", sequence.name, number, len(sequences), len(scores.j))
    metrics = summarize(results)
    table = sequence_table(results)
    if out is not None:
        write_results(out, results, metrics)
    log.info("DAVIS results%s\n%s\nJ&F %.4f  J %.4f  F %.4f  J(filled box) %.4f", f" in {out}" if out else "",
             table, metrics["jf_mean"], metrics["j_mean"], metrics["f_mean"], metrics["j_mean_box"])
    if writer is not None:
        writer.add_text("eval/per_sequence", "    " + table.replace("\n", "\n    "), global_step)
    return metrics, PRIMARY
