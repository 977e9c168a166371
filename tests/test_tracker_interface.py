"""The tracker interface's promises (a finite box inside the frame, whatever the subclass returns), the reference
trackers, and the toolkit-style timing of the runner."""

from __future__ import annotations

import numpy as np
import pytest

from data.sequences import Sequence
from engine.errors import UserError
from evaluate.tracking_run import track_frames
from trackers.base import Tracker, TrackerError, TrackOutput
from trackers.reference import FirstBoxTracker, NoisyTruthTracker, reference_factory

FRAME = np.zeros((40, 60, 3), np.uint8)


class Scripted(Tracker):
    """Returns the boxes it is given, one per update."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = list(outputs)

    def _initialize(self, frame, box):
        self.started_with = box

    def _track(self, frame):
        return self.outputs.pop(0)


def test_update_always_returns_a_finite_box_inside_the_frame():
    tracker = Scripted([[10, 10, 5, 5], [np.nan, 1, 2, 3], [50, 30, 30, 30], [-100, -100, 5, 5],
                        TrackOutput(np.array([1.0, 2, 3, 4]), score=0.7, mask=np.ones((40, 60), bool))])
    tracker.init(FRAME, [1, 2, 3, 4])
    assert tracker.update(FRAME).tolist() == [10, 10, 5, 5]
    assert tracker.update(FRAME).tolist() == [10, 10, 5, 5], "a NaN box is replaced by the previous one"
    assert tracker.update(FRAME).tolist() == [50, 30, 10, 10], "clipped to the frame"
    x, y, w, h = tracker.update(FRAME)
    assert (x, y) == (0, 0) and w >= 1 and h >= 1, "a box outside the frame is moved inside"
    assert tracker.update(FRAME).tolist() == [1, 2, 3, 4]
    assert tracker.last.score == 0.7 and tracker.last.mask.shape == (40, 60)


def test_bad_frames_and_boxes_are_refused():
    tracker = FirstBoxTracker()
    with pytest.raises(TrackerError, match="update\\(\\) before init"):
        tracker.update(FRAME)
    with pytest.raises(TrackerError, match="H×W×3 uint8"):
        tracker.init(FRAME.astype(np.float32), [1, 2, 3, 4])
    with pytest.raises(TrackerError, match="w, h > 0"):
        tracker.init(FRAME, [1, 2, 0, 4])


def test_reference_trackers():
    truth = np.array([[10, 10, 8, 6], [12, 11, 8, 6], [0, 0, 0, 0], [20, 15, 10, 8]], dtype=float)
    first = FirstBoxTracker()
    boxes, times = track_frames(first, [FRAME] * 4, truth[0])
    assert np.array_equal(boxes, np.repeat(truth[:1], 4, axis=0)) and times.shape == (4,) and (times >= 0).all()
    exact, _ = track_frames(NoisyTruthTracker(truth, sigma=0.0), [FRAME] * 4, truth[0])
    assert np.allclose(exact, truth[[0, 1, 1, 3]]), "the unannotated frame repeats the previous box"
    sequence = Sequence("seq", ("a", "b", "c", "d"), truth, np.ones(4, bool))
    make = reference_factory("reference:noisy_truth")
    a, _ = track_frames(make(sequence), [FRAME] * 4, truth[0])
    b, _ = track_frames(make(sequence), [FRAME] * 4, truth[0])
    assert np.array_equal(a, b) and not np.array_equal(a, exact), "noise is a function of the sequence name"
    first_only = Sequence("test", ("a", "b"), truth[:1], None)
    with pytest.raises(UserError, match="needs every frame's box"):
        make(first_only)
    with pytest.raises(UserError, match="available: first_box, noisy_truth"):
        reference_factory("oracle")


def test_row_zero_is_the_given_box_even_outside_the_frame():
    """As the toolkit writes it: row 0 of a result is the init box as given, not clipped."""
    boxes, _ = track_frames(FirstBoxTracker(), [FRAME] * 2, [50, 30, 20, 20])
    assert boxes[0].tolist() == [50, 30, 20, 20] and boxes[1].tolist() == [50, 30, 10, 10]
