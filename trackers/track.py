"""Track one object through a folder of frames or a video file, from a box given on the command line.

    python -m trackers.track --frames DIR --box X,Y,W,H --tracker reference:first_box --out OUT
    python -m trackers.track --video clip.mp4 --box X,Y,W,H --model runs/siam/model_best.pth --out OUT

Writes ``OUT/boxes.txt`` (one ``x,y,w,h`` line per frame, ``%.3f``, comma-separated, the GOT-10k result format; row
0 is the given box), ``OUT/times.txt`` (seconds per frame) and the frames with the tracked box drawn in red, as
``OUT/frames/00000001.jpg…`` (``--save frames``, the default for a folder) or ``OUT/tracked.mp4`` (``--save video``,
the default for a video file). ``--model`` takes a checkpoint of a tracker task (the task's ``evaluator_input`` builds
the tracker) or its ONNX export (``OUT.onnx`` as given to ``deploy.export --out``: the tracker runs on ONNX Runtime).
Frames are read as RGB; the box is x, y, w, h in pixels of the first frame.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from data.imaging import IMAGE_EXTENSIONS
from engine.errors import UserError, run_command
from trackers.base import Tracker, TrackerError


def parse_box(text: str) -> np.ndarray:
    try:
        box = np.array([float(v) for v in text.replace(" ", "").split(",")], dtype=np.float64)
    except ValueError:
        box = np.zeros(0)
    if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
        raise UserError(f"--box: expected X,Y,W,H (four numbers, W and H > 0), found {text!r}")
    return box


def frame_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise UserError(f"--frames: {directory} is not a directory of frames")
    files = sorted(p for p in directory.iterdir()
                   if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if not files:
        raise UserError(f"--frames: {directory} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def read_frames(files: list[Path]) -> Iterator[np.ndarray]:
    from data.readers import decode_image

    for path in files:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise UserError(f"{path}: cannot read ({err.strerror or err})") from None
        yield np.asarray(decode_image(data, str(path)))


def video_frames(path: Path) -> tuple[Iterator[np.ndarray], float]:
    """(RGB frames, frames per second) of a video file."""
    import cv2

    if not path.is_file():
        raise UserError(f"--video: {path} is not a file")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise UserError(f"--video: {path}: OpenCV cannot open it as a video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    return
                yield np.ascontiguousarray(bgr[:, :, ::-1])
        finally:
            capture.release()

    return frames(), fps


def build_tracker(tracker: Optional[str], model: Optional[str], device: str) -> Tracker:
    """The tracker named by --tracker (a reference tracker) or built from the --model checkpoint."""
    from data.sequences import Sequence

    if tracker:
        from trackers.reference import reference_factory

        make = reference_factory(tracker)
    else:
        make = checkpoint_tracker_factory(model, device)
    # the command knows only the first box: a sequence without annotations, as in the GOT-10k test subset
    return make(Sequence(name="command_line", frames=(), boxes=np.zeros((1, 4)), visible=None, where="--box"))


def checkpoint_tracker_factory(model_path: str, device: str):
    """The tracker factory of a tracker task's checkpoint (.pth or run directory) or ONNX export (.onnx)."""
    import torch

    from engine.tasks import evaluator_input, task_module

    if model_path.endswith(".onnx"):
        from deploy.runtime import exported_task

        task = exported_task(model_path)
        exported = getattr(task_module(task), "exported_tracker", None)
        if not callable(exported):
            raise UserError(f"--model: {model_path} is an ONNX export of task {task!r}, which is not a tracker")
        return exported(model_path, torch.device(device))[0]
    from deploy.export import load_model_from_checkpoint

    net, params, _ = load_model_from_checkpoint(model_path)
    make = evaluator_input(params.task, net.to(torch.device(device)), params)
    if isinstance(make, torch.nn.Module) or not callable(make):
        raise UserError(f"--model: {model_path} is a checkpoint of task {params.task!r}, which is not a tracker (its "
                        "evaluators receive a model, not a tracker factory)")
    return make


def run(args: argparse.Namespace) -> int:
    from evaluate.tracking_results import save_boxes_text
    from evaluate.tracking_run import iter_track

    box = parse_box(args.box)
    if args.frames:
        frames, fps, save = read_frames(frame_files(Path(args.frames))), 25.0, args.save or "frames"
    else:
        (frames, fps), save = video_frames(Path(args.video)), args.save or "video"
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out: cannot create {out} ({err.strerror or err})") from None
    tracker = build_tracker(args.tracker, args.model, args.device)
    boxes, seconds = [], []
    with AnnotatedOutput(out, save, fps) as annotated:
        try:
            for tracked in iter_track(tracker, frames, box):
                boxes.append(tracked.box)
                seconds.append(tracked.seconds)
                annotated.add(tracked.frame, tracked.box)
        except TrackerError as err:
            raise UserError(f"frame {len(boxes) + 1}: {err}") from None
    save_boxes_text(out / "boxes.txt", np.asarray(boxes))
    save_boxes_text(out / "times.txt", np.asarray(seconds)[:, None], fmt="%.8f")
    speed = len(seconds) / max(sum(seconds), 1e-9)
    print(f"tracked {len(boxes)} frames ({speed:.1f} frames/s in the tracker); boxes in {out / 'boxes.txt'}"
          + (f", annotated {save} in {annotated.where}" if save != "none" else ""))
    return 0


class AnnotatedOutput:
    """Frames with the tracked box drawn in red, written as they come (JPEG files or one MP4 video)."""

    def __init__(self, out: Path, save: str, fps: float) -> None:
        self.save, self.fps, self.count, self._video = save, fps, 0, None
        self.where = out / "frames" if save == "frames" else out / "tracked.mp4"
        if save == "frames":
            self.where.mkdir(exist_ok=True)

    def add(self, frame: np.ndarray, box: np.ndarray) -> None:
        import cv2

        if self.save == "none":
            return
        self.count += 1
        bgr = np.ascontiguousarray(frame[:, :, ::-1])
        x, y, w, h = box
        cv2.rectangle(bgr, (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h))), (40, 40, 210), 2)
        if self.save == "frames":
            target = self.where / f"{self.count:08d}.jpg"
            if not cv2.imwrite(str(target), bgr):
                raise UserError(f"{target}: cannot write the annotated frame")
            return
        if self._video is None:
            self._video = cv2.VideoWriter(str(self.where), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                          (bgr.shape[1], bgr.shape[0]))
            if not self._video.isOpened():
                raise UserError(f"{self.where}: OpenCV cannot write an MP4 video here (try --save frames)")
        self._video.write(bgr)

    def __enter__(self) -> "AnnotatedOutput":
        return self

    def __exit__(self, *exc) -> None:
        if self._video is not None:
            self._video.release()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trackers.track", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--frames", help="folder of frames (sorted by file name)")
    source.add_argument("--video", help="video file (anything OpenCV reads)")
    parser.add_argument("--box", required=True, help="X,Y,W,H of the target in the first frame")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--tracker", help="a reference tracker: reference:first_box")
    which.add_argument("--model", help="checkpoint (.pth or run directory) of a tracker task, or its ONNX export "
                       "(OUT.onnx as given to deploy.export --out)")
    parser.add_argument("--device", default="cpu", help="torch device of --model (default: cpu)")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--save", choices=("frames", "video", "none"), default=None,
                        help="annotated output (default: frames for --frames, video for --video)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
