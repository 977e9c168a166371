"""LMDB packs of tracking sequences: same sequences, bytes and training samples as the folders; layout detection by
the CLI; refusals (existing destination, wrong kind of pack, subset mismatch, malformed manifest)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.formats import PACK_FORMAT, PACK_VERSION, open_train_set
from data.pack import main, pack_dataset, write_pack
from data.pair_sampler import PairSampler, SequenceSource
from data.readers import MANIFEST_KEY, LmdbReader
from data.records import DataError
from data.sequence_pack import open_sequence_pack, pack_sequences
from data.sequences import SequenceSet, open_sequences
from data.synthetic import Got10kSpec, generate_got10k

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def got10k(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tracking") / "got10k"
    generate_got10k(root, Got10kSpec(num_train_seqs=2, num_val_seqs=2, min_frames=8, max_frames=10), workers=1)
    return root


def make_lasot(root: Path) -> Path:
    """Two LaSOT sequences of 4 frames (one in training_set.txt), with boxes that need every bit of a double, a
    zero-width box, a fully occluded frame and an out-of-view frame."""
    for cls, seq, colour in (("cat", "cat-1", (200, 40, 40)), ("dog", "dog-3", (40, 200, 90))):
        (root / cls / seq / "img").mkdir(parents=True)
        for i in range(1, 5):
            Image.new("RGB", (48, 32), (colour[0], colour[1], i * 50)).save(root / cls / seq / "img" / f"{i:08d}.jpg")
        boxes = [(0.1 + 0.2, 1 / 3, 10.0, 12.5), (2.0, 3.0, 0.0, 4.0), (1e-7, 5.25, 7.0, 8.0), (4.0, 4.0, 9.0, 9.0)]
        (root / cls / seq / "groundtruth.txt").write_text("".join(",".join(map(repr, b)) + "\n" for b in boxes))
        (root / cls / seq / "full_occlusion.txt").write_text("0,0,1,0\n")
        (root / cls / seq / "out_of_view.txt").write_text("0,0,0,1\n")
    (root / "training_set.txt").write_text("cat-1\n")
    return root


def make_images(root: Path) -> Path:
    """A flat re-ID image set: 2 identities × 2 cameras."""
    root.mkdir(parents=True)
    for pid in (3, 5):
        for cam in (1, 2):
            Image.new("RGB", (16, 32), (pid * 20, cam * 60, 90)).save(root / f"{pid:04d}_c{cam}s1_{pid:06d}_01.jpg")
    return root


def assert_same_sequences(packed: SequenceSet, folder: SequenceSet) -> None:
    """Same sequences, annotations (boxes bit-identical) and frame bytes; the pack reads through an LmdbReader."""
    assert isinstance(packed.reader, LmdbReader)
    assert packed.layout == folder.layout
    assert [s.name for s in packed.sequences] == [s.name for s in folder.sequences]
    for p, f in zip(packed.sequences, folder.sequences):
        assert p.frames == f.frames
        assert p.boxes.dtype == np.float64 and p.boxes.tobytes() == f.boxes.tobytes()
        for a, b in ((p.visible, f.visible), (p.cover, f.cover)):
            assert (a is None and b is None) or (a.dtype == b.dtype and np.array_equal(a, b))
        assert (p.resolution, p.meta) == (f.resolution, f.meta)
        for key in f.frames:
            assert packed.reader.read(key) == folder.reader.read(key)


def test_got10k_pack_equals_the_folders(got10k, tmp_path):
    summary = pack_sequences(got10k, tmp_path / "t.lmdb", "train")
    folder, packed = open_sequences(got10k, "train"), open_sequences(tmp_path / "t.lmdb", "train")
    frames = sum(len(s) for s in folder.sequences)
    assert summary["sequences"] == 2 and summary["frames"] == frames and summary["layout"] == "got10k"
    assert summary["map_size"] > summary["bytes"] > 0
    assert_same_sequences(packed, folder)
    assert folder.sequences[0].cover is not None and folder.sequences[0].resolution is not None
    assert "t.lmdb" in packed.description and "t.lmdb:" in packed.sequences[0].where
    manifest = json.loads(packed.reader.get(MANIFEST_KEY))
    assert (manifest["format"], manifest["version"], manifest["task"]) == (PACK_FORMAT, PACK_VERSION, "tracking")
    assert (manifest["layout"], manifest["subset"], manifest["source"]) == ("got10k", "train", str(got10k.resolve()))
    assert manifest["sequences"][0]["where"] == folder.sequences[0].where
    assert not list(tmp_path.glob("*.tmp-*")), "no temporary directory left behind"


def test_training_samples_are_the_same(got10k, tmp_path):
    pack_sequences(got10k, tmp_path / "t.lmdb", "train")
    folder, packed = open_sequences(got10k, "train"), open_sequence_pack(tmp_path / "t.lmdb")

    def samples(s: SequenceSet) -> list:
        sampler = PairSampler([SequenceSource(q.visible) for q in s.sequences], pairs_per_epoch=6, batch_size=3,
                              negative_ratio=0.3, seed=5)
        return [(s.frame(s.sequences[i], j), s.sequences[i].boxes[j])
                for pair in sampler.batch(0, 1) for i, j in (pair.template, pair.search)]

    for (image_a, box_a), (image_b, box_b) in zip(samples(folder), samples(packed), strict=True):
        assert image_a.dtype == np.uint8 and image_a.ndim == 3 and np.array_equal(image_a, image_b)
        assert box_a.tobytes() == box_b.tobytes()
    last = folder.sequences[-1]
    assert np.array_equal(folder.frame(last, len(last) - 1), packed.frame(packed.sequences[-1], len(last) - 1))


def test_cli_detects_tracking_layouts(got10k, tmp_path, capsys):
    assert main([str(got10k), str(tmp_path / "root.lmdb"), "--subset", "train"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("packed 2 sequences (") and str(tmp_path / "root.lmdb") in out
    assert main([str(got10k / "val"), str(tmp_path / "val.lmdb")]) == 0  # a subset folder, found without --subset
    capsys.readouterr()
    assert_same_sequences(open_sequences(tmp_path / "root.lmdb", "train"), open_sequences(got10k, "train"))
    assert_same_sequences(open_sequences(tmp_path / "val.lmdb", "val"), open_sequences(got10k / "val"))
    assert main([str(tmp_path / "root.lmdb"), str(tmp_path / "again.lmdb")]) == 0  # a pack of a pack
    assert "packed 2 sequences" in capsys.readouterr().out
    assert_same_sequences(open_sequences(tmp_path / "again.lmdb"), open_sequences(got10k, "train"))


def test_image_set_pack_still_works(tmp_path, capsys):
    src = make_images(tmp_path / "flat")
    assert main([str(src), str(tmp_path / "i.lmdb")]) == 0
    assert capsys.readouterr().out.startswith("packed 4 images (2 identities")
    assert open_train_set(tmp_path / "i.lmdb", "reid").records == open_train_set(src, "reid").records
    assert main([str(tmp_path / "i.lmdb"), str(tmp_path / "c.lmdb"), "--task", "reid"]) == 0  # a pack of an image pack
    assert open_train_set(tmp_path / "c.lmdb", "reid").records == open_train_set(src, "reid").records


def test_lasot_pack_equals_the_folders(tmp_path):
    src = make_lasot(tmp_path / "lasot")
    summary = pack_sequences(src, tmp_path / "all.lmdb")
    folder = open_sequences(src)
    assert summary["layout"] == "lasot" and summary["sequences"] == 2 and summary["frames"] == 8
    assert folder.sequences[0].visible.tolist() == [True, False, False, False]
    assert folder.sequences[0].meta == {"class": "cat"} and folder.sequences[0].boxes[0, 0] == 0.1 + 0.2
    assert_same_sequences(open_sequences(tmp_path / "all.lmdb"), folder)
    assert main([str(src), str(tmp_path / "train.lmdb"), "--subset", "train"]) == 0
    assert_same_sequences(open_sequences(tmp_path / "train.lmdb", "train"), open_sequences(src, "train"))
    assert [s.name for s in open_sequences(tmp_path / "train.lmdb").sequences] == ["cat-1"]


def test_refusals(got10k, tmp_path):
    pack_sequences(got10k, tmp_path / "t.lmdb", "train")
    with pytest.raises(DataError, match="already exists"):
        pack_sequences(got10k, tmp_path / "t.lmdb", "train")
    with pytest.raises(DataError, match=r"holds subset 'train' .* but subset 'val' was asked for"):
        open_sequences(tmp_path / "t.lmdb", "val")
    with pytest.raises(DataError, match=r"t\.lmdb: an LMDB pack of tracking sequences .* not of reid training images"):
        open_train_set(tmp_path / "t.lmdb", "reid")
    pack_dataset(make_images(tmp_path / "flat"), tmp_path / "i.lmdb")
    with pytest.raises(DataError, match=r"i\.lmdb: an LMDB pack of reid training images, not of tracking sequences"):
        open_sequences(tmp_path / "i.lmdb")
    assert not list(tmp_path.glob("*.tmp-*"))


def test_malformed_manifest(tmp_path):
    manifest = {"format": PACK_FORMAT, "version": PACK_VERSION, "task": "tracking", "layout": "got10k",
                "description": "x", "sequences": [{"name": "a", "frames": ["a/1.jpg", "a/2.jpg"],
                                                   "boxes": [[1.0, 2.0, 3.0]], "visible": [1, 1], "cover": None,
                                                   "resolution": None, "meta": {}, "where": "a"}]}
    write_pack(tmp_path / "bad.lmdb", [], [], manifest)
    with pytest.raises(DataError, match=r"bad\.lmdb: pack manifest is incomplete or malformed .*'a': boxes"):
        open_sequence_pack(tmp_path / "bad.lmdb")
    del manifest["sequences"]
    write_pack(tmp_path / "none.lmdb", [], [], manifest)
    with pytest.raises(DataError, match=r"none\.lmdb: pack manifest is incomplete or malformed \(KeyError"):
        open_sequence_pack(tmp_path / "none.lmdb")


def test_cli_refusals_are_one_line(got10k, tmp_path, capsys):
    (tmp_path / "exists").mkdir()
    cases = [([str(got10k), str(tmp_path / "exists"), "--subset", "train"], "already exists"),
             ([str(got10k), str(tmp_path / "a.lmdb")], "a GOT-10k root holding subsets train, val; choose one with "
                                                       "--subset"),
             ([str(got10k / "train"), str(tmp_path / "b.lmdb"), "--task", "reid"], "--task reid applies to image "
                                                                                    "sets only"),
             ([str(got10k), str(tmp_path / "c.lmdb"), "--subset", "nope"], "there is no subset 'nope' here")]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not list(tmp_path.glob("*.lmdb*"))


def test_cli_subprocess(got10k, tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "data.pack", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=60)

    ok = run(str(got10k / "train"), str(tmp_path / "t.lmdb"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("\n") == 1 and "packed 2 sequences" in ok.stdout
    bad = run(str(got10k / "train"), str(tmp_path / "t.lmdb"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "already exists" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert "--subset" in run("--help").stdout
