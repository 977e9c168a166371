"""The operations of ``train.py``: start_train (detached), train (foreground), status, stop_train.

A run is a directory (`engine.run_dir.RunDir`); the detached process is the same ``train.py --operation train``
started in its own session (it survives the terminal) with its output appended to ``train_log``.

Multi-process runs (``engine.distributed``): under torchrun every worker calls :func:`train_foreground`; rank 0
prepares the run directory, writes the state and the log, the others log warnings and errors only. With ``--nproc N``
(or several ``parallels`` ids) ``train.py`` itself is the launcher (:func:`train_launcher`): it prepares the run
directory, records its own pid (so ``status`` and ``stop_train`` reach it; it forwards SIGTERM to the workers) and
starts the workers; ``start_train`` detaches that launcher.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

from engine import early_stop
from engine.dist_env import LAUNCHER_PID_ENV, DistEnv, process_count
from engine.errors import UserError
from engine.params import EngineParams, load_params, params_to_json
from engine.run_dir import RunDir, RunState, effective_state, pid_alive, write_text_atomic

# torch is imported only where training or a checkpoint needs it, so that start_train, status and stop_train answer
# at once (the detached child does the heavy work).

TRAIN_SCRIPT = Path(__file__).resolve().parent.parent / "train.py"
# Keys that may change when a run is resumed; anything else would make the checkpoint mean something else.
# How the run is executed (devices, memory layout, compilation, timeouts) may change too: `parallels` differing means
# resuming on another world size (see Trainer.restore).
RESUMABLE_CHANGES = {"epochs", "evaluation_params", "log_every_steps", "num_preprocess_workers",
                     "keep_epoch_checkpoints", "working_dir", "parallels", "channels_last", "compile",
                     "dist_timeout_s", "dist_eval_timeout_s", "cpu_threads",
                     "nonfinite_loss", "nonfinite_max_consecutive_skips"}


def train_command(*args: str) -> str:
    """A train.py command line that runs as printed, from the current directory, with this interpreter."""
    found = shutil.which("python")
    python = "python" if found and Path(found).absolute() == Path(sys.executable).absolute() else sys.executable
    try:
        script = TRAIN_SCRIPT.relative_to(Path.cwd())
    except ValueError:
        script = TRAIN_SCRIPT
    return shlex.join([python, str(script), *args])


def run_name(sub_working_dir: Optional[str]) -> str:
    if not sub_working_dir:
        return datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(sub_working_dir)
    if name.is_absolute() or ".." in name.parts or len(name.parts) != 1:
        raise UserError(f"--sub_working_dir: expected a plain directory name inside working_dir, found "
                        f"{sub_working_dir!r}")
    return sub_working_dir


def resume_checkpoint(run_dir: RunDir, resume: str) -> Optional[Path]:
    """`--resume latest|N|PATH` → the checkpoint file, which must exist; None for `latest` of a run that ended (kill
    -9, a crash) before writing its first checkpoint: it starts again from the beginning, in its own directory."""
    if resume == "latest":
        path = run_dir.latest
        if (not path.exists() and run_dir.state_file.is_file() and run_dir.params.is_file()
                and not any(run_dir.path.glob("epoch_*.pth"))):
            return None
    elif resume.isdigit():
        path = run_dir.epoch_checkpoint(int(resume))
    else:
        path = Path(resume)
    if not path.is_file():
        kept = sorted(p.name for p in run_dir.path.glob("epoch_*.pth")) if run_dir.path.is_dir() else []
        raise UserError(f"--resume {resume}: checkpoint {path} does not exist"
                        + (f" (kept epoch snapshots: {', '.join(kept)})" if kept else ""))
    return path


def resumable_changes(params: EngineParams) -> set[str]:
    """The engine's resumable keys plus those the task declares (``RESUMABLE_CHANGES`` of its module)."""
    from engine.tasks import task_module

    return RESUMABLE_CHANGES | set(getattr(task_module(params.task), "RESUMABLE_CHANGES", ()))


def check_resumable(params: EngineParams, checkpoint_params: dict, source: str) -> None:
    new = json.loads(params_to_json(params))
    old = dict(checkpoint_params)
    fields = type(params).model_fields
    for key in set(new) - set(old):  # a key added to the schema after the checkpoint was written: its default
        if not fields[key].is_required():
            old[key] = json.loads(json.dumps(fields[key].get_default(call_default_factory=True), default=_jsonable))
    allowed = resumable_changes(params)
    changed = sorted(key for key in set(new) | set(old) if key not in allowed and new.get(key) != old.get(key))
    if changed:
        raise UserError(f"{source}: cannot resume with different {', '.join(changed)} (a resumed run may change only "
                        f"{', '.join(sorted(allowed))}); start a new run with pretrain_snapshot instead")


def _jsonable(value):
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else str(value)


class Launch:
    """Everything resolved before a run starts, so mistakes surface before any process is spawned."""

    def __init__(self, config_path: Optional[str], sub_working_dir: Optional[str], resume: Optional[str],
                 attach: bool = False):
        """`attach`: the run directory was prepared by start_train for this (detached) process."""
        self.resume_path: Optional[Path] = None
        self.config_path = config_path
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
        self.fresh_restart = False
        if resume:
            self.resume_path = resume_checkpoint(self.run_dir, resume)
            self.fresh_restart = self.resume_path is None
            stored = self.run_dir.params if self.run_dir.params.is_file() else None
            source = config_path or stored
            if source is None:
                raise UserError(f"--resume: {self.run_dir.params} is missing; give --config_path")
            self.params = load_params(source)
            from engine.checkpoint import load_checkpoint

            if self.resume_path is not None:
                check_resumable(self.params, load_checkpoint(self.resume_path)["params"], str(source))
            if not attach and not (resume == "latest" or resume.isdigit()):
                self._check_resume_target(resume, sub_working_dir)
        else:
            self.params = load_params(config_path)
            if not attach and self.run_dir.path.exists() and any(self.run_dir.path.iterdir()):
                raise UserError(f"run directory {self.run_dir.path} already exists and is not empty; continue it "
                                f"with --resume latest or choose another --sub_working_dir")
        self._check_inputs(attach)

    def _check_resume_target(self, resume: str, sub_working_dir: Optional[str]) -> None:
        """`--resume PATH` writes into a run directory: the checkpoint's own, or a new one; never a folder of the user's
        nor another run's directory."""
        path = self.run_dir.path
        if not sub_working_dir and not self.run_dir.state_file.is_file():
            raise UserError(f"--resume {resume}: {path} is not a run directory of this tool (no run_state.json), so "
                            "the run cannot continue there; continue it in a new run directory with --sub_working_dir "
                            "NAME, or start a new run with pretrain_snapshot")
        own = self.resume_path is not None and self.resume_path.resolve().parent == path.resolve()
        if sub_working_dir and not own and path.exists() and any(path.iterdir()):
            raise UserError(f"--resume {resume}: run directory {path} already exists and is not empty, and the "
                            "checkpoint is not from it; choose a new --sub_working_dir (nothing there is overwritten)")

    @property
    def params_hint(self) -> str:
        """The params file that the printed commands name: the user's, else the run's own copy."""
        return str(self.config_path or self.run_dir.params)

    def _check_inputs(self, attach: bool) -> None:
        from engine.tasks import task_module
        from evaluate import check_evaluator_inputs

        p = self.params
        working_dir = self.run_dir.path.parent
        if working_dir.exists() and not working_dir.is_dir():
            raise UserError(f"working_dir: {working_dir} is not a directory; expected a directory that holds the run "
                            "directories (or a path that does not exist yet)")
        if p.parallels:  # the CUDA devices asked for exist (one process per listed id); needs torch
            from engine.distributed import check_local_devices

            check_local_devices(p.parallels, process_count(p.parallels, None))
        elif p.amp == "fp16":
            raise UserError("amp: fp16 needs a CUDA device; use \"bf16\" on the CPU")
        check = getattr(task_module(p.task), "check_inputs", None)
        if callable(check):
            check(p)
        if p.evaluation_params.type:
            check_evaluator_inputs(p.evaluation_params.type, p)
        state = self.run_dir.read_state()
        if not attach and state is not None and effective_state(state) in ("starting", "running"):
            raise UserError(f"run {self.run_dir.path} is already running (pid {state.pid})")

    def prepare(self) -> None:
        try:
            self.run_dir.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"working_dir: cannot create the run directory {self.run_dir.path} "
                            f"({err.strerror or err})") from None
        write_text_atomic(self.run_dir.params, params_to_json(self.params) + "\n")
        self.run_dir.stop_file.unlink(missing_ok=True)


class _ProgressBarHandler(logging.StreamHandler):
    """Console log lines printed through tqdm, above the progress bar instead of across it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging must never break training
            self.handleError(record)


def setup_logging(run_dir: RunDir, console: bool, rank: int = 0, world_size: int = 1,
                  progress_bars: bool = False) -> None:
    """Rank 0 (or a single process) logs INFO to train_log (and the console); the other ranks of a distributed run
    log warnings and errors only, tagged with their rank."""
    handlers: list[logging.Handler] = [logging.FileHandler(run_dir.log, mode="a", encoding="utf-8")]
    if console:
        handlers.append(_ProgressBarHandler(sys.stderr) if progress_bars else logging.StreamHandler(sys.stderr))
    tag = f"[rank {rank}/{world_size}] " if world_size > 1 else ""
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s %(levelname)s {tag}%(message)s", handlers=handlers, force=True)


def train_foreground(launch: Launch, show_progress: bool, console: bool = True,
                     env: Optional[DistEnv] = None) -> int:
    """Run the training loop in this process: a single process, or one worker of a distributed run (`env`; default:
    from torchrun's environment variables)."""
    from engine import distributed
    from engine.trainer import Trainer, resolve_device

    env = env or DistEnv.from_environ()
    run_dir = launch.run_dir
    ctx = None
    if env.is_distributed:
        ctx = distributed.DistContext.initialize(env, resolve_device(launch.params, env),
                                                 launch.params.dist_timeout_s, launch.params.dist_eval_timeout_s)
    try:
        if env.is_main:
            launch.prepare()
        if ctx is not None:
            ctx.barrier()  # the run directory exists before the other ranks open the log
            run_dir.path.mkdir(parents=True, exist_ok=True)  # another node without a shared filesystem: its own
        return _train(launch, run_dir, env, ctx, show_progress, console, Trainer)
    finally:
        if ctx is not None:
            ctx.shutdown()


def resume_command(launch: Launch, operation: str = "train") -> str:
    return train_command("--operation", operation, "--config_path", launch.params_hint, "--sub_working_dir",
                         launch.run_dir.path.name, "--resume", "latest")


def _train(launch: Launch, run_dir: RunDir, env: DistEnv, ctx, show_progress: bool, console: bool,
           trainer_class) -> int:
    setup_logging(run_dir, console, env.rank, env.world_size, progress_bars=show_progress)
    log = logging.getLogger("train")
    main = env.is_main
    if main:
        # under our launcher the run is the launcher's (status/stop_train reach it); else this process's
        pid = int(os.environ.get(LAUNCHER_PID_ENV, os.getpid())) if env.is_distributed else os.getpid()
        write_text_atomic(run_dir.pid_file, f"{pid}\n")
        run_dir.update_state(state="starting", pid=pid, epochs=launch.params.epochs, message="")
        log.info("run directory %s (pid %d)%s", run_dir.path, pid,
                 f"; {env.world_size} processes" if env.is_distributed else "")
        if getattr(launch, "fresh_restart", False):
            log.warning("--resume latest: the run ended before writing its first checkpoint; training it from the "
                        "beginning")
    previous = early_stop.raise_from_now()
    try:
        early_stop.raise_if_received()
        trainer = trainer_class(launch.params, run_dir, show_progress=show_progress, dist=ctx)
        if launch.resume_path is not None:
            trainer.restore(launch.resume_path)
        state = trainer.run()
    except early_stop.StopBeforeTraining as stop:
        message = f"stopped by {stop} before training started"
        log.info("%s", message)
        if main:
            run_dir.update_state(state="stopped", message=message)
        return 0
    except UserError as err:
        log.error("%s", err)
        if main:
            run_dir.update_state(state="failed", message=str(err))
        raise
    except BaseException as err:
        from engine.distributed import peer_failure

        peer = peer_failure(err, env.rank) if env.is_distributed else None
        if peer is not None:  # the traceback of a failed collective says nothing more
            log.error("%s", peer)
            if main:
                run_dir.update_state(state="failed", message=str(peer))
            raise peer from None
        log.exception("training failed")
        if main:
            run_dir.update_state(state="failed", message=f"{type(err).__name__}: {err}")
        raise
    finally:
        early_stop.restore(previous)
    if state == "stopped" and main and not os.environ.get(LAUNCHER_PID_ENV):
        log.info("resume with: %s", resume_command(launch))
    return 0 if state in ("finished", "stopped") else 1


def train_launcher(launch: Launch, nproc: int, attached: bool, console: bool = True) -> int:
    """`train.py --nproc N` (or several parallels ids): prepare the run, then start and wait for N local workers.

    The run's pid is this launcher's; SIGTERM (stop_train) and Ctrl-C are forwarded to the workers, which stop
    together at the same step (rank 0 saves). A worker failure fails the run; the others are terminated after a grace
    period if they have not failed by themselves."""
    launch.prepare()
    run_dir = launch.run_dir
    setup_logging(run_dir, console)
    log = logging.getLogger("train")
    write_text_atomic(run_dir.pid_file, f"{os.getpid()}\n")
    run_dir.update_state(state="starting", pid=os.getpid(), epochs=launch.params.epochs, message="")
    if early_stop.pending():  # stopped while starting; from here on the launcher forwards stops to the workers
        run_dir.update_state(state="stopped", message=f"stopped by {early_stop.pending()} before training started")
        return 0
    log.info("run directory %s: launching %d worker processes (launcher pid %d)", run_dir.path, nproc, os.getpid())
    args = ["--operation", "train", "--config_path", str(run_dir.params), "--sub_working_dir", run_dir.path.name,
            "--worker"] + (["--attach"] if attached else [])
    if launch.resume_path is not None:
        args += ["--resume", str(launch.resume_path)]
    from engine.distributed import launch_workers

    code, message = launch_workers(args, nproc, cpu=not launch.params.parallels, script=str(TRAIN_SCRIPT))
    state = run_dir.read_state()
    if code != 0:
        log.error("distributed run failed: %s", message)
        if state is None or state.state in ("starting", "running"):
            run_dir.update_state(state="failed", message=message)
        return code
    if state is not None and state.state in ("starting", "running"):
        run_dir.update_state(state="failed", message="the workers exited without finishing")
        return 1
    if state is not None and state.state == "stopped":
        log.info("resume with: %s", resume_command(launch))
    return 0


def start_detached(launch: Launch, nproc: int = 1) -> int:
    launch.prepare()
    run_dir = launch.run_dir
    command = [sys.executable, str(TRAIN_SCRIPT), "--operation", "train", "--config_path", str(run_dir.params),
               "--sub_working_dir", run_dir.path.name, "--attach"]
    if nproc > 1 and not launch.params.parallels:
        command += ["--nproc", str(nproc)]  # several parallels ids launch their workers by themselves
    if launch.resume_path is not None:
        command += ["--resume", str(launch.resume_path)]
    with open(run_dir.log, "a", encoding="utf-8") as log_file:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=os.getcwd())
    write_text_atomic(run_dir.pid_file, f"{process.pid}\n")
    run_dir.write_state(RunState(state="starting", pid=process.pid, epochs=launch.params.epochs))
    print(f"started run {run_dir.path} (pid {process.pid})")
    print(f"  log:          tail -f {shlex.quote(str(run_dir.log))}")
    print(f"  tensorboard:  tensorboard --logdir {shlex.quote(str(run_dir.path))}")
    print(f"  status:       {train_command('--operation', 'status', '--config_path', launch.params_hint)}")
    stop = train_command("--operation", "stop_train", "--config_path", launch.params_hint, "--sub_working_dir",
                         run_dir.path.name)
    print(f"  stop:         {stop}")
    return 0


def status_table(working_dir: Path) -> str:
    """One row per run: state, epochs done, global step, best metric, pid, and why a run failed or stopped."""
    rows = [("run", "state", "epoch", "step", "best", "pid", "note")]
    runs = sorted(p for p in working_dir.iterdir() if (p / "run_state.json").is_file()) if working_dir.is_dir() else []
    for path in runs:
        run_dir = RunDir(path)
        state = run_dir.read_state()
        if state is None:
            rows.append((path.name, "unreadable", "", "", "", "", f"{run_dir.state_file} is not valid JSON"))
            continue
        best = f"{state.best_metric}={state.best_value:.4f}" if state.best_value is not None else "-"
        shown = effective_state(state)
        rows.append((path.name, shown, f"{state.epoch}/{state.epochs}", str(state.global_step), best,
                     str(state.pid or "-"), _note(run_dir, state, shown)))
    if len(rows) == 1:
        return f"no runs under {working_dir}"
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _note(run_dir: RunDir, state: RunState, shown: str, width: int = 120) -> str:
    """Why a run failed or stopped: its recorded message, else (a process that vanished, e.g. kill -9 or out of
    memory) the last error line of its log."""
    if shown not in ("failed", "stopped"):
        return ""
    note = state.message.strip().splitlines()[-1] if state.message.strip() else ""
    if not note and shown == "failed":
        last_error = _last_error_line(run_dir.log)
        note = (f"process {state.pid} ended without recording why (killed?)"
                + (f"; last error in train_log: {last_error}" if last_error else "; see train_log"))
    return note if len(note) <= width else note[:width - 1] + "…"


def _last_error_line(log_file: Path) -> str:
    try:
        with open(log_file, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 65536))
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if " ERROR " in line or line.startswith(("error:", "RuntimeError", "Error"))]
    return errors[-1].split(" ERROR ", 1)[-1].strip() if errors else ""


def stop_run(run_dir: RunDir, config_path: str, timeout_s: float = 120.0) -> int:
    """Ask a run to stop and wait for it to save; prints the command that continues it."""
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
    current = state
    while time.monotonic() < deadline:
        current = run_dir.read_state()
        if current is not None and current.state in ("stopped", "finished", "failed"):
            break
        if not pid_alive(state.pid):
            current = run_dir.read_state()
            break
        time.sleep(0.2)
    shown = effective_state(current) if current else "?"
    if current is not None and current.state in ("stopped", "finished", "failed"):
        print(f"run {run_dir.path.name}: {current.state} ({current.message or 'checkpoint saved'})")
    else:
        print(f"run {run_dir.path.name}: stop requested; state now {shown}")
    if shown == "stopped":
        print("  resume: " + train_command("--operation", "start_train", "--config_path", config_path,
                                           "--sub_working_dir", run_dir.path.name, "--resume", "latest"))
    return 0 if shown in ("stopped", "finished") else 1
