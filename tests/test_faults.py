"""Fault injection (issue 7): kill -9 at random moments (including in the middle of checkpoint writes), SIGTERM and
SIGINT, a full disk or an unwritable run directory while saving, and a NaN/Inf loss. Nothing is lost: ``--resume
latest`` always works, and a deterministic run killed and resumed again and again ends with exactly the weights of an
uninterrupted run.

A rank of a distributed run that dies (the others must exit with an error instead of hanging) is tested in
tests/test_distributed.py.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train
from conftest import tiny_params, wait_for, write_params
from engine import checkpoint as ckpt_module
from engine.checkpoint import load_checkpoint
from engine.errors import UserError
from engine.run_dir import RunDir, pid_alive

ROOT = Path(__file__).resolve().parent.parent
TRAIN = str(ROOT / "train.py")
EPOCHS = 3
# Training subprocesses use one thread, as this process does while it trains (restore_process_state).
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STEPS = 2  # per epoch


@pytest.fixture(autouse=True)
def _restore(restore_process_state):
    yield


def fault_params(data: Path, working_dir: Path, **overrides) -> dict:
    """Deterministic, no workers, no evaluation, 32×16 inputs: a step is cheap, a checkpoint is resnet18-sized."""
    settings = {"epochs": EPOCHS, "deterministic": True, "num_preprocess_workers": 0, "img_h": 32, "img_w": 16,
                "batch_sampling_params": {"P": 2, "K": 2}, "evaluation_params": {"type": None}}
    settings.update(overrides)
    return tiny_params(data, working_dir, **settings)


def train_args(config: Path, run: str, *extra: str) -> list[str]:
    return ["--operation", "train", "--config_path", str(config), "--sub_working_dir", run, *extra]




def weights(path: Path) -> dict:
    return load_checkpoint(path)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [key for key in a if not torch.equal(a[key], b[key])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def uninterrupted(small_data, tmp_path_factory):
    """uninterrupted(epochs) → the final checkpoint of the same deterministic run without interruption (trained in
    this process, once per length)."""
    done: dict[int, dict] = {}

    def get(epochs: int) -> dict:
        if epochs not in done:
            base = tmp_path_factory.mktemp(f"straight{epochs}")
            config = write_params(base / "params.json", fault_params(small_data, base / "runs", epochs=epochs))
            handlers = logging.root.handlers[:]
            signals = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
            deterministic = torch.are_deterministic_algorithms_enabled()
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as the subprocesses (SUBPROCESS_ENV): the same arithmetic, bit for bit
            try:
                assert train.main(train_args(config, "straight")) == 0
            finally:
                torch.set_num_threads(threads)
                for handler in logging.root.handlers:
                    if handler not in handlers:
                        handler.close()
                logging.root.handlers[:] = handlers
                for sig, handler in signals.items():
                    signal.signal(sig, handler)
                torch.use_deterministic_algorithms(deterministic)
            done[epochs] = load_checkpoint(base / "runs" / "straight" / "latest.pth")
            assert done[epochs]["epoch"] == epochs
        return done[epochs]

    return get


# ---------------------------------------------------------------------------------------------------------------------
# kill -9

def _temp_files(run: RunDir) -> list[Path]:
    return [p for p in run.path.iterdir() if ".tmp-" in p.name]


def _kill_and_resume(small_data: Path, tmp_path: Path, epochs: int, kills: int, seed: int) -> dict:
    """One deterministic training run killed with SIGKILL `kills` times at seeded random moments and resumed with
    `--resume latest` after each, then resumed to its end. Every other kill is aimed at a checkpoint write (0–60 ms
    after the temporary file appears); the others fall anywhere from start-up to about the first checkpoint the
    process would write (start-up, restore, steps, saves, run-state updates). Returns what was hit."""
    rng = random.Random(seed)
    config = write_params(tmp_path / "params.json", fault_params(small_data, tmp_path / "runs", epochs=epochs))
    run = RunDir(tmp_path / "runs" / "k")
    log = open(tmp_path / "console.log", "a", encoding="utf-8")
    stats = {"kills": 0, "aimed_at_a_write": 0, "anywhere": 0, "left_a_partial_write": 0, "resumes": 0}
    window = 10.0  # set from the first process: the time from its start to its first checkpoint

    def console() -> str:
        return (tmp_path / "console.log").read_text()[-3000:]

    try:
        for attempt in range(kills):
            resume = ["--resume", "latest"] if attempt else []
            stats["resumes"] += bool(resume)
            started = time.monotonic()
            proc = subprocess.Popen([sys.executable, TRAIN, *train_args(config, "k", *resume)], cwd=ROOT,
                                    env=SUBPROCESS_ENV, stdout=log, stderr=subprocess.STDOUT)
            aimed = attempt % 2 == 1
            temp = run.path / f".latest.pth.tmp-{proc.pid}"
            try:
                if not resume:  # the first kill comes after the first checkpoint (a kill before it is tested below)
                    wait_for(lambda: run.latest.exists() or proc.poll() is not None, 240, "the first checkpoint",
                             interval=0.01)
                    window = time.monotonic() - started
                    time.sleep(rng.uniform(0.0, 0.3 * window))
                elif aimed:
                    wait_for(lambda: temp.exists() or proc.poll() is not None, 240, "a checkpoint write",
                             interval=0.002)
                    time.sleep(rng.uniform(0.0, 0.06))
                else:
                    time.sleep(rng.uniform(0.1, window))
            finally:
                alive = proc.poll() is None
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
            assert alive, f"the run ended before kill {attempt + 1}: {console()}"
            stats["kills"] += 1
            stats["aimed_at_a_write" if aimed else "anywhere"] += 1
            stats["left_a_partial_write"] += temp.exists()
            load_checkpoint(run.latest)  # always there, never truncated: the rename is the commit point
        # the last resume runs to the end
        result = subprocess.run([sys.executable, TRAIN, *train_args(config, "k", "--resume", "latest")], cwd=ROOT,
                                env=SUBPROCESS_ENV, stdout=log, stderr=subprocess.STDOUT, timeout=600)
        assert result.returncode == 0, console()
        stats["resumes"] += 1
    finally:
        log.close()
    final = load_checkpoint(run.latest)
    assert final["epoch"] == epochs and final["global_step"] == epochs * STEPS
    assert run.read_state().state == "finished"
    assert not _temp_files(run), _temp_files(run)  # what the killed writers left was cleaned up
    assert "Traceback" not in run.log.read_text()
    stats["final"] = final
    return stats


def test_kill_9_at_random_moments_then_resume_is_exact(small_data, tmp_path, uninterrupted):
    stats = _kill_and_resume(small_data, tmp_path, epochs=5, kills=2, seed=1)
    assert stats["kills"] == 2
    assert_same_weights(stats["final"]["model"], uninterrupted(5)["model"])


@pytest.mark.slow
def test_kill_9_ten_times_then_resume_is_exact(small_data, tmp_path, uninterrupted):
    stats = _kill_and_resume(small_data, tmp_path, epochs=12, kills=12, seed=7)
    assert stats["kills"] == 12 and stats["aimed_at_a_write"] == 6
    assert stats["left_a_partial_write"] >= 1, stats  # at least one kill really landed inside a checkpoint write
    assert_same_weights(stats["final"]["model"], uninterrupted(12)["model"])
    print(f"\nkill -9: {({k: v for k, v in stats.items() if k != 'final'})}")


def test_what_a_killed_writer_leaves_is_cleaned_up_and_never_read(tmp_path):
    """A kill mid-write leaves `.latest.pth.tmp-PID` (never read: only the rename publishes a file) and may tear the
    last line of eval_results.jsonl; the next save removes dead writers' temporary files (not a live writer's), and
    the next evaluation record drops the torn line."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = RunDir(tmp_path)
    stale = tmp_path / f".latest.pth.tmp-{dead.pid}"
    live = tmp_path / f".latest.pth.tmp-{os.getppid()}"
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"another process is writing this right now")
    ckpt_module.save_atomic({"v": torch.tensor(1)}, run.latest)
    assert not stale.exists() and live.exists()
    run.append_eval_result({"epoch": 1})
    with open(run.eval_results, "ab") as handle:
        handle.write(b'{"epoch": 2, "metr')  # killed here
    run.append_eval_result({"epoch": 3})
    assert [json.loads(line)["epoch"] for line in run.eval_results.read_text().splitlines()] == [1, 3]


def test_kill_9_before_the_first_checkpoint_then_resume_latest(small_data, tmp_path):
    config = write_params(tmp_path / "params.json", fault_params(small_data, tmp_path / "runs", epochs=1))
    run = RunDir(tmp_path / "runs" / "early")
    proc = subprocess.Popen([sys.executable, TRAIN, *train_args(config, "early")], cwd=ROOT, env=SUBPROCESS_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: run.state_file.exists() or proc.poll() is not None, 240, "the run to start")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert not run.latest.exists()
    # neither a new start (the directory exists) nor the resume may leave the user stuck
    assert train.main(train_args(config, "early", "--resume", "latest")) == 0
    assert run.read_state().state == "finished" and load_checkpoint(run.latest)["epoch"] == 1


# ---------------------------------------------------------------------------------------------------------------------
# SIGTERM, SIGINT

@pytest.fixture(scope="module")
def signalled_runs(small_data, tmp_path_factory):
    """Two detached runs (start_train) started together; one gets SIGTERM, the other SIGINT, after a few steps."""
    base = tmp_path_factory.mktemp("signals")
    config = write_params(base / "params.json", fault_params(small_data, base / "runs", epochs=200))
    starts = {name: subprocess.Popen([sys.executable, TRAIN, "--operation", "start_train", "--config_path",
                                      str(config), "--sub_working_dir", name], cwd=ROOT, env=SUBPROCESS_ENV,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for name in ("term", "int")}
    for name, proc in starts.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    runs = {name: RunDir(base / "runs" / name) for name in starts}
    pids = {name: int(run.pid_file.read_text()) for name, run in runs.items()}
    try:
        for name, run in runs.items():
            wait_for(lambda: ((run.read_state() or None) and run.read_state().global_step >= 3), 300,
                     f"run {name} to pass a few steps", interval=0.1)
        os.kill(pids["term"], signal.SIGTERM)
        os.kill(pids["int"], signal.SIGINT)
        for name, pid in pids.items():
            wait_for(lambda: not pid_alive(pid), 120, f"run {name} to exit", interval=0.1)
    finally:
        for pid in pids.values():
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    return config, runs


@pytest.mark.parametrize("name", ["term", "int"])
def test_signal_saves_stops_and_resumes(signalled_runs, name):
    config, runs = signalled_runs
    run = runs[name]
    state = run.read_state()
    assert state.state == "stopped", (state, run.log.read_text()[-2000:])
    saved = load_checkpoint(run.latest)
    assert state.message == (f"stopped after step {saved['step']}/{saved['steps_per_epoch']} of epoch "
                             f"{saved['epoch'] + 1} (global step {saved['global_step']}); latest.pth saved")
    assert saved["global_step"] >= 3 and not run.stop_file.exists()
    assert "Traceback" not in run.log.read_text()
    # resumable: finish the epoch it was stopped in
    short = write_params(config.parent / f"resume_{name}.json",
                         {**json.loads(config.read_text()), "epochs": saved["epoch"] + 1})
    assert train.main(train_args(short, name, "--resume", "latest")) == 0
    final = load_checkpoint(run.latest)
    assert final["epoch"] == saved["epoch"] + 1 and final["global_step"] == STEPS * final["epoch"]
    assert run.read_state().state == "finished"
    assert f"resumed from {run.latest} after {saved['epoch']} epoch(s) and {saved['step']} step(s) of the next" in run.log.read_text()


# ---------------------------------------------------------------------------------------------------------------------
# disk full, unwritable run directory

def _fail_second_checkpoint(monkeypatch, how: str):
    """The first checkpoint is written; the second fails as a full disk (while writing) or an unwritable directory (at
    the rename) would make it fail."""
    calls = {"save": 0}
    real_save, real_replace = torch.save, os.replace

    def save(obj, handle, *args, **kwargs):
        calls["save"] += 1
        if how == "disk_full" and calls["save"] == 2:
            handle.write(b"\0" * 4096)  # a partial file, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, handle, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if how == "unwritable" and str(dst).endswith(".pth") and calls["save"] >= 2:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("how, reason", [("disk_full", "No space left on device"),
                                         ("unwritable", "Permission denied")])
def test_failed_checkpoint_write_is_a_clear_error_and_keeps_the_previous_one(small_data, tmp_path, monkeypatch,
                                                                             how, reason):
    config = write_params(tmp_path / "params.json", fault_params(small_data, tmp_path / "runs", epochs=2))
    run = RunDir(tmp_path / "runs" / "full")
    _fail_second_checkpoint(monkeypatch, how)
    with pytest.raises(UserError) as info:
        train.main(train_args(config, "full"))
    monkeypatch.undo()
    message = str(info.value)
    assert message == (f"{run.latest}: cannot write checkpoint ({reason}); the previous file, if any, is intact")
    kept = load_checkpoint(run.latest)  # the last good one: after epoch 1
    assert (kept["epoch"], kept["step"]) == (1, 0)
    assert torch.equal(load_checkpoint(run.epoch_checkpoint(1))["model"]["bn.weight"], kept["model"]["bn.weight"])
    state = run.read_state()
    assert state.state == "failed" and state.message == message
    assert not [p for p in run.path.iterdir() if ".tmp-" in p.name]


def test_unwritable_run_state_is_a_clear_error(small_data, tmp_path, monkeypatch):
    config = write_params(tmp_path / "params.json", fault_params(small_data, tmp_path / "runs", epochs=2))
    run = RunDir(tmp_path / "runs" / "state")
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):  # the disk fills up after the first checkpoint
        if str(dst).endswith("run_state.json") and run.latest.exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(UserError, match=rf"{run.state_file}: cannot write \(No space left on device\)"):
        train.main(train_args(config, "state"))
    monkeypatch.undo()
    assert load_checkpoint(run.latest)["epoch"] == 1
    assert run.read_state() is not None  # the old state file is whole
    assert not [p for p in run.path.iterdir() if ".tmp-" in p.name]


# ---------------------------------------------------------------------------------------------------------------------
# NaN / Inf loss

class _PoisonedCriterion:
    """The real criterion, except that at call `at` (and after, when `every`) one component becomes `value`."""

    def __init__(self, criterion, component: str, value: float, at: int, every: bool = False):
        self.criterion, self.component, self.value, self.at, self.every = criterion, component, value, at, every
        self.calls = 0

    def __call__(self, *args, **kwargs):
        total, components, accuracy = self.criterion(*args, **kwargs)
        call, self.calls = self.calls, self.calls + 1
        if call == self.at or (self.every and call > self.at):
            components = dict(components)
            bad = components[self.component] * self.value if math.isnan(self.value) else \
                components[self.component] + self.value
            total = total - components[self.component] + bad
            components[self.component] = bad
        return total, components, accuracy

    def __getattr__(self, name):
        return getattr(self.criterion, name)


def _poison(monkeypatch, component: str, value: float, at: int, every: bool = False):
    from networks import reid_task

    build = reid_task.build

    def poisoned(params, *args, **kwargs):
        parts = build(params, *args, **kwargs)
        parts.criterion = _PoisonedCriterion(parts.criterion, component, value, at, every)
        return parts

    monkeypatch.setattr(reid_task, "build", poisoned)


@pytest.mark.parametrize("component, value", [("triplet", float("nan")), ("cls", float("inf"))])
def test_non_finite_loss_stops_naming_step_and_component(small_data, tmp_path, monkeypatch, component, value):
    config = write_params(tmp_path / "params.json", fault_params(small_data, tmp_path / "runs", epochs=2))
    run = RunDir(tmp_path / "runs" / "nan")
    _poison(monkeypatch, component, value, at=3)  # epoch 1, step 1 (2 steps per epoch)
    with pytest.raises(UserError) as info:
        train.main(train_args(config, "nan"))
    message = str(info.value)
    assert message.startswith(f"non-finite loss at epoch 2/2 step 2/2 (global step 3): {component}={value}")
    assert str(run.latest) in message and len(message.splitlines()) == 1
    kept = load_checkpoint(run.latest)  # the last good checkpoint: the end of epoch 1, before the bad step
    assert (kept["epoch"], kept["step"], kept["global_step"]) == (1, 0, 2)
    assert all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())
    state = run.read_state()
    assert state.state == "failed" and state.message == message


def test_non_finite_loss_skip_policy(small_data, tmp_path, monkeypatch):
    params = fault_params(small_data, tmp_path / "runs", epochs=2, nonfinite_loss="skip",
                          nonfinite_max_consecutive_skips=2)
    config = write_params(tmp_path / "params.json", params)
    _poison(monkeypatch, "triplet", float("nan"), at=3)
    assert train.main(train_args(config, "skip")) == 0  # one bad batch is skipped, the run goes on
    run = RunDir(tmp_path / "runs" / "skip")
    assert run.read_state().state == "finished"
    assert "skipped the step: non-finite loss at epoch 2/2 step 2/2 (global step 3): triplet=nan" in run.log.read_text()
    final = load_checkpoint(run.latest)
    assert final["global_step"] == 2 * STEPS
    assert all(torch.isfinite(t).all() for t in final["model"].values() if t.is_floating_point())

    monkeypatch.undo()
    _poison(monkeypatch, "triplet", float("nan"), at=1, every=True)  # every batch from then on: give up
    with pytest.raises(UserError, match=r"non-finite loss at epoch 2/2 step 2/2 \(global step 3\): triplet=nan.*"
                                        r"2 consecutive steps skipped"):
        train.main(train_args(config, "skip2"))
