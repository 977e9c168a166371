"""Does the data path outpace the training step? The training loader alone (images/s) from a folder dataset and
from its LMDB pack, against the rate at which the training step consumes images, measured in the same run.

* data: a synthetic Market-1501 training set (128×64 JPEGs like Market's; ``--ids`` identities × ~12 images),
  generated once into ``--data`` (reused when present), and its LMDB pack (``python -m data.pack``);
* loader: ``data.loader.TrainLoader`` exactly as training builds it — P×K = 16×4 batches, ``--workers`` persistent
  worker processes (pinned memory on CUDA), the root params.json augmentation (pad 6 + random crop, flip, random
  erasing) — timed over ``--batches`` batches after the first one (worker start-up excluded, as persistent workers
  start once per run);
* step: ``Trainer.train_step`` (see bench/train_throughput.py) with the chosen defaults (bf16 autocast,
  channels-last) for two configurations: the benchmark's ResNet-50 at 256×128 and the demo (root params.json:
  ResNet-18 at 128×64, last_conv_stride 1); median of ``--steps`` steps after one warm-up.

The loader of each configuration resizes to that configuration's input size. Goal: loader ≥ 2× the step.

    python bench/loader_vs_step.py [--workers 2] [--batches 24] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data.formats import open_train_set  # noqa: E402
from data.loader import TrainLoader  # noqa: E402
from data.samplers import PKBatchSampler  # noqa: E402
from data.transforms import build_train_transform  # noqa: E402
from engine.params import parse_params  # noqa: E402
from train_throughput import OurStep, make_batches  # noqa: E402

P, K = 16, 4
CONFIGS = {  # name: (model, img_h, img_w, last_conv_stride, pad, crop)
    "resnet50_256x128": ("resnet50", 256, 128, 2, (12, 12), (256, 128)),
    "demo_resnet18_128x64": ("resnet18", 128, 64, 1, (6, 6), (128, 64)),
}


def ensure_data(root: Path, ids: int) -> tuple[Path, Path]:
    from data.pack import pack_dataset
    from data.synthetic import MarketSpec, ensure_market

    market = root / f"market_{ids}"
    ensure_market(market, MarketSpec(num_train_ids=ids, num_test_ids=2, num_distractors=2, num_junk=1, seed=0))
    pack = root / f"market_{ids}.lmdb"
    if not pack.exists():
        pack_dataset(market, pack, "reid")
    return market, pack


def params_for(name: str):
    model, img_h, img_w, stride, pad, crop = CONFIGS[name]
    return parse_params({
        "batches_dir": "unused", "img_h": img_h, "img_w": img_w, "amp": "bf16", "channels_last": True,
        "batch_sampling_params": {"P": P, "K": K},
        "data_augmentation": {"padding_h": pad[0], "padding_w": pad[1], "crop_h": crop[0], "crop_w": crop[1],
                              "mirror": True, "random_erasing": True, "random_erasing_fill": "random"},
        "model_params": {"model": model, "feature_dim": 256, "last_conv_stride": stride, "dropout": 0.0},
        "tri_loss_params": {"margin": 0.3},
    })


def loader_rate(source: Path, params, workers: int, batches: int) -> float:
    """Images per second of the training loader alone (steady state: after the first batch)."""
    image_set = open_train_set(source, "reid")
    sampler = PKBatchSampler([r.label for r in image_set.records], P, K, seed=0)
    transform = build_train_transform(params.data_augmentation, params.img_h, params.img_w)
    loader = TrainLoader(image_set, sampler, transform, workers, seed=0)
    seen, start, epoch = -1, None, 0
    try:
        while seen < batches:
            for batch in loader.epoch(epoch):
                if start is None:
                    start = time.perf_counter()  # after the first batch: workers are up
                seen += 1
                if seen == batches:
                    break
            epoch += 1
        elapsed = time.perf_counter() - start
    finally:
        loader.close()
    return batches * P * K / elapsed


def step_rate(params, steps: int) -> float:
    step = OurStep(params)
    batches = make_batches(2, image_size=(params.img_h, params.img_w))
    times = []
    for i in range(steps + 1):
        begin = time.perf_counter()
        step(batches[i % 2])
        if i:  # the first step warms up
            times.append(time.perf_counter() - begin)
    return P * K / statistics.median(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "reid_bench_data"))
    parser.add_argument("--ids", type=int, default=100, help="training identities of the synthetic set")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads of the step (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.data)
    root.mkdir(parents=True, exist_ok=True)
    market, pack = ensure_data(root, args.ids)
    load_before = os.getloadavg()
    result = {"bench": "loader_vs_step", "workers": args.workers, "batch": P * K, "images":
              len(open_train_set(market, "reid").records), "configs": {}}
    for name in args.configs.split(","):
        params = params_for(name)
        folder = loader_rate(market, params, args.workers, args.batches)
        lmdb = loader_rate(pack, params, args.workers, args.batches)
        step = step_rate(params, args.steps)
        entry = {"loader_folder_img_per_s": round(folder, 1), "loader_lmdb_img_per_s": round(lmdb, 1),
                 "step_img_per_s": round(step, 2), "ratio_folder": round(folder / step, 2),
                 "ratio_lmdb": round(lmdb / step, 2)}
        result["configs"][name] = entry
        print(f"{name}: loader folder {folder:.1f} img/s, LMDB {lmdb:.1f} img/s ({args.workers} workers); step "
              f"{step:.2f} img/s → loader/step {folder / step:.1f}x (folder), {lmdb / step:.1f}x (LMDB); load "
              f"{os.getloadavg()[0]:.1f}", flush=True)
    result["min_ratio"] = min(min(c["ratio_folder"], c["ratio_lmdb"]) for c in result["configs"].values())
    result["loadavg_before"] = [round(x, 2) for x in load_before]
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
