"""Dataset layouts on disk → ImageSet: name parsing, layout detection, labels, exclusions and every DataError."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from data.formats import (IMAGE_EXTENSIONS, open_classification_eval, open_reid_eval, open_train_set, parse_market_name,
                          parse_msmt_name)
from data.pack import pack_dataset
from data.readers import FolderReader, LmdbReader
from data.records import DataError, ImageRecord
from engine.errors import UserError

# identity → cameras of its images; 0 = distractors, -1 = junk (Market convention)
TRAIN_IDS = {2: (1, 2, 3), 7: (1, 1), 13: (4, 5, 6, 2), 0: (1, 2), -1: (3,)}


def jpeg(path: Path, colour=(120, 60, 30), size=(16, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="JPEG", quality=90)
    return path


def market_name(pid: int, cam: int, n: int) -> str:
    prefix = "-1" if pid < 0 else f"{pid:04d}"
    return f"{prefix}_c{cam}s1_{n:06d}_0{n % 10}.jpg"


def make_market(root: Path, train=TRAIN_IDS, query=None, gallery=None) -> Path:
    """A tiny Market-1501 root: bounding_box_train/, query/, bounding_box_test/."""
    query = query if query is not None else {2: (1,), 7: (2,)}
    gallery = gallery if gallery is not None else {2: (2, 3), 7: (1, 2), 0: (4,), -1: (1,)}
    for sub, ids in (("bounding_box_train", train), ("query", query), ("bounding_box_test", gallery)):
        for pid, cams in ids.items():
            for n, cam in enumerate(cams):
                jpeg(root / sub / market_name(pid, cam, 100 * n + abs(pid)), ((pid * 40) % 256, cam * 30, n * 50))
    return root


def summary(image_set):
    return sorted((Path(r.key).name, r.pid, r.camid, r.label) for r in image_set.records)


def expected_train_summary():
    kept = {pid: cams for pid, cams in TRAIN_IDS.items() if pid > 0}
    labels = {pid: i for i, pid in enumerate(sorted(kept))}
    return sorted((market_name(pid, cam, 100 * n + pid), pid, cam, labels[pid])
                  for pid, cams in kept.items() for n, cam in enumerate(cams))


# --------------------------------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize("name, expected", [
    ("0002_c1s1_000451_03.jpg", (2, 1)),
    ("-1_c3s2_000401_03.jpg", (-1, 3)),
    ("0000_c6s1_000001_00.jpg", (0, 6)),
    ("1501_c12s3_012345_01.jpg", (1501, 12)),  # two-digit camera: split('c')[1][0] would give 1
    ("0001_c2_f0046182.jpg", (1, 2)),          # DukeMTMC-reID style
    ("/data/Market/query/0042_c5s3_065787_01.jpg", (42, 5)),
])
def test_parse_market_name(name, expected):
    assert parse_market_name(name) == expected


@pytest.mark.parametrize("name", ["foo.jpg", "0002_x1s1_000451_03.jpg", "c1_0002.jpg", "0002c1s1_000451.jpg",
                                  "0002_c_000451.jpg", "abcd_c1s1_000451_03.jpg"])
def test_parse_market_name_rejects_and_names_the_file(name):
    with pytest.raises(DataError, match=name.replace(".", r"\.")) as info:
        parse_market_name(f"/some/dir/{name}")
    assert "/some/dir/" + name in str(info.value)
    assert isinstance(info.value, UserError)


@pytest.mark.parametrize("name, expected", [
    ("0000_000_01_0303morning_0008_0.jpg", (0, 1)),
    ("1040_012_15_0113noon_1234_1.jpg", (1040, 15)),
])
def test_parse_msmt_name(name, expected):
    assert parse_msmt_name(name) == expected


@pytest.mark.parametrize("name", ["0002_c1s1_000451_03.jpg", "0000_000_morning.jpg", "x_1_2_3.jpg"])
def test_parse_msmt_name_rejects(name):
    with pytest.raises(DataError, match="not an MSMT17 image name") as info:
        parse_msmt_name(name)
    assert name in str(info.value)


# --------------------------------------------------------------------------------------------------------------------
# Training layouts


def test_market_root(tmp_path):
    s = open_train_set(make_market(tmp_path / "Market"), "reid")
    assert summary(s) == expected_train_summary()
    assert s.num_classes == 3 and s.class_names == ("0002", "0007", "0013")
    assert all(r.key.startswith("bounding_box_train/") for r in s.records)
    assert isinstance(s.reader, FolderReader)
    assert s.reader.read(s.records[0].key) == (tmp_path / "Market" / s.records[0].key).read_bytes()
    assert "1 junk" in s.description and "2 distractor" in s.description
    assert [r.key for r in s.records] == sorted(r.key for r in s.records)


def test_all_layouts_give_the_same_records(tmp_path):
    market = make_market(tmp_path / "Market")
    flat = tmp_path / "flat"
    shutil.copytree(market / "bounding_box_train", flat)
    folders = tmp_path / "pytorch" / "train_all"  # Zheng's prepare.py layout, junk/distractor folders included
    for img in (market / "bounding_box_train").iterdir():
        dest = folders / img.name.split("_")[0] / img.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(img, dest)
    pack_dataset(market, tmp_path / "market.lmdb")
    sets = {
        "market": open_train_set(market, "reid"),
        "flat": open_train_set(flat, "reid"),
        "folders": open_train_set(folders, "reid"),
        "pack": open_train_set(tmp_path / "market.lmdb", "reid"),
    }
    for name, s in sets.items():
        assert summary(s) == expected_train_summary(), name
        assert s.class_names == ("0002", "0007", "0013"), name
    assert isinstance(sets["pack"].reader, LmdbReader)
    assert sets["pack"].records == sets["market"].records
    assert sets["folders"].records[0].key == "0002/" + market_name(2, 1, 2)


def test_identity_folders_without_market_names(tmp_path):
    root = tmp_path / "ids"
    jpeg(root / "10" / "a.jpg")
    jpeg(root / "10" / "sub" / "b.PNG".lower())
    jpeg(root / "3" / "c.JPG")  # upper-case extension counts
    (root / "3" / "notes.txt").write_text("not an image")
    jpeg(root / "3" / "._c.jpg")  # macOS resource-fork file: hidden, ignored
    s = open_train_set(root, "reid")
    assert [(r.key, r.pid, r.camid, r.label) for r in s.records] == [
        ("10/a.jpg", 10, -1, 1), ("10/sub/b.png", 10, -1, 1), ("3/c.JPG", 3, -1, 0)]
    assert s.class_names == ("3", "10")


def test_identity_folders_with_names_and_msmt_pid_zero(tmp_path):
    root = tmp_path / "msmt_train"
    jpeg(root / "0000" / "0000_000_01_0303morning_0008_0.jpg")
    jpeg(root / "0000" / "0000_001_04_0303morning_0009_0.jpg")
    jpeg(root / "0005" / "0005_000_15_0303noon_0001_0.jpg")
    s = open_train_set(root, "reid")
    # pid 0 is a real identity in MSMT17 (only Market naming makes 0000 a distractor)
    assert [(r.pid, r.camid, r.label) for r in s.records] == [(0, 1, 0), (0, 4, 0), (5, 15, 1)]


def test_identity_folders_with_non_numeric_names(tmp_path):
    root = tmp_path / "named"
    jpeg(root / "bob" / "1.jpg")
    jpeg(root / "alice" / "1.jpg")
    s = open_train_set(root, "reid")
    assert [(r.key, r.pid, r.label) for r in s.records] == [("alice/1.jpg", 0, 0), ("bob/1.jpg", 1, 1)]
    assert s.class_names == ("alice", "bob")


def test_flat_msmt_names(tmp_path):
    jpeg(tmp_path / "t" / "0003_000_02_0303morning_0008_0.jpg")
    jpeg(tmp_path / "t" / "0000_000_01_0303morning_0008_0.jpg")
    s = open_train_set(tmp_path / "t", "reid")
    assert [(r.pid, r.camid, r.label) for r in s.records] == [(0, 1, 0), (3, 2, 1)]


def test_classification_layouts(tmp_path):
    for root in (tmp_path / "a", tmp_path / "b" / "train"):
        jpeg(root / "zebra" / "1.jpg")
        jpeg(root / "cat" / "x" / "2.jpeg")
        jpeg(root / "cat" / "3.bmp".replace("bmp", "png"))
        (root / "empty").mkdir()
    a = open_train_set(tmp_path / "a", "classification")
    b = open_train_set(tmp_path / "b", "classification")
    assert a.class_names == b.class_names == ("cat", "empty", "zebra")
    assert [(r.key, r.pid, r.camid, r.label) for r in a.records] == [
        ("cat/3.png", 0, -1, 0), ("cat/x/2.jpeg", 0, -1, 0), ("zebra/1.jpg", 2, -1, 2)]
    assert [r.key for r in b.records] == ["train/" + r.key for r in a.records]
    assert b.reader.read(b.records[0].key) == (tmp_path / "b" / "train" / "cat" / "3.png").read_bytes()


# --------------------------------------------------------------------------------------------------------------------
# Training-set errors


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"nope: training data not found"):
        open_train_set(tmp_path / "nope", "reid")


def test_unknown_layout_regular_file(tmp_path):
    (tmp_path / "file.bin").write_bytes(b"xx")
    with pytest.raises(DataError, match="not a known training-data layout") as info:
        open_train_set(tmp_path / "file.bin", "reid")
    message = str(info.value)
    for layout in ("Market-1501 root", "bounding_box_train/", "flat directory", "one folder per identity", "LMDB pack"):
        assert layout in message
    assert "regular file" in message


def test_eval_set_given_for_training(tmp_path):
    root = tmp_path / "pytorch"
    jpeg(root / "query" / "0002" / market_name(2, 1, 1))
    jpeg(root / "gallery" / "0002" / market_name(2, 2, 1))
    with pytest.raises(DataError, match="evaluation set"):
        open_train_set(root, "reid")


def test_mixed_layout(tmp_path):
    jpeg(tmp_path / "m" / market_name(2, 1, 1))
    jpeg(tmp_path / "m" / "0003" / market_name(3, 1, 1))
    with pytest.raises(DataError, match="mixes"):
        open_train_set(tmp_path / "m", "reid")


@pytest.mark.parametrize("task", ["reid", "classification"])
def test_empty_directory(tmp_path, task):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found") as info:
        open_train_set(tmp_path / "empty", task)
    message = str(info.value)
    assert str(tmp_path / "empty") in message
    assert all(ext in message for ext in IMAGE_EXTENSIONS) and "case-insensitive" in message


def test_no_images_mentions_other_files(tmp_path):
    (tmp_path / "d" / "0002").mkdir(parents=True)
    (tmp_path / "d" / "0002" / "readme.txt").write_text("x")
    (tmp_path / "d" / "list.csv").write_text("x")
    with pytest.raises(DataError, match=r"no images found.*list\.csv"):
        open_train_set(tmp_path / "d", "reid")


def test_empty_market_train_dir(tmp_path):
    (tmp_path / "M" / "bounding_box_train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"bounding_box_train: no images found"):
        open_train_set(tmp_path / "M", "reid")


def test_bad_name_in_flat_dir_is_named(tmp_path):
    jpeg(tmp_path / "f" / market_name(2, 1, 1))
    jpeg(tmp_path / "f" / "0003_c1_bad_holiday.jpg")  # still Market-like (Duke style): fine
    jpeg(tmp_path / "f" / "holiday.jpg")
    with pytest.raises(DataError, match=r"f/holiday\.jpg: file name does not parse as a Market-1501 name"):
        open_train_set(tmp_path / "f", "reid")


def test_no_name_parses(tmp_path):
    jpeg(tmp_path / "f" / "aaa.jpg")
    jpeg(tmp_path / "f" / "bbb.jpg")
    with pytest.raises(DataError, match=r"f/aaa\.jpg: file name does not give identity and camera.*Market-1501.*"
                       r"MSMT17"):
        open_train_set(tmp_path / "f", "reid")


def test_only_junk(tmp_path):
    jpeg(tmp_path / "f" / market_name(-1, 1, 1))
    jpeg(tmp_path / "f" / market_name(0, 1, 1))
    with pytest.raises(DataError, match="junk"):
        open_train_set(tmp_path / "f", "reid")


def test_duplicate_identity_folders(tmp_path):
    jpeg(tmp_path / "d" / "2" / "a.jpg")
    jpeg(tmp_path / "d" / "0002" / "a.jpg")
    with pytest.raises(DataError, match="same identity 2"):
        open_train_set(tmp_path / "d", "reid")


def test_classification_without_class_folders(tmp_path):
    jpeg(tmp_path / "c" / "1.jpg")
    with pytest.raises(DataError, match="no class folders"):
        open_train_set(tmp_path / "c", "classification")


def test_lmdb_without_manifest(tmp_path):
    import lmdb

    env = lmdb.open(str(tmp_path / "other.lmdb"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"a.jpg", b"xx")
    env.close()
    with pytest.raises(DataError, match="not a pack made by"):
        open_train_set(tmp_path / "other.lmdb", "reid")


# --------------------------------------------------------------------------------------------------------------------
# Evaluation sets


def test_reid_eval_market_root(tmp_path):
    query, gallery = open_reid_eval(make_market(tmp_path / "Market"))
    assert [(r.pid, r.camid, r.label) for r in query.records] == [(2, 1, -1), (7, 2, -1)]
    assert sorted((r.pid, r.camid) for r in gallery.records) == [(-1, 1), (0, 4), (2, 2), (2, 3), (7, 1), (7, 2)]
    assert all(r.key.startswith("bounding_box_test/") and r.label == -1 for r in gallery.records)
    assert query.num_classes == 0
    assert gallery.reader.read(gallery.records[0].key)[:2] == b"\xff\xd8"


def test_reid_eval_seed_layout_nested(tmp_path):
    root = tmp_path / "eval"
    jpeg(root / "query" / "0002" / market_name(2, 1, 1))
    jpeg(root / "gallery" / "0002" / market_name(2, 3, 2))
    jpeg(root / "gallery" / "-1" / market_name(-1, 2, 3))
    jpeg(root / "gallery" / "0000" / market_name(0, 5, 4))
    query, gallery = open_reid_eval(root)
    assert [(r.key, r.pid, r.camid) for r in query.records] == [(f"query/0002/{market_name(2, 1, 1)}", 2, 1)]
    assert sorted((r.pid, r.camid) for r in gallery.records) == [(-1, 2), (0, 5), (2, 3)]
    assert "one folder per identity" in gallery.description


def test_reid_eval_flat_msmt(tmp_path):
    root = tmp_path / "msmt"
    jpeg(root / "query" / "0001_000_07_0303morning_0008_0.jpg")
    jpeg(root / "gallery" / "0001_003_11_0303noon_0001_0.jpg")
    jpeg(root / "gallery" / "0009_000_02_0303noon_0001_0.jpg")
    query, gallery = open_reid_eval(root)
    assert [(r.pid, r.camid) for r in query.records] == [(1, 7)]
    assert [(r.pid, r.camid) for r in gallery.records] == [(1, 11), (9, 2)]
    assert "MSMT17" in query.description


def test_reid_eval_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_reid_eval(tmp_path / "missing")
    (tmp_path / "x" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"not a known re-ID evaluation layout.*query/ and bounding_box_test/.*images/"):
        open_reid_eval(tmp_path / "x")
    jpeg(tmp_path / "y" / "query" / "person" / market_name(2, 1, 1))
    jpeg(tmp_path / "y" / "gallery" / "0002" / market_name(2, 1, 1))
    with pytest.raises(DataError, match=r"query/person: identity folder name is not a pid"):
        open_reid_eval(tmp_path / "y")
    jpeg(tmp_path / "z" / "query" / "0002" / "x.jpg")
    jpeg(tmp_path / "z" / "gallery" / "0002" / market_name(2, 1, 1))
    with pytest.raises(DataError, match=r"query/0002/x\.jpg"):
        open_reid_eval(tmp_path / "z")
    (tmp_path / "e" / "query").mkdir(parents=True)
    (tmp_path / "e" / "gallery").mkdir(parents=True)
    with pytest.raises(DataError, match=r"query: no images found"):
        open_reid_eval(tmp_path / "e")


def test_classification_eval(tmp_path):
    jpeg(tmp_path / "val_root" / "val" / "zebra" / "1.jpg")
    jpeg(tmp_path / "val_root" / "val" / "cat" / "2.jpg")
    s = open_classification_eval(tmp_path / "val_root", ("cat", "dog", "zebra"))
    assert [(r.key, r.label, r.pid) for r in s.records] == [("val/cat/2.jpg", 0, 0), ("val/zebra/1.jpg", 2, 2)]
    assert s.class_names == ("cat", "dog", "zebra")
    jpeg(tmp_path / "val_root" / "val" / "horse" / "3.jpg")
    with pytest.raises(DataError, match=r"horse: class folder 'horse' is not one of the 3 training classes"):
        open_classification_eval(tmp_path / "val_root", ("cat", "dog", "zebra"))


def test_records_are_frozen():
    record = ImageRecord("a.jpg", 1, 2, 0)
    with pytest.raises(AttributeError):
        record.pid = 3  # type: ignore[misc]
