"""GOTURN's training data: ALOV300++ videos (data.sequences.open_alov) and ImageNet DET still images
(data.still_images.open_imagenet_det), read from files written by data.synthetic's generators and by hand."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import synthetic as syn
from data.options import SyntheticDataParams
from data.records import DataError
from data.sequences import open_alov, open_sequences, sequence_layout
from data.still_images import STILL_LAYOUT, open_imagenet_det
from data.synthetic import AlovSpec, ImagenetDetSpec

TINY_ALOV = AlovSpec(num_categories=2, videos_per_category=2, min_frames=11, max_frames=14, annotate_every=5,
                     img_w=96, img_h=72, seed=1)
TINY_DET = ImagenetDetSpec(num_synsets=2, images_per_synset=3, min_objects=1, max_objects=3, img_w=96, img_h=72,
                           seed=1)


@pytest.fixture(scope="module")
def alov(tmp_path_factory):
    root = tmp_path_factory.mktemp("alov") / "alov"
    return root, syn.generate_alov(root, TINY_ALOV, workers=1)


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    root = tmp_path_factory.mktemp("det") / "det"
    return root, syn.generate_imagenet_det(root, TINY_DET, workers=1)


def _ann_boxes(path: Path) -> dict[int, list[float]]:
    """{0-based frame: x, y, w, h} of an .ann file, converted here independently of the reader."""
    boxes = {}
    for line in path.read_text().splitlines():
        frame, *corners = (float(v) for v in line.split())
        xs, ys = corners[0::2], corners[1::2]
        boxes[int(frame) - 1] = [min(xs) - 0.5, min(ys) - 0.5, max(xs) - min(xs), max(ys) - min(ys)]
    return boxes


# --------------------------------------------------------------------------------------------------------------------
# ALOV300++


def test_alov_round_trip(alov):
    root, summary = alov
    assert sequence_layout(root) == "alov"
    videos = open_sequences(root)
    assert videos.layout == "alov" and len(videos) == summary["counts"]["videos"] == 4
    assert [(s.meta["class"], s.name) for s in videos.sequences] == [
        (c, f"{c}_video{j:05d}") for c in ("01-Light", "02-SurfaceCover") for j in (1, 2)]
    assert sum(len(s) for s in videos.sequences) == summary["counts"]["frames"]
    annotated = 0
    for seq in videos.sequences:
        folder = root / "images" / seq.meta["class"] / seq.name
        jpgs = sorted(p.name for p in folder.glob("*.jpg"))
        assert TINY_ALOV.min_frames <= len(seq) == len(jpgs) <= TINY_ALOV.max_frames and seq.fully_annotated
        assert seq.frames == tuple(f"images/{seq.meta['class']}/{seq.name}/{n}" for n in jpgs)
        written = _ann_boxes(root / "gt" / seq.meta["class"] / f"{seq.name}.ann")
        assert sorted(written) == list(range(0, len(seq), 5))  # frames 1, 6, 11, … (1-based)
        for index, box in written.items():
            assert seq.boxes[index].tolist() == box  # exact: the corners are the rendered box + 0.5
            assert all(v == int(v) for v in box) and box[2] > 0 and box[3] > 0  # whole pixels, as rendered
        assert np.isnan(np.delete(seq.boxes, list(written), axis=0)).all()
        assert np.flatnonzero(seq.visible).tolist() == sorted(written)
        annotated += len(written)
        x, y, w, h = seq.boxes[0]
        assert 0 <= x and x + w <= 96 and 0 <= y and y + h <= 72
    assert annotated == summary["counts"]["annotated_frames"]
    assert videos.frame(videos.sequences[0], 1).shape == (72, 96, 3)
    # ALOV has no split: a subset is ignored
    assert [s.name for s in open_sequences(root, "train").sequences] == [s.name for s in videos.sequences]


def _frames(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (32, 24), (i * 40, 0, 0)).save(folder / f"{i + 1:08d}.jpg")


def test_alov_rotated_corners_and_origin(tmp_path):
    root = tmp_path / "alov"
    _frames(root / "images" / "05-Shape" / "05-Shape_video00001", 4)
    (root / "gt" / "05-Shape").mkdir(parents=True)
    # frame 1: a rotated square (a diamond); frame 3: an axis-aligned box listed from another corner; frame 4: no width
    (root / "gt" / "05-Shape" / "05-Shape_video00001.ann").write_text(
        "1 10.5 2.5 2.5 10.5 10.5 18.5 18.5 10.5\n"
        "3   20.25 15.75 4.25 15.75 4.25 3.75 20.25 3.75  \n"
        "\n"
        "4 6 6 6 9 6 9 6 6\n")
    seq = open_sequences(root).sequences[0]
    assert seq.boxes[0].tolist() == [2.0, 2.0, 16.0, 16.0]
    assert seq.boxes[2].tolist() == [3.75, 3.25, 16.0, 12.0]
    assert seq.boxes[3].tolist() == [5.5, 5.5, 0.0, 3.0]
    assert np.isnan(seq.boxes[1]).all()
    assert seq.visible.tolist() == [True, False, True, False]  # annotated frames with a box of positive size
    reference = open_alov(root, corner_origin=1.0).sequences[0]  # GOTURN's reference subtracts 1
    assert reference.boxes[0].tolist() == [1.5, 1.5, 16.0, 16.0]


def _replace_line(text: str, number: int, line: str) -> str:
    lines = text.splitlines()
    lines[number - 1] = line
    return "\n".join(lines) + "\n"


VIDEO = ("02-SurfaceCover", "02-SurfaceCover_video00002")


@pytest.mark.parametrize("breakage, message, names", [
    (lambda ann, video: ann.write_text(ann.read_text() + "99 1 1 1 5 5 5 5 1\n"),
     r"line 4: frame 99, but .*02-SurfaceCover_video00002 has \d+ frames", ".ann"),
    (lambda ann, video: ann.write_text(_replace_line(ann.read_text(), 2, "6 1 2 3")),
     r"line 2: expected 9 numbers 'frame ax ay bx by cx cy dx dy' .*found 4: '6 1 2 3'", ".ann"),
    (lambda ann, video: ann.write_text(_replace_line(ann.read_text(), 1, "1 a b c d e f g h")),
     "line 1: expected 9 numbers", ".ann"),
    (lambda ann, video: ann.write_text(_replace_line(ann.read_text(), 3, "0 1 1 1 5 5 5 5 1")),
     r"line 3: expected a frame number 1, 2, …, found '0'", ".ann"),
    (lambda ann, video: ann.write_text(_replace_line(ann.read_text(), 3, "1 1 1 1 5 5 5 5 1")),
     r"line 3: frame 1 is annotated again \(first on line 1\)", ".ann"),
    (lambda ann, video: ann.write_text(_replace_line(ann.read_text(), 2, "6 1 nan 1 5 5 5 5 1")),
     "line 2: expected finite corner coordinates", ".ann"),
    (lambda ann, video: ann.write_text(""), r"no annotations \(empty file\)", ".ann"),
    (lambda ann, video: ann.unlink(),
     r"02-SurfaceCover_video00002: video folder without its annotation file; expected .*gt/02-SurfaceCover/"
     r"02-SurfaceCover_video00002\.ann", "images/02-SurfaceCover/02-SurfaceCover_video00002"),
    (lambda ann, video: shutil.rmtree(video),
     r"02-SurfaceCover_video00002\.ann: annotation file without its video; expected the frames in "
     r".*images/02-SurfaceCover/02-SurfaceCover_video00002/", ".ann"),
    (lambda ann, video: [p.unlink() for p in video.glob("*.jpg")], "no frames", "images/02-SurfaceCover/"),
])
def test_malformed_alov_is_refused_naming_the_file(alov, tmp_path, breakage, message, names):
    root = tmp_path / "alov"
    shutil.copytree(alov[0], root)
    ann = root / "gt" / VIDEO[0] / f"{VIDEO[1]}.ann"
    breakage(ann, root / "images" / VIDEO[0] / VIDEO[1])
    with pytest.raises(DataError, match=message) as info:
        open_sequences(root)
    named = str(ann) if names == ".ann" else str(root / names)
    assert named in str(info.value)


# --------------------------------------------------------------------------------------------------------------------
# ImageNet DET


def test_imagenet_det_round_trip(det):
    root, summary = det
    images = open_imagenet_det(root)
    assert images.layout == STILL_LAYOUT and len(images) == summary["counts"]["objects"]
    assert 6 <= len(images) <= 18 and len({s.frames[0] for s in images.sequences}) == 6
    by_name = images.by_name()
    for xml in sorted((root / "gt").glob("*/*.xml")):
        annotation = ElementTree.parse(xml).getroot()
        size = (int(annotation.findtext("size/width")), int(annotation.findtext("size/height")))
        for k, obj in enumerate(annotation.findall("object"), 1):
            xmin, ymin, xmax, ymax = (int(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
            seq = by_name[f"{xml.stem}_{k}"]
            assert seq.boxes.tolist() == [[xmin, ymin, xmax - xmin + 1, ymax - ymin + 1]]  # inclusive 0-based
            assert seq.visible.tolist() == [True] and seq.resolution == size
            assert seq.frames == (f"{xml.parent.name}/{xml.stem}.JPEG",)
            assert seq.meta == {"image": f"{xml.parent.name}/{xml.stem}", "category": xml.parent.name}
            x, y, w, h = seq.boxes[0]
            assert 0 <= x and x + w <= size[0] and 0 <= y and y + h <= size[1]
            assert w <= 0.5 * size[0] + 1 and h <= 0.5 * size[1] + 1
        frame = images.frame(by_name[f"{xml.stem}_1"], 0)
        assert frame.shape == (size[1], size[0], 3)
    # not a tracking dataset, but the message says what reads it
    with pytest.raises(DataError, match="ImageNet DET still-image set, which data.still_images.open_imagenet_det"):
        open_sequences(root)


def _det_root(tmp_path: Path, objects, size=(100, 80)) -> Path:
    root = tmp_path / "det"
    (root / "images" / "n01").mkdir(parents=True)
    (root / "gt" / "n01").mkdir(parents=True)
    Image.new("RGB", size).save(root / "images" / "n01" / "n01_1.JPEG", format="JPEG")
    (root / "gt" / "n01" / "n01_1.xml").write_text(syn.voc_xml("n01", "n01_1", *size, [("n01", b) for b in objects]))
    return root


def test_imagenet_det_size_rule_and_degenerate_boxes(tmp_path):
    # a 100 × 80 image: 0.66 of it is 66 × 52.8
    objects = [(10, 10, 39, 29),   # normal: kept as 30 × 20
               (0, 0, 69, 20),     # 70 wide: dropped
               (0, 0, 65, 20),     # 66 wide, not over 66: kept
               (5, 0, 20, 53),     # 54 tall: dropped
               (50, 40, 100, 60),  # xmax at the width: clipped at the border, 50 wide, kept
               (30, 30, 30, 40),   # xmax <= xmin: degenerate
               (-1, 5, 10, 10)]    # xmin < 0: degenerate
    root = _det_root(tmp_path, objects)
    Image.new("RGB", (20, 20)).save(root / "images" / "n01" / "n01_2.JPEG", format="JPEG")  # no xml: skipped
    kept = open_imagenet_det(root)
    assert {s.name: s.boxes[0].tolist() for s in kept.sequences} == {
        "n01_1_1": [10, 10, 30, 20], "n01_1_3": [0, 0, 66, 21], "n01_1_5": [50, 40, 50, 21]}
    assert "skipped 2 degenerate and 2 too large" in kept.description
    assert "1 images without an annotation file" in kept.description
    loose = open_imagenet_det(root, max_side_ratio=np.inf)
    assert sorted(s.name for s in loose.sequences) == ["n01_1_1", "n01_1_2", "n01_1_3", "n01_1_4", "n01_1_5"]
    assert open_imagenet_det(root, max_side_ratio=0.3).by_name().keys() == {"n01_1_1"}
    with pytest.raises(DataError, match=r"no usable object in 1 annotation files \(2 objects; skipped 1 degenerate "
                                        r"and 1 too large"):
        open_imagenet_det(_det_root(tmp_path / "big", [(0, 0, 99, 79), (3, 3, 3, 9)]))


@pytest.mark.parametrize("xml, message", [
    ("<annotation><size><width>100</width>", "not well-formed XML"),
    ("<annotation><size><width>100</width></size></annotation>", r"<size><height> is missing"),
    ("<annotation><size><width>100</width><height>0</height></size></annotation>",
     r"<size> must hold whole numbers <width>, <height> > 0, found 100 × 0"),
    ("<annotation><size><width>100</width><height>80</height></size><object><name>n01</name><bndbox><xmin>1</xmin>"
     "<ymin>1</ymin><xmax>9</xmax></bndbox></object></annotation>", r"object 1: <bndbox><ymax> is missing"),
    ("<annotation><size><width>100</width><height>80</height></size><object><bndbox><xmin>1</xmin><ymin>1</ymin>"
     "<xmax>9</xmax><ymax>ten</ymax></bndbox></object></annotation>",
     r"object 1: <ymax> must be a number, found 'ten'"),
    ("<voc><size/></voc>", "root element is <voc>"),
])
def test_malformed_xml_is_refused_naming_the_file(tmp_path, xml, message):
    root = _det_root(tmp_path, [(10, 10, 39, 29)])
    path = root / "gt" / "n01" / "n01_1.xml"
    path.write_text(xml)
    with pytest.raises(DataError, match=message) as info:
        open_imagenet_det(root)
    assert str(info.value).startswith(f"{path}: ")


def test_xml_without_its_image_is_refused(det, tmp_path):
    root = tmp_path / "det"
    shutil.copytree(det[0], root)
    (root / "images" / "n00000002" / "n00000002_3.JPEG").unlink()
    with pytest.raises(DataError, match=r"n00000002_3\.xml: annotation without its image; expected "
                                        r".*images/n00000002/n00000002_3\.JPEG"):
        open_imagenet_det(root)
    # the other way round is fine: an image without an xml has no objects
    (root / "gt" / "n00000002" / "n00000002_3.xml").unlink()
    shutil.copy(root / "images" / "n00000002" / "n00000002_2.JPEG", root / "images" / "n00000002" / "extra.JPEG")
    assert "1 images without an annotation file" in open_imagenet_det(root).description
    with pytest.raises(DataError, match="ImageNet DET folder not found"):
        open_imagenet_det(tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------------------------------
# Generators: determinism, crash safety, ensure, params and CLI


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generators_are_deterministic_and_reused(alov, det, tmp_path):
    for (root, summary), ensure, spec in ((alov, syn.ensure_alov, TINY_ALOV), (det, syn.ensure_imagenet_det, TINY_DET)):
        again = tmp_path / root.name
        assert ensure(again, spec, workers=2)["generated"] is True
        assert _tree(again) == _tree(root)
        reused = ensure(again, spec)
        assert reused["generated"] is False and reused["counts"] == summary["counts"]
        with pytest.raises(FileExistsError, match="different"):
            ensure(again, type(spec)(**{**spec.__dict__, "seed": 5}))


@pytest.mark.parametrize("which", ["alov", "imagenet_det"])
def test_crash_leaves_nothing_behind(tmp_path, monkeypatch, which):
    real = syn._write_image
    calls = {"n": 0}

    def flaky(path, data):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk on fire")
        real(path, data)

    monkeypatch.setattr(syn, "_write_image", flaky)
    ensure, spec = {"alov": (syn.ensure_alov, TINY_ALOV), "imagenet_det": (syn.ensure_imagenet_det, TINY_DET)}[which]
    with pytest.raises(OSError, match="disk on fire"):
        ensure(tmp_path / "ds", spec, workers=1)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(syn, "_write_image", real)
    assert ensure(tmp_path / "ds", spec, workers=1)["generated"] is True


def test_params_and_cli(tmp_path, capsys):
    assert syn.GENERATORS["alov"] == (syn.ensure_alov, AlovSpec)
    assert syn.GENERATORS["imagenet_det"] == (syn.ensure_imagenet_det, ImagenetDetSpec)
    params = SyntheticDataParams(type="alov", seed=1, options={"num_categories": 1, "videos_per_category": 1,
                                                               "min_frames": 8, "max_frames": 8, "img_w": 64,
                                                               "img_h": 64})
    syn.ensure_from_params(tmp_path / "from_params", params)
    assert [len(s) for s in open_sequences(tmp_path / "from_params").sequences] == [8]
    args = ["imagenet_det", "--out", str(tmp_path / "cli"), "--num-synsets", "1", "--images-per-synset", "2",
            "--img-w", "64", "--img-h", "64", "--max-objects", "1"]
    assert syn.main(args) == 0
    assert "imagenet_det: synsets=1 images=2 objects=2" in capsys.readouterr().out
    assert len(open_imagenet_det(tmp_path / "cli")) == 2
    assert syn.main(["alov", "--out", str(tmp_path / "cli_alov"), "--num-categories", "1", "--videos-per-category",
                     "1", "--min-frames", "8", "--max-frames", "9", "--annotate-every", "4", "--img-w", "64",
                     "--img-h", "64"]) == 0
    assert np.flatnonzero(open_sequences(tmp_path / "cli_alov").sequences[0].visible).tolist()[:2] == [0, 4]
    with pytest.raises(ValueError, match="annotate_every"):
        AlovSpec(annotate_every=0)
