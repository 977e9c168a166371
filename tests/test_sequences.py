"""Sequence readers: GOT-10k (train/val and the test subset's single box) and LaSOT/OTB layouts, visibility rules,
and clear refusals of malformed folders."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from data.records import DataError
from data.sequences import open_sequences, sequence_layout
from data.synthetic import Got10kSpec, generate_got10k


@pytest.fixture(scope="module")
def got10k(tmp_path_factory):
    root = tmp_path_factory.mktemp("seq") / "got10k"
    generate_got10k(root, Got10kSpec(num_train_seqs=2, num_val_seqs=2, min_frames=8, max_frames=10), workers=1)
    return root


def test_got10k_round_trip(got10k):
    val = open_sequences(got10k, "val")
    assert val.layout == "got10k" and [s.name for s in val.sequences] == ["GOT-10k_Val_000001", "GOT-10k_Val_000002"]
    for seq in val.sequences:
        folder = got10k / "val" / seq.name
        written = np.loadtxt(folder / "groundtruth.txt", delimiter=",")
        assert np.array_equal(seq.boxes, written) and seq.fully_annotated
        assert seq.frames[0] == f"val/{seq.name}/00000001.jpg" and len(seq.frames) == len(written)
        cover = np.loadtxt(folder / "cover.label", dtype=int)
        absent = np.loadtxt(folder / "absence.label", dtype=int)
        assert np.array_equal(seq.cover, cover)
        assert np.array_equal(seq.visible, (cover > 0) & (absent == 0))
        assert seq.resolution == (320, 240) and seq.meta["object_class"]
        frame = val.frame(seq, 0)
        assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
    # the subset folder itself is a root too
    assert [s.name for s in open_sequences(got10k / "val").sequences] == [s.name for s in val.sequences]


def test_visibility_follows_cover_and_absence(got10k, tmp_path):
    root = tmp_path / "g"
    shutil.copytree(got10k, root)
    folder = root / "train" / "GOT-10k_Train_000001"
    n = len(np.loadtxt(folder / "groundtruth.txt", delimiter=","))
    cover, absent = np.full(n, 8), np.zeros(n, int)
    cover[2], absent[3], (cover[4], absent[4]) = 0, 1, (0, 1)
    (folder / "cover.label").write_text("".join(f"{v}\n" for v in cover))
    (folder / "absence.label").write_text("".join(f"{v}\n" for v in absent))
    seq = open_sequences(root, "train").sequences[0]
    assert np.flatnonzero(~seq.visible).tolist() == [2, 3, 4]


def test_test_subset_has_only_the_first_box(got10k, tmp_path):
    root = tmp_path / "g"
    (root / "test").mkdir(parents=True)
    src = got10k / "val" / "GOT-10k_Val_000001"
    dst = root / "test" / "GOT-10k_Test_000001"
    shutil.copytree(src, dst)
    first = (src / "groundtruth.txt").read_text().splitlines()[0]
    (dst / "groundtruth.txt").write_text(first + "\n")
    for name in ("absence.label", "cover.label", "cut_by_image.label"):
        (dst / name).unlink()
    (root / "test" / "list.txt").write_text("GOT-10k_Test_000001\n")
    seq = open_sequences(root, "test").sequences[0]
    assert seq.boxes.shape == (1, 4) and not seq.fully_annotated and seq.visible is None
    assert np.array_equal(seq.boxes[0], [float(v) for v in first.split(",")]) and len(seq) > 1


def _lasot(root, visible_flags):
    seq = root / "cat" / "cat-1"
    (seq / "img").mkdir(parents=True)
    n = len(visible_flags)
    for i in range(n):
        Image.new("RGB", (40, 30), (i * 20, 0, 0)).save(seq / "img" / f"{i + 1:08d}.jpg")
    (seq / "groundtruth.txt").write_text("".join(f"{i},{i},10,8\n" for i in range(n)))
    occlusion = [0 if v else 1 for v in visible_flags]
    (seq / "full_occlusion.txt").write_text(",".join(map(str, occlusion)))
    (seq / "out_of_view.txt").write_text(",".join("0" for _ in range(n)))
    return seq


def test_lasot_layout(tmp_path):
    _lasot(tmp_path / "lasot", [1, 1, 0, 1])
    sequences = open_sequences(tmp_path / "lasot")
    assert sequences.layout == "lasot" and sequence_layout(tmp_path / "lasot") == "lasot"
    seq = sequences.sequences[0]
    assert seq.name == "cat-1" and seq.meta == {"class": "cat"} and seq.frames[0] == "cat/cat-1/img/00000001.jpg"
    assert seq.visible.tolist() == [True, True, False, True] and seq.boxes[3].tolist() == [3, 3, 10, 8]
    assert sequences.frame(seq, 1).shape == (30, 40, 3)


def test_otb_layout_with_whitespace_separated_boxes(tmp_path):
    seq = tmp_path / "otb" / "Basketball"
    (seq / "img").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (20, 20)).save(seq / "img" / f"{i + 1:04d}.jpg")
    (seq / "groundtruth_rect.txt").write_text("1\t2\t3\t4\n2 3 4 5\n0,0,0,0\n")
    s = open_sequences(tmp_path / "otb").sequences[0]
    assert s.boxes.tolist() == [[1, 2, 3, 4], [2, 3, 4, 5], [0, 0, 0, 0]]
    assert s.visible.tolist() == [True, True, False]  # a zero-size box marks an unannotated frame


@pytest.mark.parametrize("breakage, message", [
    (lambda f: (f / "groundtruth.txt").write_text("1,2,3,4\n"), "1 boxes for"),
    (lambda f: (f / "groundtruth.txt").write_text("1,2,3\n" * 20), "expected 4 numbers"),
    (lambda f: (f / "groundtruth.txt").write_text("a,b,c,d\n"), "expected 4 numbers"),
    (lambda f: (f / "cover.label").write_text("8\n"), "1 values, expected one per frame"),
    (lambda f: (f / "absence.label").unlink(), "absence.label: missing"),
    (lambda f: (f / "meta_info.ini").write_text("[METAINFO]\nresolution: 320x240\n"), r"expected '\(width, height\)'"),
    (lambda f: shutil.rmtree(f), "does not exist"),
])
def test_malformed_got10k_folders_are_refused_with_the_file_named(got10k, tmp_path, breakage, message):
    root = tmp_path / "g"
    shutil.copytree(got10k, root)
    folder = root / "val" / "GOT-10k_Val_000002"
    breakage(folder)
    with pytest.raises(DataError, match=message) as info:
        open_sequences(root, "val")
    assert "GOT-10k_Val_000002" in str(info.value)


def test_not_a_tracking_dataset(got10k, tmp_path):
    with pytest.raises(DataError, match="no such file"):
        open_sequences(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a tracking dataset"):
        open_sequences(tmp_path / "empty")
    with pytest.raises(DataError, match=r"no subset 'tset' here \(subsets with a list.txt: train, val\)"):
        open_sequences(got10k, "tset")
