"""Ablation of the re-ID methods on the synthetic Market-style data: every row trains with ``python train.py`` under
the same budget (data, image size, epochs, batch, learning-rate schedule) and the same seeds; only the method keys
differ. Metrics are those of the *last* epoch (no best-epoch selection on the test split).

Rows (cumulative, as the issue asks):

* ``baseline``   softmax (cross-entropy) only
* ``triplet``    + batch-hard triplet (margin 0.3)         — also "the student trained alone"
* ``pcb``        + PCB (parts + global branch)
* ``spectral``   + training-time spectral feature transform
* ``bigger``     the ``triplet`` recipe with a bigger backbone (default resnet50), same budget
* ``teacher``    the ``triplet`` recipe trained ``--teacher_epochs_factor`` times longer (default resnet18, 3×): the
                 teacher has to be better than the student, and a bigger backbone trained from scratch on this little
                 data is not (see ``bigger``)
* ``distilled``  the ``triplet`` student taught by ``teacher``'s final checkpoint (logit KD + similarity feature KD),
                 same budget as ``triplet`` (the student trained alone)

    python -m bench.ablation [--work DIR] [--seeds 0 1 2 3 4] [--epochs 10] [--rows baseline,triplet,...]

Finished runs are reused when their params are unchanged (re-running the script continues an interrupted ablation).
Prints a table and, last, one JSON line with every row's rank-1 / mAP / mINP (mean over seeds, and per seed) and its
seed-by-seed comparison with the row it builds on (``REFERENCE``): the mean difference and on how many seeds it
was higher.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("rank1", "mAP", "mINP")
ROWS = ("baseline", "triplet", "pcb", "spectral", "bigger", "teacher", "distilled")
# the row each one is compared with, seed by seed (what it adds to, or what it is trained against)
REFERENCE = {"triplet": "baseline", "pcb": "triplet", "spectral": "pcb", "bigger": "triplet", "teacher": "triplet",
             "distilled": "triplet"}


def merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def base_params(args, work: Path) -> dict:
    """Everything every row shares: data, input size, budget, optimiser, evaluation."""
    return {
        "task": "reid",
        "working_dir": str(work / "runs"),
        "batches_dir": str(work / "data" / "market"),
        "synthetic_data": {"type": "market", "seed": args.data_seed, "options": {
            "num_train_ids": args.train_ids, "num_test_ids": args.test_ids,
            "train_images_per_id": args.images_per_id, "num_distractors": 50, "num_junk": 20,
            "img_h": 128, "img_w": 64}},
        "img_h": args.img_h, "img_w": args.img_w, "epochs": args.epochs,
        "batch_sampling_params": {"class_balanced": True, "P": args.P, "K": args.K},
        "data_augmentation": {"padding_h": 4, "padding_w": 4, "crop_h": args.img_h, "crop_w": args.img_w,
                              "mirror": True},
        "lr": {"base_lr": args.lr, "fc_lr": args.lr, "decay_gamma": 0.1,
               "decay_step": [max(1, int(args.epochs * 0.75))], "warmup_epoch": 1},
        "optimizer": "sgd", "weight_decay": 5e-4,
        "model_params": {"model": "resnet18", "feature_dim": args.feature_dim, "dropout": 0.0,
                         "last_conv_stride": 1},
        "tri_loss_params": {"margin": 0.0},
        "imagenet_pretrain": False,
        "num_preprocess_workers": args.workers,
        "log_every_steps": 20,
        "evaluation_params": {"type": "market_evaluate", "epoch": args.epochs, "visualize_queries": 0},
    }


def row_overrides(args) -> dict[str, dict]:
    teacher_epochs = args.epochs * args.teacher_epochs_factor
    triplet = {"tri_loss_params": {"margin": 0.3}}
    pcb = merge(triplet, {"model_params": {"pcb_n_parts": args.pcb_parts, "feature_global_dim": args.global_dim}})
    return {
        "baseline": {},
        "triplet": triplet,
        "pcb": pcb,
        "spectral": merge(pcb, {"model_params": {"spectral_trans": args.spectral_t}}),
        "bigger": merge(triplet, {"model_params": {"model": args.bigger_model}}),
        "teacher": merge(triplet, {"model_params": {"model": args.teacher_model},
                                   "epochs": teacher_epochs,
                                   "lr": {"decay_step": [max(1, int(teacher_epochs * 0.75))]},
                                   "evaluation_params": {"epoch": teacher_epochs}}),
        "distilled": triplet,  # + distillation_params, filled in once the teacher has run
    }


def run_name(row: str, seed: int) -> str:
    return f"{row}_s{seed}"


def last_metrics(run_dir: Path) -> dict | None:
    path = run_dir / "eval_results.jsonl"
    if not path.is_file():
        return None
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines[-1]["metrics"] if lines else None


def train(params: dict, work: Path, name: str, log) -> tuple[Path, float]:
    """Run (or reuse) one training; returns its run directory and the wall time spent (0 when reused)."""
    run_dir = work / "runs" / name
    spec = work / "params" / f"{name}.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(params, indent=2, sort_keys=True)
    state = run_dir / "run_state.json"
    if (spec.is_file() and spec.read_text() == text and state.is_file()
            and json.loads(state.read_text()).get("state") == "finished" and last_metrics(run_dir)):
        log(f"  {name}: reusing the finished run {run_dir}")
        return run_dir, 0.0
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    spec.write_text(text)
    started = time.time()
    cmd = [sys.executable, str(ROOT / "train.py"), "--operation", "train", "--config_path", str(spec),
           "--sub_working_dir", name]
    log(f"  {name}: training ({' '.join(cmd[1:])})")
    for attempt in range(3):
        done = subprocess.run(cmd if attempt == 0 else cmd + ["--resume", "latest"], cwd=ROOT, capture_output=True,
                              text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise RuntimeError(f"{name} failed (exit {done.returncode}):\n{tail}")
        final = json.loads(state.read_text()).get("state") if state.is_file() else None
        if final == "finished" and last_metrics(run_dir):
            return run_dir, time.time() - started
        # a stop request from outside (SIGTERM/SIGINT/STOP) ends a run cleanly with an exact checkpoint: resume it
        log(f"  {name}: run ended in state {final!r}; resuming from latest.pth")
    raise RuntimeError(f"{name} did not finish (state {final!r}) after 3 attempts")


def summarise(per_seed: list[dict]) -> dict:
    out = {}
    for m in METRICS:
        values = [r[m] for r in per_seed]
        out[m] = statistics.fmean(values)
        out[f"{m}_min"], out[f"{m}_max"] = min(values), max(values)
    return out


def paired_comparison(entry: dict, reference: dict) -> dict:
    """Per-metric mean difference to the reference row over the seeds both ran, and on how many seeds it was higher."""
    ref_by_seed = {r["seed"]: r for r in reference["per_seed"]}
    pairs = [(r, ref_by_seed[r["seed"]]) for r in entry["per_seed"] if r["seed"] in ref_by_seed]
    if not pairs:
        return {}
    out = {"seeds": len(pairs)}
    for m in METRICS:
        out[f"delta_{m}"] = statistics.fmean(a[m] - b[m] for a, b in pairs)
        out[f"higher_{m}"] = sum(a[m] > b[m] for a, b in pairs)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "runs" / "ablation"), help="data, params and runs go here")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="training seeds (same for every row)")
    parser.add_argument("--data_seed", type=int, default=0)
    parser.add_argument("--train_ids", type=int, default=40)
    parser.add_argument("--test_ids", type=int, default=40)
    parser.add_argument("--images_per_id", type=int, default=10)
    parser.add_argument("--img_h", type=int, default=64)
    parser.add_argument("--img_w", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--P", type=int, default=8)
    parser.add_argument("--K", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--feature_dim", type=int, default=128)
    parser.add_argument("--pcb_parts", type=int, default=2)
    parser.add_argument("--global_dim", type=int, default=64)
    parser.add_argument("--spectral_t", type=float, default=0.3)
    parser.add_argument("--bigger_model", default="resnet50")
    parser.add_argument("--teacher_model", default="resnet18")
    parser.add_argument("--teacher_epochs_factor", type=int, default=3)
    parser.add_argument("--kd_temperature", type=float, default=4.0)
    parser.add_argument("--kd_logit_weight", type=float, default=1.0)
    parser.add_argument("--kd_feature_weight", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    rows = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; expected some of {', '.join(ROWS)}")
    if "distilled" in rows and "teacher" not in rows:
        rows.insert(rows.index("distilled"), "teacher")
    work = Path(args.work).resolve()
    base = base_params(args, work)
    overrides = row_overrides(args)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results: dict[str, dict] = {}
    for row in rows:
        log(f"row {row}")
        per_seed, seconds, error = [], 0.0, None
        for seed in args.seeds:
            params = merge(base, merge(overrides[row], {"seed": seed}))
            if row == "distilled":
                params["distillation_params"] = {
                    "teacher_checkpoint": str(work / "runs" / run_name("teacher", seed) / "latest.pth"),
                    "temperature": args.kd_temperature, "logit_weight": args.kd_logit_weight,
                    "logit_loss": "kl", "feature_weight": args.kd_feature_weight, "feature_loss": "similarity"}
            try:
                run_dir, spent = train(params, work, run_name(row, seed), log)
            except RuntimeError as err:
                error = str(err)
                log(error)
                break
            if row == "distilled" and "loss_kd_logits" not in (run_dir / "train_log").read_text():
                error = ("the trainer did not apply the distiller (no loss_kd_logits in the log): the task's "
                         "criterion must come from networks.losses.build_criterion and receive the batch images")
                log(error)
                break
            metrics = last_metrics(run_dir)
            per_seed.append({"seed": seed, **{m: float(metrics[m]) for m in METRICS}})
            seconds += spent
            log(f"  {run_name(row, seed)}: " + "  ".join(f"{m}={metrics[m]:.4f}" for m in METRICS))
        entry: dict = {"per_seed": per_seed, "train_seconds": round(seconds, 1)}
        if per_seed and not error:
            entry.update(summarise(per_seed))
        if error:
            entry["error"] = error.splitlines()[0]
        results[row] = entry

    for row, entry in results.items():
        reference = results.get(REFERENCE.get(row, ""))
        if "error" not in entry and reference and "error" not in reference:
            entry["vs"] = {"row": REFERENCE[row], **paired_comparison(entry, reference)}

    print(f"{'row':<11}" + "".join(f"{m:>10}" for m in METRICS) + "   vs row: mean Δ (seeds higher)"
          + "   per seed (rank1 / mAP / mINP)")
    for row, entry in results.items():
        if "error" in entry:
            print(f"{row:<11}  error: {entry['error']}")
            continue
        vs = entry.get("vs")
        versus = (f"{vs['row']}: " + " ".join(f"{vs[f'delta_{m}']:+.3f}({vs[f'higher_{m}']}/{vs['seeds']})"
                                                 for m in METRICS)) if vs and "seeds" in vs else "-"
        seeds = "  ".join(f"s{r['seed']}: {r['rank1']:.3f}/{r['mAP']:.3f}/{r['mINP']:.3f}" for r in entry["per_seed"])
        print(f"{row:<11}" + "".join(f"{entry[m]:>10.4f}" for m in METRICS) + f"   {versus}   {seeds}")
    budget = {k: getattr(args, k) for k in (
        "train_ids", "test_ids", "images_per_id", "img_h", "img_w", "epochs", "P", "K", "lr", "feature_dim",
        "pcb_parts", "global_dim", "spectral_t", "bigger_model", "teacher_model", "teacher_epochs_factor",
        "kd_temperature", "kd_logit_weight", "kd_feature_weight", "data_seed")}
    print(json.dumps({"ablation": results, "seeds": args.seeds, "budget": budget,
                      "student_alone": "triplet"}, sort_keys=True))
    return 1 if any("error" in e for e in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
