"""TrainLoader / eval loader: determinism across workers and resume, skip without decoding, corrupt images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from data.formats import open_train_set
from data.loader import TrainLoader, build_eval_loader
from data.records import DataError, ImageSet
from data.samplers import PKBatchSampler, ShuffledBatchSampler
from data.transforms import build_eval_transform, build_train_transform
from data.options import DataAugmentationParams

H, W = 32, 16
AUG = DataAugmentationParams(mirror=True, rotation=5.0, colour_jittering=True, hue=0.05, gaussian_noise=True,
                             random_erasing=True, random_erasing_prob=0.7, padding_h=2, padding_w=2, crop_h=H,
                             crop_w=W)


def make_flat(root: Path, ids=(1, 4, 6, 9, 12), cams=(1, 2, 3, 4)) -> Path:
    root.mkdir(parents=True)
    for pid in ids:
        for cam in cams:
            Image.new("RGB", (W, H), (pid * 20, cam * 50, 255 - pid * 10)).save(
                root / f"{pid:04d}_c{cam}s1_{pid * 10 + cam:06d}_01.jpg", quality=90)
    return root


@pytest.fixture
def image_set(tmp_path) -> ImageSet:
    return open_train_set(make_flat(tmp_path / "train"), "reid")


def collect(loader: TrainLoader, epoch: int, start_step: int = 0) -> list[dict]:
    return list(loader.epoch(epoch, start_step))


def same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


def test_batch_contents(image_set):
    sampler = PKBatchSampler(image_set.labels, 2, 4, seed=0)
    loader = TrainLoader(image_set, sampler, build_train_transform(AUG, H, W), 0, seed=1)
    assert loader.steps_per_epoch == len(image_set) // 8
    batches = collect(loader, 0)
    assert len(batches) == loader.steps_per_epoch
    for batch, indices in zip(batches, sampler.batches(0)):
        assert set(batch) == {"images", "labels", "camids", "indices"}
        assert batch["images"].shape == (8, 3, H, W) and batch["images"].dtype == torch.float32
        assert batch["indices"].tolist() == indices
        assert batch["labels"].dtype == batch["camids"].dtype == batch["indices"].dtype == torch.long
        assert batch["labels"].tolist() == [image_set.records[i].label for i in indices]
        assert batch["camids"].tolist() == [image_set.records[i].camid for i in indices]


def test_same_batches_with_0_and_2_workers(image_set):
    transform = build_train_transform(AUG, H, W)
    sampler = PKBatchSampler(image_set.labels, 2, 2, seed=3)
    serial = TrainLoader(image_set, sampler, transform, 0, seed=7)
    with TrainLoader(image_set, sampler, transform, 2, seed=7) as parallel:
        assert same(collect(serial, 0), collect(parallel, 0))
        # abandon an epoch half-way: the persistent workers' stale prefetches must not leak into the next epoch
        it = parallel.epoch(2)
        next(it)
        del it
        assert same(collect(serial, 3), collect(parallel, 3))
    other_seed = TrainLoader(image_set, sampler, transform, 0, seed=8)
    assert not same(collect(serial, 0), collect(other_seed, 0))
    assert not same(collect(serial, 0), collect(serial, 1))


def test_global_rng_is_left_alone(image_set):
    import random

    loader = TrainLoader(image_set, ShuffledBatchSampler(len(image_set), 4, seed=0),
                         build_train_transform(AUG, H, W), 0, seed=0)
    torch.manual_seed(42)
    random.seed(42)
    expected, expected_py = torch.rand(3), random.random()
    torch.manual_seed(42)
    random.seed(42)
    collect(loader, 1)
    assert torch.equal(torch.rand(3), expected) and random.random() == expected_py


def test_start_step_equals_slicing_and_skips_decoding(image_set):
    read: list[str] = []

    class CountingReader:
        def __init__(self, inner):
            self.inner = inner

        def read(self, key):
            read.append(key)
            return self.inner.read(key)

        def describe(self, key):
            return self.inner.describe(key)

    counted = ImageSet(image_set.records, image_set.class_names, CountingReader(image_set.reader), "counted")
    sampler = ShuffledBatchSampler(len(image_set), 3, seed=5)
    loader = TrainLoader(counted, sampler, build_train_transform(AUG, H, W), 0, seed=2)
    full = collect(loader, 4)
    assert len(full) == 20 // 3
    for start in (1, 4, len(full)):
        read.clear()
        resumed = collect(loader, 4, start_step=start)
        assert same(resumed, full[start:])
        expected_keys = [image_set.records[i].key for batch in sampler.batches(4)[start:] for i in batch]
        assert read == expected_keys, "skipped batches are never read or decoded"
    with pytest.raises(DataError, match=f"cannot resume epoch 4 at step {len(full) + 1}"):
        loader.epoch(4, start_step=len(full) + 1)


def test_resume_with_workers_matches(image_set):
    sampler = PKBatchSampler(image_set.labels, 3, 2, seed=0)
    transform = build_train_transform(AUG, H, W)
    full = collect(TrainLoader(image_set, sampler, transform, 0, seed=3), 2)
    with TrainLoader(image_set, sampler, transform, 2, seed=3) as loader:
        assert same(collect(loader, 2, start_step=1), full[1:])


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_jpeg_names_the_file(tmp_path, workers, damage):
    root = make_flat(tmp_path / "train", ids=(1, 2), cams=(1, 2))
    victim = root / "0002_c1s1_000021_01.jpg"
    data = victim.read_bytes()
    victim.write_bytes(b"this is not a jpeg" if damage == "garbage" else data[: len(data) // 2])
    image_set = open_train_set(root, "reid")
    loader = TrainLoader(image_set, ShuffledBatchSampler(len(image_set), 4, seed=0),
                         build_train_transform(AUG, H, W), workers, seed=0)
    with pytest.raises(DataError, match=rf"{victim}: cannot decode image \(") as info:
        collect(loader, 0)
    assert "Traceback" not in str(info.value)
    loader.close()


def test_missing_file_names_the_file(tmp_path):
    root = make_flat(tmp_path / "train", ids=(1, 2), cams=(1, 2))
    image_set = open_train_set(root, "reid")
    (root / image_set.records[0].key).unlink()
    loader = TrainLoader(image_set, ShuffledBatchSampler(len(image_set), 4, seed=0),
                         build_train_transform(AUG, H, W), 0, seed=0)
    with pytest.raises(DataError, match=rf"{root / image_set.records[0].key}: cannot read image"):
        collect(loader, 0)


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_loader_in_order_without_drop(image_set, workers):
    transform = build_eval_transform(H, W, AUG)
    loader = build_eval_loader(image_set, transform, batch_size=6, num_workers=workers)
    batches = list(loader)
    assert len(loader) == len(batches) == 4
    assert [len(b["indices"]) for b in batches] == [6, 6, 6, 2]
    assert torch.cat([b["indices"] for b in batches]).tolist() == list(range(len(image_set)))
    assert torch.cat([b["labels"] for b in batches]).tolist() == image_set.labels
    first = batches[0]["images"][0]
    from data.readers import decode_image

    key = image_set.records[0].key
    assert torch.equal(first, transform(decode_image(image_set.reader.read(key), key)))
    assert same(batches, list(loader)), "re-iterable and deterministic"
