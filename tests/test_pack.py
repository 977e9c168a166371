"""LMDB packs: round trip, manifest, original bytes, refusal to overwrite, CLI, identical loader output."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from data.formats import PACK_FORMAT, PACK_VERSION, open_train_set
from data.loader import TrainLoader
from data.pack import main, pack_dataset
from data.readers import MANIFEST_KEY, LmdbReader
from data.records import DataError
from data.samplers import PKBatchSampler, ShuffledBatchSampler
from data.transforms import build_train_transform
from data.options import DataAugmentationParams

REPO = Path(__file__).resolve().parents[1]


def make_flat(root: Path) -> Path:
    """A flat bounding_box_train-like directory: 4 identities × 3 cameras, plus one junk image."""
    root.mkdir(parents=True)
    for pid in (3, 5, 8, 11):
        for cam in (1, 2, 3):
            Image.new("RGB", (16, 32), (pid * 20, cam * 60, 90)).save(root / f"{pid:04d}_c{cam}s1_{pid:06d}_01.jpg",
                                                                       quality=85)
    Image.new("RGB", (16, 32), (0, 0, 0)).save(root / "-1_c1s1_000000_01.jpg")
    return root


def test_round_trip(tmp_path):
    src = make_flat(tmp_path / "flat")
    summary = pack_dataset(src, tmp_path / "p.lmdb")
    assert summary["images"] == 12 and summary["classes"] == 4 and summary["task"] == "reid"
    assert summary["map_size"] > summary["bytes"]
    folder = open_train_set(src, "reid")
    packed = open_train_set(tmp_path / "p.lmdb", "reid")
    assert packed.records == folder.records
    assert packed.class_names == folder.class_names
    assert isinstance(packed.reader, LmdbReader)
    for record in folder.records:  # the original encoded bytes, not re-encoded
        assert packed.reader.read(record.key) == (src / record.key).read_bytes()
    assert "p.lmdb:" in packed.reader.describe(folder.records[0].key)
    manifest = json.loads(packed.reader.get(MANIFEST_KEY))
    assert manifest["format"] == PACK_FORMAT and manifest["version"] == PACK_VERSION
    assert manifest["task"] == "reid" and manifest["source"] == str(src.resolve())
    assert manifest["counts"] == {"images": 12, "classes": 4, "bytes": summary["bytes"]}
    assert manifest["records"][0] == {"key": folder.records[0].key, "pid": 3, "camid": 1, "label": 0}
    assert not list(tmp_path.glob("*.tmp-*")), "no temporary directory left behind"
    with pytest.raises(DataError, match="no such image in the pack"):
        packed.reader.read("missing.jpg")
    clone = pickle.loads(pickle.dumps(packed.reader))  # what a spawned worker gets: the path, no open environment
    assert clone.read(folder.records[-1].key) == (src / folder.records[-1].key).read_bytes()


def test_forked_workers_reopen_the_pack(tmp_path):
    src = make_flat(tmp_path / "flat")
    pack_dataset(src, tmp_path / "p.lmdb")
    packed = open_train_set(tmp_path / "p.lmdb", "reid")
    packed.reader.read(packed.records[0].key)  # the environment is open in this process before workers start
    transform = build_train_transform(DataAugmentationParams(), 32, 16)
    sampler = ShuffledBatchSampler(len(packed), 4, seed=0)
    serial = list(TrainLoader(packed, sampler, transform, 0, seed=1).epoch(0))
    with TrainLoader(packed, sampler, transform, 2, seed=1) as loader:
        parallel = list(loader.epoch(0))
    assert len(serial) == len(parallel) == 3
    assert all(torch.equal(a["images"], b["images"]) for a, b in zip(serial, parallel))


def test_pack_of_a_pack_and_classification(tmp_path):
    root = tmp_path / "classes"
    for name in ("b", "a"):
        for i in range(2):
            (root / "train" / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (i * 90, 10, 10)).save(root / "train" / name / f"{i}.png")
    pack_dataset(root, tmp_path / "c.lmdb", task="classification")
    s = open_train_set(tmp_path / "c.lmdb", "classification")
    assert s.class_names == ("a", "b") and [r.label for r in s.records] == [0, 0, 1, 1]
    assert s.records == open_train_set(root, "classification").records
    pack_dataset(tmp_path / "c.lmdb", tmp_path / "c2.lmdb", task="classification")
    assert open_train_set(tmp_path / "c2.lmdb", "classification").records == s.records
    with pytest.raises(DataError, match="made for task 'classification', but the task is 'reid'"):
        open_train_set(tmp_path / "c.lmdb", "reid")


def test_refuses_existing_destination_and_bad_source(tmp_path):
    src = make_flat(tmp_path / "flat")
    (tmp_path / "exists").mkdir()
    with pytest.raises(DataError, match="already exists"):
        pack_dataset(src, tmp_path / "exists")
    with pytest.raises(DataError, match="not found"):
        pack_dataset(tmp_path / "nothing", tmp_path / "new.lmdb")
    with pytest.raises(DataError, match="destination directory does not exist"):
        pack_dataset(src, tmp_path / "no" / "such" / "dir.lmdb")
    assert not (tmp_path / "new.lmdb").exists()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_unreadable_source_file_leaves_nothing(tmp_path, monkeypatch):
    src = make_flat(tmp_path / "flat")
    from data import readers

    def broken(self, key):
        raise DataError(f"{self.root / key}: cannot read image (simulated)")

    monkeypatch.setattr(readers.FolderReader, "read", broken)
    with pytest.raises(DataError, match="simulated"):
        pack_dataset(src, tmp_path / "p.lmdb")
    assert not (tmp_path / "p.lmdb").exists() and not list(tmp_path.glob("*.tmp-*"))


def test_cli_main_in_process(tmp_path, capsys):
    src = make_flat(tmp_path / "flat")
    assert main([str(src), str(tmp_path / "p.lmdb")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("packed 12 images (4 identities") and str(tmp_path / "p.lmdb") in out
    assert main([str(src), str(tmp_path / "p.lmdb")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already exists" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as info:
        main([str(src)])  # missing DST: argparse usage error
    assert info.value.code == 2


def test_cli_subprocess(tmp_path):
    src = make_flat(tmp_path / "flat")
    ok = subprocess.run([sys.executable, "-m", "data.pack", str(src), str(tmp_path / "p.lmdb")], cwd=REPO,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("\n") == 1 and "packed 12 images" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "data.pack", str(tmp_path / "missing"), str(tmp_path / "q.lmdb")],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "missing: training data not found" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("balanced", [True, False])
def test_loader_gives_identical_tensors_from_pack_and_folder(tmp_path, balanced):
    src = make_flat(tmp_path / "flat")
    pack_dataset(src, tmp_path / "p.lmdb")
    folder, packed = open_train_set(src, "reid"), open_train_set(tmp_path / "p.lmdb", "reid")
    aug = DataAugmentationParams(random_erasing=True, gaussian_noise=True, padding_h=2, padding_w=2, crop_h=32,
                                 crop_w=16, colour_jittering=True)
    transform = build_train_transform(aug, 32, 16)

    def sampler(s):
        return PKBatchSampler(s.labels, 2, 3, seed=4) if balanced else ShuffledBatchSampler(len(s), 4, seed=4)

    for epoch in (0, 1):
        a = list(TrainLoader(folder, sampler(folder), transform, 0, seed=9).epoch(epoch))
        b = list(TrainLoader(packed, sampler(packed), transform, 0, seed=9).epoch(epoch))
        assert len(a) == len(b) > 0
        for x, y in zip(a, b):
            assert x.keys() == y.keys()
            for key in x:
                assert torch.equal(x[key], y[key]), key
