"""End-to-end SiamFC++ tracking speed on this CPU: the two exported ONNX graphs on ONNX Runtime against the PyTorch
eager tracker, the same online tracker around both.

    python bench/siamfcpp_tracking_fps.py [--backbones tinyconv,alexnet_bn] [--frames 200] [--threads 2]
                                          [--repeats 3] [--frame-size 640x360] [--variants auto|all|none]
                                          [--no-graph-profile]

* Data: one synthetic GOT-10k sequence (``data.synthetic``: JPEG frames, groundtruth.txt) of ``--frames`` + 1 frames,
  generated in a temporary folder and decoded into memory before anything is timed (frame decoding is excluded).
* Models: ``trackers.siamfcpp.task.build_model`` with TinyConv (head width 64) and AlexNet-BN (head width 256),
  random init (seed 0), eval mode. The speed does not depend on the weights: the graphs have no data-dependent control
  flow and the same FLOPs whatever the weights (the one way weights could matter on a CPU, denormal floats, is
  checked: the PyTorch forward of both graphs is scanned for denormal values and the count is printed).
* Export: ``trackers.siamfcpp.export.export_graphs`` → the two ``deploy.export.ExportGraph``s (static batch 1), written
  by the ``deploy.export`` core (``_export_graph``: trace, metadata, ``onnx.checker``, ONNX Runtime vs PyTorch
  parity) into a temporary folder, then opened with ``trackers.siamfcpp.onnx_network.OnnxNetwork`` (intra-op threads
  = ``--threads``) as ``python -m evaluator`` would.
* Timed: ``SiamFCppTracker.update`` over every frame after the first (search crop, search graph, post-processing,
  the base class's checks), for ``OnnxNetwork`` and for ``TorchNetwork`` (PyTorch eager, fp32, torch threads =
  ``--threads``); ``init`` (template crop + template graph) is timed apart. Each repeat runs every tracker over the
  whole sequence, in an order rotated from repeat to repeat so that all see the same machine load; FPS is that of
  the median run (the lower middle one for an even ``--repeats``), the ratio is also given as the median of the
  per-repeat ratios.
* Breakdown (ms per frame): crop (``data.crops.crop_image``), graph (``InferenceSession.run`` / ``SiamFCpp.track``),
  graph I/O (the crop → NCHW float32 batch and the outputs → float64 arrays), select (``tracker.select_box``), other
  (the rest of ``update``). Measured inside the same runs with ``time.perf_counter`` around those calls.
* Variants: ONNX Runtime with its thread pool's spinning off (``session.intra_op.allow_spinning = 0``), ONNX Runtime
  on 1 thread, and PyTorch eager fed a C-contiguous NCHW batch, as ``TorchNetwork`` was before its input became a
  channels-last view of the crop (PyTorch then runs the whole network in NCHW, where its CPU max-pool is ~10×
  slower). ``--variants auto`` (default): all of them for TinyConv, the NCHW eager one for the other backbones (whose
  frames take 10× longer); ``all``; ``none``.
* Search graph by node (``--no-graph-profile`` to skip): ONNX Runtime's own profiler on the search graph, ms per run
  by kind of node: the two depth-wise cross-correlations (grouped Conv nodes whose weights are a graph input), the
  other convolutions, max-pool, layout reorders, the rest.
* Agreement: the boxes of every tracker against the eager tracker's, frame by frame (max |Δ| in pixels, min IoU).

Targets: TinyConv ≥ 150 FPS end to end on ONNX Runtime; ONNX Runtime ≥ 1.5× PyTorch eager. The machine is shared: the
JSON line (the last line) carries ``os.getloadavg()`` before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.tracking_common import Clock, Proxy, synthetic_sequence  # noqa: E402
import trackers.siamfcpp.tracker as tracker_module  # noqa: E402
from evaluate.tracking_metrics import rect_iou  # noqa: E402
from trackers.siamfcpp.onnx_network import OnnxNetwork  # noqa: E402
from trackers.siamfcpp.tracker import SiamFCppTracker, TorchNetwork  # noqa: E402

HEAD_WIDTH = {"tinyconv": 64, "alexnet_bn": 256, "googlenet": 256, "shufflenet_v2_x0_5": 256,
              "shufflenet_v2_x1_0": 256}
FPS_TARGET = {"tinyconv": 150.0}
RATIO_TARGET = 1.5
PHASES = ("crop", "graph", "graph_io", "select", "other")


# ---------------------------------------------------------------------------------------------------------------------
# data, models, export


def build(backbone: str):
    from trackers.siamfcpp.params import SiamFCppParams
    from trackers.siamfcpp.task import build_model

    params = SiamFCppParams(batches_dir="unused", model_params={"backbone": backbone,
                                                                "head_width": HEAD_WIDTH[backbone]})
    torch.manual_seed(0)
    return build_model(params).eval(), params


def export(model, params, out: Path) -> float:
    """Both graphs through the deploy.export core; returns the seconds it took."""
    from deploy.export import DEFAULT_OPSET, QUANTIZATION_TEXT, _export_graph, graph_out_path
    from trackers.siamfcpp.export import export_graphs

    started = time.perf_counter()
    facts = {"source_checkpoint": f"random init ({params.model_params.backbone}, seed 0)", "checkpoint_epoch": "",
             "checkpoint_best": {}, "quantization": QUANTIZATION_TEXT["none"]}
    for graph in export_graphs(model, params):
        _export_graph(graph, graph_out_path(out, graph), Path(facts["source_checkpoint"]), "siamfcpp", facts, [1],
                      DEFAULT_OPSET, "torchscript", "none")
    return time.perf_counter() - started


def session(path: Path, threads: int, spinning: bool = True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def onnx_network(out: Path, threads: int, spinning: bool = True) -> OnnxNetwork:
    network = OnnxNetwork.from_export(out, intra_op_threads=threads)
    if not spinning:
        stem = out.name.removesuffix(".onnx")
        network.template_session = session(out.with_name(f"{stem}.template.onnx"), threads, spinning)
        network.search_session = session(out.with_name(f"{stem}.search.onnx"), threads, spinning)
    return network


class NchwTorchNetwork(TorchNetwork):
    """TorchNetwork as it was before its input became channels-last: a transposed, C-contiguous NCHW copy of the
    crop, so that PyTorch runs the network in NCHW."""

    def _batch(self, crop: np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float()[None].to(self.device)


def search_graph_profile(out: Path, threads: int, frames, first_box, params, runs: int = 30) -> dict[str, float]:
    """ms per run of the search graph by kind of node (ONNX Runtime's profiler, same threads as the tracker): the two
    depth-wise cross-correlations (Conv nodes whose weight is computed at run time from the kernel inputs, not an
    initializer), the other convolutions (with their fused BatchNorm/ReLU), max-pool, layout reorders, the rest."""
    import onnx
    import onnxruntime as ort

    from data.crops import CropWindow, channel_mean, context_side, crop_image

    stem = out.name.removesuffix(".onnx")
    path = out.with_name(f"{stem}.search.onnx")
    network = OnnxNetwork.from_export(out, intra_op_threads=threads)
    x, y, w, h = first_box
    mean = channel_mean(frames[0])
    side = float(context_side(w, h, params.tracker_params.context_amount))
    kernels = network.template(crop_image(frames[0], CropWindow(x + w / 2, y + h / 2, side, network.z_size), mean))
    search = crop_image(frames[1], CropWindow(x + w / 2, y + h / 2, side * network.x_size / network.z_size,
                                              network.x_size), mean)
    feed = {"x": OnnxNetwork._batch(search), "cls_kernel": kernels[0], "reg_kernel": kernels[1]}
    model = onnx.load(str(path))
    constants = {i.name for i in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    xcorr = {n.name for n in model.graph.node if n.op_type == "Conv" and n.input[1] not in constants}
    with tempfile.TemporaryDirectory(prefix="ort_profile.") as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "search")
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        for _ in range(5):
            session.run(None, feed)
        session.end_profiling()  # drop the warm-up runs
        options.profile_file_prefix = str(Path(tmp) / "timed")
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    kinds: dict[str, float] = defaultdict(float)
    total = 0.0
    for event in events:
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            total += event["dur"]
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        node, op = event["name"][:-len("_kernel_time")], event["args"].get("op_name", "")
        kind = ("depth-wise xcorr (2 Conv, runtime weights)" if node in xcorr else "other Conv (+fused BN/ReLU)"
                if op in ("Conv", "FusedConv", "NchwcConv") else "MaxPool" if "MaxPool" in op
                else "layout reorders" if op.startswith("Reorder") else "other nodes")
        kinds[kind] += event["dur"]
    kinds["(whole run, incl. overhead)"] = total
    return {kind: round(us / runs / 1000, 3) for kind, us in kinds.items()}


def denormals_in_forward(model, params) -> int:
    """Denormal float32 values in every module output of one template + search forward (random crops)."""
    tiny = torch.finfo(torch.float32).tiny
    found = [0]

    def hook(module, inputs, output):
        for tensor in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32:
                found[0] += int(((tensor != 0) & (tensor.abs() < tiny)).sum())

    handles = [module.register_forward_hook(hook) for module in model.modules()]
    gen = torch.Generator().manual_seed(0)
    z = torch.rand(1, 3, params.model_params.z_size, params.model_params.z_size, generator=gen) * 255
    x = torch.rand(1, 3, params.tracker_params.x_size, params.tracker_params.x_size, generator=gen) * 255
    try:
        with torch.no_grad():
            model.track(x, *model.template(z))
    finally:
        for handle in handles:
            handle.remove()
    return found[0]


# ---------------------------------------------------------------------------------------------------------------------
# timing


class TimedNetwork:
    """A network whose search (graph + I/O) and graph alone are timed."""

    def __init__(self, network, clock: Clock) -> None:
        self.network, self.z_size = network, network.z_size
        self.search = clock.timed("search", network.search)
        self.template = network.template
        if isinstance(network, OnnxNetwork):
            inner = network.search_session
            network.search_session = Proxy(inner, run=clock.timed("graph", inner.run))
        else:
            inner = network.net
            network.net = Proxy(inner, track=clock.timed("graph", inner.track))


@contextlib.contextmanager
def instrumented(clock: Clock):
    """crop_image and select_box of the tracker module timed (the tracker looks them up at call time)."""
    originals = tracker_module.crop_image, tracker_module.select_box
    tracker_module.crop_image = clock.timed("crop", originals[0])
    tracker_module.select_box = clock.timed("select", originals[1])
    try:
        yield
    finally:
        tracker_module.crop_image, tracker_module.select_box = originals


def run_sequence(network: TimedNetwork, clock: Clock, params, frames, first_box) -> dict:
    tracker = SiamFCppTracker(network, params.tracker_params, network.network.score_size)
    start = time.perf_counter()
    tracker.init(frames[0], first_box)
    init_s = time.perf_counter() - start
    clock.seconds.clear()
    clock.on = True
    boxes = []
    start = time.perf_counter()
    for frame in frames[1:]:
        boxes.append(tracker.update(frame))
    total = time.perf_counter() - start
    clock.on = False
    s = dict(clock.seconds)
    phases = {"crop": s.get("crop", 0.0), "graph": s.get("graph", 0.0),
              "graph_io": s.get("search", 0.0) - s.get("graph", 0.0), "select": s.get("select", 0.0)}
    phases["other"] = total - s.get("crop", 0.0) - s.get("search", 0.0) - s.get("select", 0.0)
    return {"total_s": total, "init_s": init_s, "phases_s": phases, "boxes": np.array(boxes)}


def agreement(boxes: np.ndarray, reference: np.ndarray) -> dict:
    return {"max_abs_px": float(np.abs(boxes - reference).max()),
            "min_iou": float(rect_iou(boxes, reference).min())}


# ---------------------------------------------------------------------------------------------------------------------


def bench_backbone(backbone: str, frames, boxes, args, work: Path) -> dict:
    model, params = build(backbone)
    out = work / f"siamfcpp_{backbone}.onnx"
    export_s = export(model, params, out)
    denormals = denormals_in_forward(model, params)
    clock = Clock()
    trackers = {f"onnxruntime ({args.threads} threads)": onnx_network(out, args.threads),
                f"pytorch eager ({args.threads} threads)": TorchNetwork(model, params.tracker_params.x_size)}
    onnx_name, eager_name = list(trackers)
    if args.variants == "all" or args.variants == "auto" and backbone == "tinyconv":
        trackers[f"onnxruntime, spinning off ({args.threads} threads)"] = onnx_network(out, args.threads, False)
        if args.threads != 1:
            trackers["onnxruntime (1 thread)"] = onnx_network(out, 1)
    if args.variants != "none":
        trackers[f"pytorch eager, NCHW input ({args.threads} threads)"] = NchwTorchNetwork(
            model, params.tracker_params.x_size)
    networks = {name: TimedNetwork(network, clock) for name, network in trackers.items()}
    runs: dict[str, list[dict]] = {name: [] for name in networks}
    names = list(networks)
    with instrumented(clock):
        for name in names:  # warm-up: one short pass each (first-call allocations, thread pools)
            run_sequence(networks[name], clock, params, frames[:6], boxes[0])
        for repeat in range(args.repeats):
            order = names[repeat % len(names):] + names[:repeat % len(names)]
            for name in order:
                runs[name].append(run_sequence(networks[name], clock, params, frames, boxes[0]))
            fps = {name: (len(frames) - 1) / runs[name][-1]["total_s"] for name in names}
            print(f"{backbone} repeat {repeat}: " + ", ".join(f"{n} {f:.1f} FPS" for n, f in fps.items())
                  + f"; load {os.getloadavg()[0]:.1f}", flush=True)
    updates = len(frames) - 1
    result = {"head_width": HEAD_WIDTH[backbone], "export_s": round(export_s, 2), "denormals_in_forward": denormals,
              "trackers": {}}
    reference = runs[eager_name][0]["boxes"]
    for name in names:
        totals = [r["total_s"] for r in runs[name]]
        median = sorted(runs[name], key=lambda r: r["total_s"])[(len(totals) - 1) // 2]  # lower middle if even
        result["trackers"][name] = {
            "fps": round(updates / median["total_s"], 2),
            "fps_runs": [round(updates / t, 2) for t in totals],
            "ms_per_frame": round(1000 * median["total_s"] / updates, 3),
            "breakdown_ms_per_frame": {k: round(1000 * v / updates, 3) for k, v in median["phases_s"].items()},
            "init_ms": round(1000 * statistics.median(r["init_s"] for r in runs[name]), 2),
            "vs_eager_boxes": agreement(runs[name][0]["boxes"], reference),
        }
    if args.graph_profile:
        result["search_graph_profile_ms"] = search_graph_profile(out, args.threads, frames, boxes[0], params)
    per_repeat = [e["total_s"] / o["total_s"] for o, e in zip(runs[onnx_name], runs[eager_name])]
    result["onnx"], result["eager"] = onnx_name, eager_name
    result["onnx_vs_eager"] = round(result["trackers"][onnx_name]["fps"] / result["trackers"][eager_name]["fps"], 3)
    result["onnx_vs_eager_median_repeat"] = round(statistics.median(per_repeat), 3)
    nchw = f"pytorch eager, NCHW input ({args.threads} threads)"
    if nchw in result["trackers"]:  # the ratio against the eager tracker as it was before its channels-last input
        result["onnx_vs_eager_nchw_input"] = round(
            result["trackers"][onnx_name]["fps"] / result["trackers"][nchw]["fps"], 3)
    return result


def print_table(results: dict, frames: int) -> None:
    print(f"\n{frames} updates per run; ms per frame by phase (the median run):")
    header = f"{'backbone':11}{'tracker':44}{'FPS':>8}{'ms/frame':>10}" + "".join(f"{p:>10}" for p in PHASES)
    print(header + f"{'init ms':>9}{'max|Δbox|':>11}")
    for backbone, result in results.items():
        for name, r in result["trackers"].items():
            b = r["breakdown_ms_per_frame"]
            print(f"{backbone:11}{name:44}{r['fps']:8.1f}{r['ms_per_frame']:10.2f}"
                  + "".join(f"{b[p]:10.2f}" for p in PHASES)
                  + f"{r['init_ms']:9.1f}{r['vs_eager_boxes']['max_abs_px']:11.1e}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="tinyconv,alexnet_bn")
    parser.add_argument("--frames", type=int, default=200, help="updates per run (the sequence has one frame more)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads and torch threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frame-size", default="640x360", help="WxH of the synthetic frames")
    parser.add_argument("--variants", choices=["auto", "all", "none"], default="auto",
                        help="extra trackers: spinning off, 1 thread, NCHW-input eager (auto: all for TinyConv, "
                        "NCHW-input eager for the others)")
    parser.add_argument("--no-graph-profile", dest="graph_profile", action="store_false",
                        help="skip ONNX Runtime's per-node profile of the search graph")
    args = parser.parse_args(argv)
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    unknown = [b for b in backbones if b not in HEAD_WIDTH]
    if unknown:
        parser.error(f"unknown backbone(s) {', '.join(unknown)}; expected {', '.join(HEAD_WIDTH)}")
    width, height = (int(v) for v in args.frame_size.lower().split("x"))
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="siamfcpp_fps.") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        frames, boxes = synthetic_sequence(work, args.frames, width, height)
        print(f"sequence: {len(frames)} frames {width}×{height} generated and decoded in "
              f"{time.perf_counter() - started:.1f} s; threads {args.threads}; onnxruntime {ort.__version__}, torch "
              f"{torch.__version__}; load {load_before[0]:.1f}", flush=True)
        results = {backbone: bench_backbone(backbone, frames, boxes, args, work) for backbone in backbones}
    load_after = os.getloadavg()

    print_table(results, len(frames) - 1)
    targets = {}
    for backbone, result in results.items():
        onnx = result["trackers"][result["onnx"]]
        ratio = result["onnx_vs_eager"]
        eager = result["trackers"][result["eager"]]
        line = (f"{backbone}: ONNX Runtime {onnx['fps']:.1f} FPS vs eager {eager['fps']:.1f} FPS = {ratio:.2f}x "
                f"(median per repeat {result['onnx_vs_eager_median_repeat']:.2f}x; target ≥ {RATIO_TARGET}x: "
                f"{'met' if ratio >= RATIO_TARGET else 'MISSED'})")
        if "onnx_vs_eager_nchw_input" in result:
            line += f"; vs the NCHW-input eager tracker (before): {result['onnx_vs_eager_nchw_input']:.2f}x"
        targets[f"{backbone}_onnx_vs_eager"] = ratio >= RATIO_TARGET
        if backbone in FPS_TARGET:
            met = onnx["fps"] >= FPS_TARGET[backbone]
            targets[f"{backbone}_onnx_fps"] = met
            line += f"; ONNX Runtime FPS target ≥ {FPS_TARGET[backbone]:.0f}: {'met' if met else 'MISSED'}"
        print(line)
        if "search_graph_profile_ms" in result:
            profile = result["search_graph_profile_ms"]
            whole = profile["(whole run, incl. overhead)"]
            parts = [f"{kind} {ms:.2f}" + ("" if kind.startswith("(") else f" ({100 * ms / whole:.0f}%)")
                     for kind, ms in sorted(profile.items(), key=lambda kv: -kv[1])]
            print(f"  {backbone} search graph alone (ONNX Runtime profiler, {args.threads} threads), ms per run: "
                  + ", ".join(parts))
        if result["denormals_in_forward"]:
            print(f"  {backbone}: {result['denormals_in_forward']} denormal values in the PyTorch forward")
    print(f"load average {load_before[0]:.2f} → {load_after[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    summary = {"bench": "siamfcpp_tracking_fps", "frames": args.frames, "frame_size": [width, height],
               "threads": args.threads, "repeats": args.repeats, "onnxruntime": ort.__version__,
               "torch": torch.__version__, "cpu_count": os.cpu_count(), "targets_met": targets,
               "results": {b: {"onnx_fps": r["trackers"][r["onnx"]]["fps"],
                               "eager_fps": r["trackers"][r["eager"]]["fps"],
                               "onnx_vs_eager": r["onnx_vs_eager"],
                               "onnx_vs_eager_median_repeat": r["onnx_vs_eager_median_repeat"],
                               "onnx_vs_eager_nchw_input": r.get("onnx_vs_eager_nchw_input"),
                               "denormals_in_forward": r["denormals_in_forward"], "export_s": r["export_s"],
                               "search_graph_profile_ms": r.get("search_graph_profile_ms"),
                               "trackers": r["trackers"]} for b, r in results.items()},
               "loadavg_before": [round(x, 2) for x in load_before],
               "loadavg_after": [round(x, 2) for x in load_after]}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
