"""Our re-ID defaults against torchreid's recipe under the same budget, on both synthetic styles (issue 18): do our
defaults learn at least as fast as torchreid's on data they were not tuned on?

Budget shared by both sides: one Market-1501-format dataset per style (``data.synthetic``, ``--train-ids`` 60 /
``--test-ids`` 40 identities, 128×64, seeded by ``--data-seed``; the same dataset for every training seed), ResNet-18
from scratch, P×K = 16×4 batches, cross-entropy + batch-hard triplet (margin 0.3), SGD lr 0.05 with weight decay
5e-4, ``--epochs`` epochs with the learning rate ×0.1 at the root params.json's ``lr.decay_step`` epochs,
``--threads`` CPU threads and ``--workers`` loader processes, evaluated after the ``--eval-epochs`` epochs, for every
seed of ``--seeds``.

* **torchreid** (bench-only dependency: ``pip install torchreid==0.2.5``, plus ``opencv-python-headless`` and
  ``gdown`` that it imports; it imports as ``torchreid.reid``): its own ``ImageDataManager`` (our folder registered
  as an image dataset; transforms ``random_flip`` + ``random_crop`` as in its README), ``RandomIdentitySampler``,
  ``resnet18`` (``pretrained=False``, 512-d pooled feature, last stride 2), ``build_optimizer('sgd')`` (momentum
  0.9), ``multi_step`` scheduler and ``ImageTripletEngine`` (weight_t = weight_x = 1, label smoothing on, its
  default); evaluated by its engine: Euclidean distance on raw features (its default), ``eval_market1501``.
* **ours**: ``python train.py --operation train`` with the root params.json, changed only where the budget says
  (data, epochs, evaluation epochs, seed, threads, workers, working_dir) and by ``--ours-override KEY=JSON``
  (dotted keys, repeatable), so other defaults can be compared; metrics from the run's ``eval_results.jsonl``
  (``evaluate/metrics.py``, with our evaluation's own distance: cosine by default).

Both report rank-1 CMC and mAP with the same definitions: query against bounding_box_test, gallery items of the
query's identity seen by the query's camera removed, junk (pid -1) removed (torchreid drops it when reading the
folder, ours ignores it in the ranking), distractors (pid 0) kept as negatives, queries without a positive skipped,
AP the plain non-interpolated average of precision at each positive (torchreid's ``eval_market1501`` and our
``mAP``, not the trapezoid ``mAP_trapezoid``).

Time: ``wall_s`` is the whole training process (start-up, training, evaluations); ``images_per_s`` is training
images seen / (wall time − evaluation time). An epoch is each side's own: torchreid's sampler and ours may draw a
few batches more or fewer, so the images seen are reported too (60 identities: torchreid 576 per epoch, ours 704).
The root params' ``amp: "bf16"`` is emulated, about 5× slower, on a CPU without bf16 instructions (AVX2 only): there
``--ours-override 'amp="none"'`` keeps ours at torchreid's speed.

    python -m bench.reid_vs_torchreid [--work DIR] [--styles figures,street] [--seeds 0 1 2 3 4] [--epochs 24]
        [--eval-epochs 12 24] [--ours-override model_params.feature_dim=512 ...]

Finished runs are reused when their configuration is unchanged (a re-run continues an interrupted benchmark, and
comparing other defaults of ours re-runs ours only). Prints a table per style and evaluation epoch (per seed, means,
on how many seeds ours ≥ torchreid), a timing table and, last, one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench.ablation import merge, train

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("rank1", "mAP")
SIDES = ("torchreid", "ours")
IMG_H, IMG_W = 128, 64
TORCHREID_RECIPE = {"model": "resnet18", "pretrained": False, "P": 16, "K": 4, "optimizer": "sgd", "lr": 0.05,
                    "weight_decay": 5e-4, "margin": 0.3, "weight_t": 1.0, "weight_x": 1.0,
                    "transforms": ["random_flip", "random_crop"], "lr_scheduler": "multi_step", "gamma": 0.1,
                    "dist_metric": "euclidean", "normalize_feature": False}
_EVAL_LOG = re.compile(r"evaluation at epoch \d+ \(global step \d+\) in ([0-9.]+)s")


# --------------------------------------------------------------------------- #
# configuration
# --------------------------------------------------------------------------- #
def parse_override(text: str) -> tuple[str, object]:
    """``a.b=JSON`` -> ("a.b", value)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--ours-override {text!r}: expected KEY=JSON, e.g. model_params.feature_dim=512")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError(f"--ours-override {text!r}: the value is not JSON (strings need quotes: "
                         f"optimizer='\"adam\"')") from None


def set_dotted(params: dict, key: str, value) -> dict:
    """``params`` with ``key`` (dotted: a nested key) set to ``value``; missing sections are created."""
    nested = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return merge(params, nested)


def eval_every(eval_epochs: list[int]) -> int:
    """Both sides evaluate every N epochs (and after the last): the largest N that hits every requested epoch."""
    return math.gcd(*eval_epochs)


def market_spec(args, style: str):
    from data.synthetic import MarketSpec

    return MarketSpec(num_train_ids=args.train_ids, num_test_ids=args.test_ids, img_h=IMG_H, img_w=IMG_W,
                      seed=args.data_seed, style=style)


def ours_params(root_params: dict, args, spec, data_root: Path, seed: int, work: Path) -> dict:
    """The root params.json with the bench's budget (and the requested overrides) applied."""
    options = {k: v for k, v in asdict(spec).items() if k != "seed"}
    params = merge(root_params, {
        "working_dir": str(work / "runs"), "batches_dir": str(data_root),
        "synthetic_data": {"type": "market", "seed": spec.seed, "options": options},
        "epochs": args.epochs, "seed": seed, "cpu_threads": args.threads, "num_preprocess_workers": args.workers,
        "parallels": [args.gpu] if args.gpu is not None else [],
        "evaluation_params": {"epoch": eval_every(args.eval_epochs)}})
    for key, value in args.ours_override:
        params = set_dotted(params, key, value)
    return params


def torchreid_config(args, data_root: Path, seed: int, decay_step: list[int]) -> dict:
    return {**TORCHREID_RECIPE, "data": str(data_root), "img_h": IMG_H, "img_w": IMG_W, "seed": seed,
            "epochs": args.epochs, "eval_every": eval_every(args.eval_epochs), "decay_step": decay_step,
            "threads": args.threads, "workers": args.workers, "gpu": args.gpu}


# --------------------------------------------------------------------------- #
# the torchreid side (runs in its own process: `--torchreid-job CONFIG`)
# --------------------------------------------------------------------------- #
def market_items(folder: Path, relabel: bool = False) -> list[tuple[str, int, int]]:
    """``(path, pid, camid)`` of a Market folder in name order, camid 0-based, junk (pid -1) left out as torchreid's
    own Market-1501 reader does; ``relabel`` maps the pids to 0..N-1 (training labels)."""
    from data.synthetic import MARKET_NAME_RE

    pattern = re.compile(MARKET_NAME_RE)
    items = []
    for path in sorted(folder.iterdir()):
        match = pattern.match(path.name)
        if match and int(match.group(1)) != -1:
            items.append((str(path), int(match.group(1)), int(match.group(2)) - 1))
    if relabel:
        label = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in items}))}
        items = [(path, label[pid], cam) for path, pid, cam in items]
    return items


def run_torchreid(cfg: dict, save_dir: Path) -> dict:
    import torch
    import torchreid.reid as tr

    class SyntheticMarket(tr.data.ImageDataset):
        """Our Market-1501 folder as a torchreid image dataset (its reader wants its own folder layout)."""

        def __init__(self, root="", **kwargs):
            root = Path(root)
            super().__init__(market_items(root / "bounding_box_train", relabel=True), market_items(root / "query"),
                             market_items(root / "bounding_box_test"), **kwargs)

    class RecordingTripletEngine(tr.engine.ImageTripletEngine):
        """torchreid's triplet engine, recording every evaluation and the training images seen; it saves no
        checkpoints (the bench needs the figures only)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.evaluations, self.images_seen = [], 0

        def forward_backward(self, data):
            self.images_seen += len(data["pid"])
            return super().forward_backward(data)

        def _evaluate(self, **kwargs):
            started = time.perf_counter()
            rank1, mAP = super()._evaluate(**kwargs)
            self.evaluations.append({"epoch": self.epoch + 1, "rank1": float(rank1), "mAP": float(mAP),
                                     "seconds": time.perf_counter() - started})
            return rank1, mAP

        def save_model(self, *args, **kwargs):
            pass

    torch.set_num_threads(cfg["threads"])
    use_gpu = cfg.get("gpu") is not None
    if use_gpu:
        torch.cuda.set_device(cfg["gpu"])
    tr.utils.set_random_seed(cfg["seed"])
    tr.data.register_image_dataset("synthetic_market", SyntheticMarket)
    batch = cfg["P"] * cfg["K"]
    manager = tr.data.ImageDataManager(
        root=cfg["data"], sources="synthetic_market", height=cfg["img_h"], width=cfg["img_w"],
        transforms=cfg["transforms"], use_gpu=use_gpu, batch_size_train=batch, batch_size_test=batch,
        workers=cfg["workers"], num_instances=cfg["K"], train_sampler="RandomIdentitySampler")
    model = tr.models.build_model(cfg["model"], num_classes=manager.num_train_pids, loss="triplet",
                                  pretrained=cfg["pretrained"], use_gpu=use_gpu)
    if use_gpu:
        model = model.cuda()
    optimizer = tr.optim.build_optimizer(model, optim=cfg["optimizer"], lr=cfg["lr"],
                                         weight_decay=cfg["weight_decay"])
    scheduler = tr.optim.build_lr_scheduler(optimizer, lr_scheduler=cfg["lr_scheduler"],
                                            stepsize=list(cfg["decay_step"]), gamma=cfg["gamma"])
    engine = RecordingTripletEngine(manager, model, optimizer, margin=cfg["margin"], weight_t=cfg["weight_t"],
                                    weight_x=cfg["weight_x"], scheduler=scheduler, use_gpu=use_gpu)
    engine.run(save_dir=str(save_dir), max_epoch=cfg["epochs"], eval_freq=cfg["eval_every"], print_freq=10,
               dist_metric=cfg["dist_metric"], normalize_feature=cfg["normalize_feature"])
    return {"evaluations": engine.evaluations, "images": engine.images_seen}


def torchreid_side(cfg: dict, work: Path, name: str, log) -> dict:
    """One torchreid training in a child process (as ours runs in one: same start-up cost, no shared state)."""
    run_dir = work / "torchreid" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    result_file = run_dir / "result.json"
    result_file.unlink(missing_ok=True)
    log(f"  {name}: training (torchreid; log {run_dir / 'log.txt'})")
    started = time.perf_counter()
    with open(run_dir / "log.txt", "w") as out:
        done = subprocess.run([sys.executable, "-m", "bench.reid_vs_torchreid", "--torchreid-job", str(run_dir)],
                              cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    if done.returncode != 0 or not result_file.is_file():
        tail = "\n".join((run_dir / "log.txt").read_text().strip().splitlines()[-15:])
        raise RuntimeError(f"{name} failed (exit {done.returncode}):\n{tail}")
    result = json.loads(result_file.read_text())
    evals = {str(e["epoch"]): {m: e[m] for m in METRICS} for e in result["evaluations"]}
    return side_result(evals, wall, result["images"], sum(e["seconds"] for e in result["evaluations"]))


# --------------------------------------------------------------------------- #
# our side
# --------------------------------------------------------------------------- #
def ours_side(params: dict, work: Path, name: str, log) -> dict:
    run_dir, wall = train(params, work, name, log)
    evals = {}
    for line in (run_dir / "eval_results.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            evals[str(record["epoch"])] = {m: float(record["metrics"][m]) for m in METRICS}
    resolved = json.loads((run_dir / "params.json").read_text())
    sampling = resolved["batch_sampling_params"]
    per_step = sampling["P"] * sampling["K"] if sampling["class_balanced"] else sampling["batch_size"]
    images = json.loads((run_dir / "run_state.json").read_text())["global_step"] * per_step
    eval_s = sum(float(s) for s in _EVAL_LOG.findall((run_dir / "train_log").read_text()))
    return side_result(evals, wall or None, images, eval_s)


def side_result(evals: dict, wall: float | None, images: int, eval_s: float) -> dict:
    """A side's result; wall is None when a finished run was reused without a record of its time."""
    rate = images / (wall - eval_s) if wall and wall > eval_s else None
    return {"evals": evals, "wall_s": wall and round(wall, 1), "eval_s": round(eval_s, 1), "images": images,
            "images_per_s": rate and round(rate, 1)}


def cached_run(side: str, config: dict, work: Path, name: str, run, log) -> dict:
    """``run()`` unless a result for exactly this configuration is on file."""
    path = work / "results" / f"{name}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("config") == config:
            log(f"  {name}: reusing the finished {side} run")
            return cached["result"]
    result = run()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config": config, "result": result}, indent=2, sort_keys=True))
    return result


# --------------------------------------------------------------------------- #
# summary
# --------------------------------------------------------------------------- #
def compare(runs: dict, epoch: int) -> dict:
    """Seed-by-seed comparison at one evaluation epoch of ``runs = {side: {seed: result}}`` over the seeds both
    sides evaluated: both sides' figures, ours − torchreid, the means, and on how many seeds ours ≥ torchreid."""
    key = str(epoch)
    seeds = sorted(s for s in runs["ours"] if s in runs["torchreid"]
                   and all(key in runs[side][s]["evals"] for side in SIDES))
    per_seed = []
    for s in seeds:
        row = {"seed": s, **{side: runs[side][s]["evals"][key] for side in SIDES}}
        row["delta"] = {m: row["ours"][m] - row["torchreid"][m] for m in METRICS}
        per_seed.append(row)
    out = {"epoch": epoch, "seeds": len(seeds), "per_seed": per_seed}
    if per_seed:
        for part in (*SIDES, "delta"):
            out[f"mean_{part}"] = {m: statistics.fmean(r[part][m] for r in per_seed) for m in METRICS}
        out["ours_at_least"] = {m: sum(r["ours"][m] >= r["torchreid"][m] for r in per_seed) for m in METRICS}
    return out


def comparison_table(style: str, comparison: dict) -> list[str]:
    def pair(values: dict, signed: bool = False) -> str:
        fmt = "{:+.3f}" if signed else "{:.3f}"
        return " / ".join(fmt.format(values[m]) for m in METRICS)

    lines = [f"{style}, epoch {comparison['epoch']} (rank-1 / mAP)",
             f"  {'seed':<6}{'torchreid':<17}{'ours':<17}ours - torchreid"]
    for r in comparison["per_seed"]:
        lines.append(f"  {r['seed']:<6}{pair(r['torchreid']):<17}{pair(r['ours']):<17}{pair(r['delta'], True)}")
    if not comparison["per_seed"]:
        return lines + ["  no seed finished on both sides"]
    lines.append(f"  {'mean':<6}{pair(comparison['mean_torchreid']):<17}{pair(comparison['mean_ours']):<17}"
                 f"{pair(comparison['mean_delta'], True)}")
    n, wins = comparison["seeds"], comparison["ours_at_least"]
    lines.append(f"  ours >= torchreid: rank-1 on {wins['rank1']}/{n} seeds, mAP on {wins['mAP']}/{n} seeds")
    return lines


def timing_summary(runs: dict) -> dict:
    """Per side: mean wall time per run, mean images/s and images seen, over the runs with a recorded time."""
    out = {}
    for side in SIDES:
        timed = [r for r in runs[side].values() if r["wall_s"]]
        out[side] = {"runs": len(timed)}
        if timed:
            for key in ("wall_s", "images_per_s", "images"):
                out[side][f"mean_{key}"] = round(statistics.fmean(r[key] for r in timed), 1)
    return out


def timing_table(style: str, summary: dict) -> list[str]:
    lines = [f"{style}, time per run (mean over timed runs)"]
    for side in SIDES:
        t = summary[side]
        lines.append(f"  {side:<10}" + (f"{t['mean_wall_s']:8.1f} s  {t['mean_images_per_s']:7.1f} img/s  "
                                         f"{t['mean_images']:8.0f} training images ({t['runs']} runs)"
                                         if t["runs"] else "  no timed run (all reused)"))
    return lines


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "runs" / "reid_vs_torchreid"),
                        help="data, params, runs and results go here")
    parser.add_argument("--styles", default="figures,street", help="comma-separated synthetic styles")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--eval-epochs", type=int, nargs="+", default=[12, 24], help="epochs compared")
    parser.add_argument("--train-ids", type=int, default=60)
    parser.add_argument("--test-ids", type=int, default=40)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each training process")
    parser.add_argument("--gpu", type=int, default=None, help="train both sides on this CUDA device (default: CPU)")
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes of each training")
    parser.add_argument("--ours-override", action="append", default=[], metavar="KEY=JSON",
                        help="change our params (dotted key, JSON value), e.g. lr.warmup_epoch=0; repeatable")
    parser.add_argument("--torchreid-job", help=argparse.SUPPRESS)  # internal: one torchreid training
    args = parser.parse_args(argv)
    if args.torchreid_job:
        return args
    try:
        args.ours_override = [parse_override(o) for o in args.ours_override]
    except ValueError as err:
        parser.error(str(err))
    from data.synthetic import MARKET_STYLES

    args.styles = [s for s in args.styles.split(",") if s]
    unknown = sorted(set(args.styles) - set(MARKET_STYLES))
    if unknown or not args.styles:
        parser.error(f"--styles: expected some of {', '.join(MARKET_STYLES)}; found {args.styles}")
    if not all(1 <= e <= args.epochs for e in args.eval_epochs):
        parser.error(f"--eval-epochs must lie in 1..--epochs ({args.epochs}); found {args.eval_epochs}")
    args.eval_epochs = sorted(set(args.eval_epochs))
    if importlib.util.find_spec("torchreid") is None:
        parser.error("torchreid is not installed: pip install torchreid==0.2.5 opencv-python-headless gdown")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.torchreid_job:
        job = Path(args.torchreid_job)
        result = run_torchreid(json.loads((job / "config.json").read_text()), job)
        (job / "result.json").write_text(json.dumps(result))
        return 0
    from data.synthetic import ensure_market

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    work = Path(args.work).resolve()
    root_params = json.loads((ROOT / "params.json").read_text())
    decay_step = root_params["lr"]["decay_step"]
    report, errors = {}, []
    for style in args.styles:
        spec = market_spec(args, style)
        data_root = work / "data" / style
        counts = ensure_market(data_root, spec)["counts"]
        log(f"{style}: {counts['train_images']} training images of {counts['train_ids']} identities, "
            f"{counts['query_images']} queries, {counts['gallery_images']} gallery images ({data_root})")
        runs = {side: {} for side in SIDES}
        for seed in args.seeds:
            configs = {"torchreid": torchreid_config(args, data_root, seed, decay_step),
                       "ours": ours_params(root_params, args, spec, data_root, seed, work)}
            for side in SIDES:
                name = f"{side}_{style}_s{seed}"
                config = configs[side]
                run = ((lambda c=config, n=name: torchreid_side(c, work, n, log)) if side == "torchreid"
                       else (lambda c=config, n=name: ours_side(c, work, n, log)))
                try:
                    runs[side][seed] = cached_run(side, config, work, name, run, log)
                except RuntimeError as err:
                    errors.append(str(err).splitlines()[0])
                    log(str(err))
                    continue
                evals = runs[side][seed]["evals"]
                log(f"  {name}: " + "  ".join(f"epoch {e}: rank1={evals[str(e)]['rank1']:.4f} "
                                              f"mAP={evals[str(e)]['mAP']:.4f}" for e in args.eval_epochs
                                              if str(e) in evals))
        report[style] = {"data": counts, "timing": timing_summary(runs),
                         **{f"epoch_{e}": compare(runs, e) for e in args.eval_epochs},
                         "runs": {side: {str(s): r for s, r in runs[side].items()} for side in SIDES}}

    for style, entry in report.items():
        for e in args.eval_epochs:
            print("\n".join(comparison_table(style, entry[f"epoch_{e}"])))
        print("\n".join(timing_table(style, entry["timing"])))
    budget = {"train_ids": args.train_ids, "test_ids": args.test_ids, "img_h": IMG_H, "img_w": IMG_W,
              "data_seed": args.data_seed, "epochs": args.epochs, "eval_epochs": args.eval_epochs,
              "eval_every": eval_every(args.eval_epochs), "decay_step": decay_step, "threads": args.threads,
              "workers": args.workers}
    print(json.dumps({"reid_vs_torchreid": report, "seeds": args.seeds, "budget": budget,
                      "torchreid_recipe": TORCHREID_RECIPE,
                      "ours_overrides": {k: v for k, v in args.ours_override}, "errors": errors}, sort_keys=True))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
