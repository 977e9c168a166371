"""PairLoader and COCO-style still-image sets: batch layout, crops and boxes recomputed from (seed, epoch, step,
position), determinism (seeds, resume, workers, ranks), same-image pairs, the COCO filter and its errors, LMDB packs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.crops import channel_mean, context_side, crop_image, frame_to_crop, sample_search_window
from data.loader import sample_seed
from data.pair_loader import CropConfig, PairLoader, sequence_sources
from data.records import DataError
from data.sequences import Sequence, SequenceSet, open_sequences
from data.still_images import open_coco_detection
from data.synthetic import Got10kSpec, generate_got10k

SMALL = CropConfig(template_size=31, search_size=63)

# (annotation id, image id, bbox, iscrowd); images 1: 96×64, 2: 80×80, 3: 64×96 (areas 6144, 6400, 6144)
COCO_ANNOTATIONS = [
    (10, 1, [10.5, 8.0, 30.0, 20.0], 0),   # kept
    (11, 1, [40.0, 30.0, 20.0, 25.0], 1),  # crowd
    (12, 1, [5.0, 5.0, 2.0, 2.0], 0),      # area ratio 0.00065 <= 0.001
    (20, 2, [20.0, 15.0, 30.0, 40.0], 0),  # kept
    (21, 2, [0.0, 0.0, 70.0, 70.0], 0),    # area ratio 0.77 >= 0.6
    (22, 2, [10.0, 10.0, 60.0, 5.0], 0),   # aspect 12 >= 10
    (23, 2, [10.0, 10.0, 0.0, 5.0], 0),    # degenerate
    (30, 3, [12.0, 30.0, 25.0, 35.0], 0),  # kept
]
KEPT = ["000000000001_10", "000000000002_20", "000000000003_30"]


def make_coco(root: Path, images_dir: str = "train", json_name: str = "instances_train.json") -> Path:
    """Three noise PNGs (lossless, so every crop pixel is checkable) and a COCO JSON of COCO_ANNOTATIONS."""
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    (root / images_dir).mkdir(parents=True)
    images = []
    for image_id, (w, h) in enumerate([(96, 64), (80, 80), (64, 96)], 1):
        name = f"{image_id:012d}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / images_dir / name)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    annotations = [{"id": i, "image_id": image, "bbox": box, "iscrowd": crowd, "category_id": 7, "area": 0.0}
                   for i, image, box, crowd in COCO_ANNOTATIONS]
    (root / "annotations" / json_name).write_text(json.dumps({"images": images, "annotations": annotations}))
    return root


@pytest.fixture(scope="module")
def got10k(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pairs") / "got10k"
    generate_got10k(root, Got10kSpec(num_train_seqs=3, num_val_seqs=1, min_frames=8, max_frames=10), workers=1)
    return root


@pytest.fixture(scope="module")
def videos(got10k) -> SequenceSet:
    return open_sequences(got10k, "train")


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    return make_coco(tmp_path_factory.mktemp("pairs") / "coco")


@pytest.fixture(scope="module")
def coco(coco_root) -> SequenceSet:
    return open_coco_detection(coco_root)


def make_loader(sets, **overrides) -> PairLoader:
    args = dict(pairs_per_epoch=24, batch_size=4, negative_ratio=0.3, crops=SMALL, seed=5, num_workers=0)
    return PairLoader(sets, **{**args, **overrides})


def collect(loader: PairLoader, epoch: int, start_step: int = 0) -> list[dict]:
    return list(loader.epoch(epoch, start_step))


def same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


# --------------------------------------------------------------------------------------------------------------------
# COCO-style still images


def test_coco_sequences_and_filter(coco, coco_root):
    assert coco.layout == "still" and [s.name for s in coco.sequences] == KEPT
    first = coco.sequences[0]
    assert first.frames == ("000000000001.png",) and first.boxes.tolist() == [[10.5, 8.0, 30.0, 20.0]]
    assert first.visible.tolist() == [True] and first.resolution == (96, 64)
    assert first.meta == {"image_id": 1, "category_id": 7}
    assert coco.frame(first, 0).shape == (64, 96, 3)
    assert coco.reader.describe(first.frames[0]) == str(coco_root / "train" / "000000000001.png")
    assert "skipped 1 crowd and 4 too small" in coco.description
    loose = open_coco_detection(coco_root, min_area_ratio=0.0, max_area_ratio=np.inf, max_aspect=np.inf)
    assert [s.name for s in loose.sequences] == sorted(KEPT + ["000000000001_12", "000000000002_21",
                                                               "000000000002_22"])


@pytest.mark.parametrize("images_dir", ["train", "images/train", "images"])
def test_coco_image_folder_is_found_from_the_annotation_file(tmp_path, images_dir):
    root = make_coco(tmp_path / "coco", images_dir=images_dir)
    explicit = open_coco_detection(root, root / "annotations" / "instances_train.json")
    assert explicit.reader.root == root / images_dir
    assert [s.name for s in open_coco_detection(root, split="train").sequences] == KEPT


def test_coco_errors(tmp_path):
    root = make_coco(tmp_path / "coco")
    annotations = root / "annotations" / "instances_train.json"
    with pytest.raises(DataError, match="not found"):
        open_coco_detection(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"instances_val\.json: annotation file not found"):
        open_coco_detection(root, split="val")
    shutil.copy(annotations, root / "annotations" / "instances_val.json")
    with pytest.raises(DataError, match="expected exactly one instances_<split>.json .* found instances_train.json, "
                                        "instances_val.json"):
        open_coco_detection(root)
    with pytest.raises(DataError, match=r"no image folder for instances_val\.json; looked for .*val, .*images"):
        open_coco_detection(root, split="val")
    data = json.loads(annotations.read_text())
    annotations.write_text(json.dumps(data)[:-10])
    with pytest.raises(DataError, match=r"instances_train\.json: not valid JSON"):
        open_coco_detection(root, split="train")
    for broken, problem in ((dict(data, images=[{"id": 1}]), "KeyError: 'width'"),
                            (dict(data, annotations=[{"id": 1, "image_id": 9, "bbox": [1, 2, 3, 4]}]),
                             "refers to image_id 9"),
                            (dict(data, annotations=[{"id": 1, "image_id": 1, "bbox": [1, 2]}]), "bbox must be")):
        annotations.write_text(json.dumps(broken))
        with pytest.raises(DataError, match=f"expected a COCO detection JSON.*{problem}"):
            open_coco_detection(root, split="train")
    annotations.write_text(json.dumps(dict(data, annotations=data["annotations"][1:3])))
    with pytest.raises(DataError, match="no usable object annotation .*1 crowd, 1 outside the size rule"):
        open_coco_detection(root, split="train")


@pytest.mark.parametrize("workers", [0, 2])
def test_missing_image_is_reported_when_read(tmp_path, workers):
    root = make_coco(tmp_path / "coco")
    missing = root / "train" / "000000000002.png"
    missing.unlink()
    still = open_coco_detection(root)  # opening reads no image
    with make_loader([still], negative_ratio=0.0, num_workers=workers) as loader:
        with pytest.raises(DataError, match=rf"{missing}: cannot read image"):
            collect(loader, 0)


# --------------------------------------------------------------------------------------------------------------------
# Batches


def test_batch_layout(videos, coco):
    loader = make_loader([videos, coco], crops=CropConfig(), pairs_per_epoch=17, batch_size=4)
    batches = collect(loader, 0)
    assert loader.steps_per_epoch == len(batches) == 17 // 4
    for batch in batches:
        assert set(batch) == {"template", "search", "template_box", "search_box", "negative"}
        assert batch["template"].shape == (4, 3, 127, 127) and batch["search"].shape == (4, 3, 303, 303)
        assert batch["template_box"].shape == batch["search_box"].shape == (4, 4)
        assert batch["template"].dtype == batch["search"].dtype == batch["search_box"].dtype == torch.float32
        assert batch["template_box"].dtype == torch.float32 and batch["negative"].dtype == torch.bool
        assert batch["search"].is_contiguous() and 0 <= batch["search"].min() and batch["search"].max() <= 255
    assert torch.cat([b["negative"] for b in batches]).any()


def test_crops_and_boxes_match_recomputation(videos, coco):
    """Every crop and box of rank 1's batches, recomputed from the sampler's pair and the sample's seed (which uses the
    position in the *global* batch)."""
    sets, batch_size, rank, seed, epoch = [videos, coco], 3, 1, 11, 2
    loader = make_loader(sets, batch_size=batch_size, rank=rank, world_size=2, seed=seed, negative_ratio=0.4)
    flat = [(s, sequence) for s in sets for sequence in s.sequences]
    negatives = 0
    for step, batch in enumerate(collect(loader, epoch)):
        for position, pair in enumerate(loader.sampler.batch(epoch, step)):
            (_, z_seq), z_frame = flat[pair.template[0]], pair.template[1]
            (x_set, x_seq), x_frame = flat[pair.search[0]], pair.search[1]
            z_box, x_box = z_seq.boxes[z_frame], x_seq.boxes[x_frame]
            rng = np.random.default_rng(sample_seed(seed, epoch, step, rank * batch_size + position))
            window, expected = sample_search_window(rng, x_box, context=0.5, template_size=31, search_size=63,
                                                    max_scale=0.3, max_shift=0.4)
            assert np.array_equal(expected, frame_to_crop(x_box, window))
            assert batch["search_box"][position].tolist() == expected.astype(np.float32).tolist()
            frame = x_set.frame(x_seq, x_frame)
            assert np.array_equal(batch["search"][position].permute(1, 2, 0).numpy(),
                                  crop_image(frame, window, channel_mean(frame)).astype(np.float32))
            # the template: the box centred in its context square, scaled by template_size / context side
            scale = 31 / context_side(z_box[2], z_box[3])
            centred = [15.5 - z_box[2] * scale / 2, 15.5 - z_box[3] * scale / 2, z_box[2] * scale, z_box[3] * scale]
            assert np.allclose(batch["template_box"][position].numpy(), centred, atol=1e-4)
            assert batch["negative"][position].item() == pair.negative
            assert (pair.template[0] != pair.search[0]) if pair.negative else (z_seq is x_seq)
            negatives += pair.negative
    assert negatives > 0


def test_still_images_pair_an_image_with_itself(coco):
    """With no search augmentation and equal crop sizes, a still image's search crop is its template crop."""
    crops = CropConfig(template_size=31, search_size=31, max_scale=0.0, max_shift=0.0)
    loader = make_loader([coco], negative_ratio=0.0, crops=crops)
    assert all(p.template == p.search for step in range(loader.steps_per_epoch) for p in loader.sampler.batch(0, step))
    for batch in collect(loader, 0):
        assert torch.allclose(batch["search_box"], batch["template_box"], atol=1e-4)
        assert (batch["search"] - batch["template"]).abs().max() <= 1
        assert not batch["negative"].any()


def test_sequence_weights_follow_set_ratios(videos, coco):
    sources, weights = sequence_sources([videos, coco], [2.0, 1.0])
    assert weights == pytest.approx([2 / 3] * 3 + [1 / 3] * 3)
    assert [s.still for s in sources] == [False] * 3 + [True] * 3
    test_like = SequenceSet((Sequence("t", ("a.jpg", "b.jpg"), np.ones((1, 4)), None),), videos.reader, "got10k",
                            "a test subset")
    with pytest.raises(DataError, match="only the first frame's box is known"):
        sequence_sources([test_like])
    with pytest.raises(ValueError, match="one finite ratio >= 0 per set"):
        sequence_sources([videos, coco], [1.0])


# --------------------------------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_same_batches_and_resume_is_the_tail(videos, coco):
    sets = [videos, coco]
    full = collect(make_loader(sets), 1)
    assert len(full) == 6 and same(full, collect(make_loader(sets), 1))
    assert not same(full, collect(make_loader(sets, seed=6), 1))
    loader = make_loader(sets)
    assert not same(full, collect(loader, 2))
    for start in (1, 5, 6):
        assert same(collect(loader, 1, start_step=start), full[start:])
    with pytest.raises(DataError, match="cannot resume epoch 1 at step 7"):
        loader.epoch(1, start_step=7)


def test_same_batches_with_0_and_2_workers(videos, coco):
    sets = [videos, coco]
    serial = make_loader(sets)
    with make_loader(sets, num_workers=2) as parallel:
        assert same(collect(serial, 0), collect(parallel, 0))
        it = parallel.epoch(3)  # abandoned half-way: stale prefetches must not leak into the next epoch
        next(it)
        del it
        assert same(collect(serial, 4, start_step=2), collect(parallel, 4, start_step=2))


def test_ranks_slice_the_single_process_batch(videos, coco):
    sets = [videos, coco]
    whole = collect(make_loader(sets, batch_size=4), 0)
    parts = [collect(make_loader(sets, batch_size=2, rank=r, world_size=2), 0) for r in (0, 1)]
    joined = [{k: torch.cat([a[k], b[k]]) for k in a} for a, b in zip(*parts)]
    assert same(joined, whole)


def test_lmdb_pack_gives_the_same_batches(got10k, videos, tmp_path):
    sequence_pack = pytest.importorskip("data.sequence_pack", reason="data.sequence_pack (LMDB tracking packs) is "
                                                                     "not in this checkout")
    sequence_pack.pack_sequences(got10k, tmp_path / "train.lmdb", "train")
    packed = open_sequences(tmp_path / "train.lmdb", "train")
    assert same(collect(make_loader([packed]), 0), collect(make_loader([videos]), 0))
