"""Tracking metrics and result folders: the hand-computed GOT-10k example, parity with the official toolkit
(got10k==0.1.3, skipped when it is not installed), refusals and the writers."""

from __future__ import annotations

import os
import shutil
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.sequences import open_sequences
from data.synthetic import Got10kSpec, generate_got10k
from engine.errors import UserError
from evaluate.tracking_metrics import (GOT10K_IOU_THRESHOLDS, center_error, fraction_above, fraction_at_most,
                                       got10k_summary, normalized_center_error, ope_summary, rect_iou)
from evaluate.tracking_results import (ResultError, score_got10k, score_ope, write_got10k_result,
                                       write_ope_result)

TOL = 1e-9
SEQ1, SEQ2 = "GOT-10k_Val_000001", "GOT-10k_Val_000002"


# --------------------------------------------------------------------------------------------------------------------
# Folder builders


def _frames(folder: Path, count: int, size: tuple[int, int], pattern: str = "{:08d}.jpg") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", size, (40 * i % 256, 90, 160)).save(folder / pattern.format(i + 1), quality=50)


def _lines(rows) -> str:
    return "".join(",".join(f"{v:g}" for v in np.atleast_1d(row)) + "\n" for row in rows)


def write_got10k_sequence(split: Path, name: str, resolution, gt, cover, absence=None, cut=None,
                          meta: str | None = None) -> None:
    """One GOT-10k sequence folder: real JPEG frames, groundtruth.txt, the three labels and meta_info.ini."""
    folder = split / name
    _frames(folder, len(gt), resolution)
    (folder / "groundtruth.txt").write_text(_lines(gt))
    for label, values in (("cover", cover), ("absence", absence), ("cut_by_image", cut)):
        values = [0] * len(gt) if values is None else values
        (folder / f"{label}.label").write_text("".join(f"{v}\n" for v in values))
    default = f"[METAINFO]\nobject_class: box\nmotion_class: still\nresolution: ({resolution[0]}, {resolution[1]})\n"
    (folder / "meta_info.ini").write_text(default if meta is None else meta)


# The §4.7 example (shared/reference/trackers-and-got10k.md): two sequences, results written by hand.
HAND_GT1 = [[10, 10, 20, 20], [12, 10, 20, 20], [14, 10, 20, 20], [30, 30, 10, 10], [85, 65, 10, 10],
            [20, 10, 20, 10]]
HAND_PRED1 = [[10, 10, 20, 20], [12, 10, 20, 20], [14, 10, 20, 10], [0, 0, 5, 5], [85, 65, 30, 30],
              [25, 10, 20, 10]]
HAND_TIMES1 = [0.5, 0.01, 0.02, 0.04, 0.05, 0.1]
HAND_GT2 = [[5, 5, 10, 10]] * 4
HAND_PRED2 = [[5, 5, 10, 10], [5, 5, 10, 10], [7, 5, 10, 10], [30, 30, 10, 10]]
HAND_TIMES2 = [0.25, 0.02, 0.02, 0.02]


@pytest.fixture
def hand(tmp_path) -> types.SimpleNamespace:
    """<tmp>/val (2 sequences, list.txt) and the tracker folder <tmp>/results/GOT-10k/Hand."""
    split = tmp_path / "val"
    write_got10k_sequence(split, SEQ1, (100, 80), HAND_GT1, cover=[8, 8, 8, 0, 8, 8], absence=[0, 0, 0, 1, 0, 0],
                          cut=[0, 0, 0, 0, 1, 0])
    write_got10k_sequence(split, SEQ2, (50, 50), HAND_GT2, cover=[8, 8, 8, 8])
    (split / "list.txt").write_text(f"{SEQ1}\n{SEQ2}\n")
    tracker = tmp_path / "results" / "GOT-10k" / "Hand"
    write_got10k_result(tracker, SEQ1, HAND_PRED1, HAND_TIMES1)
    write_got10k_result(tracker, SEQ2, HAND_PRED2, HAND_TIMES2)
    return types.SimpleNamespace(root=tmp_path, split=split, tracker=tracker, results=tmp_path / "results")


# --------------------------------------------------------------------------------------------------------------------
# The hand example


def test_hand_example_matches_the_hand_computation(hand):
    report = score_got10k(open_sequences(hand.root, "val"), hand.tracker)
    overall, seq1, seq2 = report["overall"], report["per_sequence"][SEQ1], report["per_sequence"][SEQ2]
    # scored IoUs: seq1 frames 1, 2, 4, 5 (frame 3 has cover 0); seq2 frames 1..3
    ious = [1.0, 0.5, 100 / 225, 150 / 250, 1.0, 80 / 120, 0.0]
    assert sum(ious) == pytest.approx(4.2111111, abs=1e-6)
    assert overall["ao"] == pytest.approx(sum(ious) / 7, abs=1e-12)
    assert overall["ao"] == pytest.approx(0.601587, abs=1e-6)
    assert overall["ao"] != pytest.approx((seq1["ao"] + seq2["ao"]) / 2, abs=1e-3)   # pooled, not per-sequence mean
    assert overall["sr50"] == 4 / 7 and overall["sr75"] == 2 / 7
    assert overall["fps"] == pytest.approx(36.1, abs=1e-12)                            # (207 + 154) / 10
    assert overall["frames"] == 7 and overall["sequences"] == 2
    assert overall["sr75"] == overall["succ_curve"][75] and overall["sr50"] == overall["succ_curve"][50]
    assert overall["succ_curve"][0] == 6 / 7 and overall["succ_curve"][100] == 0.0
    assert seq1 == {"ao": pytest.approx((1 + 0.5 + 100 / 225 + 0.6) / 4, abs=1e-12), "sr50": 0.5, "sr75": 0.25,
                    "fps": pytest.approx(34.5, abs=1e-12), "frames": 4, "length": 5}
    assert seq2 == {"ao": pytest.approx((1 + 80 / 120) / 3, abs=1e-12), "sr50": 2 / 3, "sr75": 1 / 3,
                    "fps": pytest.approx(38.5, abs=1e-12), "frames": 3, "length": 3}


def test_hand_example_quirks(hand):
    gt, pred = np.array(HAND_GT1, float), np.array(HAND_PRED1, float)
    unbounded, bounded = rect_iou(pred[1:], gt[1:]), rect_iou(pred[1:], gt[1:], bound=(100, 80))
    assert unbounded[1] == 0.5 and got10k_summary([0.5], [])["sr50"] == 0.0            # strict >
    assert unbounded[3] == pytest.approx(100 / 900, abs=1e-12)                          # 0.111 …
    assert bounded[3] == pytest.approx(100 / 225, abs=1e-12)                            # … 0.444 once clipped
    # the cover-0 frame (3) is excluded: another prediction there changes nothing
    before = score_got10k(open_sequences(hand.root, "val"), hand.tracker)
    write_got10k_result(hand.tracker, SEQ1, np.vstack([pred[:3], gt[3:4], pred[4:]]), HAND_TIMES1)
    assert score_got10k(open_sequences(hand.root, "val"), hand.tracker) == before


def test_rect_iou_does_not_mutate_its_inputs():
    a = np.array([[85.0, 65.0, 30.0, 30.0], [-5.0, -5.0, 20.0, 20.0]])
    b = np.array([[85.0, 65.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    a0, b0 = a.copy(), b.copy()
    rect_iou(a, b, bound=(100, 80))
    assert np.array_equal(a, a0) and np.array_equal(b, b0)


def test_curves_and_fps_definitions():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.random(500), [0.0, 0.5, 0.75, 1.0, np.nan]])
    assert np.array_equal(fraction_above(values, GOT10K_IOU_THRESHOLDS),
                          np.mean(values[:, None] > GOT10K_IOU_THRESHOLDS[None], axis=0))
    pixels = np.arange(51.0)
    errors = np.concatenate([rng.random(300) * 60, [0.0, 20.0, np.nan]])
    assert np.array_equal(fraction_at_most(errors, pixels), np.mean(errors[:, None] <= pixels[None], axis=0))
    summary = got10k_summary(values, [[0.1, np.nan], [-1.0, 0.0], [0.5, np.inf]])
    assert summary["fps"] == pytest.approx((10 + 2 + 0) / 3)
    assert GOT10K_IOU_THRESHOLDS[75] == 0.75 and summary["sr75"] == summary["succ_curve"][75]
    assert got10k_summary([0.3], [np.nan])["fps"] == -1.0
    empty = got10k_summary([], [0.1])
    assert np.isnan(empty["ao"]) and np.isnan(empty["sr50"]) and empty["frames"] == 0


def test_center_error_convention():
    pred = np.array([[10.0, 10.0, 20.0, 20.0], [0.0, 0.0, 1.0, 1.0]])
    gt = np.array([[13.0, 14.0, 20.0, 20.0], [0.0, 0.0, 0.5, 4.0]])
    assert center_error(pred, gt)[0] == 5.0
    assert center_error(pred, gt)[1] == pytest.approx(np.hypot(0.25, 1.5))      # centres x + (w - 1) / 2
    assert normalized_center_error(pred, gt)[0] == pytest.approx(np.hypot(3 / 20, 4 / 20))
    assert normalized_center_error(pred, gt)[1] == pytest.approx(np.hypot(0.25 / 1, 1.5 / 4))   # width floored at 1


# --------------------------------------------------------------------------------------------------------------------
# Writers


def test_writers_produce_numpy_savetxt_bytes_atomically(tmp_path, monkeypatch):
    boxes = np.array([[1.23456, 2.0, 30.5, 40.25], [-3.0005, 0.0, 0.0, 1e4]])
    times = np.array([0.123456789, np.nan])
    box_file = write_got10k_result(tmp_path / "T", "s", boxes, times)
    np.savetxt(tmp_path / "want_boxes.txt", boxes, fmt="%.3f", delimiter=",")
    np.savetxt(tmp_path / "want_times.txt", times[:, None], fmt="%.8f", delimiter=",")
    assert box_file == tmp_path / "T" / "s" / "s_001.txt"
    assert box_file.read_bytes() == (tmp_path / "want_boxes.txt").read_bytes()
    assert (tmp_path / "T" / "s" / "s_time.txt").read_bytes() == (tmp_path / "want_times.txt").read_bytes()
    write_got10k_result(tmp_path / "T", "s", boxes, times * 2, repetition=2)
    np.savetxt(tmp_path / "want_times.txt", np.stack([times, times * 2], axis=1), fmt="%.8f", delimiter=",")
    assert (tmp_path / "T" / "s" / "s_time.txt").read_bytes() == (tmp_path / "want_times.txt").read_bytes()
    assert sorted(os.listdir(tmp_path / "T" / "s")) == ["s_001.txt", "s_002.txt", "s_time.txt"]

    write_ope_result(tmp_path / "O", "s", boxes, times)
    assert (tmp_path / "O" / "s.txt").read_bytes() == box_file.read_bytes()
    np.savetxt(tmp_path / "want_times.txt", times, fmt="%.8f")
    assert (tmp_path / "O" / "times" / "s_time.txt").read_bytes() == (tmp_path / "want_times.txt").read_bytes()

    def killed(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_got10k_result(tmp_path / "T", "s", boxes + 1, times)
    assert box_file.read_bytes() == (tmp_path / "O" / "s.txt").read_bytes()     # the old file, whole
    assert sorted(os.listdir(tmp_path / "T" / "s")) == ["s_001.txt", "s_002.txt", "s_time.txt"]


def test_writers_refuse_bad_input(tmp_path):
    with pytest.raises(ValueError, match="frame 1 is not finite"):
        write_got10k_result(tmp_path, "s", [[0, 0, 1, 1], [0, np.nan, 1, 1]], [0.1, 0.1])
    with pytest.raises(ValueError, match="not finite"):
        write_ope_result(tmp_path, "s", [[0, 0, 1, np.inf]], [0.1])
    with pytest.raises(ValueError, match="one time per frame"):
        write_got10k_result(tmp_path, "s", [[0, 0, 1, 1]], [0.1, 0.2])
    with pytest.raises(ValueError, match="earlier repetitions"):
        write_got10k_result(tmp_path, "t", [[0, 0, 1, 1]], [0.1], repetition=1)
        write_got10k_result(tmp_path, "t", [[0, 0, 1, 1]], [0.1], repetition=3)
    assert not list(tmp_path.glob("**/.*.tmp"))


# --------------------------------------------------------------------------------------------------------------------
# Refusals


def _refusal(hand, match: str) -> ResultError:
    with pytest.raises(ResultError, match=match) as info:
        score_got10k(open_sequences(hand.root, "val"), hand.tracker)
    assert isinstance(info.value, UserError)
    return info.value


def test_refuses_a_missing_result(hand):
    shutil.rmtree(hand.tracker / SEQ2)
    assert str(hand.tracker / SEQ2) in str(_refusal(hand, f"no result file for sequence {SEQ2}"))


@pytest.mark.parametrize("edit, match", [
    (lambda lines: lines[:-1], r"expected 4 rows x,y,w,h .* found 3 row\(s\) of 4"),
    (lambda lines: lines + ["1,2,3,4"], r"found 5 row\(s\)"),
    (lambda lines: [line + ",0" for line in lines], r"found 4 row\(s\) of 5 value\(s\)"),
    (lambda lines: lines[:2] + ["1,2,3"] + lines[3:], "cannot read"),
    (lambda lines: lines[:2] + ["1,abc,3,4"] + lines[3:], "cannot read"),
    (lambda lines: lines[:2] + ["nan,1,2,3"] + lines[3:], r"expected finite boxes, found \[nan, 1.0, 2.0, 3.0\] on "
                                                          "row 3"),
    (lambda lines: [], r"found 0 row"),
])
def test_refuses_bad_result_files(hand, edit, match):
    path = hand.tracker / SEQ2 / f"{SEQ2}_001.txt"
    path.write_text("".join(line + "\n" for line in edit(path.read_text().splitlines())))
    assert str(path) in str(_refusal(hand, match))


def test_refuses_a_bad_extra_repetition(hand):
    path = hand.tracker / SEQ1 / f"{SEQ1}_002.txt"
    path.write_text("1,2,3,4\n")
    assert str(path) in str(_refusal(hand, "expected 6 rows"))


def test_refuses_missing_or_short_time_files(hand):
    time_file = hand.tracker / SEQ1 / f"{SEQ1}_time.txt"
    lines = time_file.read_text().splitlines()
    time_file.write_text("\n".join(lines[:-1]) + "\n")
    assert str(time_file) in str(_refusal(hand, r"expected per-frame times .* found 5 row"))
    time_file.unlink()
    assert str(time_file) in str(_refusal(hand, "missing; expected per-frame times"))


def test_refuses_sequences_that_cannot_be_scored(hand):
    meta = hand.split / SEQ2 / "meta_info.ini"
    meta.write_text("[METAINFO]\nobject_class: box\n")
    assert str(meta) in str(_refusal(hand, "no 'resolution"))

    test_split = hand.root / "test" / "GOT-10k_Test_000001"            # the test subset: first box only
    _frames(test_split, 3, (40, 40))
    (test_split / "groundtruth.txt").write_text("1,2,3,4\n")
    (test_split.parent / "list.txt").write_text("GOT-10k_Test_000001\n")
    with pytest.raises(ResultError, match="1 annotated box.*for 3 frames") as info:
        score_got10k(open_sequences(hand.root, "test"), hand.tracker)
    assert str(test_split) in str(info.value)

    with pytest.raises(ResultError, match="tracker result folder not found"):
        score_got10k(open_sequences(hand.root, "val"), hand.root / "nowhere")


def test_all_cover_zero_sequence_adds_nothing(hand):
    (hand.split / SEQ2 / "cover.label").write_text("8\n0\n0\n0\n")
    report = score_got10k(open_sequences(hand.root, "val"), hand.tracker)
    seq2 = report["per_sequence"][SEQ2]
    assert np.isnan(seq2["ao"]) and np.isnan(seq2["sr50"]) and seq2["frames"] == 0 and seq2["length"] == 3
    assert report["overall"]["ao"] == report["per_sequence"][SEQ1]["ao"] and report["overall"]["frames"] == 4
    assert report["overall"]["fps"] == pytest.approx((207 + 154) / 10)                 # times still pooled
    (hand.split / SEQ1 / "cover.label").write_text("8\n0\n0\n0\n0\n0\n")
    _refusal(hand, "nothing to score")


# --------------------------------------------------------------------------------------------------------------------
# Parity with the official toolkit


@pytest.fixture(scope="module")
def toolkit():
    """got10k 0.1.3 (headless), with its report plots switched off (they do not affect the numbers)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MPLBACKEND", "Agg")
        experiments = pytest.importorskip("got10k.experiments")
        datasets = pytest.importorskip("got10k.datasets")
        for cls in (experiments.ExperimentGOT10k, experiments.ExperimentOTB):
            patch.setattr(cls, "plot_curves", lambda self, *args, **kwargs: None)
        yield types.SimpleNamespace(experiments=experiments, datasets=datasets)


def _toolkit_report(experiment, name: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)                # its mean of an empty sequence
        return experiment.report([name])[name]


def _close(ours: float, theirs: float) -> bool:
    return (np.isnan(ours) and np.isnan(theirs)) or abs(ours - theirs) <= TOL


def test_hand_example_equals_the_toolkit(hand, toolkit):
    theirs = _toolkit_report(toolkit.experiments.ExperimentGOT10k(
        str(hand.root), "val", str(hand.results), str(hand.root / "reports")), "Hand")["overall"]
    ours = score_got10k(open_sequences(hand.root, "val"), hand.tracker)["overall"]
    assert (ours["ao"], ours["sr50"], ours["fps"]) == (theirs["ao"], theirs["sr"], theirs["speed_fps"])
    assert ours["succ_curve"] == theirs["succ_curve"]


def test_box_measures_equal_the_toolkits_bit_for_bit(toolkit):
    metrics = pytest.importorskip("got10k.utils.metrics")
    rng = np.random.default_rng(1)
    a = np.round(rng.normal(40, 40, (2000, 4)), 1)
    b = np.round(rng.normal(40, 40, (2000, 4)), 1)
    a[::7] = b[::7]
    a[::11, 2:] = 0.0
    a[5], b[9] = np.nan, [1.0, np.nan, 3.0, 4.0]
    for bound in (None, (64, 48)):
        assert np.array_equal(rect_iou(a, b, bound), metrics.rect_iou(a.copy(), b.copy(), bound), equal_nan=True)
    assert np.array_equal(center_error(a, b), metrics.center_error(a, b), equal_nan=True)


@pytest.fixture(scope="module")
def synthetic_val(tmp_path_factory) -> Path:
    """A synthetic GOT-10k root (real layout) with extra cover-0 frames and one sequence invisible after frame 0."""
    root = tmp_path_factory.mktemp("got10k") / "data"
    generate_got10k(root, Got10kSpec(num_train_seqs=1, num_val_seqs=6, min_frames=8, max_frames=20, img_w=64,
                                     img_h=64), workers=1)
    rng = np.random.default_rng(7)
    for index, seq in enumerate(open_sequences(root, "val").sequences):
        cover = seq.cover.copy()
        cover[rng.random(len(cover)) < 0.2] = 0
        if index == 2:
            cover[1:] = 0
        (Path(seq.where) / "cover.label").write_text("".join(f"{c}\n" for c in cover))
    return root


def _random_predictions(rng, gt: np.ndarray, bound) -> np.ndarray:
    """Noisy boxes, with some exact, zero-size, partly and fully outside the image, and negative coordinates."""
    n = len(gt)
    boxes = gt * (1 + rng.normal(0, 0.15, gt.shape)) + rng.normal(0, 3, gt.shape)
    width, height = bound
    for row in rng.choice(n, size=min(n, 6), replace=False):
        boxes[row] = [gt[row],                                                  # exact
                      [gt[row, 0], gt[row, 1], 0.0, gt[row, 3]],                # zero width
                      [width - 5, height - 4, 30, 25],                          # sticks out bottom-right
                      [-12, -7, 30, 20],                                        # sticks out top-left
                      [width + 3, 5, 10, 10],                                   # fully outside
                      [5, 5, -4, 8]][int(rng.integers(6))]                      # negative width
    return boxes


def _random_times(rng, n: int) -> np.ndarray:
    times = rng.uniform(0.002, 0.05, n)
    times[rng.integers(n)] = -0.01 if rng.random() < 0.5 else 0.0
    times[rng.integers(n)] = np.nan
    return times


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_got10k_parity_with_the_toolkit(synthetic_val, toolkit, tmp_path, seed):
    rng = np.random.default_rng(seed)
    sequences = open_sequences(synthetic_val, "val")
    name = f"Random{seed}"
    tracker = tmp_path / "results" / "GOT-10k" / name
    for seq in sequences.sequences:
        for repetition in range(1, int(rng.integers(1, 4)) + 1):
            predictions = _random_predictions(rng, seq.boxes, seq.resolution)
            write_got10k_result(tracker, seq.name, predictions, _random_times(rng, len(seq)), repetition)

    ours = score_got10k(sequences, tracker)
    theirs = _toolkit_report(toolkit.experiments.ExperimentGOT10k(
        str(synthetic_val), "val", str(tmp_path / "results"), str(tmp_path / "reports")), name)
    o, t = ours["overall"], theirs["overall"]
    assert _close(o["ao"], t["ao"]) and _close(o["sr50"], t["sr"]) and _close(o["fps"], t["speed_fps"])
    assert np.max(np.abs(np.array(o["succ_curve"]) - t["succ_curve"])) <= TOL
    assert o["sr75"] == t["succ_curve"][75] and o["sr50"] == t["succ_curve"][50]
    assert list(ours["per_sequence"]) == list(theirs["seq_wise"])
    for seq_name, mine in ours["per_sequence"].items():
        ref = theirs["seq_wise"][seq_name]
        assert _close(mine["ao"], ref["ao"]) and _close(mine["sr50"], ref["sr"]), seq_name
        assert _close(mine["fps"], ref["speed_fps"]) and mine["length"] == ref["length"], seq_name
    assert np.isnan(ours["per_sequence"][sequences.sequences[2].name]["ao"])   # the all-cover-0 sequence


def test_writer_equals_the_toolkits_record(toolkit, tmp_path):
    rng = np.random.default_rng(3)
    boxes, times = rng.normal(50, 30, (7, 4)), rng.random(7)
    record = toolkit.experiments.ExperimentGOT10k._record
    for repetition in (1, 2):
        record(None, str(tmp_path / "tk" / "s" / f"s_{repetition:03d}.txt"), boxes + repetition, times * repetition)
        write_got10k_result(tmp_path / "ours", "s", boxes + repetition, times * repetition, repetition)
    for file in ("s_001.txt", "s_002.txt", "s_time.txt"):
        assert (tmp_path / "ours" / "s" / file).read_bytes() == (tmp_path / "tk" / "s" / file).read_bytes(), file
    toolkit.experiments.ExperimentOTB._record(None, str(tmp_path / "tk_ope" / "s.txt"), boxes, times)
    write_ope_result(tmp_path / "ours_ope", "s", boxes, times)
    for file in ("s.txt", "times/s_time.txt"):
        assert (tmp_path / "ours_ope" / file).read_bytes() == (tmp_path / "tk_ope" / file).read_bytes(), file


# OPE


def _ope_results(rng, sequences, tracker: Path) -> None:
    for seq in sequences.sequences:
        gt = np.nan_to_num(seq.boxes, nan=10.0)
        write_ope_result(tracker, seq.name, _random_predictions(rng, gt, (64, 48)), _random_times(rng, len(seq)))


def _assert_ope_equal(ours: dict, theirs: dict, keys) -> None:
    for key in keys:
        mine, ref = np.asarray(ours[key], float), np.asarray(theirs[key], float)
        assert mine.shape == ref.shape and np.max(np.abs(mine - ref)) <= TOL, key


OPE_KEYS = ("success_curve", "precision_curve", "success_score", "precision_score", "success_rate", "speed_fps")


def _renamed(ours: dict) -> dict:
    return {**ours, "speed_fps": ours["fps"]}


def test_otb_parity_with_the_toolkit(toolkit, tmp_path):
    """ExperimentOTB on a real-layout OTB folder: all 100 OTB-2015 folders exist (so nothing is downloaded), three
    hold sequences; one annotation row is NaN (the toolkit counts that frame as a failure)."""
    otb = toolkit.datasets.otb.OTB
    root = tmp_path / "otb"
    for name in getattr(otb, "_OTB__otb15_seqs"):
        (root / name).mkdir(parents=True)
    rng = np.random.default_rng(11)
    for name, frames in (("Basketball", 12), ("Biker", 9), ("Bird1", 15)):
        _frames(root / name / "img", frames, (64, 48), "{:04d}.jpg")
        gt = np.column_stack([rng.uniform(0, 40, (frames, 2)), rng.uniform(5, 30, (frames, 2))])
        if name == "Biker":
            gt[4] = np.nan
        (root / name / "groundtruth_rect.txt").write_text(_lines(gt))
    sequences = open_sequences(root)
    assert [s.name for s in sequences.sequences] == ["Basketball", "Biker", "Bird1"]
    tracker = tmp_path / "results" / "OTB2015" / "Rand"
    _ope_results(rng, sequences, tracker)

    ours = score_ope(sequences, tracker)
    theirs = _toolkit_report(toolkit.experiments.ExperimentOTB(
        str(root), 2015, str(tmp_path / "results"), str(tmp_path / "reports")), "Rand")
    _assert_ope_equal(_renamed(ours["overall"]), theirs["overall"], OPE_KEYS)
    for name, mine in ours["per_sequence"].items():
        _assert_ope_equal(_renamed(mine), theirs["seq_wise"][name], OPE_KEYS + ("success_score",))
    assert ours["per_sequence"]["Biker"]["frames"] == 9                  # the NaN frame counts (as a failure)


class _LaSOTFolder:
    """The sequence list got10k's OPE report iterates over (0.1.3's own LaSOT class cannot be built: its
    ``__init__`` calls ``_check_integrity(root, subset)``, defined with one argument)."""

    def __init__(self, sequences):
        self.seq_names = [s.name for s in sequences.sequences]
        self._items = [(sorted(str(p) for p in (Path(s.where) / "img").glob("*.jpg")),
                        np.loadtxt(Path(s.where) / "groundtruth.txt", delimiter=",")) for s in sequences.sequences]

    def __len__(self):
        return len(self._items)

    def __iter__(self):
        return iter(self._items)


def _normalized_precision_reference(per_sequence_boxes, per_sequence_annos):
    """LaSOT's normalised precision as the toolkit's GitHub version defines it (0.1.3 lacks it)."""
    thresholds = np.linspace(0, 0.5, 51)
    curves = []
    for boxes, anno in zip(per_sequence_boxes, per_sequence_annos):
        boxes = boxes.copy()
        boxes[0] = anno[0]
        valid = ~np.isnan(anno).any(axis=1)
        boxes, anno = boxes[valid], anno[valid]
        offset = (boxes[:, :2] + (boxes[:, 2:] - 1) / 2) - (anno[:, :2] + (anno[:, 2:] - 1) / 2)
        errors = np.sqrt(np.sum((offset / np.maximum([[1.0, 1.0]], anno[:, 2:])) ** 2, axis=-1))
        curves.append(np.mean(errors[:, None] <= thresholds[None], axis=0))
    return np.mean(curves, axis=0)


def test_lasot_parity_with_the_toolkit(toolkit, tmp_path):
    """LaSOT layout. Success, precision and speed: the toolkit's OTB report with its NaN-annotation filter (0.1.3's
    ``ExperimentUAV123._calc_metrics``, the rule the toolkit's ExperimentLaSOT uses) over this folder; normalised
    precision: the GitHub toolkit's definition written out above."""
    root = tmp_path / "lasot"
    rng = np.random.default_rng(5)
    for name, frames in (("cat-1", 10), ("cat-2", 14), ("dog-3", 8)):
        folder = root / name.split("-")[0] / name
        _frames(folder / "img", frames, (64, 48))
        gt = np.column_stack([rng.uniform(0, 40, (frames, 2)), rng.uniform(5, 30, (frames, 2))])
        occluded = np.zeros(frames, int)
        if name == "cat-2":
            gt[3], gt[6], occluded[6] = np.nan, 0.0, 1          # a NaN row (dropped) and an absent 0,0,0,0 (scored)
        (folder / "groundtruth.txt").write_text(_lines(gt))
        (folder / "full_occlusion.txt").write_text(",".join(map(str, occluded)) + "\n")
        (folder / "out_of_view.txt").write_text(",".join(["0"] * frames) + "\n")
    sequences = open_sequences(root)
    tracker = tmp_path / "results" / "LaSOT" / "Rand"
    _ope_results(rng, sequences, tracker)
    ours = score_ope(sequences, tracker, protocol="lasot")

    experiment = toolkit.experiments.ExperimentOTB.__new__(toolkit.experiments.ExperimentOTB)
    experiment.dataset = _LaSOTFolder(sequences)
    experiment.result_dir, experiment.report_dir = str(tmp_path / "results" / "LaSOT"), str(tmp_path / "reports")
    experiment.nbins_iou, experiment.nbins_ce = 21, 51
    experiment._calc_metrics = types.MethodType(toolkit.experiments.ExperimentUAV123._calc_metrics, experiment)
    theirs = _toolkit_report(experiment, "Rand")
    _assert_ope_equal(_renamed(ours["overall"]), theirs["overall"], OPE_KEYS)
    assert ours["per_sequence"]["cat-2"]["frames"] == 13

    boxes = [np.loadtxt(tracker / f"{s.name}.txt", delimiter=",") for s in sequences.sequences]
    reference = _normalized_precision_reference(boxes, [s.boxes for s in sequences.sequences])
    assert np.max(np.abs(np.array(ours["overall"]["normalized_precision_curve"]) - reference)) <= TOL
    assert ours["overall"]["normalized_precision_score"] == pytest.approx(np.mean(reference), abs=TOL)
    direct = ope_summary(boxes, [s.boxes for s in sequences.sequences], protocol="lasot")["overall"]
    assert direct["success_curve"] == ours["overall"]["success_curve"]


def test_ope_refusals(tmp_path):
    root = tmp_path / "otb"
    _frames(root / "Car" / "img", 4, (32, 32), "{:04d}.jpg")
    (root / "Car" / "groundtruth_rect.txt").write_text(_lines([[1, 2, 10, 10]] * 4))
    sequences = open_sequences(root)
    tracker = tmp_path / "T"
    tracker.mkdir()
    with pytest.raises(ResultError, match="missing; expected 4 rows x,y,w,h") as info:
        score_ope(sequences, tracker)
    assert str(tracker / "Car.txt") in str(info.value)
    write_ope_result(tracker, "Car", [[1, 2, 10, 10]] * 4, [0.1] * 4)
    (tracker / "times" / "Car_time.txt").unlink()
    with pytest.raises(ResultError, match="Car_time.txt: missing"):
        score_ope(sequences, tracker)
    write_ope_result(tracker, "Car", [[1, 2, 10, 10]] * 4, [0.1] * 4)
    (tracker / "Car.txt").write_text("1,2,10,10\n" * 3)
    with pytest.raises(ResultError, match=r"Car.txt: expected 4 rows .* found 3 row"):
        score_ope(sequences, tracker)
    with pytest.raises(ValueError, match="protocol"):
        score_ope(sequences, tracker, protocol="vot")
    (root / "Car" / "groundtruth_rect.txt").write_text("nan,nan,nan,nan\n" * 4)
    write_ope_result(tracker, "Car", [[1, 2, 10, 10]] * 4, [0.1] * 4)
    with pytest.raises(ResultError, match="no frame has a complete annotation"):
        score_ope(open_sequences(root), tracker, protocol="lasot")
