"""VOT (reset protocol, accuracy, robustness, EAO) and DAVIS (J, F, statistics) metrics on hand-computed cases, and
vot_evaluate / davis_evaluate end to end on small hand-made sequence sets, directly and through evaluator.py.

The hand-made sets are built in memory (Sequence / SequenceSet subclasses), so that these tests do not depend on the
readers of data.mask_sequences; the last tests read generated sets through those readers when they exist."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pytest

from data import synthetic
from data.sequences import Sequence, SequenceSet
from engine.params import evaluation_params_class
from evaluate import davis_evaluate, vot_evaluate
from evaluate.davis_metrics import (bound_pixels, boundary_f, boundary_precision_recall, box_mask, db_statistics,
                                    jaccard, mask_box, seg2bmap)
from evaluate.vot_metrics import (FAILURE, INIT, SKIPPED, TRACKED, burnin_mask, eao_fragments, eao_from_curve,
                                  expected_average_overlap, expected_overlap_curve, polygon_iou, reset_protocol,
                                  run_from_codes, vot_accuracy, vot_robustness)
from trackers.base import Tracker, TrackOutput
from trackers.reference import reference_factory


# --------------------------------------------------------------------------------------------------------------------
# Hand-made sequence sets (no reader involved)


@dataclass(frozen=True, eq=False)
class HandSequence(Sequence):
    """A Sequence with the mask/polygon fields, whether or not data.sequences has them yet."""

    masks: Optional[tuple] = None
    object_id: Optional[int] = None
    polygons: Optional[np.ndarray] = None


@dataclass(frozen=True)
class MemorySet(SequenceSet):
    """A SequenceSet whose frames and masks live in memory."""

    images: dict = field(default_factory=dict)
    truth_masks: dict = field(default_factory=dict)

    def frame(self, sequence, index):
        return self.images[sequence.name][index]

    def mask(self, sequence, index):
        return self.truth_masks[sequence.name][index]


H, W = 60, 80


def blank_frames(count: int) -> list[np.ndarray]:
    return [np.full((H, W, 3), 40 + i % 100, dtype=np.uint8) for i in range(count)]


def vot_set(sequences: dict[str, np.ndarray]) -> MemorySet:
    """VOT-style sequences from (N, 8) polygons (boxes = their bounding boxes)."""
    made, images = [], {}
    for name, polygons in sequences.items():
        xs, ys = polygons[:, 0::2], polygons[:, 1::2]
        boxes = np.stack([xs.min(1), ys.min(1), xs.max(1) - xs.min(1), ys.max(1) - ys.min(1)], axis=1)
        frames = tuple(f"{name}/{i:08d}.jpg" for i in range(len(polygons)))
        made.append(HandSequence(name, frames, boxes, np.isfinite(boxes).all(1), where=f"hand/{name}",
                                 polygons=polygons))
        images[name] = blank_frames(len(polygons))
    return MemorySet(tuple(made), None, "vot", "hand-made VOT set", images=images)


def box_polygons(boxes) -> np.ndarray:
    x, y, w, h = np.asarray(boxes, dtype=np.float64).T
    return np.stack([x, y, x + w, y, x + w, y + h, x, y + h], axis=1)


def sliding_boxes(count: int, speed: float = 1.0) -> np.ndarray:
    """A 16×12 box moving right by `speed` px per frame from x = 10."""
    return np.array([[10 + speed * i, 20, 16, 12] for i in range(count)], dtype=np.float64)


def vot_params(**keys):
    return type("Params", (), {"evaluation_params": evaluation_params_class(vot_evaluate.VotOptions)(**keys)})()


def davis_params(**keys):
    return type("Params", (), {"evaluation_params": evaluation_params_class(davis_evaluate.DavisOptions)(**keys)})()


def disk_mask(cx: float, cy: float, radius: float) -> np.ndarray:
    rows, cols = np.mgrid[0:H, 0:W]
    return (cols + 0.5 - cx) ** 2 + (rows + 0.5 - cy) ** 2 <= radius ** 2


def davis_set(count: int = 12, names=("disk-a", "disk-b")) -> MemorySet:
    made, images, masks = [], {}, {}
    for k, name in enumerate(names):
        truth = [disk_mask(20 + 2 * i, 30 + k * 3, 9) for i in range(count)]
        boxes = np.array([mask_box(m) for m in truth])
        frames = tuple(f"{name}/{i:05d}.jpg" for i in range(count))
        made.append(HandSequence(name, frames, boxes, np.ones(count, bool), where=f"hand/{name}",
                                 masks=tuple(f"{name}/{i:05d}.png" for i in range(count)), object_id=1))
        images[name], masks[name] = blank_frames(count), truth
    return MemorySet(tuple(made), None, "davis", "hand-made DAVIS set", images=images, truth_masks=masks)


# --------------------------------------------------------------------------------------------------------------------
# Polygon IoU


def test_polygon_iou_on_hand_polygons():
    assert polygon_iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(50 / 150)
    diamond = [5, 0, 10, 5, 5, 10, 0, 5]  # area 50 inside its 10×10 bounding box
    assert polygon_iou(diamond, [0, 0, 10, 10]) == pytest.approx(0.5)
    assert polygon_iou(np.array(diamond).reshape(4, 2), diamond) == pytest.approx(1.0)
    assert polygon_iou([0, 0, 10, 10], [10, 0, 5, 5]) == 0.0, "touching edges do not overlap"
    for missing in ([math.nan] * 8, [0], [2], [], None):
        assert math.isnan(polygon_iou(missing, [0, 0, 10, 10]))
    assert math.isnan(polygon_iou([100, 100, 5, 5], [120, 100, 5, 5], bound=(50, 50))), "both empty in the image"
    assert polygon_iou([100, 100, 5, 5], [10, 10, 5, 5], bound=(50, 50)) == 0.0


def test_polygon_iou_is_bounded_by_the_image():
    # a square sticking out of the left border: only its right half is in the image
    truth = [-5, 0, 5, 0, 5, 10, -5, 10]
    assert polygon_iou(truth, [0, 0, 5, 10]) == pytest.approx(0.5)
    assert polygon_iou(truth, [0, 0, 5, 10], bound=(20, 20)) == pytest.approx(1.0)
    # a rotated square crossing the right/bottom corner of a 20×20 image
    rotated = [20, 12, 28, 20, 20, 28, 12, 20]  # diamond centred on the corner (20, 20): a quarter is inside
    inside = 8 * 8 / 2  # the quarter inside [0, 20]²: the triangle (12,20)-(20,12)-(20,20)
    assert polygon_iou(rotated, [12, 12, 8, 8], bound=(20, 20)) == pytest.approx(inside / 64)


def test_polygon_iou_equals_the_got10k_toolkit_on_random_polygons():
    metrics = pytest.importorskip("got10k.utils.metrics")
    rng = np.random.default_rng(3)
    for _ in range(200):
        centre, size, angle = rng.uniform(-10, 70, 2), rng.uniform(2, 40, 2), rng.uniform(0, np.pi)
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * size / 2
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        polygon = (corners @ rotation.T + centre).reshape(-1)
        box = np.concatenate([rng.uniform(-10, 60, 2), rng.uniform(1, 40, 2)])
        ours = polygon_iou(polygon, box, bound=(W, H))
        theirs = float(metrics.poly_iou(polygon, box, bound=(W, H))[0])
        if math.isnan(ours):
            assert theirs == 0.0  # both empty inside the image: the toolkit's 0 / (0 + eps)
        else:
            assert ours == pytest.approx(theirs, abs=1e-9)


# --------------------------------------------------------------------------------------------------------------------
# The reset protocol, accuracy, robustness


def test_reset_protocol_on_a_scripted_run():
    """Failures on frames 12 and 20 of 40: skip 4 frames after each, re-initialise on the 5th after the failure."""
    script = {i: (0.6 if i < 17 else 0.9) for i in range(40)}
    script[12] = script[20] = 0.0
    inits, tracked = [], []

    def track(i):
        tracked.append(i)
        return script[i]

    run = reset_protocol(40, inits.append, track)
    assert inits == [0, 17, 25]
    assert run.failures.tolist() == [12, 20]
    assert run.skipped.tolist() == [13, 14, 15, 16, 21, 22, 23, 24]
    assert run.initializations.tolist() == [0, 17, 25]
    assert tracked == [i for i in range(40) if i not in {0, 13, 14, 15, 16, 17, 21, 22, 23, 24, 25}]
    assert np.isnan(run.overlaps[[0, 12, 13, 17, 20, 25]]).all() and run.overlaps[11] == 0.6
    # burn-in: ten frames from each initialisation, that frame included
    assert np.flatnonzero(~burnin_mask(run.codes)).tolist() == [10, 11, 12, 13, 14, 15, 16] + list(range(35, 40))
    # accuracy: the tracked frames outside burn-in are 10, 11 (0.6) and 35..39 (0.9)
    assert vot_accuracy([run]) == pytest.approx((2 * 0.6 + 5 * 0.9) / 7)
    assert vot_robustness([run]) == (2, pytest.approx(100 * 2 / 40))
    # pooled over runs: frames weigh the same, whatever the run
    quiet = run_from_codes([INIT] + [TRACKED] * 19, [0.0] + [0.3] * 19)
    assert vot_accuracy([run, quiet]) == pytest.approx((2 * 0.6 + 5 * 0.9 + 10 * 0.3) / 17)
    assert vot_robustness([run, quiet]) == (2, pytest.approx(100 * 2 / 60))


def test_reset_protocol_nan_overlap_is_no_failure_and_init_waits_for_ground_truth():
    usable = lambda i: i not in (0, 1, 9)  # noqa: E731 - frames 0, 1 and 9 have no ground truth
    script = {5: 0.0, 6: float("nan")}
    inits = []
    run = reset_protocol(14, inits.append, lambda i: script.get(i, 0.5), can_initialize=usable)
    assert inits == [2, 10], "frame 5 fails; 10 = 5 + 5; frame 9 is not needed"
    assert run.codes.tolist() == [SKIPPED, SKIPPED, INIT, TRACKED, TRACKED, FAILURE, SKIPPED, SKIPPED, SKIPPED,
                                  SKIPPED, INIT, TRACKED, TRACKED, TRACKED]
    run = reset_protocol(8, inits.append, lambda i: math.nan if i == 6 else 0.5)
    assert run.codes[6] == TRACKED and np.isnan(run.overlaps[6]), "a NaN overlap is tracked, not failed"
    assert run.failures.tolist() == [] and run.codes[7] == TRACKED


# --------------------------------------------------------------------------------------------------------------------
# EAO


def hand_runs():
    """A: 6 frames, never fails, overlap 1. B: 8 frames, overlap 0.5 on frame 1, fails on frame 2, re-init on 7."""
    a = run_from_codes([INIT] + [TRACKED] * 5, [0, 1, 1, 1, 1, 1])
    b = run_from_codes([INIT, TRACKED, FAILURE, SKIPPED, SKIPPED, SKIPPED, SKIPPED, INIT], [0, 0.5, 0, 0, 0, 0, 0, 0])
    return a, b


def test_eao_fragments_and_curve_by_hand():
    a, b = hand_runs()
    fragments, weights = eao_fragments([a, b])
    nan = math.nan
    expected = np.array([[0, 1, 1, 1, 1, 1, nan, nan],  # A: its own length, not padded
                         [0, 0.5, 0, 0, 0, 0, 0, 0],  # B up to and including the re-init frame 7, zero padded
                         [0, nan, nan, nan, nan, nan, nan, nan]])  # B from frame 7: one frame
    np.testing.assert_array_equal(fragments, expected)
    np.testing.assert_array_equal(weights, [1, 1, 1])
    # Φ[i]: over the fragments with a cell at column i, the mean of columns 1..i
    curve_by_hand = [1, (1 + 0.5) / 2, (1 + 0.5 / 2) / 2, (1 + 0.5 / 3) / 2, (1 + 0.5 / 4) / 2, (1 + 0.5 / 5) / 2,
                     0.5 / 6, 0.5 / 7]
    eao, curve = expected_average_overlap([a, b], low=2, high=7)
    np.testing.assert_allclose(curve, curve_by_hand, rtol=0, atol=1e-15)
    assert eao == pytest.approx(np.mean(curve_by_hand[1:7]))
    assert expected_average_overlap([a, b], low=1, high=100)[0] == pytest.approx(np.mean(curve_by_hand))
    assert math.isnan(expected_average_overlap([a, b], low=10, high=20)[0]), "interval past the longest run"
    np.testing.assert_array_equal(expected_overlap_curve(fragments, weights), curve)
    assert eao_from_curve(curve, 8, 8) == curve[7]


def test_eao_edge_weights_follow_pysot():
    # a failure on frame 2 of 7 frames: the re-init point 7 equals the length, so the cut fragment is truncated
    # (weight 7/8) and the last fragment is empty (weight 0)
    run = run_from_codes([INIT, TRACKED, FAILURE, SKIPPED, SKIPPED, SKIPPED, SKIPPED], [0, 0.4, 0, 0, 0, 0, 0])
    fragments, weights = eao_fragments([run])
    np.testing.assert_array_equal(weights, [7 / 8, 0])
    np.testing.assert_array_equal(fragments[0], [0, 0.4, 0, 0, 0, 0, 0])
    assert np.isnan(fragments[1]).all()
    # a failure whose re-init point lies past the end is no cut point: the run is one fragment, ending with it
    late = run_from_codes([INIT, TRACKED, TRACKED, FAILURE, SKIPPED], [0, 0.4, 0.2, 0, 0])
    fragments, weights = eao_fragments([late])
    assert len(fragments) == 1 and weights.tolist() == [1.0]
    np.testing.assert_array_equal(fragments[0], [0, 0.4, 0.2, 0, 0])


# --------------------------------------------------------------------------------------------------------------------
# vot_evaluate end to end


class ScriptedTracker(Tracker):
    """Returns the true box, except on frames listed in `lose` where it returns a box far from the target; with
    `polygon` it also reports the true box's corners as its polygon. Frame numbers are absolute: the tracker is
    created with the sequence as seen from its initialisation frame."""

    name = "scripted"

    def __init__(self, truth: np.ndarray, offset: int, lose: set, polygon: bool) -> None:
        super().__init__()
        self.truth, self.offset, self.lose, self.polygon = truth, offset, lose, polygon

    def _initialize(self, frame, box):
        self.index = self.offset

    def _track(self, frame):
        self.index += 1
        box = self.truth[self.index - self.offset].copy()
        if self.index in self.lose:
            box[0] = (box[0] + 40) % (W - box[2])
        corners = box_polygons(box[None])[0].reshape(4, 2) if self.polygon else None
        return TrackOutput(box=box, polygon=corners)


def scripted_factory(full: dict, lose: set, polygon: bool = False):
    return lambda sequence: ScriptedTracker(sequence.boxes, len(full[sequence.name]) - len(sequence), lose, polygon)


def test_vot_run_eval_with_a_scripted_tracker_writes_the_vot_layout(tmp_path):
    boxes = sliding_boxes(30)
    data = vot_set({"slide": box_polygons(boxes)})
    full = {"slide": data.sequences[0].frames}
    params = vot_params(result_dir=str(tmp_path / "results"), tracker_name="scripted", eao_low=1, eao_high=30)
    metrics, primary = vot_evaluate.run_eval(params, scripted_factory(full, {4, 15}, polygon=True),
                                             sequence_set=data)
    assert primary == "eao"
    lines = (tmp_path / "results" / "scripted" / "baseline" / "slide" / "slide_001.txt").read_text().splitlines()
    assert len(lines) == 30
    status = {i: line for i, line in enumerate(lines) if "," not in line}
    assert status == {0: "1", 4: "2", 5: "0", 6: "0", 7: "0", 8: "0", 9: "1", 15: "2", 16: "0", 17: "0", 18: "0",
                      19: "0", 20: "1"}
    first = [float(v) for v in lines[1].split(",")]
    # in the VOT toolkit's coordinates, as its ground-truth files (pixel centres at integers: 0.5 less than ours)
    np.testing.assert_allclose(first, box_polygons(boxes[1:2])[0] - 0.5, atol=1e-4)
    assert lines[1].split(",")[0] == "10.5000"
    # every tracked frame lies within ten frames of an initialisation (0, 9, 20): no frame is left for accuracy
    assert metrics["failures"] == 2 and metrics["frames"] == 30 and metrics["sequences"] == 1
    assert metrics["robustness"] == pytest.approx(100 * 2 / 30)
    assert math.isnan(metrics["accuracy"])
    assert metrics["polygon_frames"] == 30 - 3 - 8  # every frame that ran update(): not init, not skipped
    assert metrics["fps"] > 0 and 0 < metrics["eao"] < 1


def test_vot_run_eval_reference_trackers(tmp_path):
    """first_box on a box sliding 1 px a frame: IoU (16 − d) / (16 + d) d frames after an initialisation, a failure at
    d = 16, then re-initialisation 5 frames later; noisy_truth never fails and scores far higher."""
    boxes = sliding_boxes(45)
    data = vot_set({"slide": box_polygons(boxes), "still": box_polygons(np.tile([30, 25, 20, 14], (12, 1)))})
    params = vot_params(result_dir=str(tmp_path / "results"), eao_low=1, eao_high=45, max_frames=45)
    first, _ = vot_evaluate.run_eval(params, reference_factory("first_box"), sequence_set=data,
                                     model_file="reference:first_box")
    lines = (tmp_path / "results" / "reference_first_box" / "baseline" / "slide" / "slide_001.txt").read_text()
    codes = [line for line in lines.splitlines() if "," not in line]
    assert codes == ["1", "2", "0", "0", "0", "0", "1", "2", "0", "0", "0", "0", "1"]
    slide_lines = lines.splitlines()
    assert slide_lines[16] == "2" and slide_lines[21] == "1" and slide_lines[37] == "2" and slide_lines[42] == "1"
    assert [float(v) for v in slide_lines[1].split(",")] == [10, 20, 16, 12], "a box tracker's box as x,y,w,h"
    d = np.arange(10, 16)
    slide_scored = list((16 - d) / (16 + d)) * 2  # frames 10..15 and 31..36
    still_scored = [1.0] * 2  # frames 10, 11 of the still sequence
    assert first["accuracy"] == pytest.approx(np.mean(slide_scored + still_scored))
    assert first["failures"] == 2 and first["frames"] == 57 and first["polygon_frames"] == 0
    noisy, _ = vot_evaluate.run_eval(params, reference_factory("noisy_truth"), sequence_set=data,
                                     model_file="reference:noisy_truth")
    assert noisy["failures"] == 0 and noisy["accuracy"] > 0.6 and noisy["eao"] > first["eao"] + 0.2


def test_vot_bounded_run_and_tensorboard(tmp_path):
    from tensorboardX import SummaryWriter

    data = vot_set({f"s{i}": box_polygons(sliding_boxes(20)) for i in range(5)})
    writer = SummaryWriter(str(tmp_path / "run"))
    params = vot_params(max_sequences=2, max_frames=8, eao_low=1, eao_high=8)
    metrics, _ = vot_evaluate.run_eval(params, reference_factory("first_box"), writer=writer, global_step=3,
                                       run_dir=str(tmp_path / "run"), sequence_set=data)
    writer.close()
    assert metrics["sequences"] == 2 and metrics["frames"] == 16
    written = sorted(p.name for p in (tmp_path / "run/tracking_results/step_00000003/baseline").iterdir())
    assert written == ["s0", "s4"], "evenly spread over the list"
    with pytest.raises(Exception, match="eao_high"):
        vot_params(eao_low=50, eao_high=10)


# --------------------------------------------------------------------------------------------------------------------
# DAVIS measures


def square(top: int, left: int, side: int, shape=(40, 40)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_jaccard_on_hand_masks():
    assert jaccard(square(5, 5, 10), square(5, 10, 10)) == pytest.approx(50 / 150)
    assert jaccard(square(5, 5, 10), square(5, 5, 10)) == 1.0
    assert jaccard(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0, "both empty: 1, as DAVIS"
    assert jaccard(square(0, 0, 2, (4, 4)), np.zeros((4, 4))) == 0.0
    void = np.zeros((40, 40), bool)
    void[:, 15:] = True  # leaves out the shifted square's extra columns
    assert jaccard(square(5, 10, 10), square(5, 5, 10), void=void) == pytest.approx(50 / 100)


def test_boundary_f_tolerance_and_offsets():
    assert bound_pixels((100, 100)) == 2 and bound_pixels((480, 854)) == 8
    band = np.zeros((100, 100), bool)
    band[30:70] = True  # boundary rows 29 and 69
    assert seg2bmap(band).sum(axis=1).nonzero()[0].tolist() == [29, 69]
    for shift, expected in ((0, 1.0), (1, 1.0), (2, 1.0), (3, 0.5), (5, 0.5)):
        moved = np.zeros_like(band)
        moved[30:70 + shift] = True  # its lower boundary is `shift` rows below the true one
        assert boundary_f(moved, band) == pytest.approx(expected), shift
    far = np.zeros_like(band)
    far[33:73] = True  # both boundaries 3 rows off: beyond the 2-pixel tolerance
    assert boundary_precision_recall(far, band) == (0.0, 0.0) and boundary_f(far, band) == 0.0
    empty = np.zeros_like(band)
    assert boundary_precision_recall(empty, band) == (1.0, 0.0) and boundary_f(empty, band) == 0.0
    assert boundary_precision_recall(band, empty) == (0.0, 1.0)
    assert boundary_f(empty, empty) == 1.0


def test_seg2bmap_of_a_square():
    mask = square(1, 1, 3, (6, 6))
    boundary = seg2bmap(mask)
    expected = np.zeros((6, 6), bool)
    expected[0, 0:4] = True  # the row above (its lower neighbours are inside), with the corner by the diagonal
    expected[1:4, 0] = True  # the column left of it
    expected[3, 1:4] = True  # the square's last row
    expected[1:4, 3] = True  # the square's last column
    np.testing.assert_array_equal(boundary, expected)


def test_db_statistics_on_a_hand_sequence():
    values = [1, 1, 1, 0.8, 0.6, 0.4, 0.2, 0]
    mean, recall, decay = db_statistics(values)
    # bins of 8 frames: ids = round(linspace(1, 8, 5) + 1e-10) - 1 = [0, 2, 4, 5, 7]: first [0:3], last [5:8]
    assert mean == pytest.approx(5 / 8) and recall == pytest.approx(5 / 8)
    assert decay == pytest.approx(1 - (0.4 + 0.2 + 0) / 3)
    mean, recall, decay = db_statistics([0.9, math.nan, 0.7, 0.1])
    assert mean == pytest.approx(1.7 / 3) and recall == pytest.approx(2 / 4), "NaN counts as not above 0.5"
    assert decay == pytest.approx(0.9 - (0.7 + 0.1) / 2), "4 frames: ids [0, 1, 2, 2, 3], bins [0:2] and [2:4]"


def test_box_mask_and_mask_box():
    mask = box_mask([2.4, 1.0, 3.2, 2.0], 6, 8)  # centres 2.5 … 5.5 lie in [2.4, 5.6); rows 1, 2
    assert np.argwhere(mask).tolist() == [[r, c] for r in (1, 2) for c in (2, 3, 4, 5)]
    assert mask_box(mask).tolist() == [2, 1, 4, 2]
    assert box_mask(mask_box(mask), 6, 8).tolist() == mask.tolist()
    assert mask_box(np.zeros((3, 3))) is None and not box_mask([-9, -9, 2, 2], 6, 8).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_davis_measures_equal_davisinteractive(seed, monkeypatch):
    """Oracle: the DAVIS challenge's own package (davisinteractive 1.0.4) where it is installed (it needs
    scikit-image and was written for NumPy < 1.24: its np.int / np.float / np.bool aliases are restored here)."""
    oracle = pytest.importorskip("davisinteractive.metrics.jaccard", reason="davisinteractive (the DAVIS challenge's "
                                 "metrics) is not installed: it does not install with NumPy 2 and is not a dependency")
    for alias, kind in (("int", int), ("float", float), ("bool", bool)):
        if alias not in np.__dict__:
            monkeypatch.setattr(np, alias, kind, raising=False)
    rng = np.random.default_rng(seed)
    for _ in range(6):
        truth = disk_mask(*rng.uniform(10, 60, 2), rng.uniform(3, 20))
        prediction = disk_mask(*rng.uniform(10, 60, 2), rng.uniform(3, 20)) | (rng.random((H, W)) < 0.01)
        assert boundary_f(prediction, truth) == pytest.approx(oracle.f_measure(truth, prediction), abs=1e-12)
        labels_true, labels_pred = truth[None].astype(int), prediction[None].astype(int)
        assert jaccard(prediction, truth) == pytest.approx(oracle.batched_jaccard(labels_true, labels_pred)[0])


# --------------------------------------------------------------------------------------------------------------------
# davis_evaluate end to end


class MaskOracle(Tracker):
    """Returns the true mask and its box: J = F = 1, while its filled box scores lower."""

    name = "mask_oracle"

    def __init__(self, masks):
        super().__init__()
        self.masks = masks

    def _initialize(self, frame, box):
        self.index = 0

    def _track(self, frame):
        self.index += 1
        return TrackOutput(box=mask_box(self.masks[self.index]), mask=self.masks[self.index])


def test_davis_run_eval_box_and_mask_trackers(tmp_path):
    data = davis_set()
    params = davis_params(result_dir=str(tmp_path / "results"), save_masks=True)
    first, primary = davis_evaluate.run_eval(params, reference_factory("first_box"), sequence_set=data,
                                             model_file="reference:first_box")
    assert primary == "jf_mean"
    assert first["frames"] == 2 * 11 and first["sequences"] == 2 and first["mask_frames"] == 0
    assert first["j_mean"] == first["j_mean_box"], "a box tracker's mask is its filled box"
    assert first["jf_mean"] == pytest.approx((first["j_mean"] + first["f_mean"]) / 2)
    truth = data.truth_masks["disk-a"]
    filled = box_mask(mask_box(truth[0]), H, W)
    j_a = [jaccard(filled, truth[i]) for i in range(1, 12)]
    assert first["j_decay"] > 0.3, "the first box drifts off the moving disk"
    out = tmp_path / "results" / "reference_first_box"
    rows = (out / "per_sequence.csv").read_text().splitlines()
    assert rows[0].startswith("sequence,frames,j_mean") and len(rows) == 3
    saved = json.loads((out / "results.json").read_text())
    assert saved["per_sequence"]["disk-a"]["j"] == pytest.approx(j_a)
    from PIL import Image

    png = np.asarray(Image.open(out / "masks" / "disk-a" / "00003.png"))
    assert (png > 0).tolist() == filled.tolist()

    oracle, _ = davis_evaluate.run_eval(davis_params(), lambda s: MaskOracle(data.truth_masks[s.name]),
                                        sequence_set=data)
    assert oracle["j_mean"] == 1 and oracle["f_mean"] == 1 and oracle["j_recall"] == 1 and oracle["j_decay"] == 0
    assert oracle["mask_frames"] == 22 and 0.6 < oracle["j_mean_box"] < 0.9, "a disk fills ~π/4 of its box"
    noisy, _ = davis_evaluate.run_eval(davis_params(max_frames=6), reference_factory("noisy_truth"),
                                       sequence_set=data)
    assert noisy["frames"] == 2 * 5 and noisy["j_mean"] > first["j_mean"]


def test_davis_starts_where_the_object_appears(tmp_path):
    data = davis_set(count=8, names=("late",))
    truth = data.truth_masks["late"]
    truth[0] = np.zeros_like(truth[0])  # absent on frame 0, annotated
    masks = list(data.sequences[0].masks)
    masks[2] = None  # frame 2 not annotated
    sequence = dataclasses.replace(data.sequences[0], masks=tuple(masks))
    data = dataclasses.replace(data, sequences=(sequence,))
    scores, _ = davis_evaluate.run_sequence(reference_factory("first_box"), data, sequence)
    assert scores.frame_indices == [3, 4, 5, 6, 7], "init on frame 1, frame 2 tracked but not scored"
    assert scores.timed_frames == 7


# --------------------------------------------------------------------------------------------------------------------
# evaluator.py


@pytest.mark.parametrize("evaluator_name", ["vot_evaluate", "davis_evaluate"])
def test_evaluator_py_with_a_reference_tracker(evaluator_name, tmp_path, monkeypatch):
    import evaluator

    data = vot_set({"slide": box_polygons(sliding_boxes(24))}) if evaluator_name == "vot_evaluate" else davis_set()
    module = vot_evaluate if evaluator_name == "vot_evaluate" else davis_evaluate
    monkeypatch.setattr(module, "open_eval_set", lambda params: data)
    keys = {"eao_low": 1, "eao_high": 24} if evaluator_name == "vot_evaluate" else {"save_masks": True}
    log = tmp_path / "result.json"
    eval_params = tmp_path / "eval_params.json"
    eval_params.write_text(json.dumps({"model_path": "reference:first_box", "benchmark_type": evaluator_name,
                                       "data_dir": str(tmp_path), "result_dir": str(tmp_path / "results"),
                                       "result_log_file": str(log), **keys}))
    assert evaluator.main([str(eval_params)]) == 0
    result = json.loads(log.read_text())
    assert result["benchmark_type"] == evaluator_name
    assert result["primary"] == ("eao" if evaluator_name == "vot_evaluate" else "jf_mean")
    assert result["metrics"]["sequences"] == len(data.sequences) and result["metrics"]["fps"] > 0
    assert (tmp_path / "results" / "reference_first_box").is_dir()


# --------------------------------------------------------------------------------------------------------------------
# With the readers and generators of data.mask_sequences / data.synthetic


def test_vot_evaluate_reads_a_generated_vot_set(tmp_path):
    synthetic.generate_vot(tmp_path / "vot", synthetic.VotSpec(num_seqs=2, min_frames=16, max_frames=20), workers=1)
    params = vot_params(data_dir=str(tmp_path / "vot"), result_dir=str(tmp_path / "results"), eao_low=1,
                        eao_high=20)
    vot_evaluate.check_inputs(params)
    metrics, _ = vot_evaluate.run_eval(params, reference_factory("noisy_truth"), model_file="noisy")
    assert metrics["sequences"] == 2 and 32 <= metrics["frames"] <= 40 and metrics["accuracy"] > 0.4


def test_davis_evaluate_reads_a_generated_davis_set(tmp_path):
    synthetic.generate_davis(tmp_path / "davis", synthetic.DavisSpec(num_train_videos=1, num_val_videos=2,
                                                                     min_frames=8, max_frames=10), workers=1)
    params = davis_params(data_dir=str(tmp_path / "davis"), subset="val")
    davis_evaluate.check_inputs(params)
    metrics, _ = davis_evaluate.run_eval(params, reference_factory("noisy_truth"))
    assert metrics["sequences"] == 2 and 14 <= metrics["frames"] <= 18 and metrics["j_mean"] > 0.3
