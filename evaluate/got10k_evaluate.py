"""Single-object tracking evaluation with the official GOT-10k numbers (on the fly, from evaluator.py, or as a
command that scores result folders made by any tracker).

A tracker is run over every sequence of ``evaluation_params.data_dir`` / ``subset`` (first frame's box given), its
boxes and per-frame times are written in the GOT-10k toolkit's result layout, and the folder is scored exactly as
``got10k==0.1.3``'s ``ExperimentGOT10k.report`` does (definitions in `evaluate.tracking_results`): ``ao`` (average
overlap, IoUs pooled over all scored frames of all sequences), ``sr50`` / ``sr75`` (fraction of frames with IoU
strictly above 0.5 / 0.75), ``fps`` (mean of per-frame 1/t, init frame included). The primary metric is ``ao``.

On data in the LaSOT/OTB layout the same run is scored with the one-pass evaluation (OPE) metrics of the toolkit's
OTB/LaSOT experiments instead: ``success_score`` (area under the success curve), ``success_rate`` (IoU > 0.5),
``precision_score`` (centre error ≤ 20 px), for LaSOT ``normalized_precision_score``, and ``fps``; primary
``success_score``. Definitions: `evaluate.tracking_metrics`.

What the evaluator receives as its "model" is a tracker factory (`trackers.base.TrackerFactory`): called with a
sequence, it returns a fresh tracker. Tasks hand one over through their ``evaluator_input``; evaluator.py also builds
one for the reference trackers (``model_path: "reference:first_box"``).

Command (any tracker's results; prints the per-sequence table, then one JSON line)::

    python -m evaluate.got10k_evaluate --data ROOT --subset val --results RESULT_DIR/TRACKER_NAME
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from pydantic import Field

from data.sequences import Sequence, SequenceSet, open_sequences
from engine.errors import UserError, run_command
from engine.sections import NonNegInt, PositiveInt, Section
from evaluate.tracking_results import score_got10k, score_ope, write_got10k_result, write_ope_result
from evaluate.tracking_run import evenly_spread, track_frames, tracker_result_dir, tracking_data_dir
from evaluate.visualize import GREEN, RED, curve_image

log = logging.getLogger(__name__)


class Got10kOptions(Section):
    """got10k_evaluate's options: the same keys on the fly (``evaluation_params``) and offline
    (``eval_params.json``)."""

    subset: str = Field("val", description="GOT-10k subset folder under data_dir (val or train; the test subset's "
                        "boxes are withheld and only the online server scores it). For a LaSOT root: train or test "
                        "selects training_set.txt / testing_set.txt; ignored for OTB.")
    result_dir: Optional[str] = Field(None, description="Where results are written, as "
                                      "RESULT_DIR/TRACKER_NAME/<seq>/<seq>_001.txt and <seq>_time.txt (the toolkit's "
                                      "layout; OPE data: RESULT_DIR/TRACKER_NAME/<seq>.txt). null = "
                                      "<run dir>/tracking_results on the fly; required offline.")
    tracker_name: Optional[str] = Field(None, description="Folder name of this tracker's results; null = "
                                        "step_<global step> on the fly, the model file's name offline.")
    max_sequences: Optional[PositiveInt] = Field(None, description="Evaluate at most this many sequences, evenly "
                                                 "spread over the list (null = all). For quick on-the-fly numbers; "
                                                 "a bounded run is not the benchmark number.")
    max_frames: Optional[PositiveInt] = Field(None, description="Track at most the first max_frames frames of each "
                                              "sequence (null = all); results and scores then cover those frames.")
    visualize_sequences: NonNegInt = Field(3, description="Sequences drawn in TensorBoard as a strip of frames "
                                           "with the true (green) and tracked (red) boxes; 0 = none.")


OPTIONS = Got10kOptions
PRIMARY = {"got10k": "ao", "ope": "success_score"}
COUNT_COLUMNS = ("frames", "length", "sequences")


def eval_data_dir(params) -> Path:
    return tracking_data_dir(params, "got10k_evaluate", "a GOT-10k root with a val/ subset or a LaSOT/OTB-style root")


def check_inputs(params) -> None:
    """Before training: the evaluation data is a tracking dataset with annotations (data that the run generates
    itself is checked when it exists)."""
    if params.evaluation_params.data_dir is None and getattr(params, "synthetic_data", None) is not None:
        return
    selected(open_sequences(eval_data_dir(params), params.evaluation_params.subset), params.evaluation_params)


def selected(sequence_set: SequenceSet, options: Got10kOptions) -> list[Sequence]:
    """The sequences (and frames) an evaluation with `options` covers; refuses sequences without annotations."""
    sequences = list(sequence_set.sequences)
    unannotated = [s for s in sequences if not s.fully_annotated]
    if unannotated:
        raise UserError(f"{unannotated[0].where}: only the first frame is annotated ({len(unannotated)} such "
                        f"sequences in {sequence_set.description}); scoring needs every frame's box (the GOT-10k "
                        "test subset is scored by the online server only: use subset 'val')")
    sequences = evenly_spread(sequences, options.max_sequences)
    if options.max_frames is not None:
        sequences = [_first_frames(s, options.max_frames) for s in sequences]
    return sequences


def _first_frames(sequence: Sequence, count: int) -> Sequence:
    if len(sequence) <= count:
        return sequence
    cut = slice(0, count)
    return dataclasses.replace(sequence, frames=sequence.frames[cut], boxes=sequence.boxes[cut],
                               visible=sequence.visible[cut],
                               cover=None if sequence.cover is None else sequence.cover[cut])


def run_tracker(make_tracker: Callable, sequence_set: SequenceSet, sequences: list[Sequence],
                tracker_dir: Path) -> dict[str, np.ndarray]:
    """Track every sequence and write its results; returns the boxes by sequence name."""
    write = write_got10k_result if sequence_set.layout == "got10k" else write_ope_result
    tracked = {}
    for number, sequence in enumerate(sequences, 1):
        frames = (sequence_set.frame(sequence, i) for i in range(len(sequence)))
        boxes, seconds = track_frames(make_tracker(sequence), frames, sequence.boxes[0])
        write(tracker_dir, sequence.name, boxes, seconds)
        tracked[sequence.name] = boxes
        log.debug("tracked %s (%d/%d): %d frames", sequence.name, number, len(sequences), len(sequence))
    return tracked


def score(sequence_set: SequenceSet, sequences: list[Sequence], tracker_dir: Path) -> tuple[dict, str]:
    """(report, primary metric) of a result folder: the GOT-10k protocol, or OPE by the data's layout (LaSOT's rules
    where sequences sit in class folders, OTB's otherwise)."""
    if sequence_set.layout == "got10k":
        return score_got10k(sequences, tracker_dir), PRIMARY["got10k"]
    protocol = "lasot" if all("class" in s.meta for s in sequences) else "otb"
    return score_ope(sequences, tracker_dir, protocol=protocol), PRIMARY["ope"]


def success_curve(report: dict) -> list[float]:
    overall = report["overall"]
    return overall["succ_curve"] if "succ_curve" in overall else overall["success_curve"]


def headline(report: dict) -> dict[str, float]:
    """The flat metrics of a report (no curves)."""
    return {k: float(v) for k, v in report["overall"].items() if np.ndim(v) == 0}


def sequence_table(report: dict) -> str:
    rows = report["per_sequence"]
    if not rows:
        return "(no sequences)"
    columns = [key for key, value in next(iter(rows.values())).items() if np.ndim(value) == 0]
    width = max(len(name) for name in rows)
    lines = ["sequence".ljust(width) + "".join(f"  {c:>12}" for c in columns)]
    for name, values in rows.items():
        lines.append(name.ljust(width) + "".join(f"  {_cell(c, values[c]):>12}" for c in columns))
    return "\n".join(lines)


def _cell(column: str, value) -> str:
    return str(int(value)) if column in COUNT_COLUMNS else f"{float(value):.6f}"


def run_eval(params, model: Callable, device=None, writer=None, global_step: int = 0,
             run_dir: Optional[str] = None, model_file: Optional[str] = None) -> tuple[dict[str, float], str]:
    ev = params.evaluation_params
    sequence_set = open_sequences(eval_data_dir(params), ev.subset)
    sequences = selected(sequence_set, ev)
    tracker_dir = tracker_result_dir(ev, global_step, run_dir, model_file, "runs/got10k_results")
    tracked = run_tracker(model, sequence_set, sequences, tracker_dir)
    report, primary = score(sequence_set, sequences, tracker_dir)
    log.info("%s results in %s\n%s", "GOT-10k" if sequence_set.layout == "got10k" else "OPE", tracker_dir,
             sequence_table(report))
    if writer is not None:
        writer.add_image("eval/success_curve", curve_image(success_curve(report), "IoU 0", "IoU 1"), global_step,
                         dataformats="HWC")
        if ev.visualize_sequences:
            strip = frame_strips(sequence_set, sequences[:ev.visualize_sequences], tracked)
            writer.add_image("eval/tracked_frames", strip, global_step, dataformats="HWC")
        writer.add_text("eval/per_sequence", "    " + sequence_table(report).replace("\n", "\n    "), global_step)
    return headline(report), primary


def frame_strips(sequence_set: SequenceSet, sequences: list[Sequence], tracked: dict[str, np.ndarray],
                 frames_per_row: int = 5, height: int = 120) -> np.ndarray:
    """One row per sequence: evenly spaced frames with the true (green) and tracked (red) boxes."""
    from PIL import Image, ImageDraw

    rows = []
    for sequence in sequences:
        picks = np.linspace(0, len(sequence) - 1, min(frames_per_row, len(sequence))).round().astype(int)
        tiles = []
        for i in picks:
            image = Image.fromarray(sequence_set.frame(sequence, int(i)))
            scale = height / image.height
            image = image.resize((max(1, round(image.width * scale)), height))
            draw = ImageDraw.Draw(image)
            for box, colour in ((sequence.boxes[i], GREEN), (tracked[sequence.name][i], RED)):
                x, y, w, h = (float(v) * scale for v in box)
                draw.rectangle([x, y, x + w, y + h], outline=colour, width=2)
            tiles.append(np.asarray(image))
        rows.append(np.concatenate([np.pad(t, ((0, 0), (0, 4), (0, 0)), constant_values=255) for t in tiles], axis=1))
    width = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluate.got10k_evaluate",
                                     description="Score a tracker's result folder with the official GOT-10k "
                                     "definitions (or OPE metrics for a LaSOT/OTB-style root). Prints the per-sequence "
                                     "table, then the overall metrics as one JSON object on the last line.")
    parser.add_argument("--data", required=True, help="dataset root (GOT-10k root, LaSOT/OTB-style root, or a pack)")
    parser.add_argument("--subset", default="val", help="GOT-10k subset (default: val)")
    parser.add_argument("--results", required=True, help="RESULT_DIR/TRACKER_NAME: one tracker's result folder")
    args = parser.parse_args(argv)
    return run_command(lambda: _score_command(args.data, args.subset, Path(args.results)))


def _score_command(data: str, subset: str, results: Path) -> int:
    if not results.is_dir():
        raise UserError(f"--results: {results} is not a directory (expected RESULT_DIR/TRACKER_NAME holding one "
                        "folder per sequence)")
    sequence_set = open_sequences(data, subset)
    sequences = selected(sequence_set, Got10kOptions(subset=subset))
    report, primary = score(sequence_set, sequences, results)
    print(sequence_table(report))
    print(json.dumps({**headline(report), "primary": primary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
