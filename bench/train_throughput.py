"""Training throughput of ResNet-50 at 256×128 with P×K = 16×4 (64 images per step): our training step with the
chosen defaults (bf16 autocast, channels-last) against a plain fp32 eager torchvision training step.

* ours: ``engine.trainer.Trainer.train_step`` itself (forward under autocast, the re-ID criterion: cross-entropy +
  batch-hard triplet, finiteness check, backward, SGD step) on our re-ID network (ResNet-50 trunk with
  ``last_conv_stride`` 2, as torchvision's, → 256-d embedding → BN → 751-way classifier) built by
  ``networks.factory``, with the params given by the flags;
* baseline: ``torchvision.models.resnet50(num_classes=751)``, fp32, contiguous NCHW, eager, cross-entropy, SGD with
  momentum 0.9 and weight decay 5e-4;
* the same pre-made batches (random images, P×K labels) for both; the two steps alternate (ours, baseline, ours, …)
  so that both see the same machine load; the first ``--warmup`` pairs are discarded, the medians of the rest are
  reported, with the median of the per-pair ratios. FLOPs of both forwards are counted (FlopCounterMode) to show
  that the networks are comparable.

The machine is shared: the JSON line carries ``os.getloadavg()`` before and after.

    python bench/train_throughput.py [--warmup 1] [--steps 3] [--amp bf16|none] [--no-channels-last] [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.distributed import DistContext  # noqa: E402
from engine.optim import build_optimizer  # noqa: E402
from networks.reid_task import ReidLoss, model_inputs, param_groups  # noqa: E402
from engine.params import parse_params  # noqa: E402
from engine.trainer import Progress, Trainer, autocast_context  # noqa: E402
from networks.factory import build_model  # noqa: E402
from networks.losses import ReidCriterion  # noqa: E402

P, K, IMG_H, IMG_W, NUM_CLASSES = 16, 4, 256, 128, 751


def make_batches(count: int, seed: int = 0, image_size: tuple[int, int] = (IMG_H, IMG_W)) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randperm(NUM_CLASSES, generator=gen)[:P]
        labels = ids.repeat_interleave(K)
        images = torch.randn(P * K, 3, *image_size, generator=gen)
        batches.append({"images": images, "labels": labels})
    return batches


def train_params(amp: str, channels_last: bool, compile_: bool, model: str = "resnet50", last_conv_stride: int = 2):
    return parse_params({
        "batches_dir": "unused", "img_h": IMG_H, "img_w": IMG_W, "amp": amp, "channels_last": channels_last,
        "compile": compile_, "batch_sampling_params": {"P": P, "K": K},
        "model_params": {"model": model, "feature_dim": 256, "last_conv_stride": last_conv_stride, "dropout": 0.0},
        "tri_loss_params": {"margin": 0.3}, "lr": {"base_lr": 0.01, "fc_lr": 0.01},
    })


class OurStep:
    """Trainer.train_step on a Trainer assembled without a dataset (the step needs only the model, criterion,
    optimizer, device and params)."""

    def __init__(self, params, num_classes: int = NUM_CLASSES) -> None:
        torch.manual_seed(0)
        trainer = Trainer.__new__(Trainer)
        trainer.params = params
        trainer.device = torch.device("cpu")
        trainer.dist = DistContext.single(trainer.device)
        model = build_model(params.task, params.model_params, num_classes, False)
        if params.channels_last:
            model = model.to(memory_format=torch.channels_last)
        trainer.model = model
        trainer.net = torch.compile(model) if params.compile else model
        trainer.optimizer = build_optimizer(param_groups(model, params.lr.base_lr, params.lr.fc_lr), params.optimizer,
                                            params.weight_decay)
        trainer.scaler = None
        trainer.parts = SimpleNamespace(criterion=ReidLoss(ReidCriterion(params.tri_loss_params, params.focal_loss,
                                                                         params.focal_gamma, params.label_smoothing)),
                                        inputs=model_inputs)
        trainer.progress = Progress()
        trainer.run_dir = SimpleNamespace(latest="(none)")
        trainer.model.train()
        self.trainer = trainer
        self.autocast = autocast_context(params, trainer.device)
        self.model = model

    def __call__(self, batch: dict) -> float:
        loss, _, _ = self.trainer.train_step(batch, self.autocast)
        return float(loss)


class BaselineStep:
    """A plain fp32 eager torchvision training step."""

    def __init__(self) -> None:
        import torchvision

        torch.manual_seed(0)
        self.model = torchvision.models.resnet50(num_classes=NUM_CLASSES)
        self.model.train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def __call__(self, batch: dict) -> float:
        loss = torch.nn.functional.cross_entropy(self.model(batch["images"]), batch["labels"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def forward_flops(model: torch.nn.Module, batch: dict) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(batch["images"])
    return int(counter.get_total_flops())


def timed(step, batch) -> float:
    start = time.perf_counter()
    step(batch)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=1, help="discarded (ours, baseline) pairs")
    parser.add_argument("--steps", type=int, default=3, help="measured (ours, baseline) pairs")
    parser.add_argument("--amp", default="bf16", choices=["none", "bf16"])
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads for both steps (0: default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile our step (compiles for minutes)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    params = train_params(args.amp, not args.no_channels_last, args.compile)
    batches = make_batches(2)
    ours, base = OurStep(params), BaselineStep()
    flops_ours = forward_flops(ours.model, batches[0])
    flops_base = forward_flops(base.model, batches[0])
    ours_s, base_s = [], []
    for i in range(args.warmup + args.steps):
        batch = batches[i % len(batches)]
        t_ours, t_base = timed(ours, batch), timed(base, batch)
        print(f"pair {i}{' (warm-up)' if i < args.warmup else ''}: ours {t_ours:.2f} s, baseline {t_base:.2f} s "
              f"({t_base / t_ours:.2f}x), load {os.getloadavg()[0]:.1f}", flush=True)
        if i >= args.warmup:
            ours_s.append(t_ours)
            base_s.append(t_base)
    batch_size = P * K
    ours_ips = batch_size / statistics.median(ours_s)
    base_ips = batch_size / statistics.median(base_s)
    pair_ratio = statistics.median(b / o for o, b in zip(ours_s, base_s))
    load_after = os.getloadavg()
    print(f"ours ({args.amp}, channels_last={not args.no_channels_last}, compile={args.compile}): {ours_ips:.2f} img/s;"
          f" baseline fp32 eager torchvision: {base_ips:.2f} img/s; speed-up {ours_ips / base_ips:.2f}x (median of "
          f"per-pair ratios {pair_ratio:.2f}x); forward GFLOPs/batch ours {flops_ours / 1e9:.1f}, baseline "
          f"{flops_base / 1e9:.1f}; threads {torch.get_num_threads()}; load {load_before[0]:.1f} → "
          f"{load_after[0]:.1f}")
    result = {"bench": "train_throughput", "model": "resnet50", "input": [IMG_H, IMG_W], "batch": batch_size,
              "amp": args.amp, "channels_last": not args.no_channels_last, "compile": args.compile,
              "ours_img_per_s": round(ours_ips, 3), "baseline_img_per_s": round(base_ips, 3),
              "speedup": round(ours_ips / base_ips, 3), "speedup_median_pair": round(pair_ratio, 3),
              "ours_step_s": [round(t, 3) for t in ours_s], "baseline_step_s": [round(t, 3) for t in base_s],
              "forward_gflops_ours": round(flops_ours / 1e9, 2), "forward_gflops_baseline": round(flops_base / 1e9, 2),
              "threads": torch.get_num_threads(), "loadavg_before": [round(x, 2) for x in load_before],
              "loadavg_after": [round(x, 2) for x in load_after]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
