"""GOTURN speed on this CPU, in one process: end-to-end tracking FPS of the exported ONNX graph on ONNX Runtime against
the PyTorch eager tracker (the same online tracker around both), and the training step's throughput against a naive
implementation of the same network.

    python bench/goturn_speed.py [--configs demo,reference] [--frames 100] [--repeats 3] [--threads 2]
                                 [--frame-size 640x360] [--train-steps 4] [--warmup 1] [--batches 3]

Tracking
* Data: one synthetic GOT-10k sequence (``data.synthetic``: JPEG frames, groundtruth.txt) of ``--frames`` + 1 frames,
  generated in a temporary folder and decoded into memory before anything is timed (frame decoding is excluded).
* Models: ``trackers.goturn.task.build_model(GoturnParams(batches_dir="unused", model_params=...))``, random init
  (seed 0), eval mode, for two configurations: ``demo`` (params_goturn.json's: CaffeNet towers at width 0.5, FC width
  1024, a ~51 MB graph) and ``reference`` (the reference's: width 1.0, FC width 4096, a ~455 MB graph written to the
  temporary folder and deleted after its runs; its export takes ~25 s here: ``--configs demo`` skips it, ``--configs
  ''`` skips tracking). The speed does not depend on the weights (no data-dependent
  control flow, the crop is a fixed-size ``cv2.warpAffine`` whatever the window); with random weights the tracked box
  is whatever the network says (it usually shrinks to a few pixels), which changes no cost — the JSON line gives the
  median box size per tracker so that one can see it.
* Export: ``trackers.goturn.export.export_graphs`` → the ``deploy.export.ExportGraph`` (dynamic batch), written by the
  ``deploy.export`` core (``_export_graph``: trace, metadata, ``onnx.checker``, ONNX Runtime vs PyTorch parity at
  batches 1 and 4) into the temporary folder, then opened with ``trackers.goturn.onnx_network.OnnxRegressor``
  (intra-op threads = ``--threads``) as ``python -m evaluator`` would.
* Timed: ``GoturnTracker.update`` over every frame after the first (the two crops, the network, un-scaling and
  clipping, the base class's checks) with ``OnnxRegressor`` and with ``TorchRegressor`` (PyTorch eager, fp32, torch
  threads = ``--threads``). Each repeat runs both trackers over the whole sequence, in an order rotated from repeat to
  repeat so that both see the same machine load; FPS is that of the median run (the lower middle one for an even
  ``--repeats``); the ratio ONNX/eager is also given as the median of the per-repeat ratios.
* Breakdown (ms per frame, the median run): crop (``data.crops.crop_image`` × 2), network (``regress``: of which graph
  = ``InferenceSession.run`` / ``Goturn.features`` + ``Goturn.regress``, and net I/O = crops → float32 NCHW batches and
  the output → float64), rest (un-scaling, un-centring, clipping, checks). ``time.perf_counter`` around those calls
  inside the timed runs.
* Agreement: the ONNX tracker's boxes against the eager tracker's, frame by frame (max |Δ| px, min IoU). The trackers
  feed their own boxes back, so float rounding differences could grow along the sequence; they are printed as found.

Training (the demo configuration)
* Batches: the real loader, ``trackers.goturn.task.build(params).loader.epoch(0)`` (``num_preprocess_workers`` 0) on a
  small synthetic GOT-10k set (frames of ``--frame-size``), ``--batches`` batches of 5 pairs × (1 + 10) = 55 samples
  (P = 5 target crops, 55 search crops, 227 px) drawn before anything is timed; the loader's own rate (55 / the
  median seconds per batch) is printed so that one sees whether data loading keeps up with the step.
* ours: ``Goturn(target, search)`` on the model and parameter groups ``build`` returns (the target tower runs on the 5
  target crops, its features are repeated for their 11 search crops; LRN is ``networks.caffenet.LocalResponseNorm``,
  a banded 1×1 convolution), ``BoxL1Criterion``, backward, Adam step (``engine.optim.build_optimizer("adam")`` over
  the task's groups, weight decay 5e-4).
* baseline (a naive implementation): a deep copy with the same initial weights whose towers' ``layers.norm1`` and
  ``layers.norm2`` are PyTorch's ``nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)``, called with
  ``target.repeat_interleave(11, 0)`` (the target tower runs on all 55 search-aligned copies), the same criterion and
  optimizer. Both are plain fp32 eager loops (contiguous NCHW, no autocast), so they differ only in those two things;
  their outputs on one batch in eval mode are compared first (they must agree to float rounding).
* Each round runs one step of each on the round's batch (batches cycled), in an order rotated from round to round;
  the first ``--warmup`` rounds are discarded; samples/s from the median step time, the ratio also as the median of
  the per-round ratios.

Targets: ONNX Runtime ≥ 1.0× PyTorch eager end to end for every configuration ("deployment no slower than PyTorch");
training ≥ 1.3× the naive baseline. The machine is shared (a training run may be going on): the load average is
printed with every repeat and the JSON line (the last line) carries ``os.getloadavg()`` before and after. When the
load plus ``--threads`` exceeds the CPUs, PyTorch's OpenMP pool spends most of its time waiting for a thread that has
no core (seen here with a training run on one of the 2 cores: 2-thread eager tracking 10-20× slower than on 1 thread,
every small op ~15 ms, one scheduler slice), while ONNX Runtime's pool suffers much less: the script then prints a
warning, and ``--threads 1`` gives the comparison that still means something.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.tracking_common import Clock, Proxy, synthetic_sequence, warn_about_load  # noqa: E402
import trackers.goturn.tracker as tracker_module  # noqa: E402
from evaluate.tracking_metrics import rect_iou  # noqa: E402
from trackers.goturn.onnx_network import OnnxRegressor  # noqa: E402
from trackers.goturn.tracker import GoturnTracker, TorchRegressor  # noqa: E402

CONFIGS = {"demo": {"tower_width": 0.5, "fc_width": 1024},
           "reference": {"tower_width": 1.0, "fc_width": 4096}}
TRACKING_TARGET = 1.0
TRAINING_TARGET = 1.3
PAIRS, EXAMPLES_PER_PAIR = 5, 10
PHASES = ("crop", "network", "graph", "net_io", "rest")


# ---------------------------------------------------------------------------------------------------------------------
# data, models, export


def build(config: str):
    from trackers.goturn.params import GoturnParams
    from trackers.goturn.task import build_model

    params = GoturnParams(batches_dir="unused", model_params=CONFIGS[config])
    torch.manual_seed(0)
    return build_model(params).eval(), params


def export(model, params, out: Path, config: str) -> float:
    """The graph through the deploy.export core; returns the seconds it took."""
    from deploy.export import DEFAULT_OPSET, QUANTIZATION_TEXT, _export_graph, graph_out_path
    from trackers.goturn.export import export_graphs

    started = time.perf_counter()
    facts = {"source_checkpoint": f"random init ({config}, seed 0)", "checkpoint_epoch": "", "checkpoint_best": {},
             "quantization": QUANTIZATION_TEXT["none"]}
    for graph in export_graphs(model, params, 1):
        _export_graph(graph, graph_out_path(out, graph), Path(facts["source_checkpoint"]), "goturn", facts, [1, 4],
                      DEFAULT_OPSET, "torchscript", "none")
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------------------------------
# tracking: timing


def timed_network(network, clock: Clock):
    """`network` with its ``regress`` (graph + I/O) and the graph alone timed."""
    if isinstance(network, OnnxRegressor):
        inner = network.session
        network.session = Proxy(inner, run=clock.timed("graph", inner.run))
    else:
        inner = network.net
        network.net = Proxy(inner, features=clock.timed("graph", inner.features),
                             regress=clock.timed("graph", inner.regress))
    network.regress = clock.timed("network", network.regress)
    return network


@contextlib.contextmanager
def instrumented(clock: Clock):
    """crop_image of the tracker module timed (the tracker looks it up at call time)."""
    original = tracker_module.crop_image
    tracker_module.crop_image = clock.timed("crop", original)
    try:
        yield
    finally:
        tracker_module.crop_image = original


def run_sequence(network, clock: Clock, frames, first_box) -> dict:
    tracker = GoturnTracker(network)
    tracker.init(frames[0], first_box)
    clock.seconds.clear()
    clock.on = True
    boxes = []
    start = time.perf_counter()
    for frame in frames[1:]:
        boxes.append(tracker.update(frame))
    total = time.perf_counter() - start
    clock.on = False
    s = dict(clock.seconds)
    crop, net, graph = s.get("crop", 0.0), s.get("network", 0.0), s.get("graph", 0.0)
    phases = {"crop": crop, "network": net, "graph": graph, "net_io": net - graph, "rest": total - crop - net}
    return {"total_s": total, "phases_s": phases, "boxes": np.array(boxes)}


def agreement(boxes: np.ndarray, reference: np.ndarray) -> dict:
    return {"max_abs_px": float(np.abs(boxes - reference).max()),
            "min_iou": float(rect_iou(boxes, reference).min())}


def bench_tracking(config: str, frames, boxes, args, work: Path) -> dict:
    model, params = build(config)
    out = work / f"goturn_{config}.onnx"
    export_s = export(model, params, out, config)
    onnx_mb = out.stat().st_size / 1e6
    print(f"{config}: exported {out.name} ({onnx_mb:.0f} MB) in {export_s:.1f} s", flush=True)
    clock = Clock()
    onnx_name, eager_name = f"onnxruntime ({args.threads} threads)", f"pytorch eager ({args.threads} threads)"
    networks = {onnx_name: timed_network(OnnxRegressor(out, intra_op_threads=args.threads), clock),
                eager_name: timed_network(TorchRegressor(model, params.pair_sampling.context), clock)}
    names = list(networks)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with instrumented(clock):
        for name in names:  # warm-up: one short pass each (first-call allocations, thread pools)
            run_sequence(networks[name], clock, frames[:6], boxes[0])
        for repeat in range(args.repeats):
            order = names[repeat % len(names):] + names[:repeat % len(names)]
            for name in order:
                runs[name].append(run_sequence(networks[name], clock, frames, boxes[0]))
            fps = {name: (len(frames) - 1) / runs[name][-1]["total_s"] for name in names}
            print(f"{config} repeat {repeat}: " + ", ".join(f"{n} {f:.1f} FPS" for n, f in fps.items())
                  + f"; load {os.getloadavg()[0]:.1f}", flush=True)
    updates = len(frames) - 1
    reference = runs[eager_name][0]["boxes"]
    result = {"model_params": CONFIGS[config], "export_s": round(export_s, 2), "onnx_mb": round(onnx_mb, 1),
              "trackers": {}}
    for name in names:
        totals = [r["total_s"] for r in runs[name]]
        median = sorted(runs[name], key=lambda r: r["total_s"])[(len(totals) - 1) // 2]  # lower middle if even
        sizes = runs[name][0]["boxes"][:, 2:]
        result["trackers"][name] = {
            "fps": round(updates / median["total_s"], 2),
            "fps_runs": [round(updates / t, 2) for t in totals],
            "ms_per_frame": round(1000 * median["total_s"] / updates, 3),
            "breakdown_ms_per_frame": {k: round(1000 * v / updates, 3) for k, v in median["phases_s"].items()},
            "median_box_wh": [round(float(v), 1) for v in np.median(sizes, axis=0)],
            "vs_eager_boxes": agreement(runs[name][0]["boxes"], reference),
        }
    per_repeat = [e["total_s"] / o["total_s"] for o, e in zip(runs[onnx_name], runs[eager_name])]
    result["onnx"], result["eager"] = onnx_name, eager_name
    result["onnx_vs_eager"] = round(result["trackers"][onnx_name]["fps"] / result["trackers"][eager_name]["fps"], 3)
    result["onnx_vs_eager_median_repeat"] = round(statistics.median(per_repeat), 3)
    return result


def print_tracking_table(results: dict, updates: int) -> None:
    print(f"\n{updates} updates per run; ms per frame by phase (the median run; graph and net I/O are the network's "
          f"parts):")
    print(f"{'config':11}{'tracker':30}{'FPS':>8}{'ms/frame':>10}" + "".join(f"{p:>9}" for p in PHASES)
          + f"{'max|Δbox|':>11}{'min IoU':>9}")
    for config, result in results.items():
        for name, r in result["trackers"].items():
            b, a = r["breakdown_ms_per_frame"], r["vs_eager_boxes"]
            print(f"{config:11}{name:30}{r['fps']:8.1f}{r['ms_per_frame']:10.2f}"
                  + "".join(f"{b[p]:9.2f}" for p in PHASES) + f"{a['max_abs_px']:11.1e}{a['min_iou']:9.4f}")


# ---------------------------------------------------------------------------------------------------------------------
# training


def train_params(data_dir: Path, width: int, height: int, batches: int):
    """The demo network (params_goturn.json's) with Adam, on a small synthetic GOT-10k set; 5 pairs × 11 samples."""
    from trackers.goturn.params import GoturnParams

    return GoturnParams(
        batches_dir=str(data_dir),
        synthetic_data={"type": "got10k", "seed": 0, "options": {"num_train_seqs": 6, "num_val_seqs": 1,
                                                                 "min_frames": 20, "max_frames": 30,
                                                                 "img_w": width, "img_h": height}},
        model_params=CONFIGS["demo"],
        pair_sampling={"batch_size": PAIRS, "pairs_per_epoch": PAIRS * batches, "examples_per_pair": EXAMPLES_PER_PAIR},
        lr={"base_lr": 1e-4, "fc_lr": 1e-4}, optimizer="adam", weight_decay=5e-4, num_preprocess_workers=0, seed=0)


class TrainStep:
    """forward, BoxL1Criterion, backward, Adam step over `groups` (engine.optim.build_optimizer). `repeat_target`:
    run the target tower on a copy of each target crop per search crop (the naive way)."""

    def __init__(self, model, groups, params, repeat_target: bool) -> None:
        from engine.optim import build_optimizer
        from trackers.goturn.task import BoxL1Criterion

        self.model = model.train()
        self.criterion = BoxL1Criterion()
        self.optimizer = build_optimizer(groups, "adam", params.weight_decay)
        self.repeat_target = repeat_target

    def inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        target, search = batch["target"], batch["search"]
        if self.repeat_target:
            target = target.repeat_interleave(len(search) // len(target), 0)
        return target, search

    def __call__(self, batch: dict) -> float:
        outputs = self.model(*self.inputs(batch))
        loss, _, _ = self.criterion(outputs, batch, 0)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def with_torch_lrn(model):
    """A deep copy of `model` whose towers' LRNs are PyTorch's nn.LocalResponseNorm."""
    model = copy.deepcopy(model)
    for tower in (model.target_tower, model.search_tower):
        if tower is not None:
            for name in ("norm1", "norm2"):
                setattr(tower.layers, name, torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0))
    return model


def outputs_agree(ours: TrainStep, base: TrainStep, batch: dict) -> float:
    """max |Δ| of the two models' outputs on `batch` in eval mode (no dropout), before any step."""
    ours.model.eval(), base.model.eval()
    try:
        with torch.no_grad():
            return float((ours.model(*ours.inputs(batch)) - base.model(*base.inputs(batch))).abs().max())
    finally:
        ours.model.train(), base.model.train()


def bench_training(args, work: Path, width: int, height: int) -> dict:
    from trackers.goturn import task

    params = train_params(work / "got10k_train", width, height, args.batches)
    started = time.perf_counter()
    torch.manual_seed(0)
    parts = task.build(params)
    print(f"training set generated and loader built in {time.perf_counter() - started:.1f} s", flush=True)
    batches, batch_s = [], []
    iterator = parts.loader.epoch(0)
    for _ in range(args.batches):
        start = time.perf_counter()
        batches.append(next(iterator))
        batch_s.append(time.perf_counter() - start)
    parts.loader.close()
    samples = len(batches[0]["search"])
    loader_rate = samples / statistics.median(batch_s)
    print(f"loader: {len(batches)} batches of {len(batches[0]['target'])} targets + {samples} searches "
          f"({', '.join(f'{s:.2f}' for s in batch_s)} s each) → {loader_rate:.1f} samples/s", flush=True)

    base_model = with_torch_lrn(parts.model)  # same initial weights, before ours trains
    steps = {"ours": TrainStep(parts.model, parts.param_groups, params, repeat_target=False),
             "baseline": TrainStep(base_model, task.param_groups(params, base_model), params, repeat_target=True)}
    max_diff = outputs_agree(steps["ours"], steps["baseline"], batches[0])
    print(f"ours vs baseline outputs before training (eval mode): max |Δ| {max_diff:.2e}", flush=True)

    names = list(steps)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for i in range(args.warmup + args.train_steps):
        batch = batches[i % len(batches)]
        timings = {}
        for name in names[i % len(names):] + names[:i % len(names)]:
            start = time.perf_counter()
            steps[name](batch)
            timings[name] = time.perf_counter() - start
        print(f"round {i}{' (warm-up)' if i < args.warmup else ''}: ours {timings['ours']:.3f} s, baseline "
              f"{timings['baseline']:.3f} s ({timings['baseline'] / timings['ours']:.2f}x); "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        if i >= args.warmup:
            for name, t in timings.items():
                seconds[name].append(t)
    rate = {name: samples / statistics.median(s) for name, s in seconds.items()}
    speedup = statistics.median(seconds["baseline"]) / statistics.median(seconds["ours"])
    per_round = statistics.median(b / o for b, o in zip(seconds["baseline"], seconds["ours"]))
    return {"model_params": CONFIGS["demo"], "pairs": len(batches[0]["target"]), "samples_per_step": samples,
            "ours_samples_per_s": round(rate["ours"], 2), "baseline_samples_per_s": round(rate["baseline"], 2),
            "speedup": round(speedup, 3), "speedup_median_round": round(per_round, 3),
            "loader_samples_per_s": round(loader_rate, 2), "loader_batch_s": [round(s, 3) for s in batch_s],
            "step_s": {name: [round(t, 3) for t in s] for name, s in seconds.items()},
            "outputs_max_abs_diff": max_diff, "warmup": args.warmup, "train_steps": args.train_steps}


# ---------------------------------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="demo,reference", help=f"tracking configurations ({', '.join(CONFIGS)})")
    parser.add_argument("--frames", type=int, default=100, help="updates per run (the sequence has one frame more)")
    parser.add_argument("--repeats", type=int, default=3, help="tracking runs of each tracker")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads and torch threads")
    parser.add_argument("--frame-size", default="640x360", help="WxH of the synthetic frames (tracking and training)")
    parser.add_argument("--train-steps", type=int, default=4, help="measured training rounds (one step of each)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded training rounds")
    parser.add_argument("--batches", type=int, default=3, help="loader batches drawn before the training rounds")
    args = parser.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {', '.join(unknown)}; expected {', '.join(CONFIGS)}")
    if args.frames < 6 or args.repeats < 1 or args.train_steps < 1 or args.batches < 1 or args.warmup < 0:
        parser.error("need --frames ≥ 6, --repeats, --train-steps, --batches ≥ 1 and --warmup ≥ 0")
    width, height = (int(v) for v in args.frame_size.lower().split("x"))
    torch.set_num_threads(args.threads)
    load_before = warn_about_load(args.threads, "the eager and training figures")
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="goturn_speed.") as tmp:
        work = Path(tmp)
        tracking = {}
        if configs:
            started = time.perf_counter()
            frames, boxes = synthetic_sequence(work, args.frames, width, height)
            print(f"sequence: {len(frames)} frames {width}×{height} generated and decoded in "
                  f"{time.perf_counter() - started:.1f} s; threads {args.threads}; onnxruntime {ort.__version__}, "
                  f"torch {torch.__version__}; load {load_before[0]:.1f}", flush=True)
            for config in configs:
                tracking[config] = bench_tracking(config, frames, boxes, args, work)
                (work / f"goturn_{config}.onnx").unlink()  # the reference graph is ~455 MB
        training = bench_training(args, work, width, height)
    load_after = os.getloadavg()

    targets = {}
    if tracking:
        print_tracking_table(tracking, args.frames)
    for config, result in tracking.items():
        onnx, eager, ratio = result["trackers"][result["onnx"]], result["trackers"][result["eager"]], \
            result["onnx_vs_eager"]
        met = ratio >= TRACKING_TARGET
        targets[f"{config}_onnx_vs_eager"] = met
        print(f"{config}: ONNX Runtime {onnx['fps']:.1f} FPS vs eager {eager['fps']:.1f} FPS = {ratio:.2f}x (median "
              f"per repeat {result['onnx_vs_eager_median_repeat']:.2f}x; target ≥ {TRACKING_TARGET:.1f}x: "
              f"{'met' if met else 'MISSED'}); boxes max |Δ| {onnx['vs_eager_boxes']['max_abs_px']:.1e} px; graph "
              f"{result['onnx_mb']:.0f} MB exported in {result['export_s']:.1f} s")
    t = training
    met = t["speedup"] >= TRAINING_TARGET
    targets["training_vs_baseline"] = met
    print(f"\n{'training (demo, ' + str(t['pairs']) + ' pairs, ' + str(t['samples_per_step']) + ' samples)':44}"
          f"{'samples/s':>10}{'step s':>9}")
    print(f"  {'ours (our LRN, target tower on P crops)':42}{t['ours_samples_per_s']:10.2f}"
          f"{statistics.median(t['step_s']['ours']):9.3f}")
    print(f"  {'baseline (nn.LocalResponseNorm, on P·(1+k))':42}{t['baseline_samples_per_s']:10.2f}"
          f"{statistics.median(t['step_s']['baseline']):9.3f}")
    print(f"  {'loader (num_preprocess_workers 0)':42}{t['loader_samples_per_s']:10.2f}")
    print(f"training speed-up {t['speedup']:.2f}x (median of per-round ratios {t['speedup_median_round']:.2f}x), "
          f"target ≥ {TRAINING_TARGET:.1f}x: {'met' if met else 'MISSED'}; the loader makes "
          f"{t['loader_samples_per_s'] / t['ours_samples_per_s']:.2f}× the samples our step consumes")
    print(f"load average {load_before[0]:.2f} → {load_after[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    summary = {"bench": "goturn_speed", "frames": args.frames, "frame_size": [width, height], "threads": args.threads,
               "repeats": args.repeats, "onnxruntime": ort.__version__, "torch": torch.__version__,
               "cpu_count": os.cpu_count(), "targets": {"onnx_vs_eager": TRACKING_TARGET,
                                                        "training_vs_baseline": TRAINING_TARGET},
               "targets_met": targets,
               "tracking": {c: {"onnx_fps": r["trackers"][r["onnx"]]["fps"],
                                "eager_fps": r["trackers"][r["eager"]]["fps"],
                                "onnx_vs_eager": r["onnx_vs_eager"],
                                "onnx_vs_eager_median_repeat": r["onnx_vs_eager_median_repeat"],
                                "export_s": r["export_s"], "onnx_mb": r["onnx_mb"],
                                "model_params": r["model_params"], "trackers": r["trackers"]}
                            for c, r in tracking.items()},
               "training": training,
               "loadavg_before": [round(x, 2) for x in load_before],
               "loadavg_after": [round(x, 2) for x in load_after]}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
