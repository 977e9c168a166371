"""Training throughput of the SiamFC++ step (TinyConv, head width 64, batch 16, template/search 127/303): the
project's step with its speed defaults against a plain fp32 eager step, on the same pre-made batches.

* ours: ``engine.trainer.Trainer.train_step`` itself (the batch moved to the run's memory format, forward under the
  run's autocast, the dense-box criterion, finiteness check, backward, SGD step) on the model, criterion and parameter
  groups that ``trackers.siamfcpp.task.build`` returns, with the engine's speed defaults: ``channels_last: true`` and
  ``amp: "auto"``, resolved by ``engine.trainer.resolve_amp`` on this machine (bf16 only where the CPU computes it
  natively: AVX512-BF16 or AMX; fp32 elsewhere — the JSON line says which);
* baseline: the same network with the same initial weights, fp32, contiguous NCHW, eager, the same criterion, SGD with
  the same momentum (0.9), weight decay and learning rates, in a plain ``zero_grad / backward / step`` loop, with the
  depth-wise cross-correlation as a grouped convolution left to autograd (ours uses ``networks.xcorr``'s written-out
  backward);
* the same pre-made batches (real pair-loader crops of a small synthetic GOT-10k set generated in a temporary folder),
  the steps alternating (ours, baseline, ours, …) so that both see the same machine
  load; the first ``--warmup`` rounds are discarded, the medians of the rest are reported, with the median of the
  per-round ratios.

Then, to say where the time goes (and what would reach the 2× target):

* a denormal census: every float32 tensor produced by every ATen op of one of our steps (forward, loss, backward,
  optimizer), counted with a ``TorchDispatchMode``; denormal floats are what ``torch.set_flush_denormal(True)`` would
  flush (the reference notes saw them with video_analyst's TinyConv). ``--flush-denormal on`` sets it for the whole
  process at start-up, before PyTorch creates its thread pool: ``set_flush_denormal`` sets the calling thread's MXCSR
  only, and threads created later inherit it, threads created earlier do not;
* a profile of one step of each, by kind of operation (self CPU time), with the depth-wise cross-correlation
  (``networks.xcorr``: one grouped convolution with groups = batch × channels) counted apart;
The machine is shared: the JSON line (last line) carries ``os.getloadavg()`` before and after.

    python bench/siamfcpp_train_throughput.py [--warmup 1] [--steps 5] [--threads 2] [--batch 16]
                                              [--flush-denormal off|on] [--no-profile]
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.distributed import DistContext  # noqa: E402
from engine.optim import build_optimizer  # noqa: E402
from engine.params import parse_params  # noqa: E402
from engine.trainer import Progress, Trainer, autocast_context, resolve_amp  # noqa: E402

TARGET = 2.0
TINY = torch.finfo(torch.float32).tiny


def train_params(data_dir: Path, batch: int, channels_last: bool = True, amp: str = "auto"):
    """params_siamfcpp.json's network, loss and optimizer (TinyConv, head 64, 127/303, SGD lr 0.08, wd 5e-5) on a
    small synthetic GOT-10k set."""
    return parse_params({
        "task": "siamfcpp", "batches_dir": str(data_dir),
        "synthetic_data": {"type": "got10k", "seed": 0, "options": {"num_train_seqs": 6, "num_val_seqs": 1,
                                                                    "min_frames": 20, "max_frames": 30}},
        "model_params": {"backbone": "tinyconv", "head_width": 64, "head_conv_bn": [False, False, True],
                         "z_size": 127, "x_size": 303},
        "pair_sampling": {"batch_size": batch, "pairs_per_epoch": 4 * batch, "negative_ratio": 0.1},
        "lr": {"base_lr": 0.08, "fc_lr": 0.08}, "optimizer": "sgd", "weight_decay": 5e-5,
        "amp": amp, "channels_last": channels_last, "num_preprocess_workers": 0, "seed": 0,
    })


class OurStep:
    """Trainer.train_step on a Trainer assembled from the task's parts without a run directory (the step needs only
    the model, criterion, optimizer, device and params), as bench/train_throughput.py does."""

    def __init__(self, params, parts) -> None:
        trainer = Trainer.__new__(Trainer)
        trainer.params = params
        trainer.device = torch.device("cpu")
        trainer.dist = DistContext.single(trainer.device)
        model = parts.model
        if params.channels_last:
            model = model.to(memory_format=torch.channels_last)
        trainer.model = trainer.net = model
        trainer.parts = parts
        trainer.optimizer = build_optimizer(parts.param_groups, params.optimizer, params.weight_decay)
        trainer.scaler = None
        trainer.progress = Progress()
        trainer.run_dir = SimpleNamespace(latest="(none)")
        trainer.skipped_in_a_row = 0
        model.train()
        self.trainer, self.model = trainer, model
        self.autocast = autocast_context(params, trainer.device)

    def __call__(self, batch: dict) -> float:
        loss, _, _ = self.trainer.train_step(batch, self.autocast)
        return float(loss)


class BaselineStep:
    """Plain fp32 eager: contiguous NCHW, no autocast, the task's criterion, SGD (momentum 0.9) with the same groups'
    learning rates and weight decay."""

    def __init__(self, params, model) -> None:
        from trackers.siamfcpp.task import DenseBoxCriterion, param_groups

        self.model = model.train()
        self.criterion = DenseBoxCriterion(params, model.grid)
        groups = [{"params": g.params, "lr": g.lr} for g in param_groups(params, model)]
        self.optimizer = torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=0.9, weight_decay=params.weight_decay)

    def __call__(self, batch: dict) -> float:
        outputs = self.model(batch["template"], batch["search"])
        loss, _, _ = self.criterion(outputs, batch, 0)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def flush_reaches_every_thread() -> bool:
    """Whether denormals are flushed on every thread of PyTorch's pool: a multiplication of 4 M denormal floats (split
    between the threads) must give zeros only. The input comes from NumPy: PyTorch would flush it while filling."""
    values = torch.from_numpy(np.full(4_000_000, 1e-39, dtype=np.float32))
    return int(((values * 1.0) != 0).sum()) == 0


def timed(step, batch) -> float:
    start = time.perf_counter()
    step(batch)
    return time.perf_counter() - start


def alternate(steps: dict, batches, warmup: int, rounds: int) -> dict[str, list[float]]:
    """Seconds of each named step, run one after the other in every round on the round's batch; warm-up rounds are
    discarded."""
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + rounds):
        batch = batches[i % len(batches)]
        timings = {name: timed(step, batch) for name, step in steps.items()}
        base = timings["baseline"]
        print(f"round {i}{' (warm-up)' if i < warmup else ''}: "
              + ", ".join(f"{name} {t:.3f} s" + ("" if name == "baseline" else f" ({base / t:.2f}x)")
                          for name, t in timings.items()) + f"; load {os.getloadavg()[0]:.1f}", flush=True)
        if i >= warmup:
            for name, t in timings.items():
                seconds[name].append(t)
    return seconds


def ratio(seconds: dict[str, list[float]], slow: str, fast: str) -> tuple[float, float]:
    """(ratio of the medians, median of the per-round ratios) of step `slow` over step `fast`."""
    return (statistics.median(seconds[slow]) / statistics.median(seconds[fast]),
            statistics.median(a / b for a, b in zip(seconds[slow], seconds[fast])))


# ---------------------------------------------------------------------------------------------------------------------
# why: denormals, profile, the cross-correlation's backward


def denormal_census(step, batch) -> tuple[int, int, dict]:
    """(denormal float32 values, all float32 values, denormals by op) produced by the ATen ops of one step."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class Census(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.denormal, self.total, self.by_op = 0, 0, collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.numel():
                    count = int(((t != 0) & (t.abs() < TINY)).sum())
                    self.total += t.numel()
                    if count:
                        self.denormal += count
                        self.by_op[str(func)] += count
            return out

    census = Census()
    with census:
        step(batch)
    return census.denormal, census.total, dict(census.by_op.most_common(8))


def _is_xcorr(shapes, groups: int) -> bool:
    """A convolution (forward or backward) with weight (groups, 1, h, w), groups = batch × head width: the
    cross-correlation (the backbone's depth-wise convolution has 64 groups, not batch × 64)."""
    return any(len(s) == 4 and s[0] == groups and s[1] == 1 for s in shapes)


def _category(name: str, shapes, groups: int) -> str:
    if "conv" in name:
        if _is_xcorr(shapes, groups):
            return "dwxcorr backward" if "backward" in name else "dwxcorr forward"
        return "conv backward" if "backward" in name else "conv forward"
    if "batch_norm" in name:
        return "batchnorm backward" if "backward" in name else "batchnorm forward"
    if "max_pool" in name:
        return "maxpool backward" if "backward" in name else "maxpool forward"
    if name in ("aten::threshold_backward", "aten::clamp_min_", "aten::relu_", "aten::relu"):
        return "relu fwd+bwd"
    if name in ("aten::copy_", "aten::clone", "aten::contiguous", "aten::to", "aten::_to_copy"):
        return "layout copies"
    if name in ("aten::fill_", "aten::zero_", "aten::zeros", "aten::empty", "aten::empty_strided"):
        return "fill/alloc"
    return "other (loss, optimizer, small ops)"


def profile_step(step, batch, groups: int) -> dict[str, float]:
    """Self CPU seconds of one step by kind of operation."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step(batch)
    kinds: dict[str, float] = collections.Counter()
    for event in prof.key_averages(group_by_input_shape=True):
        kinds[_category(event.key, event.input_shapes or [], groups)] += event.self_cpu_time_total / 1e6
    return dict(kinds)


def plain_xcorr(search, kernel):
    """The depth-wise cross-correlation as one grouped convolution left to autograd (what the baseline runs)."""
    batch, channels = kernel.shape[:2]
    out = F.conv2d(search.reshape(1, batch * channels, *search.shape[2:]),
                   kernel.reshape(batch * channels, 1, *kernel.shape[2:]), groups=batch * channels)
    return out.reshape(batch, channels, *out.shape[2:])


def with_plain_xcorr(step):
    """`step` with the model's cross-correlation swapped for :func:`plain_xcorr` while it runs."""
    import trackers.siamfcpp.model as model_module

    def run(batch):
        original, model_module.depthwise_xcorr = model_module.depthwise_xcorr, plain_xcorr
        try:
            return step(batch)
        finally:
            model_module.depthwise_xcorr = original
    return run


# ---------------------------------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=1, help="discarded rounds")
    parser.add_argument("--steps", type=int, default=5, help="measured rounds (one step of each kind per round)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for every step (0: default)")
    parser.add_argument("--flush-denormal", choices=["off", "on"], default="off",
                        help="torch.set_flush_denormal for the whole process, set before any thread exists")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--work", type=Path, help="folder for the synthetic data (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.flush_denormal == "on":
        torch.set_flush_denormal(True)  # before the first parallel op: the pool's threads inherit this thread's MXCSR
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    from trackers.siamfcpp import task

    with tempfile.TemporaryDirectory(prefix="siamfcpp_train_bench.") as tmp:
        data_dir = (args.work or Path(tmp)) / "got10k"
        params = train_params(data_dir, args.batch)
        torch.manual_seed(0)
        parts = task.build(params)
        batches = [batch for _, batch in zip(range(2), parts.loader.epoch(0))]
        parts.loader.close()
    amp = resolve_amp(params.amp, torch.device("cpu"))
    flush_state = args.flush_denormal
    if flush_state == "on" and not flush_reaches_every_thread():
        flush_state = "on (calling thread only: the pool existed before)"
    base_model = copy.deepcopy(parts.model)  # same initial weights, contiguous
    ours = OurStep(params, parts)
    base = with_plain_xcorr(BaselineStep(train_params(data_dir, args.batch, False, "none"), base_model))
    steps = {"ours": ours, "baseline": base}
    print(f"ours: amp {params.amp!r} → {amp!r} on this CPU, channels_last {params.channels_last}, flush denormals "
          f"{flush_state}, networks.xcorr's backward; baseline: fp32, contiguous, eager, autograd's cross-correlation "
          f"backward; batch {args.batch} (127/303), threads {torch.get_num_threads()}, load {load_before[0]:.1f}",
          flush=True)
    seconds = alternate(steps, batches, args.warmup, args.steps)
    pairs_per_s = {name: args.batch / statistics.median(s) for name, s in seconds.items()}
    speedup, speedup_rounds = ratio(seconds, "baseline", "ours")

    denormals, values, by_op = denormal_census(ours, batches[0])
    print(f"denormal census of one of our steps: {denormals} denormal float32 values of {values:,} produced "
          f"({denormals / values:.2e}){'; by op: ' + str(by_op) if by_op else ''}")

    kinds_ours = kinds_base = None
    if args.profile:
        groups = args.batch * params.model_params.head_width
        kinds_ours, kinds_base = profile_step(ours, batches[1], groups), profile_step(base, batches[1], groups)
        print(f"{'self CPU s per step':36}{'ours':>9}{'baseline':>10}")
        for kind in sorted(set(kinds_ours) | set(kinds_base), key=lambda k: -kinds_base.get(k, 0)):
            print(f"  {kind:34}{kinds_ours.get(kind, 0):9.3f}{kinds_base.get(kind, 0):10.3f}")
        print(f"  {'total (profiled)':34}{sum(kinds_ours.values()):9.3f}{sum(kinds_base.values()):10.3f}")

    load_after = os.getloadavg()
    print(f"{'':40}{'pairs/s':>9}{'step s':>9}")
    labels = {"ours": f"ours ({amp}, channels_last, xcorr)", "baseline": "baseline (fp32, contiguous)"}
    for name, rate in pairs_per_s.items():
        print(f"{labels[name]:40}{rate:9.2f}{statistics.median(seconds[name]):9.3f}")
    print(f"speed-up {speedup:.2f}x (median of per-round ratios {speedup_rounds:.2f}x), target {TARGET:.1f}x: "
          f"{'met' if speedup >= TARGET else 'MISSED'}; load {load_before[0]:.1f} → {load_after[0]:.1f}")
    result = {"bench": "siamfcpp_train_throughput", "backbone": "tinyconv", "head_width": 64, "batch": args.batch,
              "z_x": [127, 303], "amp_param": params.amp, "amp_resolved": amp, "channels_last": params.channels_last,
              "flush_denormal": flush_state, "threads": torch.get_num_threads(),
              "ours_pairs_per_s": round(pairs_per_s["ours"], 3),
              "baseline_pairs_per_s": round(pairs_per_s["baseline"], 3),
              "speedup": round(speedup, 3), "speedup_median_round": round(speedup_rounds, 3),
              "target": TARGET, "target_met": speedup >= TARGET,
              "step_s": {name: [round(t, 3) for t in s] for name, s in seconds.items()},
              "denormals_per_step": denormals, "float_values_per_step": values,
              "profile_self_cpu_s": None if kinds_ours is None else {
                  "ours": {k: round(v, 4) for k, v in kinds_ours.items()},
                  "baseline": {k: round(v, 4) for k, v in kinds_base.items()}},
              "warmup": args.warmup, "steps": args.steps,
              "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
