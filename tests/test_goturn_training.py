"""GOTURN through the entry points: a short train.py run evaluates on the fly and `evaluator.py` reproduces its numbers
from the checkpoint (default suite); (slow) a longer run that learns, exported to ONNX, evaluated on ONNX Runtime with
the PyTorch numbers, and tracked with `python -m trackers.track` from the export and the checkpoint alike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from engine.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
SLOW = pytest.mark.slow
EVAL_BOUNDS = {"max_sequences": 2, "max_frames": 12}


def run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


def evaluate(directory: Path, name: str, model_path: Path, data_dir: Path) -> dict:
    config = write_json(directory / f"{name}.eval.json", {
        "model_path": str(model_path), "benchmark_type": "got10k_evaluate", "data_dir": str(data_dir),
        "subset": "val", "result_dir": str(directory / f"{name}_results"),
        "result_log_file": str(directory / f"{name}.result.json"), **EVAL_BOUNDS})
    done = run("evaluator.py", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((directory / f"{name}.result.json").read_text())["metrics"]


def train(base: Path, epochs: int, model: dict, lr: dict, sampling: dict, seqs: tuple[int, int]) -> Path:
    """The run directory of a train.py run on a synthetic GOT-10k set written under `base`."""
    config = write_json(base / "params.json", {
        "task": "goturn", "working_dir": str(base / "runs"), "batches_dir": str(base / "got10k"), "seed": 0,
        "epochs": epochs, "optimizer": "adam", "lr": lr, "num_preprocess_workers": 0, "log_every_steps": 1,
        "synthetic_data": {"type": "got10k", "seed": 0, "options": {"num_train_seqs": seqs[0],
                                                                    "num_val_seqs": seqs[1],
                                                                    "min_frames": 12, "max_frames": 16}},
        "model_params": model,
        "pair_sampling": sampling,
        "evaluation_params": {"type": "got10k_evaluate", "epoch": 1, "subset": "val", **EVAL_BOUNDS}})
    done = run("train.py", "--operation", "train", "--config_path", str(config), "--sub_working_dir", "goturn")
    assert done.returncode == 0, done.stderr[-3000:]
    return base / "runs" / "goturn"


def assert_offline_evaluation_reproduces(run_dir: Path, data: Path, directory: Path) -> dict:
    best = load_checkpoint(run_dir / "model_best.pth")["best"]
    records = [json.loads(line) for line in (run_dir / "eval_results.jsonl").read_text().splitlines()]
    [recorded] = [r["metrics"] for r in records if r["epoch"] == best["epoch"]]
    metrics = evaluate(directory, "pth", run_dir / "model_best.pth", data)
    assert recorded["ao"] == best["value"] and set(metrics) == set(recorded)
    for name, value in recorded.items():
        if name != "fps":
            assert metrics[name] == pytest.approx(value, abs=1e-9), name
    return metrics


def test_a_short_run_evaluates_on_the_fly_and_offline_alike(tmp_path):
    run_dir = train(tmp_path, epochs=1, model={"tower_width": 0.25, "fc_width": 32, "fc_layers": 1},
                    lr={"base_lr": 1e-4, "fc_lr": 1e-4},
                    sampling={"batch_size": 4, "pairs_per_epoch": 8, "examples_per_pair": 3}, seqs=(2, 1))
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    assert len(events.Scalars("train/loss_l1")) == 2  # 8 pairs in steps of 4
    assert load_checkpoint(run_dir / "model_best.pth")["task"] == "goturn"
    metrics = assert_offline_evaluation_reproduces(run_dir, tmp_path / "got10k", tmp_path)
    assert metrics["sequences"] == 1 and 0 <= metrics["ao"] <= 1


# ---------------------------------------------------------------------------------------------------------------------
# slow: a run that learns, then everything that consumes its checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(run directory, data root) of 3 epochs × 40 steps of 5 pairs (55 samples each) on 12 synthetic sequences."""
    base = tmp_path_factory.mktemp("goturn_run")
    run_dir = train(base, epochs=3, model={"tower_width": 0.25, "fc_width": 512, "dropout": 0.0},
                    lr={"base_lr": 1e-3, "fc_lr": 1e-3, "warmup_epoch": 1, "policy": "cosine"},
                    sampling={"batch_size": 5, "pairs_per_epoch": 200}, seqs=(12, 2))
    return run_dir, base / "got10k"


@pytest.fixture(scope="module")
def exported(trained) -> Path:
    run_dir = trained[0]
    done = run("-m", "deploy.export", "--checkpoint", str(run_dir / "model_best.pth"), "--out",
               str(run_dir / "model.onnx"))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)  # a task with one graph: one report
    assert report["passed"] and [p["batch_size"] for p in report["parity"]] == [1, 4]
    return run_dir / "model.onnx"


@SLOW
def test_the_trained_network_beats_the_unmoved_box_on_new_samples(trained):
    """Predicting "the object did not move", (2.5, 2.5, 7.5, 7.5), is the trivial regressor; the network must beat it
    on samples it was not trained on (epoch 100's draws: other frames, other random motions), not only learn the
    average box."""
    import torch

    from deploy.export import load_model_from_checkpoint
    from trackers.goturn import task

    model, params, _ = load_model_from_checkpoint(trained[0] / "latest.pth")
    unmoved = torch.tensor([2.5, 2.5, 7.5, 7.5])
    errors = {"network": [], "unmoved": []}
    with torch.no_grad(), task.build(params).loader as loader:
        for _, batch in zip(range(8), loader.epoch(100)):
            errors["network"].append((model(batch["target"], batch["search"]) - batch["box"]).abs().sum(1).mean())
            errors["unmoved"].append((unmoved - batch["box"]).abs().sum(1).mean())
    network, baseline = (float(np.mean(values)) for values in errors.values())
    assert network < 0.9 * baseline, errors


@SLOW
def test_offline_evaluation_of_the_checkpoint_and_of_the_export_gives_the_same_numbers(trained, exported, tmp_path):
    run_dir, data = trained
    pth = assert_offline_evaluation_reproduces(run_dir, data, tmp_path)
    onnx = evaluate(tmp_path, "onnx", exported, data)
    for name in ("ao", "sr50", "sr75"):
        assert onnx[name] == pytest.approx(pth[name], abs=1e-3), name
    assert onnx["frames"] == pth["frames"]


@SLOW
def test_track_command_runs_on_the_export_and_on_the_checkpoint_alike(trained, exported, tmp_path):
    run_dir, data = trained
    folder = data / "val" / "GOT-10k_Val_000001"
    first = (folder / "groundtruth.txt").read_text().splitlines()[0]
    boxes = {}
    for name, model in (("onnx", exported), ("pth", run_dir / "model_best.pth")):
        done = run("-m", "trackers.track", "--frames", str(folder), "--box", first, "--model", str(model),
                   "--out", str(tmp_path / name), "--save", "none")
        assert done.returncode == 0, done.stderr[-3000:]
        boxes[name] = np.loadtxt(tmp_path / name / "boxes.txt", delimiter=",")
    assert boxes["pth"].shape == (len(list(folder.glob("*.jpg"))), 4)
    assert np.abs(boxes["onnx"] - boxes["pth"]).max() <= 1e-2
