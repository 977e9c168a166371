"""Feature-extraction throughput: ONNX Runtime vs PyTorch eager on this CPU.

    python bench/onnx_throughput.py [--batch 32] [--runs 7] [--warmup 2] [--model resnet50] [--threads N]

A ResNet-50 re-ID model (feature_dim 256, random init, eval mode) at 256×128 is exported with the tool's own exporter
(deploy.export.export_module, fp32, dynamic batch) and timed in the same process on the same batch:

* ONNX Runtime, CPUExecutionProvider, default session threads (one per physical core) unless --threads;
* PyTorch eager fp32 (torch.no_grad, eval), PyTorch's default threads unless --threads;
* PyTorch eager with bf16 autocast, for reference.

Each figure is the median over --runs timed batches after --warmup untimed ones. The 1-minute load average is printed
before and after: on a machine shared with other jobs the numbers move with it. The last line is one JSON object.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def median_throughput(fn, batch_size: int, runs: int, warmup: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return batch_size / statistics.median(seconds), seconds


def load() -> float:
    return os.getloadavg()[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--feature-dim", type=int, default=256)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="threads for both runtimes; 0 = each one's default")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from deploy.export import export_module, random_images
    from networks.reid_params import ModelParams
    from networks.factory import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = load()
    torch.manual_seed(0)
    model = build_model("reid", ModelParams(model=args.model, feature_dim=args.feature_dim), 751,
                        imagenet_pretrain=False).eval()
    images = random_images(args.batch, (args.height, args.width), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    tensor = torch.from_numpy(images)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.onnx"
        dynamic = {"images": {0: "batch"}, "features": {0: "batch"}}
        export_module(model, (tensor[:2],), ["images"], ["features"], dynamic, {"task": "reid", "note": "benchmark"},
                      path)
        options = ort.SessionOptions()
        if args.threads:
            options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def run_onnx():
        return session.run(None, {"images": images})[0]

    def run_fp32():
        with torch.no_grad():
            return model(tensor)

    def run_bf16():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(tensor)

    with torch.no_grad():
        ref = model(tensor).numpy()
    diff = float(np.abs(run_onnx() - ref).max())

    onnx_ips, onnx_s = median_throughput(run_onnx, args.batch, args.runs, args.warmup)
    fp32_ips, fp32_s = median_throughput(run_fp32, args.batch, args.runs, args.warmup)
    bf16_ips, bf16_s = median_throughput(run_bf16, args.batch, args.runs, args.warmup)
    load_after = load()

    print(f"{args.model} re-ID (feature_dim {args.feature_dim}) {args.height}×{args.width}, batch {args.batch}, "
          f"median of {args.runs} after {args.warmup} warm-up; CPU cores {os.cpu_count()}, torch threads "
          f"{torch.get_num_threads()}, onnxruntime {ort.__version__}, torch {torch.__version__}; load average "
          f"{load_before:.2f} → {load_after:.2f}")
    for name, ips, secs in (("ONNX Runtime fp32", onnx_ips, onnx_s), ("PyTorch eager fp32", fp32_ips, fp32_s),
                            ("PyTorch eager bf16 autocast", bf16_ips, bf16_s)):
        print(f"  {name:28s} {ips:8.1f} img/s  (batch times {min(secs):.3f}–{max(secs):.3f} s)")
    print(f"  ONNX Runtime / PyTorch fp32: {onnx_ips / fp32_ips:.2f}×  (max |Δ| raw features {diff:.2e})")
    print(json.dumps({"bench": "onnx_throughput", "onnx_img_s": round(onnx_ips, 2),
                      "torch_fp32_img_s": round(fp32_ips, 2), "torch_bf16_img_s": round(bf16_ips, 2),
                      "onnx_vs_torch_fp32": round(onnx_ips / fp32_ips, 3), "batch": args.batch,
                      "input": [args.height, args.width], "model": args.model, "cpu_count": os.cpu_count(),
                      "torch_threads": torch.get_num_threads(), "load_avg_before": round(load_before, 2),
                      "load_avg_after": round(load_after, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
