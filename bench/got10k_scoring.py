"""Speed of evaluate.tracking_results.score_got10k against the official toolkit's report, on the same result folder.

``python bench/got10k_scoring.py [--sequences 180 --min-frames 50 --max-frames 150 --work DIR --repeats 5]``

Builds (or, with ``--work``, reuses) a synthetic GOT-10k val split of that size with ``data.synthetic`` (real layout:
JPEG frames, groundtruth.txt, labels, meta_info.ini; 128x96 frames, since scoring never decodes them), writes one
seeded random result folder (one repetition, boxes around the ground truth with some outside the image, times with a
NaN and a zero), then times in this process, after one warm-up each (files in the page cache):

* ours: ``score_got10k(open_sequences(root, 'val'), tracker_dir)``: reading the annotations, labels, meta_info.ini,
  result and time files included (``open_sequences`` alone is timed too: it is most of it);
* the toolkit (``got10k==0.1.3``): ``ExperimentGOT10k(root, 'val', ...).report([name])``, which also writes
  performance.json and a success plot (matplotlib, Agg); and the same with its plot switched off, for a fairer ratio.

Medians of ``--repeats`` runs. The numbers must agree to 1e-9 (overall ao/sr/fps/curve and per sequence). Ends with
one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.sequences import open_sequences  # noqa: E402
from data.synthetic import Got10kSpec, ensure_got10k  # noqa: E402
from evaluate.tracking_results import score_got10k, write_got10k_result  # noqa: E402

NAME, SEED = "Bench", 0


def write_results(root: Path, tracker_dir: Path) -> None:
    """One random repetition per sequence: noisy boxes, every 10th box partly outside the image, one NaN and one
    zero time per sequence."""
    rng = np.random.default_rng(SEED)
    shutil.rmtree(tracker_dir, ignore_errors=True)
    for seq in open_sequences(root, "val").sequences:
        boxes = seq.boxes * (1 + rng.normal(0, 0.1, seq.boxes.shape)) + rng.normal(0, 4, seq.boxes.shape)
        boxes[::10, :2] = np.array(seq.resolution) - 10
        times = rng.uniform(0.005, 0.05, len(seq))
        times[rng.integers(len(seq), size=2)] = [np.nan, 0.0]
        write_got10k_result(tracker_dir, seq.name, boxes, times)


def timed(function, repeats: int) -> tuple[float, object]:
    """(median seconds over `repeats` calls after one warm-up, the last result)."""
    result = function()
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        walls.append(time.perf_counter() - start)
    return float(np.median(walls)), result


def max_difference(ours: dict, theirs: dict) -> float:
    o, t = ours["overall"], theirs["overall"]
    pairs = [(o["ao"], t["ao"]), (o["sr50"], t["sr"]), (o["fps"], t["speed_fps"])]
    pairs += zip(o["succ_curve"], t["succ_curve"])
    for name, seq in ours["per_sequence"].items():
        ref = theirs["seq_wise"][name]
        pairs += [(seq["ao"], ref["ao"]), (seq["sr50"], ref["sr"]), (seq["fps"], ref["speed_fps"])]
    diffs = [0.0 if np.isnan(a) and np.isnan(b) else abs(a - b) for a, b in pairs]
    return float(max(diffs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=180)
    parser.add_argument("--min-frames", type=int, default=50)
    parser.add_argument("--max-frames", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, help="folder to build the data in and reuse (default: a temporary one)")
    args = parser.parse_args()
    from got10k.experiments import ExperimentGOT10k

    work = args.work or Path(tempfile.mkdtemp(prefix="got10k_scoring."))
    try:
        spec = Got10kSpec(num_train_seqs=1, num_val_seqs=args.sequences, min_frames=args.min_frames,
                          max_frames=args.max_frames, img_w=128, img_h=96, seed=SEED)
        built = ensure_got10k(work / "got10k", spec)
        root, results = work / "got10k", work / "results"
        tracker_dir = results / "GOT-10k" / NAME
        write_results(root, tracker_dir)

        def toolkit():
            with contextlib.redirect_stdout(io.StringIO()):
                return ExperimentGOT10k(str(root), "val", str(results), str(work / "reports")).report([NAME])[NAME]

        def toolkit_without_plot():
            with _no_plot(ExperimentGOT10k):
                return toolkit()

        ours_s, ours = timed(lambda: score_got10k(open_sequences(root, "val"), tracker_dir), args.repeats)
        reading_s, _ = timed(lambda: open_sequences(root, "val"), args.repeats)
        toolkit_s, theirs = timed(toolkit, args.repeats)
        noplot_s, _ = timed(toolkit_without_plot, args.repeats)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    diff = max_difference(ours, theirs)
    frames = built["counts"]["val_frames"]
    print(f"data: {args.sequences} sequences, {frames} frames ({'generated' if built['generated'] else 'reused'}, "
          f"{built['seconds']:.1f} s); AO {ours['overall']['ao']:.6f}, SR@0.5 {ours['overall']['sr50']:.6f}, "
          f"SR@0.75 {ours['overall']['sr75']:.6f}")
    print(f"{'':32}{'median s':>10}{'ours faster':>13}")
    print(f"{'ours (score_got10k)':32}{ours_s:>10.4f}{'':>13}")
    print(f"{'  of which open_sequences':32}{reading_s:>10.4f}{'':>13}")
    print(f"{'toolkit report':32}{toolkit_s:>10.4f}{toolkit_s / ours_s:>12.1f}x")
    print(f"{'toolkit report, plot off':32}{noplot_s:>10.4f}{noplot_s / ours_s:>12.1f}x")
    print(f"max |ours - toolkit| {diff:.1e}")
    if not diff <= 1e-9:
        raise SystemExit("results disagree")
    print(json.dumps({"bench": "got10k_scoring", "ours_s": round(ours_s, 5), "toolkit_s": round(toolkit_s, 5),
                      "ratio": round(toolkit_s / ours_s, 1), "ours_open_sequences_s": round(reading_s, 5),
                      "toolkit_noplot_s": round(noplot_s, 5),
                      "ratio_noplot": round(noplot_s / ours_s, 1), "sequences": args.sequences, "frames": frames,
                      "max_abs_diff": diff, "repeats": args.repeats}))


@contextlib.contextmanager
def _no_plot(experiment_class):
    original = experiment_class.plot_curves
    experiment_class.plot_curves = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        experiment_class.plot_curves = original


if __name__ == "__main__":
    main()
