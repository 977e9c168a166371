"""Model FLOP utilisation of our training step on this CPU: achieved training FLOP/s against a measured bf16
matrix-multiply peak.

* FLOPs: the forward of our re-ID ResNet-50 (256×128, batch P×K = 64; see bench/train_throughput.py) counted with
  ``torch.utils.flop_counter.FlopCounterMode``, ×3 for forward + backward (the usual convention: the backward costs
  twice the forward; BatchNorm, activations and the optimizer are not counted);
* achieved: those FLOPs / the median wall time of ``Trainer.train_step`` with the chosen defaults (bf16 autocast,
  channels-last), after ``--warmup`` steps;
* peak: bf16 ``torch.matmul`` of two ``--n``×``--n`` matrices (the same threads as the step), median of 5 products,
  measured between the training steps (the machine is shared: interleaving exposes both to the same load). Reported
  against the median of those measurements and against the best one; the fp32 matmul rate is given for context.

    python bench/mfu.py [--warmup 1] [--steps 3] [--n 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import P, K, OurStep, forward_flops, make_batches, train_params  # noqa: E402


def matmul_rate(dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """FLOP/s of an n×n×n matrix multiply (median of `repeats`, after one warm-up product)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    torch.matmul(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--n", type=int, default=2048, help="matmul size of the peak measurement")
    parser.add_argument("--amp", default="bf16", choices=["none", "bf16"])
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch.set_num_threads for the step and the matmuls (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    params = train_params(args.amp, not args.no_channels_last, False)
    step = OurStep(params)
    batches = make_batches(2)
    forward = forward_flops(step.model, batches[0])
    train_flops = 3 * forward
    peaks_bf16, peaks_fp32, times = [matmul_rate(torch.bfloat16, args.n)], [matmul_rate(torch.float32, args.n)], []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        step(batches[i % 2])
        elapsed = time.perf_counter() - start
        peaks_bf16.append(matmul_rate(torch.bfloat16, args.n))
        peaks_fp32.append(matmul_rate(torch.float32, args.n))
        print(f"step {i}{' (warm-up)' if i < args.warmup else ''}: {elapsed:.2f} s = {train_flops / elapsed / 1e9:.1f} "
              f"GFLOP/s; bf16 matmul {peaks_bf16[-1] / 1e9:.1f} GFLOP/s, fp32 {peaks_fp32[-1] / 1e9:.1f}; load "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        if i >= args.warmup:
            times.append(elapsed)
    achieved = train_flops / statistics.median(times)
    peak_median, peak_best = statistics.median(peaks_bf16), max(peaks_bf16)
    fp32_median = statistics.median(peaks_fp32)
    load_after = os.getloadavg()
    print(f"training: {train_flops / 1e9:.0f} GFLOP per step of {P * K} images (forward {forward / 1e9:.0f} ×3), "
          f"median {statistics.median(times):.2f} s → {achieved / 1e9:.1f} GFLOP/s; bf16 matmul peak "
          f"{peak_median / 1e9:.1f} GFLOP/s (median; best {peak_best / 1e9:.1f}); MFU "
          f"{100 * achieved / peak_median:.1f}% (vs best {100 * achieved / peak_best:.1f}%); fp32 matmul "
          f"{fp32_median / 1e9:.1f} GFLOP/s; load {load_before[0]:.1f} → {load_after[0]:.1f}")
    result = {"bench": "mfu", "model": "resnet50", "batch": P * K, "amp": args.amp,
              "channels_last": not args.no_channels_last, "train_gflop_per_step": round(train_flops / 1e9, 1),
              "step_s": [round(t, 3) for t in times], "achieved_gflops": round(achieved / 1e9, 2),
              "bf16_matmul_peak_gflops_median": round(peak_median / 1e9, 2),
              "bf16_matmul_peak_gflops_best": round(peak_best / 1e9, 2),
              "fp32_matmul_gflops_median": round(fp32_median / 1e9, 2),
              "mfu_percent": round(100 * achieved / peak_median, 2),
              "mfu_percent_vs_best_peak": round(100 * achieved / peak_best, 2), "matmul_n": args.n,
              "threads": torch.get_num_threads(), "loadavg_before": [round(x, 2) for x in load_before],
              "loadavg_after": [round(x, 2) for x in load_after]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
