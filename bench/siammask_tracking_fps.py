"""End-to-end SiamMask tracking speed (boxes and masks) on this CPU, in one process: the three exported ONNX graphs on
ONNX Runtime against the PyTorch eager tracker, the same online tracker around both.

    python bench/siammask_tracking_fps.py [--configs demo,reference] [--frames 60] [--reference-frames 20]
                                          [--repeats 3] [--threads 1] [--frame-size 640x360]

* Data: one synthetic DAVIS val video (``data.synthetic.generate_davis``: JPEG frames, palette PNG masks; one
  annotated object) of ``--frames`` + 1 frames, opened with ``data.mask_sequences.open_davis`` and decoded into memory
  before anything is timed (frame decoding is excluded). The first box is the one ``open_davis`` derives from the
  first mask.
* Models: ``trackers.siammask.task.build_model(SiamMaskParams(batches_dir="unused", model_params=...,
  tracker_params=...))``, random init (seed 0), eval mode, for two configurations: ``demo`` (params_siammask.json's:
  resnet18_siammask, adjust 64, hidden 64, no refine module, mask_source "base": the mask head's 63 × 63 mask) and
  ``reference`` (the reference's: resnet50_siammask, adjust 256, hidden 256, the refine module, mask_source
  "refine": 127 × 127 masks), the latter over the first ``--reference-frames`` + 1 frames only (a frame takes ~10×
  longer; ``--configs demo`` skips it). The network's cost does not depend on the weights (no data-dependent control
  flow; the mask graph runs on the one chosen location whatever it is); what random weights do change is the mask, so
  the cost of the contour step (``cv2.findContours`` on the frame-sized mask, which scales with the mask's area and
  outline) and whether ``cv2.minAreaRect`` runs at all (masks under ``min_contour_area`` fall back to the RPN box):
  the median mask pixel count per tracker is printed so that one can see it.
* Export: ``trackers.siammask.export.export_graphs`` → the template, search and mask (demo) or refine (reference)
  ``deploy.export.ExportGraph``s (static batch 1), written by the ``deploy.export`` core (``_export_graph``: trace,
  metadata, ``onnx.checker``, ONNX Runtime vs PyTorch parity) into a temporary folder, then opened with
  ``trackers.siammask.onnx_network.OnnxNetwork.from_export`` (intra-op threads = ``--threads``) as ``python -m
  evaluator`` would.
* Timed: ``SiamMaskTracker.update`` over every frame after the first (search crop, search network, box selection,
  mask network at the chosen location, mask → frame back-projection, threshold, contour → rotated rectangle, the base
  class's checks), with ``OnnxNetwork`` and with ``TorchNetwork`` (PyTorch eager, fp32, torch threads =
  ``--threads``); ``init`` (template crop + template graph) is timed apart. Each repeat runs both trackers over the
  whole sequence, in an order rotated from repeat to repeat so that both see the same machine load; FPS is that of
  the median run (the lower middle one for an even ``--repeats``), the ratio ONNX/eager is also given as the median
  of the per-repeat ratios.
* Breakdown (ms per frame, the median run; ``time.perf_counter`` around calls, nothing in the tracker edited): crop
  (``crop_image`` of the tracker module); search (``network.search``: of which search graph = ``InferenceSession.run``
  / ``SiamMask.track``, the rest being the crop → batch and outputs → float64 conversions and, for eager, the two-way
  softmax); mask net (``network.mask``: of which mask graph = the mask/refine session's ``run`` /
  ``SiamMask.mask_at`` or ``SiamMask.refine``); back-project (``mask_to_frame``: frame-sized zeros +
  ``cv2.warpAffine``); threshold (from ``mask_to_frame``'s return to ``mask_polygon``'s call: the ``> seg_thr``
  comparison); contour (``mask_polygon``: ``cv2.findContours``, ``contourArea``, ``minAreaRect``, ``boxPoints``);
  rest (box decoding, ``select_box``, state update, the base class). The module functions are wrapped in the tracker
  module (it looks them up at call time), the network's graph objects behind a forwarding proxy.
* Agreement: the ONNX tracker's boxes against the eager tracker's, frame by frame (max |Δ| px, the updates more than
  1 px apart and the first of them), and its thresholded masks (the share of frames whose H×W masks are identical,
  the smallest mask IoU). The trackers feed their own boxes back, so float rounding differences could grow along the
  sequence; they are printed as found. With random weights they can: the score maps are saturated (many anchors at
  exactly 0 or 1 in float32), so the best anchor is often decided by the cosine window and a near-tie, and one flip
  moves the box by a stride or more (seen with the reference configuration: ~20 px on one sequence, < 0.3 px on
  another); masks differ from eager on a few pixels at the threshold (IoU ≥ 0.99 when the boxes agree).

Target (the issue's): ONNX Runtime ≥ 1.0× PyTorch eager end to end ("deployment no slower than PyTorch") for every
configuration; FPS are reported, with no FPS target. The machine is shared: the load average is printed with every
repeat and the JSON line (the last line) carries ``os.getloadavg()`` before and after. ``--threads`` defaults to 1:
when the load plus the threads exceeds the CPUs, PyTorch's OpenMP pool spends most of its time waiting for a thread
that has no core (bench/goturn_speed.py's docstring: 2-thread eager tracking 10-20× slower than on 1 thread on a
2-core machine with a training run on one core), which would measure the contention, not the code.
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
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.tracking_common import Clock as TimingClock  # noqa: E402
from bench.tracking_common import Proxy, warn_about_load  # noqa: E402
import trackers.siammask.tracker as tracker_module  # noqa: E402
from trackers.siammask.onnx_network import OnnxNetwork  # noqa: E402
from trackers.siammask.tracker import SiamMaskTracker, TorchNetwork  # noqa: E402

CONFIGS = {"demo": {"model_params": {"backbone": "resnet18_siammask", "adjust_channels": 64, "hidden": 64,
                                     "refine": False},
                    "tracker_params": {"mask_source": "base"}},
           "reference": {"model_params": {"backbone": "resnet50_siammask", "adjust_channels": 256, "hidden": 256,
                                          "refine": True},
                         "tracker_params": {"mask_source": "refine"}}}
TRACKING_TARGET = 1.0
PHASES = ("crop", "search", "search_graph", "mask_net", "mask_graph", "backproject", "threshold", "contour", "rest")
WARMUP_FRAMES = 6


# ---------------------------------------------------------------------------------------------------------------------
# data, models, export


def synthetic_sequence(work: Path, frames: int, width: int, height: int):
    """(decoded frames, ground-truth boxes) of one synthetic DAVIS val video of `frames` + 1 frames (object 1)."""
    from data.mask_sequences import open_davis
    from data.synthetic import DavisSpec, generate_davis

    count = max(frames + 1, 8)   # DavisSpec needs ≥ 8 frames
    generate_davis(work / "davis", DavisSpec(num_train_videos=1, num_val_videos=1, min_frames=count, max_frames=count,
                                             objects_per_video=1, img_w=width, img_h=height), workers=1)
    sequences = open_davis(work / "davis", "val", workers=1)
    sequence = sequences.sequences[0]
    return [sequences.frame(sequence, i) for i in range(frames + 1)], sequence.boxes[:frames + 1]


def build(config: str):
    from trackers.siammask.params import SiamMaskParams
    from trackers.siammask.task import build_model

    params = SiamMaskParams(batches_dir="unused", **CONFIGS[config])
    torch.manual_seed(0)
    return build_model(params).eval(), params


def export(model, params, out: Path, config: str) -> float:
    """The three graphs through the deploy.export core; returns the seconds it took."""
    from deploy.export import DEFAULT_OPSET, QUANTIZATION_TEXT, _export_graph, graph_out_path
    from trackers.siammask.export import export_graphs

    started = time.perf_counter()
    facts = {"source_checkpoint": f"random init ({config}, seed 0)", "checkpoint_epoch": "", "checkpoint_best": {},
             "quantization": QUANTIZATION_TEXT["none"]}
    with warnings.catch_warnings():   # the tracer's notes on shape checks that are constant at batch 1
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        for graph in export_graphs(model, params):
            _export_graph(graph, graph_out_path(out, graph), Path(facts["source_checkpoint"]), "siammask", facts,
                          [1], DEFAULT_OPSET, "torchscript", "none")
    model.eval()   # the export leaves the model as it found it; make sure of it (TemplateGraph's docstring)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------------------------------
# timing


class Clock(TimingClock):
    """Per-phase seconds of the current run, and when the last mask came back to the frame."""

    def __init__(self) -> None:
        super().__init__()
        self.mask_ready = None   # perf_counter when mask_to_frame returned (the threshold runs until mask_polygon)


def timed_network(network, clock: Clock):
    """`network` with its ``search`` and ``mask`` (graph + I/O) and the graphs alone timed."""
    if isinstance(network, OnnxNetwork):
        search, mask = network.search_session, network.mask_session
        network.search_session = Proxy(search, run=clock.timed("search_graph", search.run))
        network.mask_session = Proxy(mask, run=clock.timed("mask_graph", mask.run))
    else:
        inner = network.net
        network.net = Proxy(inner, track=clock.timed("search_graph", inner.track),
                             mask_at=clock.timed("mask_graph", inner.mask_at),
                             refine=clock.timed("mask_graph", inner.refine))
    network.search = clock.timed("search", network.search)
    network.mask = clock.timed("mask_net", network.mask)
    return network


@contextlib.contextmanager
def instrumented(clock: Clock):
    """crop_image, mask_to_frame and mask_polygon of the tracker module timed (the tracker looks them up at call
    time); the threshold is the time from mask_to_frame's return to mask_polygon's call (nothing else runs there)."""
    originals = tracker_module.crop_image, tracker_module.mask_to_frame, tracker_module.mask_polygon
    backproject = clock.timed("backproject", originals[1])
    contour = clock.timed("contour", originals[2])

    def mask_to_frame(*args, **kwargs):
        out = backproject(*args, **kwargs)
        clock.mask_ready = time.perf_counter()
        return out

    def mask_polygon(*args, **kwargs):
        if clock.on and clock.mask_ready is not None:
            clock.seconds["threshold"] += time.perf_counter() - clock.mask_ready
        clock.mask_ready = None
        return contour(*args, **kwargs)

    tracker_module.crop_image = clock.timed("crop", originals[0])
    tracker_module.mask_to_frame, tracker_module.mask_polygon = mask_to_frame, mask_polygon
    try:
        yield
    finally:
        tracker_module.crop_image, tracker_module.mask_to_frame, tracker_module.mask_polygon = originals


def run_sequence(network, clock: Clock, params, frames, first_box, keep_masks: bool = False) -> dict:
    tracker = SiamMaskTracker(network, params.tracker_params)
    start = time.perf_counter()
    tracker.init(frames[0], first_box)
    init_s = time.perf_counter() - start
    clock.seconds.clear()
    clock.mask_ready = None
    boxes, masks = [], []
    clock.on = True
    start = time.perf_counter()
    for frame in frames[1:]:
        boxes.append(tracker.update(frame))
        if keep_masks:   # a list append inside the total, outside every phase
            masks.append(tracker.last.mask)
    total = time.perf_counter() - start
    clock.on = False
    s = defaultdict(float, clock.seconds)
    pixels = [int(m.sum()) for m in masks if m is not None]
    phases = {p: s[p] for p in PHASES if p != "rest"}
    phases["rest"] = total - sum(s[p] for p in ("crop", "search", "mask_net", "backproject", "threshold", "contour"))
    return {"total_s": total, "init_s": init_s, "phases_s": phases, "boxes": np.array(boxes), "masks": masks,
            "mask_pixels": pixels}


def box_agreement(boxes: np.ndarray, reference: np.ndarray) -> dict:
    from evaluate.tracking_metrics import rect_iou

    per_frame = np.abs(boxes - reference).max(axis=1)
    apart = np.flatnonzero(per_frame > 1.0)
    return {"max_abs_px": float(per_frame.max()), "min_iou": float(rect_iou(boxes, reference).min()),
            "first_update_over_1px": int(apart[0]) if len(apart) else None, "updates_over_1px": int(len(apart))}


def mask_agreement(masks: list, reference: list) -> dict:
    if len(masks) != len(reference) or not masks:
        return {"identical_share": None, "min_iou": None, "frames": 0}
    identical, ious = 0, []
    for a, b in zip(masks, reference):
        if a is None or b is None:   # no usable box on that frame: no mask
            identical += a is None and b is None
            ious.append(1.0 if a is None and b is None else 0.0)
        elif np.array_equal(a, b):
            identical += 1
            ious.append(1.0)
        else:
            union = int(np.logical_or(a, b).sum())
            ious.append(int(np.logical_and(a, b).sum()) / union if union else 1.0)
    return {"identical_share": round(identical / len(masks), 4), "min_iou": round(min(ious), 6),
            "frames": len(masks)}


# ---------------------------------------------------------------------------------------------------------------------


def bench_config(config: str, frames, boxes, args, work: Path) -> dict:
    model, params = build(config)
    out = work / f"siammask_{config}.onnx"
    export_s = export(model, params, out, config)
    onnx_mb = sum(p.stat().st_size for p in work.glob(f"siammask_{config}.*.onnx")) / 1e6
    print(f"{config}: exported the three graphs ({onnx_mb:.0f} MB) in {export_s:.1f} s; {len(frames) - 1} updates "
          f"per run", flush=True)
    clock = Clock()
    onnx_name, eager_name = f"onnxruntime ({args.threads} threads)", f"pytorch eager ({args.threads} threads)"
    mask_source = params.tracker_params.mask_source
    networks = {onnx_name: timed_network(OnnxNetwork.from_export(out, intra_op_threads=args.threads), clock),
                eager_name: timed_network(TorchNetwork(model, params.tracker_params.x_size, mask_source), clock)}
    names = list(networks)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with instrumented(clock):
        for name in names:  # warm-up: one short pass each (first-call allocations, thread pools)
            run_sequence(networks[name], clock, params, frames[:WARMUP_FRAMES], boxes[0])
        for repeat in range(args.repeats):
            order = names[repeat % len(names):] + names[:repeat % len(names)]
            for name in order:
                runs[name].append(run_sequence(networks[name], clock, params, frames, boxes[0],
                                               keep_masks=repeat == 0))
            fps = {name: (len(frames) - 1) / runs[name][-1]["total_s"] for name in names}
            print(f"{config} repeat {repeat}: " + ", ".join(f"{n} {f:.2f} FPS" for n, f in fps.items())
                  + f"; load {os.getloadavg()[0]:.1f}", flush=True)
    updates = len(frames) - 1
    reference_run = runs[eager_name][0]
    result = {"model_params": CONFIGS[config]["model_params"], "mask_source": mask_source, "updates": updates,
              "export_s": round(export_s, 2), "onnx_mb": round(onnx_mb, 1), "trackers": {}}
    for name in names:
        totals = [r["total_s"] for r in runs[name]]
        median = sorted(runs[name], key=lambda r: r["total_s"])[(len(totals) - 1) // 2]  # lower middle if even
        first = runs[name][0]
        result["trackers"][name] = {
            "fps": round(updates / median["total_s"], 3),
            "fps_runs": [round(updates / t, 3) for t in totals],
            "ms_per_frame": round(1000 * median["total_s"] / updates, 3),
            "breakdown_ms_per_frame": {k: round(1000 * v / updates, 3) for k, v in median["phases_s"].items()},
            "init_ms": round(1000 * statistics.median(r["init_s"] for r in runs[name]), 2),
            "median_mask_pixels": float(np.median(first["mask_pixels"])) if first["mask_pixels"] else None,
            "frames_with_mask": len(first["mask_pixels"]),
            "vs_eager_boxes": box_agreement(first["boxes"], reference_run["boxes"]),
            "vs_eager_masks": mask_agreement(first["masks"], reference_run["masks"]),
        }
    per_repeat = [e["total_s"] / o["total_s"] for o, e in zip(runs[onnx_name], runs[eager_name])]
    result["onnx"], result["eager"] = onnx_name, eager_name
    result["onnx_vs_eager"] = round(result["trackers"][onnx_name]["fps"] / result["trackers"][eager_name]["fps"], 3)
    result["onnx_vs_eager_median_repeat"] = round(statistics.median(per_repeat), 3)
    return result


def print_table(results: dict) -> None:
    print("\nms per frame by phase (the median run; search graph ⊂ search, mask graph ⊂ mask net):")
    header = f"{'config':10}{'tracker':26}{'FPS':>8}{'ms/frame':>10}" + "".join(f"{p:>13}" for p in PHASES)
    print(header + f"{'init ms':>9}{'mask px':>10}")
    for config, result in results.items():
        for name, r in result["trackers"].items():
            b = r["breakdown_ms_per_frame"]
            pixels = r["median_mask_pixels"]
            print(f"{config:10}{name:26}{r['fps']:8.2f}{r['ms_per_frame']:10.2f}"
                  + "".join(f"{b[p]:13.2f}" for p in PHASES)
                  + f"{r['init_ms']:9.1f}{'—' if pixels is None else f'{pixels:.0f}':>10}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="demo,reference", help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--frames", type=int, default=60, help="updates per run (the sequence has one frame more)")
    parser.add_argument("--reference-frames", type=int, default=20,
                        help="updates per run of the reference configuration (the first frames of the sequence)")
    parser.add_argument("--repeats", type=int, default=3, help="tracking runs of each tracker")
    parser.add_argument("--threads", type=int, default=1,
                        help="ONNX Runtime intra-op threads and torch threads (default 1: see the docstring)")
    parser.add_argument("--frame-size", default="640x360", help="WxH of the synthetic frames")
    args = parser.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not configs:
        parser.error(f"unknown or no config(s) {', '.join(unknown)}; expected {', '.join(CONFIGS)}")
    if args.frames < WARMUP_FRAMES or args.reference_frames < 1 or args.repeats < 1 or args.threads < 1:
        parser.error(f"need --frames ≥ {WARMUP_FRAMES}, --reference-frames, --repeats and --threads ≥ 1")
    width, height = (int(v) for v in args.frame_size.lower().split("x"))
    torch.set_num_threads(args.threads)
    load_before = warn_about_load(args.threads, "the eager figures")
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="siammask_fps.") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        frames, boxes = synthetic_sequence(work, args.frames, width, height)
        print(f"sequence: {len(frames)} frames {width}×{height} generated and decoded in "
              f"{time.perf_counter() - started:.1f} s; threads {args.threads}; onnxruntime {ort.__version__}, torch "
              f"{torch.__version__}; load {load_before[0]:.1f}", flush=True)
        results = {}
        for config in configs:
            n = args.frames if config == "demo" else min(args.frames, max(args.reference_frames, WARMUP_FRAMES))
            results[config] = bench_config(config, frames[:n + 1], boxes[:n + 1], args, work)
            for path in work.glob(f"siammask_{config}.*"):
                path.unlink()
    load_after = os.getloadavg()

    print_table(results)
    targets = {}
    for config, result in results.items():
        onnx, eager, ratio = (result["trackers"][result["onnx"]], result["trackers"][result["eager"]],
                              result["onnx_vs_eager"])
        met = ratio >= TRACKING_TARGET
        targets[f"{config}_onnx_vs_eager"] = met
        masks = onnx["vs_eager_masks"]
        same = "—" if masks["identical_share"] is None else f"{100 * masks['identical_share']:.0f}%"
        print(f"{config}: ONNX Runtime {onnx['fps']:.2f} FPS vs eager {eager['fps']:.2f} FPS = {ratio:.2f}x (median "
              f"per repeat {result['onnx_vs_eager_median_repeat']:.2f}x; target ≥ {TRACKING_TARGET:.1f}x: "
              f"{'met' if met else 'MISSED'}); boxes max |Δ| {onnx['vs_eager_boxes']['max_abs_px']:.1e} px "
              f"({onnx['vs_eager_boxes']['updates_over_1px']} updates > 1 px); masks "
              f"identical on {same} of {masks['frames']} frames (min IoU {masks['min_iou']}); median mask "
              f"{onnx['median_mask_pixels']} px (eager {eager['median_mask_pixels']}); graphs "
              f"{result['onnx_mb']:.0f} MB exported in {result['export_s']:.1f} s")
    print(f"load average {load_before[0]:.2f} → {load_after[0]:.2f} (1 min) on {os.cpu_count()} CPUs")
    summary = {"bench": "siammask_tracking_fps", "frames": args.frames, "reference_frames": args.reference_frames,
               "frame_size": [width, height], "threads": args.threads, "repeats": args.repeats,
               "onnxruntime": ort.__version__, "torch": torch.__version__, "cpu_count": os.cpu_count(),
               "targets": {"onnx_vs_eager": TRACKING_TARGET}, "targets_met": targets,
               "tracking": {c: {"onnx_fps": r["trackers"][r["onnx"]]["fps"],
                                "eager_fps": r["trackers"][r["eager"]]["fps"],
                                "onnx_vs_eager": r["onnx_vs_eager"],
                                "onnx_vs_eager_median_repeat": r["onnx_vs_eager_median_repeat"],
                                "updates": r["updates"], "mask_source": r["mask_source"],
                                "export_s": r["export_s"], "onnx_mb": r["onnx_mb"],
                                "model_params": r["model_params"], "trackers": r["trackers"]}
                            for c, r in results.items()},
               "loadavg_before": [round(x, 2) for x in load_before],
               "loadavg_after": [round(x, 2) for x in load_after]}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
