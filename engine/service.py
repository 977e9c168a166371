"""The operations of ``train.py``: start_train (detached), train (foreground), status, stop_train.

A run is a directory (`engine.run_dir.RunDir`); the detached process is the same ``train.py --operation train``
started in its own session (it survives the terminal) with its output appended to ``train_log``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

from engine.errors import UserError
from engine.params import TrainParams, load_params, params_to_json
from engine.run_dir import RunDir, RunState, effective_state, pid_alive, write_text_atomic

TRAIN_SCRIPT = Path(__file__).resolve().parent.parent / "train.py"
# Keys that may change when a run is resumed; anything else would make the checkpoint mean something else.
RESUMABLE_CHANGES = {"epochs", "evaluation_params", "log_every_steps", "num_preprocess_workers",
                     "keep_epoch_checkpoints", "working_dir"}


def run_name(sub_working_dir: Optional[str]) -> str:
    if not sub_working_dir:
        return datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(sub_working_dir)
    if name.is_absolute() or ".." in name.parts or len(name.parts) != 1:
        raise UserError(f"--sub_working_dir: expected a plain directory name inside working_dir, found "
                        f"{sub_working_dir!r}")
    return sub_working_dir


def resume_checkpoint(run_dir: RunDir, resume: str) -> Path:
    """`--resume latest|N|PATH` → the checkpoint file, which must exist."""
    if resume == "latest":
        path = run_dir.latest
    elif resume.isdigit():
        path = run_dir.epoch_checkpoint(int(resume))
    else:
        path = Path(resume)
    if not path.is_file():
        kept = sorted(p.name for p in run_dir.path.glob("epoch_*.pth")) if run_dir.path.is_dir() else []
        raise UserError(f"--resume {resume}: checkpoint {path} does not exist"
                        + (f" (kept epoch snapshots: {', '.join(kept)})" if kept else ""))
    return path


def check_resumable(params: TrainParams, checkpoint_params: dict, source: str) -> None:
    new = json.loads(params_to_json(params))
    changed = sorted(key for key in set(new) | set(checkpoint_params)
                     if key not in RESUMABLE_CHANGES and new.get(key) != checkpoint_params.get(key))
    if changed:
        raise UserError(f"{source}: cannot resume with different {', '.join(changed)} (a resumed run may change only "
                        f"{', '.join(sorted(RESUMABLE_CHANGES))}); start a new run with pretrain_snapshot instead")


class Launch:
    """Everything resolved before a run starts, so mistakes surface before any process is spawned."""

    def __init__(self, config_path: Optional[str], sub_working_dir: Optional[str], resume: Optional[str],
                 attach: bool = False):
        """`attach`: the run directory was prepared by start_train for this (detached) process."""
        self.resume_path: Optional[Path] = None
        if resume and not sub_working_dir and not (resume == "latest" or resume.isdigit()):
            # --resume PATH alone continues in the checkpoint's own run directory.
            self.run_dir = RunDir(Path(resume).resolve().parent)
        elif resume:
            if not sub_working_dir:
                raise UserError(f"--resume {resume}: name the run with --sub_working_dir")
            if config_path is None:
                raise UserError("--config_path is required (it gives working_dir)")
            base = load_params(config_path)
            self.run_dir = RunDir(Path(base.working_dir) / run_name(sub_working_dir))
        else:
            if config_path is None:
                raise UserError("--config_path is required")
            base = load_params(config_path)
            self.run_dir = RunDir(Path(base.working_dir) / run_name(sub_working_dir))
        if resume:
            self.resume_path = resume_checkpoint(self.run_dir, resume)
            stored = self.run_dir.params if self.run_dir.params.is_file() else None
            source = config_path or stored
            if source is None:
                raise UserError(f"--resume: {self.run_dir.params} is missing; give --config_path")
            self.params = load_params(source)
            from engine.checkpoint import load_checkpoint

            check_resumable(self.params, load_checkpoint(self.resume_path)["params"], str(source))
        else:
            self.params = load_params(config_path)
            if not attach and self.run_dir.path.exists() and any(self.run_dir.path.iterdir()):
                raise UserError(f"run directory {self.run_dir.path} already exists and is not empty; continue it "
                                f"with --resume latest or choose another --sub_working_dir")
        self._check_inputs(attach)

    def _check_inputs(self, attach: bool) -> None:
        from evaluate import get_evaluator

        p = self.params
        if p.evaluation_params.type:
            get_evaluator(p.evaluation_params.type)
        if p.synthetic_data is None and not Path(p.batches_dir).exists():
            raise UserError(f"batches_dir: {p.batches_dir} does not exist (expected a Market-1501 root, a folder "
                            "per identity/class, or an LMDB pack)")
        if p.pretrain_snapshot and not Path(p.pretrain_snapshot).is_file():
            raise UserError(f"pretrain_snapshot: {p.pretrain_snapshot} does not exist")
        state = self.run_dir.read_state()
        if not attach and state is not None and effective_state(state) in ("starting", "running"):
            raise UserError(f"run {self.run_dir.path} is already running (pid {state.pid})")

    def prepare(self) -> None:
        self.run_dir.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.run_dir.params, params_to_json(self.params) + "\n")
        self.run_dir.stop_file.unlink(missing_ok=True)


def setup_logging(run_dir: RunDir, console: bool) -> None:
    handlers: list[logging.Handler] = [logging.FileHandler(run_dir.log, mode="a", encoding="utf-8")]
    if console:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers,
                        force=True)


def train_foreground(launch: Launch, show_progress: bool, console: bool = True) -> int:
    from engine.trainer import Trainer

    launch.prepare()
    run_dir = launch.run_dir
    setup_logging(run_dir, console)
    log = logging.getLogger("train")
    write_text_atomic(run_dir.pid_file, f"{os.getpid()}\n")
    run_dir.update_state(state="starting", pid=os.getpid(), epochs=launch.params.epochs, message="")
    log.info("run directory %s (pid %d)", run_dir.path, os.getpid())
    try:
        trainer = Trainer(launch.params, run_dir, show_progress=show_progress)
        if launch.resume_path is not None:
            trainer.restore(launch.resume_path)
        state = trainer.run()
    except UserError as err:
        log.error("%s", err)
        run_dir.update_state(state="failed", message=str(err))
        raise
    except BaseException as err:
        log.exception("training failed")
        run_dir.update_state(state="failed", message=f"{type(err).__name__}: {err}")
        raise
    return 0 if state in ("finished", "stopped") else 1


def start_detached(launch: Launch) -> int:
    launch.prepare()
    run_dir = launch.run_dir
    command = [sys.executable, str(TRAIN_SCRIPT), "--operation", "train", "--config_path", str(run_dir.params),
               "--sub_working_dir", run_dir.path.name, "--attach"]
    if launch.resume_path is not None:
        command += ["--resume", str(launch.resume_path)]
    with open(run_dir.log, "a", encoding="utf-8") as log_file:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=os.getcwd())
    write_text_atomic(run_dir.pid_file, f"{process.pid}\n")
    run_dir.write_state(RunState(state="starting", pid=process.pid, epochs=launch.params.epochs))
    print(f"started run {run_dir.path} (pid {process.pid})")
    print(f"  log:          tail -f {run_dir.log}")
    print(f"  tensorboard:  tensorboard --logdir {run_dir.path}")
    print(f"  status:       python train.py --operation status --config_path <params.json>")
    print(f"  stop:         python train.py --operation stop_train --config_path <params.json> "
          f"--sub_working_dir {run_dir.path.name}")
    return 0


def status_table(working_dir: Path) -> str:
    rows = [("run", "state", "epoch", "step", "best", "pid")]
    runs = sorted(p for p in working_dir.iterdir() if (p / "run_state.json").is_file()) if working_dir.is_dir() else []
    for path in runs:
        state = RunDir(path).read_state()
        if state is None:
            rows.append((path.name, "unreadable", "", "", "", ""))
            continue
        best = f"{state.best_metric}={state.best_value:.4f}" if state.best_value is not None else "-"
        rows.append((path.name, effective_state(state), f"{state.epoch}/{state.epochs}", str(state.global_step), best,
                     str(state.pid or "-")))
    if len(rows) == 1:
        return f"no runs under {working_dir}"
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def stop_run(run_dir: RunDir, timeout_s: float = 120.0) -> int:
    state = run_dir.read_state()
    if state is None:
        raise UserError(f"no run at {run_dir.path} (no run_state.json)")
    if effective_state(state) not in ("starting", "running"):
        print(f"run {run_dir.path.name} is not running (state: {effective_state(state)})")
        return 1
    run_dir.stop_file.touch()
    try:
        os.kill(state.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = run_dir.read_state()
        if current is not None and current.state in ("stopped", "finished", "failed"):
            print(f"run {run_dir.path.name}: {current.state} ({current.message or 'checkpoint saved'})")
            return 0 if current.state != "failed" else 1
        if not pid_alive(state.pid):
            break
        time.sleep(0.2)
    current = run_dir.read_state()
    print(f"run {run_dir.path.name}: stop requested; state now {effective_state(current) if current else '?'}")
    return 0 if current is not None and current.state == "stopped" else 1
