"""Running a tracker over frames, timed the way the GOT-10k toolkit times it: the clock starts after a frame is loaded
and stops when the tracker returns, and the first frame's time is that of ``init`` (toolkit 0.1.3,
``Tracker.track``). We use ``time.perf_counter`` where the toolkit uses ``time.time`` (a monotonic, finer clock;
the definition is the same)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple, Optional

import numpy as np

from engine.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from trackers.base import Tracker


class TrackedFrame(NamedTuple):
    index: int
    frame: np.ndarray
    box: np.ndarray
    """x, y, w, h: the given box on frame 0, the tracker's afterwards."""
    seconds: float


def iter_track(tracker: "Tracker", frames: Iterable[np.ndarray], init_box) -> Iterator[TrackedFrame]:
    """Track through `frames` (an iterable that loads each frame when asked), yielding each frame's result as soon as
    it is known, so a caller can draw or write it without holding the video in memory."""
    init_box = np.asarray(init_box, dtype=np.float64).reshape(4)
    for index, frame in enumerate(frames):
        start = time.perf_counter()
        if index == 0:
            tracker.init(frame, init_box)
            box = init_box.copy()
        else:
            box = tracker.update(frame)
        yield TrackedFrame(index, frame, box, time.perf_counter() - start)


def track_frames(tracker: "Tracker", frames: Iterable[np.ndarray], init_box) -> tuple[np.ndarray, np.ndarray]:
    """(boxes N×4, seconds N) of a whole sequence; row 0 is `init_box` as given, as in the toolkit's result files."""
    boxes, seconds = [], []
    for tracked in iter_track(tracker, frames, init_box):
        boxes.append(tracked.box)
        seconds.append(tracked.seconds)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(seconds, dtype=np.float64)


def tracking_data_dir(params, evaluator: str, expected: str) -> Path:
    """The tracking evaluation data: ``evaluation_params.data_dir``, else the run's ``batches_dir``; `expected` says
    what `evaluator` reads there, for the message when neither is set."""
    data_dir = params.evaluation_params.data_dir or getattr(params, "batches_dir", None)
    if not data_dir:
        raise UserError(f"evaluation_params.data_dir: required by {evaluator} ({expected})")
    return Path(data_dir)


def tracker_result_dir(options, global_step: int, run_dir: Optional[str], model_file: Optional[str],
                       example: str) -> Path:
    """RESULT_DIR/TRACKER_NAME of a tracking evaluation (options with ``result_dir`` and ``tracker_name``): on the fly
    <run dir>/tracking_results/step_<global step> unless set; offline result_dir is required (`example` shows one)
    and the name defaults to the model file's."""
    if options.result_dir:
        root = Path(options.result_dir)
    elif run_dir:
        root = Path(run_dir) / "tracking_results"
    else:
        raise UserError(f"result_dir: required offline (where the tracker's result files are written, e.g. "
                        f"\"{example}\")")
    if options.tracker_name:
        name = options.tracker_name
    elif run_dir and not model_file:
        name = f"step_{global_step:08d}"
    else:
        name = Path(model_file or "tracker").name.replace(":", "_").removesuffix(".pth").removesuffix(".onnx")
    return root / name


def evenly_spread(items: list, count: Optional[int]) -> list:
    """At most `count` of `items`, evenly spread over the list (first and last included); all of them when `count` is
    None or not smaller than the list: a tracking evaluation bounded by ``max_sequences``."""
    if count is None or count >= len(items):
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]
