"""Checkpoints: atomic writes survive kill -9 mid-save; loading is weights-only and every failure is one clear error."""

import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny_params
from engine.checkpoint import (CheckpointError, load_checkpoint, load_file, load_weights_strict, save_atomic,
                               state_dict_of)
from engine.params import parse_params
from engine.run_dir import RunDir
from engine.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent

WRITER = """
import sys, torch
from engine.checkpoint import save_atomic
path = sys.argv[1]
version = 0
while True:
    version += 1
    # ~40 MB so that a kill often lands in the middle of a write
    save_atomic({"version": version, "weights": torch.full((10_000_000,), float(version))}, path)
    print(version, flush=True)
"""


def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "latest.pth"
    seen = 0
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                                text=True)
        first = proc.stdout.readline()  # at least one complete save happened
        assert first.strip(), "writer produced no checkpoint"
        time.sleep(0.05 + 0.13 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = load_file(path)  # never truncated: the rename is the commit point
        assert torch.all(data["weights"] == float(data["version"]))
        seen = max(seen, data["version"])
    assert seen >= 1
    assert not [p for p in tmp_path.iterdir() if p.name != "latest.pth" and not p.name.startswith(".latest.pth.tmp")]


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "latest.pth"
    save_atomic({"v": torch.tensor(1)}, path)

    def disk_full(obj, handle):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device.*previous file, if any, is intact"):
        save_atomic({"v": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert load_file(path)["v"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pth"]


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_payload_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload(str(marker))}, evil)
    with open(evil, "rb") as handle:  # the payload really would run under a plain pickle load
        assert b"touch" in handle.read()
    with pytest.raises(CheckpointError, match="refused"):
        load_file(evil)
    assert not marker.exists()


def test_truncated_and_foreign_files(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"w": torch.randn(1000)}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        load_file(truncated)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pth"):
        load_file(text)
    with pytest.raises(CheckpointError, match="not found"):
        load_file(tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="not a checkpoint of this tool"):
        load_checkpoint(good)
    pickled_list = tmp_path / "list.pth"
    with open(pickled_list, "wb") as handle:
        pickle.dump([1, 2], handle)
    with pytest.raises(CheckpointError):
        state_dict_of(load_file(pickled_list), pickled_list)


def test_strict_loading_names_what_does_not_fit():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    other = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 5))
    with pytest.raises(CheckpointError, match=r"shape mismatch: 1.bias \(5,\) vs \(2,\), 1.weight \(5, 3\) vs \(2, 3\)"):
        load_weights_strict(model, other.state_dict(), "x.pth")
    partial = {k: v for k, v in other.state_dict().items() if k.startswith("0.")}
    with pytest.raises(CheckpointError, match="missing: 1.bias, 1.weight"):
        load_weights_strict(model, partial, "x.pth")
    load_weights_strict(model, partial, "x.pth", ignore_prefixes=("1.",))
    assert torch.equal(model[0].weight, other[0].weight)


# ---------------------------------------------------------------------------------------------------------------------
# format versions, GradScaler and CUDA generator state


def _trainer(tmp_path, tiny_market, **overrides):
    params = parse_params(tiny_params(tiny_market, tmp_path / "runs", **{"epochs": 1, "evaluation_params": {"type": None},
                                                                         **overrides}))
    run = RunDir(tmp_path / "runs" / "r")
    run.path.mkdir(parents=True, exist_ok=True)
    return Trainer(params, run)


def test_version_1_checkpoints_still_resume_and_a_newer_version_is_refused(tmp_path, tiny_market,
                                                                           restore_process_state):
    trainer = _trainer(tmp_path, tiny_market)
    assert trainer.run() == "finished"
    # a version-1 file: classes at the top level; no eval_pending, eval_history, rng_cuda, grad_scaler
    current = torch.load(trainer.run_dir.latest, weights_only=True)
    old = {k: v for k, v in current.items()
           if k not in ("task_state", "eval_pending", "eval_history", "rng_cuda", "grad_scaler")}
    old.update(format_version=1, num_classes=current["task_state"]["num_classes"],
               class_names=current["task_state"]["class_names"])
    torch.save(old, tmp_path / "v1.pth")
    loaded = load_checkpoint(tmp_path / "v1.pth")
    assert loaded["task_state"] == current["task_state"] and loaded["format_version"] == 2
    assert (loaded["eval_pending"], loaded["eval_history"], loaded["rng_cuda"], loaded["grad_scaler"]) == \
        (False, [], [], None)
    resumed = _trainer(tmp_path / "again", tiny_market, epochs=2)
    resumed.restore(tmp_path / "v1.pth")
    assert resumed.progress.epoch == 1 and resumed.run() == "finished"

    torch.save({**old, "format_version": 3}, tmp_path / "v3.pth")
    with pytest.raises(CheckpointError, match="format 3; this version of the tool reads formats 1 to 2; it was "
                                              "written by a newer version"):
        load_checkpoint(tmp_path / "v3.pth")


def test_grad_scaler_state_round_trips_through_the_checkpoint(tmp_path, tiny_market, restore_process_state):
    """The fp16 GradScaler (a CUDA-only setting) is exercised on the CPU with a scaler created there."""
    trainer = _trainer(tmp_path, tiny_market)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    trainer.scaler.scale(torch.ones(()))  # the scale exists once used
    trainer.scaler.update(new_scale=96.0)
    trainer.save_latest()
    saved = load_checkpoint(trainer.run_dir.latest)["grad_scaler"]
    assert saved["scale"] == 96.0 and saved["growth_interval"] == 7

    fresh = _trainer(tmp_path / "fresh", tiny_market)
    fresh.scaler = torch.amp.GradScaler("cpu")
    fresh.restore(trainer.run_dir.latest)
    assert fresh.scaler.get_scale() == 96.0 and fresh.scaler.state_dict() == trainer.scaler.state_dict()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_cuda_generator_state_round_trips_through_the_checkpoint(tmp_path, tiny_market, restore_process_state):
    trainer = _trainer(tmp_path, tiny_market)
    torch.cuda.manual_seed_all(123)
    torch.cuda.init()
    trainer.save_latest()
    expected = torch.rand(4, device="cuda")
    torch.cuda.manual_seed_all(999)
    trainer.restore(trainer.run_dir.latest)
    assert torch.equal(torch.rand(4, device="cuda"), expected)
