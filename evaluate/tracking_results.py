"""Tracking result folders in the GOT-10k toolkit's layout (``got10k==0.1.3``): writing them, and scoring them
exactly as the toolkit's ``report`` does, with a clear refusal wherever the toolkit would crash or quietly report a
wrong number.

Layouts (``tracker_dir`` is ``<result_dir>/GOT-10k/<tracker name>``, ``<result_dir>/OTB2015/<name>`` or
``<result_dir>/LaSOT/<name>``):

* GOT-10k: ``<tracker_dir>/<seq>/<seq>_001.txt`` (``_002``, ``_003`` for further repetitions of a
  non-deterministic tracker): one ``x,y,w,h`` row per frame, ``%.3f``, row 0 = the initial box;
  ``<tracker_dir>/<seq>/<seq>_time.txt``: one ``%.8f`` column of per-frame seconds per repetition (comma separated).
* OPE (OTB / LaSOT): ``<tracker_dir>/<seq>.txt`` (same rows) and ``<tracker_dir>/times/<seq>_time.txt`` (one column).

GOT-10k scoring (:func:`score_got10k`, ``ExperimentGOT10k(root, 'val').report([name])``), sequences in the given
(``list.txt``) order:

* frame 0 is dropped (it is the given initial box); of the others only frames with ``cover > 0`` are scored
  (``absence.label`` is not read);
* every repetition file ``<seq>_[0-9]*.txt`` is read (sorted) and must hold one box per frame; predictions and
  ground truth are clipped to the image (``resolution`` from ``meta_info.ini``) before the IoU;
* the IoUs of all repetitions of all sequences are **concatenated** (frame-weighted pooling: a long sequence weighs
  more; not a mean of per-sequence AOs) and reduced by :func:`~evaluate.tracking_metrics.got10k_summary`: AO, SR
  strictly above 0.5 and 0.75, the 101-point success curve;
* times: all columns of ``<seq>_time.txt`` flattened, NaN and ``<= 0`` dropped, **not** sliced (the init frame's
  time counts); FPS = mean of ``1 / t`` over the pooled frames;
* per sequence: the same numbers on its own frames, ``length = frames - 1`` (the toolkit's) and ``frames`` (IoUs
  scored, all repetitions). A sequence whose scored frames are all ``cover 0`` has none: it adds nothing to the
  pooled numbers and its ao / sr50 / sr75 are NaN, as the toolkit's mean of nothing (0 would claim a failure).

OPE scoring (:func:`score_ope`): see :mod:`evaluate.tracking_metrics` (frame 0 scored with the ground truth
substituted, no clipping, per-sequence curves averaged over sequences; ``protocol="lasot"`` drops NaN-annotated frames
and adds normalised precision).

Refused with :class:`ResultError` (the message names the file, what was expected and what was found), where the
toolkit crashes, asserts, or reports a number that means nothing:

* a sequence with no result file, a result file whose rows (or columns) do not match the annotation, or that does
  not parse — the toolkit raises, asserts, or (LaSOT) silently truncates to the shorter length;
* a missing time file — 0.1.3's GOT-10k report crashes on the first sequence and silently reuses the previous
  sequence's times afterwards; its OTB report drops the sequence from the FPS; a time file whose row count is not the
  number of frames;
* a NaN / inf box — one NaN makes the toolkit's GOT-10k AO NaN (and counts as a failure in OPE);
* for GOT-10k: a sequence without a box and cover label for every frame (the test subset: scored by the server),
  without a resolution, or with a non-finite box on a scored frame; for OPE: a sequence with no scoreable frame
  (all annotations NaN under ``protocol="lasot"``, which makes the toolkit's overall numbers NaN).

Writing (:func:`write_got10k_result`, :func:`write_ope_result`, :func:`save_boxes_text`) produces the bytes
``np.savetxt`` writes with the toolkit's formats, through a temporary file and ``os.replace``: a run killed mid-write
never leaves half a file.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Union

import numpy as np

from engine.errors import UserError
from evaluate.tracking_metrics import (OPE_PROTOCOLS, got10k_scores, got10k_summary, ope_overall,
                                       ope_sequence_metrics, rect_iou)

if TYPE_CHECKING:
    from data.sequences import Sequence, SequenceSet

BOX_FORMAT = "%.3f"
TIME_FORMAT = "%.8f"


class ResultError(UserError):
    """A tracking result folder that cannot be scored: names the file, what was expected and what was found."""


# --------------------------------------------------------------------------------------------------------------------
# Writing


def _checked_boxes(boxes, seq_name: str) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4 or len(array) == 0:
        raise ValueError(f"{seq_name}: expected an (N, 4) array of x, y, w, h boxes, found shape {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise ValueError(f"{seq_name}: box of frame {bad[0]} is not finite ({array[bad[0]].tolist()}); a tracker "
                         f"must output a finite box for every frame ({bad.size} frame(s) affected)")
    return array


def _checked_times(times, frames: int, seq_name: str) -> np.ndarray:
    array = np.asarray(times, dtype=np.float64)
    if array.shape != (frames,):
        raise ValueError(f"{seq_name}: expected one time per frame, shape ({frames},), found shape {array.shape}")
    return array


def save_boxes_text(path: Union[str, os.PathLike], table: np.ndarray, fmt: str = BOX_FORMAT) -> None:
    """``np.savetxt(path, table, fmt, delimiter=',')`` (the toolkit's format: ``%.3f`` boxes, ``%.8f`` times) through
    a hidden temporary file in the same folder, moved into place with ``os.replace`` (atomic): readers see the old
    file or the whole new one, never half of it. Creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        np.savetxt(temporary, table, fmt=fmt, delimiter=",")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_got10k_result(tracker_dir: Union[str, os.PathLike], seq_name: str, boxes, times,
                        repetition: int = 1) -> Path:
    """Write one run of a tracker on `seq_name` as the toolkit's ``ExperimentGOT10k.run`` does:
    ``<tracker_dir>/<seq>/<seq>_<repetition:03d>.txt`` (``%.3f``, comma separated, row 0 = the initial box) and
    column `repetition` of ``<seq>_time.txt`` (``%.8f``). Repetition 1 starts a new time file; repetition r > 1 needs
    the first r - 1 columns there and replaces any later ones (a rerun of an interrupted repetition). The time file is
    written first, so a present box file means a complete repetition. Returns the box file. ValueError for a
    non-finite box or mismatched shapes."""
    boxes = _checked_boxes(boxes, seq_name)
    times = _checked_times(times, len(boxes), seq_name)
    if repetition < 1:
        raise ValueError(f"{seq_name}: repetition must be >= 1, found {repetition}")
    seq_dir = Path(tracker_dir) / seq_name
    time_file = seq_dir / f"{seq_name}_time.txt"
    columns = times[:, None]
    if repetition > 1:
        previous = (_read_table(time_file, f"per-frame times of {seq_name}", delimiter=",") if time_file.is_file()
                    else np.empty((0, 0)))
        if previous.shape[0] != len(boxes) or previous.shape[1] < repetition - 1:
            raise ValueError(f"{time_file}: expected {len(boxes)} rows and at least {repetition - 1} column(s) of "
                             f"earlier repetitions, found shape {previous.shape}")
        columns = np.concatenate([previous[:, :repetition - 1], columns], axis=1)
    save_boxes_text(time_file, columns, TIME_FORMAT)
    box_file = seq_dir / f"{seq_name}_{repetition:03d}.txt"
    save_boxes_text(box_file, boxes, BOX_FORMAT)
    return box_file


def write_ope_result(tracker_dir: Union[str, os.PathLike], seq_name: str, boxes, times) -> Path:
    """Write one run as the toolkit's ``ExperimentOTB`` does: ``<tracker_dir>/<seq>.txt`` (``%.3f``, comma
    separated) and ``<tracker_dir>/times/<seq>_time.txt`` (``%.8f``, one column). Returns the box file."""
    boxes = _checked_boxes(boxes, seq_name)
    times = _checked_times(times, len(boxes), seq_name)
    tracker_dir = Path(tracker_dir)
    save_boxes_text(tracker_dir / "times" / f"{seq_name}_time.txt", times[:, None], TIME_FORMAT)
    box_file = tracker_dir / f"{seq_name}.txt"
    save_boxes_text(box_file, boxes, BOX_FORMAT)
    return box_file


# --------------------------------------------------------------------------------------------------------------------
# Reading


def _read_table(path: Path, what: str, delimiter: Optional[str]) -> np.ndarray:
    """A numeric table parsed by ``np.loadtxt`` (the toolkit's reader, so the same files parse), always 2-D. Given an
    open file rather than a path, loadtxt skips its path handling, which costs more than the parsing here."""
    try:
        with open(path, encoding="utf-8") as file, warnings.catch_warnings():
            warnings.simplefilter("ignore")        # loadtxt warns on an empty file; the row check reports it
            return np.loadtxt(file, delimiter=delimiter, ndmin=2, dtype=np.float64)
    except FileNotFoundError:
        raise ResultError(f"{path}: missing; expected {what}") from None
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ResultError(f"{path}: cannot read {what} as a table of numbers ({err})") from None


def _read_boxes(path: Path, frames: int, seq_name: str) -> np.ndarray:
    what = f"{frames} rows x,y,w,h (one box per frame of {seq_name})"
    boxes = _read_table(path, what, delimiter=",")
    if boxes.shape != (frames, 4):
        raise ResultError(f"{path}: expected {what}, found {boxes.shape[0]} row(s) of {boxes.shape[1]} value(s)")
    bad = np.flatnonzero(~np.isfinite(boxes).all(axis=1))
    if bad.size:
        raise ResultError(f"{path}: expected finite boxes, found {boxes[bad[0]].tolist()} on row {bad[0] + 1} "
                          f"({bad.size} row(s) affected)")
    return boxes


def _read_times(path: Path, frames: int, seq_name: str, delimiter: Optional[str]) -> np.ndarray:
    what = f"per-frame times of {seq_name} ({frames} rows, one column per repetition)"
    times = _read_table(path, what, delimiter)
    if times.shape[0] != frames:
        raise ResultError(f"{path}: expected {what}, found {times.shape[0]} row(s)")
    return times


def _sequence_list(sequences: Union["SequenceSet", Iterable["Sequence"]]) -> tuple:
    found = tuple(getattr(sequences, "sequences", sequences))
    if not found:
        raise ResultError("no sequences to score")
    names = [s.name for s in found]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ResultError(f"sequence names must be unique to find their results; repeated: {', '.join(repeated)}")
    return found


def _check_tracker_dir(tracker_dir: Path) -> None:
    if not tracker_dir.is_dir():
        raise ResultError(f"{tracker_dir}: tracker result folder not found")


def _require_annotated(seq: "Sequence") -> None:
    if not seq.fully_annotated:
        raise ResultError(f"{seq.where}: {len(seq.boxes)} annotated box(es) for {len(seq.frames)} frames; scoring "
                          f"needs a box for every frame (the GOT-10k test subset is scored by its server only)")


# --------------------------------------------------------------------------------------------------------------------
# GOT-10k


def repetition_files(seq_dir: Path, seq_name: str) -> list[Path]:
    """The toolkit's ``<seq>_[0-9]*.txt`` result files of one sequence, sorted by name."""
    pattern = glob.escape(seq_name) + "_[0-9]*.txt"
    try:
        names = os.listdir(seq_dir)
    except FileNotFoundError:
        return []
    return [seq_dir / n for n in sorted(names) if fnmatch.fnmatchcase(n, pattern) and (seq_dir / n).is_file()]


def _got10k_scored_frames(seq: "Sequence") -> np.ndarray:
    """Frames 1.. with ``cover > 0`` (a boolean mask over frames 1..N-1), after checking what scoring needs."""
    _require_annotated(seq)
    if seq.cover is None:
        raise ResultError(f"{seq.where}: no cover.label; GOT-10k scoring keeps the frames with cover > 0")
    if seq.resolution is None:
        raise ResultError(f"{Path(seq.where) / 'meta_info.ini'}: no 'resolution: (W, H)' line; GOT-10k scoring "
                          f"clips boxes to the image")
    scored = seq.cover[1:] > 0
    bad = np.flatnonzero(scored & ~np.isfinite(seq.boxes[1:]).all(axis=1))
    if bad.size:
        raise ResultError(f"{Path(seq.where) / 'groundtruth.txt'}: expected a finite box on every frame with "
                          f"cover > 0, found {seq.boxes[bad[0] + 1].tolist()} on line {bad[0] + 2}")
    return scored


@dataclass(frozen=True)
class _Got10kRun:
    """One sequence's result files, read and checked: all repetitions stacked, frame 0 dropped."""

    predictions: np.ndarray
    """(R * (N - 1), 4) predicted boxes of frames 1.., repetition after repetition."""
    ground_truth: np.ndarray
    """The annotation of frames 1.. repeated R times, aligned with `predictions`."""
    scored: np.ndarray
    """(R * (N - 1),) bool: cover > 0."""
    times: np.ndarray
    """The time file's table, unfiltered."""


def _read_got10k_run(seq: "Sequence", tracker_dir: Path) -> _Got10kRun:
    scored = _got10k_scored_frames(seq)
    seq_dir = tracker_dir / seq.name
    files = repetition_files(seq_dir, seq.name)
    if not files:
        raise ResultError(f"{seq_dir}: no result file for sequence {seq.name}; expected {seq.name}_001.txt "
                          f"(one {seq.name}_[0-9]*.txt per repetition)")
    frames = len(seq.boxes)
    predictions = np.concatenate([_read_boxes(f, frames, seq.name)[1:] for f in files])
    times = _read_times(seq_dir / f"{seq.name}_time.txt", frames, seq.name, delimiter=",")
    return _Got10kRun(predictions, np.tile(seq.boxes[1:], (len(files), 1)), np.tile(scored, len(files)), times)


def _scored_ious(seqs: tuple, runs: list[_Got10kRun]) -> list[np.ndarray]:
    """Per sequence, the IoUs of its scored frames (all repetitions, in order), clipped to its resolution; one
    vectorised ``rect_iou`` over all sequences."""
    bounds = np.repeat([seq.resolution for seq in seqs], [len(run.predictions) for run in runs], axis=0)
    ious = rect_iou(np.concatenate([run.predictions for run in runs]),
                    np.concatenate([run.ground_truth for run in runs]), bounds)
    ious = ious[np.concatenate([run.scored for run in runs])]
    return np.split(ious, np.cumsum([np.count_nonzero(run.scored) for run in runs])[:-1])


def score_got10k(sequences: Union["SequenceSet", Iterable["Sequence"]],
                 tracker_dir: Union[str, os.PathLike]) -> dict:
    """Score a GOT-10k result folder against val-like `sequences` (see the module docstring), equal to the toolkit's
    ``ExperimentGOT10k(root, 'val').report([name])`` with ``sr`` = ``sr50``, ``speed_fps`` = ``fps``.

    Returns ``{"overall": {ao, sr50, sr75, fps, succ_curve, frames, sequences}, "per_sequence": {name: {ao, sr50,
    sr75, fps, frames, length}}}``; ``frames`` counts the IoUs scored (all repetitions)."""
    seqs = _sequence_list(sequences)
    tracker_dir = Path(tracker_dir)
    _check_tracker_dir(tracker_dir)
    runs = [_read_got10k_run(seq, tracker_dir) for seq in seqs]
    ious = _scored_ious(seqs, runs)
    per_sequence = {seq.name: {**got10k_scores(seq_ious, run.times), "length": len(seq.boxes) - 1}
                    for seq, run, seq_ious in zip(seqs, runs, ious)}
    overall = got10k_summary(np.concatenate(ious), np.concatenate([run.times.ravel() for run in runs]))
    if overall["frames"] == 0:
        raise ResultError(f"{tracker_dir}: nothing to score: no frame after the first has cover > 0 in any of the "
                          f"{len(seqs)} sequence(s)")
    return {"overall": {**overall, "sequences": len(seqs)}, "per_sequence": per_sequence}


# --------------------------------------------------------------------------------------------------------------------
# OPE (OTB / LaSOT)


def _ope_sequence(seq: "Sequence", tracker_dir: Path, protocol: str) -> dict:
    _require_annotated(seq)
    frames = len(seq.boxes)
    boxes = _read_boxes(tracker_dir / f"{seq.name}.txt", frames, seq.name)
    times = _read_times(tracker_dir / "times" / f"{seq.name}_time.txt", frames, seq.name, delimiter=None)
    metrics = ope_sequence_metrics(boxes, seq.boxes, times, protocol)
    if metrics["frames"] == 0:
        raise ResultError(f"{seq.where}: no frame has a complete annotation (all contain NaN); nothing to score")
    return metrics


def score_ope(sequences: Union["SequenceSet", Iterable["Sequence"]], tracker_dir: Union[str, os.PathLike],
              protocol: str = "otb") -> dict:
    """Score an OPE result folder (``<tracker_dir>/<seq>.txt``, ``<tracker_dir>/times/<seq>_time.txt``) as the
    toolkit's ``ExperimentOTB.report`` (``protocol="otb"``) or ``ExperimentLaSOT.report`` (``"lasot"``: NaN-annotated
    frames dropped, normalised precision added) does; see :mod:`evaluate.tracking_metrics` for the definitions.

    Returns ``{"overall": {success_curve, precision_curve, success_score, success_rate, precision_score, fps,
    frames, sequences[, normalized_precision_curve, normalized_precision_score]}, "per_sequence": {name: the same
    without sequences}}``, curves as lists."""
    if protocol not in OPE_PROTOCOLS:
        raise ValueError(f"score_ope: protocol must be one of {', '.join(OPE_PROTOCOLS)}, found {protocol!r}")
    seqs = _sequence_list(sequences)
    tracker_dir = Path(tracker_dir)
    _check_tracker_dir(tracker_dir)
    metrics = [_ope_sequence(seq, tracker_dir, protocol) for seq in seqs]
    per_sequence = {seq.name: {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in m.items()}
                    for seq, m in zip(seqs, metrics)}
    return {"overall": ope_overall(metrics), "per_sequence": per_sequence}
