"""python -m trackers.track: a folder of frames or a video in, boxes as text and annotated frames or video out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data.synthetic import Got10kSpec, generate_got10k

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    root = tmp_path_factory.mktemp("track") / "got10k"
    generate_got10k(root, Got10kSpec(num_train_seqs=1, num_val_seqs=1, min_frames=8, max_frames=8), workers=1)
    folder = root / "val" / "GOT-10k_Val_000001"
    first = (folder / "groundtruth.txt").read_text().splitlines()[0]
    return folder, first


def track(*args):
    return subprocess.run([sys.executable, "-m", "trackers.track", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_frames_folder(sequence, tmp_path):
    folder, box = sequence
    done = track("--frames", str(folder), "--box", box, "--tracker", "reference:first_box", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    boxes = np.loadtxt(tmp_path / "boxes.txt", delimiter=",")
    assert boxes.shape == (8, 4) and np.allclose(boxes, [float(v) for v in box.split(",")], atol=5e-4)
    assert len(np.loadtxt(tmp_path / "times.txt")) == 8
    drawn = sorted((tmp_path / "frames").iterdir())
    assert [p.name for p in drawn][:2] == ["00000001.jpg", "00000002.jpg"] and len(drawn) == 8
    import cv2

    annotated, original = cv2.imread(str(drawn[0])), cv2.imread(str(folder / "00000001.jpg"))
    x, y = (int(round(float(v))) for v in box.split(",")[:2])
    assert annotated[y, x + 3, 2] > 150 and annotated[y, x + 3, 2] > original[y, x + 3, 2], "a red box is drawn"


def test_video_file(sequence, tmp_path):
    import cv2

    folder, box = sequence
    frames = [cv2.imread(str(p)) for p in sorted(folder.glob("*.jpg"))]
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()
    done = track("--video", str(video), "--box", box, "--tracker", "reference:first_box", "--out", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "o" / "boxes.txt").read_text().splitlines()) == 8
    capture = cv2.VideoCapture(str(tmp_path / "o" / "tracked.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
    capture.release()


@pytest.mark.parametrize("args, message", [
    (["--box", "1,2,3"], "--box: expected X,Y,W,H"),
    (["--box", "1,2,0,4"], "--box: expected X,Y,W,H"),
    (["--box", "1,2,3,4", "--tracker", "reference:noisy_truth"], "needs every frame's box"),
    (["--box", "1,2,3,4", "--tracker", "mine"], "unknown reference tracker 'mine'"),
])
def test_bad_input_is_one_clear_line(sequence, tmp_path, args, message):
    folder, _ = sequence
    full = ["--frames", str(folder), "--out", str(tmp_path), *args]
    if "--tracker" not in args:
        full += ["--tracker", "reference:first_box"]
    done = track(*full)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "boxes.txt").exists()


def test_missing_frames_folder(tmp_path):
    done = track("--frames", str(tmp_path / "nope"), "--box", "1,2,3,4", "--tracker", "reference:first_box", "--out",
                 str(tmp_path / "o"))
    assert done.returncode == 2 and "is not a directory of frames" in done.stderr
