"""Segmentation and VOT layouts (data.mask_sequences): DAVIS and YouTube-VOS masks and the boxes made from them, VOT
polygons, layout detection next to GOT-10k, packs, the synthetic DAVIS/VOT writers, their refusals, and the GOT-10k
generator's output pinned to what it wrote before masks existed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from data import _render
from data.mask_sequences import mask_box, open_davis, open_vot, open_youtube_vos
from data.records import DataError
from data.sequence_pack import open_sequence_pack, pack_sequences
from data.sequences import Sequence, SequenceSet, open_sequences, sequence_layout
from data.synthetic import (DavisSpec, Got10kSpec, VotSpec, davis_palette, ensure_davis, generate_davis,
                            generate_got10k, generate_vot, main, vot_polygon)

W, H = 96, 64
TINY_DAVIS = DavisSpec(num_train_videos=2, num_val_videos=1, min_frames=8, max_frames=10, objects_per_video=2,
                       img_w=W, img_h=H)
TINY_VOT = VotSpec(num_seqs=2, min_frames=8, max_frames=10, img_w=W, img_h=H)


@pytest.fixture(scope="module")
def davis(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("masks") / "davis"
    generate_davis(root, TINY_DAVIS, workers=1)
    return root


def same_boxes(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(a, b, equal_nan=True)


def check_masks(sequences: SequenceSet, size=(W, H)) -> None:
    """Every annotated frame's mask is a bool array of the frame's size whose bounding box is the sequence's box;
    visible exactly where the mask has pixels; unannotated frames have NaN boxes."""
    for sequence in sequences.sequences:
        assert sequence.masks is not None and len(sequence.masks) == len(sequence.frames)
        for index, key in enumerate(sequence.masks):
            if key is None:
                assert np.isnan(sequence.boxes[index]).all() and not sequence.visible[index]
                continue
            mask = sequences.mask(sequence, index)
            assert mask.dtype == bool and mask.shape == (size[1], size[0])
            assert same_boxes(sequence.boxes[index], mask_box(mask))
            assert sequence.visible[index] == mask.any()


# --------------------------------------------------------------------------------------------------------------------
# DAVIS


def test_davis_masks_boxes_and_two_objects(davis):
    train = open_sequences(davis, "train")
    assert train.layout == "davis" and sequence_layout(davis) == "davis"
    assert [s.name for s in train.sequences] == ["train-0001_1", "train-0001_2", "train-0002_1", "train-0002_2"]
    assert [s.object_id for s in train.sequences] == [1, 2, 1, 2]
    check_masks(train)
    first, second = train.sequences[:2]
    assert first.frames == second.frames and first.masks == second.masks  # the objects share the video's files
    assert first.masks[0] == "Annotations/480p/train-0001/00000.png" and first.meta == {"video": "train-0001"}
    for index in range(len(first)):
        # the PNG is DAVIS's palette image; each object owns its own pixels
        with Image.open(davis / first.masks[index]) as png:
            assert png.mode == "P" and png.getpalette()[:9] == davis_palette()[:9]
            ids = np.asarray(png)
        assert np.array_equal(train.mask(first, index), ids == 1)
        assert np.array_equal(train.mask(second, index), ids == 2)
        assert set(np.unique(ids)) <= {0, 1, 2}
    assert all(s.visible.any() for s in train.sequences if s.object_id == 1)
    val = open_davis(davis)  # the default subset is val
    assert [s.name for s in val.sequences] == ["val-0001_1", "val-0001_2"]


def test_davis_single_object_names_and_masks_of_the_render(tmp_path):
    spec = DavisSpec(num_train_videos=1, num_val_videos=1, min_frames=8, max_frames=8, img_w=W, img_h=H, seed=5)
    generate_davis(tmp_path / "d", spec, workers=1)
    sequences = open_sequences(tmp_path / "d", "train")
    (sequence,) = sequences.sequences
    assert (sequence.name, sequence.object_id) == ("train-0001", 1)
    check_masks(sequences)
    # the mask is the render's: what render_sequence reports for the target, inside its (unclipped-object) GOT box
    frames, boxes, _, cover, _, _, labels = _render.render_sequence(np.random.default_rng([5, 51, 0]), 8, W, H,
                                                                     masks=True)
    for index in range(8):
        assert np.array_equal(sequences.mask(sequence, index), labels[index] == 1)
        x, y, w, h = boxes[index].astype(int)
        outside = labels[index] == 1
        outside[y:y + h, x:x + w] = False
        assert not outside.any()
    # masks do not change the frames, boxes or labels drawn from the same seed
    plain = _render.render_sequence(np.random.default_rng([5, 51, 0]), 8, W, H)
    assert len(plain) == 6 and np.array_equal(plain[1], boxes) and plain[3] == cover
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(plain[0], frames))


def test_davis_refusals(davis, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(davis, root)
    sequences = open_davis(root, "train")
    png = root / "Annotations/480p/train-0001/00003.png"
    # a PNG of the wrong size: refused at open time and by mask()
    small = Image.fromarray(np.zeros((40, 50), np.uint8), "P")
    small.putpalette(davis_palette())
    small.save(png)
    with pytest.raises(DataError, match=rf"{png}: annotation is 50×40 pixels; expected the size of the video's frames, "
                                        rf"96×64"):
        open_davis(root, "train")
    with pytest.raises(DataError, match=rf"{png}: annotation is 50×40 pixels; expected the size of its frame .*"
                                        rf"00003.jpg, 96×64"):
        sequences.mask(sequences.sequences[0], 3)
    # an RGB PNG
    Image.new("RGB", (W, H), (128, 0, 0)).save(png)
    expected = (rf"{png}: expected a palette \(indexed, mode P\) or single-channel \(mode L or 1\) PNG of object ids, "
                rf"found an image of mode RGB")
    with pytest.raises(DataError, match=expected):
        open_davis(root, "train")
    with pytest.raises(DataError, match=expected):
        sequences.mask(sequences.sequences[0], 3)
    # a frame without its PNG, then no Annotations folder at all
    png.unlink()
    with pytest.raises(DataError, match=r"train-0001: no annotation for frame 00003.jpg; expected one PNG per frame"):
        open_davis(root, "train")
    shutil.rmtree(root / "Annotations")
    with pytest.raises(DataError, match=rf"{root / 'Annotations' / '480p'}: missing; expected the palette PNG "
                                        rf"annotations \(Annotations/480p/<seq>/00000.png…\)"):
        open_sequences(root, "train")
    with pytest.raises(DataError, match=r"ImageSets/2017/test.txt: missing; expected the DAVIS sequence list of "
                                        r"subset 'test' .*; lists found: train, val"):
        open_davis(root, "test")


def test_davis_and_vot_packs_keep_masks_and_polygons(davis, tmp_path):
    folder = open_sequences(davis, "train")
    summary = pack_sequences(davis, tmp_path / "davis.lmdb", "train")
    assert summary["frames"] == sum(len(s) for s in folder.sequences) // 2  # two objects share each frame
    packed = open_sequence_pack(tmp_path / "davis.lmdb", "train")
    assert packed.layout == "davis"
    for a, b in zip(packed.sequences, folder.sequences):
        assert (a.name, a.masks, a.object_id) == (b.name, b.masks, b.object_id)
        assert same_boxes(a.boxes, b.boxes) and np.array_equal(a.visible, b.visible)
        for index in (0, len(a) - 1):
            assert np.array_equal(packed.mask(a, index), folder.mask(b, index))
    generate_vot(tmp_path / "vot", TINY_VOT, workers=1)
    pack_sequences(tmp_path / "vot", tmp_path / "vot.lmdb")
    for a, b in zip(open_sequences(tmp_path / "vot.lmdb").sequences, open_sequences(tmp_path / "vot").sequences):
        assert a.masks is None and same_boxes(a.polygons, b.polygons) and same_boxes(a.boxes, b.boxes)


# --------------------------------------------------------------------------------------------------------------------
# YouTube-VOS


def palette_png(path: Path, ids: np.ndarray) -> None:
    image = Image.fromarray(ids.astype(np.uint8), "P")
    image.putpalette(davis_palette())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def make_youtube_vos(root: Path) -> Path:
    """train/: video 'a' (6 frames, PNGs on frames 0 and 5 only, objects 1 and 2, object 2 gone on frame 5) and video
    'b' (4 frames, object 3 only, first annotated on frame 2, as in valid)."""
    split = root / "train"
    for video, count in (("a", 6), ("b", 4)):
        (split / "JPEGImages" / video).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (40, 30), (i * 30, 90, 160)).save(split / "JPEGImages" / video / f"{i * 5:05d}.jpg")
    ids = np.zeros((30, 40), np.uint8)
    ids[3:9, 4:10] = 1
    ids[20:30, 30:40] = 2
    palette_png(split / "Annotations/a/00000.png", ids)
    ids = np.zeros((30, 40), np.uint8)
    ids[10, 7:25] = 1
    palette_png(split / "Annotations/a/00025.png", ids)
    ids = np.zeros((30, 40), np.uint8)
    ids[0:30, 0:1] = 3
    palette_png(split / "Annotations/b/00010.png", ids)
    meta = {"videos": {"a": {"objects": {"1": {"category": "cat", "frames": ["00000", "00025"]},
                                         "2": {"category": "dog", "frames": ["00000"]}}},
                       "b": {"objects": {"3": {"category": "ant", "frames": ["00010", "00015"]}}}}}
    (split / "meta.json").write_text(json.dumps(meta))
    return root


def test_youtube_vos_sparse_annotations(tmp_path):
    root = make_youtube_vos(tmp_path / "ytvos")
    assert sequence_layout(root) == "youtube_vos" and sequence_layout(root / "train") == "youtube_vos"
    sequences = open_sequences(root)  # subset train by default
    assert sequences.layout == "youtube_vos"
    names = [(s.name, s.object_id, s.meta["category"]) for s in sequences.sequences]
    assert names == [("a_1", 1, "cat"), ("a_2", 2, "dog"), ("b", 3, "ant")]
    a1, a2, b = sequences.sequences
    assert a1.masks == ("train/Annotations/a/00000.png", None, None, None, None, "train/Annotations/a/00025.png")
    nan = [np.nan] * 4
    assert same_boxes(a1.boxes, np.array([[4, 3, 6, 6], nan, nan, nan, nan, [7, 10, 18, 1]], dtype=float))
    assert same_boxes(a2.boxes, np.array([[30, 20, 10, 10]] + [nan] * 5, dtype=float))
    assert a1.visible.tolist() == [True, False, False, False, False, True]
    assert a2.visible.tolist() == [True] + [False] * 5  # annotated on frame 5 and absent there
    assert same_boxes(b.boxes, np.array([nan, nan, [0, 0, 1, 30], nan], dtype=float))
    check_masks(sequences, (40, 30))
    with pytest.raises(DataError, match=r"00005.jpg: frame 1 of a_1 has no annotation PNG"):
        sequences.mask(a1, 1)
    # the subset folder itself is a root too (keys relative to it)
    inner = open_youtube_vos(root / "train", subset=None)
    assert [s.masks[0] for s in inner.sequences[:1]] == ["Annotations/a/00000.png"]
    with pytest.raises(DataError, match=r"valid/meta.json: missing; expected a YouTube-VOS subset folder .* subsets "
                                        r"found: train"):
        open_sequences(root, "valid")
    shutil.rmtree(root / "train" / "Annotations")
    with pytest.raises(DataError, match=r"train/Annotations: missing; expected the palette PNG annotations"):
        open_sequences(root)


# --------------------------------------------------------------------------------------------------------------------
# VOT


def make_vot(root: Path) -> Path:
    """'old' in the VOT2016-2019 layout (frames next to groundtruth.txt), 'new' in VOT2020+'s (color/)."""
    lines = {"old": ["10,20,30,20,30,40,10,40", "1.5,2,5.5,1,6.5,5,2.5,6", "0", "4,5,6,7"],
             "new": ["nan,nan,nan,nan", "3,3,3,3,3,3,3,3", "8.25\t9\t10\t11"]}
    for name, gt in lines.items():
        folder = root / name / ("color" if name == "new" else "")
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(len(gt)):
            Image.new("RGB", (48, 48), (i * 40, 20, 20)).save(folder / f"{i + 1:08d}.jpg")
        (root / name / "groundtruth.txt").write_text("\n".join(gt) + "\n")
    (root / "list.txt").write_text("old\nnew\n")
    return root


def test_vot_polygons_boxes_and_visibility(tmp_path):
    root = make_vot(tmp_path / "vot")
    assert sequence_layout(root) == "vot"
    sequences = open_sequences(root)
    assert sequences.layout == "vot"
    old, new = sequences.sequences
    assert old.frames[0] == "old/00000001.jpg" and new.frames[0] == "new/color/00000001.jpg"
    nan = [np.nan] * 8
    expected = np.array([[10, 20, 30, 20, 30, 40, 10, 40], [1.5, 2, 5.5, 1, 6.5, 5, 2.5, 6], nan, nan], float)
    expected[:2] += 0.5  # VOT's pixel-centre coordinates → ours
    expected[3] = [4, 5, 10, 5, 10, 12, 4, 12]  # a rectangle is already ours: its corners
    assert same_boxes(old.polygons, expected)
    assert same_boxes(old.boxes, np.array([[10.5, 20.5, 20, 20], [2, 1.5, 5, 5], [np.nan] * 4, [4, 5, 6, 7]]))
    assert old.visible.tolist() == [True, True, False, True]
    assert same_boxes(new.boxes, np.array([[np.nan] * 4, [3.5, 3.5, 0, 0], [8.25, 9, 10, 11]]))
    assert new.visible.tolist() == [False, False, True]  # NaN = absent; a point has no area
    raw = open_vot(root, vertex_shift=0.0).sequences[0]
    assert same_boxes(raw.polygons[:2], expected[:2] - 0.5) and raw.boxes[0].tolist() == [10, 20, 20, 20]


def test_vot_refusals(tmp_path):
    root = make_vot(tmp_path / "vot")
    gt = root / "old" / "groundtruth.txt"
    gt.write_text("10,20,30,20,30,40,10,40\n1,2,3,4,5\n0\n1,1,1,1\n")
    with pytest.raises(DataError, match=rf"{gt}: line 2: expected 4 numbers x,y,w,h, 8 numbers x1,y1,x2,y2,x3,y3,"
                                        rf"x4,y4 or 0 \(no region\), found 5 number\(s\): '1,2,3,4,5'"):
        open_sequences(root)
    gt.write_text("m1,2,3,4,5,6\n" * 4)
    with pytest.raises(DataError, match=r"line 1: a VOT2020 mask region"):
        open_vot(root)
    gt.write_text("0\n" * 3)
    with pytest.raises(DataError, match=rf"{gt}: 3 boxes for 4 frames; expected one box per frame"):
        open_vot(root)


def test_layout_detection_keeps_got10k(tmp_path):
    generate_got10k(tmp_path / "got", Got10kSpec(num_train_seqs=1, num_val_seqs=1, min_frames=8, max_frames=8,
                                                   img_w=W, img_h=H, seed=3), workers=1)
    assert sequence_layout(tmp_path / "got", "train") == "got10k"
    assert sequence_layout(tmp_path / "got" / "val") == "got10k"
    # a GOT-10k test-style folder: no labels, one 4-number box
    test = tmp_path / "got" / "test"
    shutil.copytree(tmp_path / "got" / "val", test)
    seq = test / "GOT-10k_Val_000001"
    for name in ("absence.label", "cover.label", "cut_by_image.label", "meta_info.ini"):
        (seq / name).unlink()
    (seq / "groundtruth.txt").write_text("1,2,3,4\n")
    assert sequence_layout(test) == "got10k" and open_sequences(test).sequences[0].visible is None
    # GOT-10k output is byte-identical to the generator before masks existed (this Pillow/libjpeg build)
    files = tmp_path / "got" / "train" / "GOT-10k_Train_000001"
    digests = [hashlib.md5((files / name).read_bytes()).hexdigest() for name in ("groundtruth.txt", "00000001.jpg")]
    assert digests == ["fda4cf05e5da2c6b70f1f73108309972", "41d3d856ae02e0dcaa71b9119e560e36"]


# --------------------------------------------------------------------------------------------------------------------
# synthetic VOT, the helpers, CLI and params


def parse_written(path: Path) -> list[np.ndarray | None]:
    return [None if line == "0" else np.array([float(v) for v in line.split(",")])
            for line in path.read_text().splitlines()]


@pytest.mark.parametrize("color_folder", [True, False])
def test_synthetic_vot_reads_back(tmp_path, color_folder):
    spec = VotSpec(num_seqs=2, min_frames=8, max_frames=10, img_w=W, img_h=H, color_folder=color_folder)
    summary = generate_vot(tmp_path / "vot", spec, workers=1)
    sequences = open_sequences(tmp_path / "vot")
    assert sequences.layout == "vot" and [s.name for s in sequences.sequences] == ["synthetic-0001", "synthetic-0002"]
    assert (tmp_path / "vot" / "synthetic-0001" / "sequence").exists() == color_folder
    regions = 0
    for sequence in sequences.sequences:
        assert sequence.frames[0] == f"{sequence.name}/{'color/' if color_folder else ''}00000001.jpg"
        for index, written in enumerate(parse_written(tmp_path / "vot" / sequence.name / "groundtruth.txt")):
            polygon, box = sequence.polygons[index], sequence.boxes[index]
            if written is None:
                assert np.isnan(polygon).all() and np.isnan(box).all() and not sequence.visible[index]
                continue
            regions += 1
            assert np.array_equal(polygon, written + 0.5)
            xs, ys = polygon[0::2], polygon[1::2]
            assert box.tolist() == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
            assert sequence.visible[index] == (box[2] > 0 and box[3] > 0)
            assert -1 <= xs.min() and xs.max() <= W + 1 and -1 <= ys.min() and ys.max() <= H + 1
    assert regions == summary["counts"]["regions"] and regions > 0


def test_vot_polygon_of_a_rotated_rectangle():
    mask = np.zeros((60, 80), np.uint8)
    corners = cv2.boxPoints(((40.0, 30.0), (40.0, 16.0), 30.0))
    cv2.fillPoly(mask, [np.round(corners).astype(np.int32)], 1)
    polygon = vot_polygon(mask.astype(bool)).reshape(4, 2)
    # the same rectangle, up to the pixel grid: every corner within 1.5 px of one drawn corner
    assert all(np.min(np.hypot(*(corners - p).T)) < 1.5 for p in polygon)
    square = np.zeros((20, 30), bool)
    square[5:10, 3:20] = True  # pixel indices 3..19 × 5..9: VOT's polygon passes through the edge pixels' centres
    assert sorted(map(tuple, vot_polygon(square).reshape(4, 2))) == [(3, 5), (3, 9), (19, 5), (19, 9)]
    assert vot_polygon(np.zeros((5, 5), bool)) is None


def test_cli_params_and_reuse(tmp_path):
    assert main(["davis", "--out", str(tmp_path / "d"), "--num-train-videos", "1", "--num-val-videos", "1",
                 "--min-frames", "8", "--max-frames", "8", "--img-w", "64", "--img-h", "64"]) == 0
    assert main(["vot", "--out", str(tmp_path / "v"), "--num-seqs", "1", "--min-frames", "8", "--max-frames", "8",
                 "--img-w", "64", "--img-h", "64", "--vot2019-layout"]) == 0
    assert open_sequences(tmp_path / "d", "val").layout == "davis"
    assert (tmp_path / "v" / "synthetic-0001" / "00000001.jpg").is_file()
    spec = DavisSpec(num_train_videos=1, num_val_videos=1, min_frames=8, max_frames=8, img_w=64, img_h=64)
    assert ensure_davis(tmp_path / "d", spec)["generated"] is False

    from data.options import SyntheticDataParams
    from data.synthetic import ensure_from_params

    params = SyntheticDataParams(type="vot", seed=2, options={"num_seqs": 1, "min_frames": 8, "max_frames": 8,
                                                               "img_w": 64, "img_h": 64, "color_folder": False})
    ensure_from_params(tmp_path / "p", params)
    assert open_sequences(tmp_path / "p").layout == "vot"
    with pytest.raises(ValueError, match="objects_per_video must be in 1..3"):
        DavisSpec(objects_per_video=4)


def test_sequence_defaults_unchanged():
    sequence = Sequence("s", ("a.jpg",), np.zeros((1, 4)), None)
    assert (sequence.masks, sequence.object_id, sequence.polygons) == (None, None, None)
    with pytest.raises(DataError, match="the sequence has no segmentation masks"):
        SequenceSet((sequence,), None, "got10k", "").mask(sequence, 0)
