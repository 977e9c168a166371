"""The training loop shared by every task.

One readable loop with explicit steps: set the LR, forward, loss, backward, optimizer step, log; at epoch ends save
``latest.pth`` (atomically) and, on the evaluation schedule, run the evaluator and keep ``model_best.pth``. A stop
request (SIGTERM, SIGINT or ``stop_train``) finishes the current step, saves a checkpoint that resumes exactly there,
and marks the run stopped.

Distributed (``engine.distributed``): every rank runs this loop on its share of each global batch, the model is
wrapped in DistributedDataParallel, and after every step the ranks agree whether any of them was asked to stop, so all
stop at the same step. Rank 0 alone writes checkpoints (of the unwrapped model), TensorBoard scalars, run state and
evaluates (with the unwrapped model, in eval mode: no collective can run there); the others wait at a barrier.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from tensorboardX import SummaryWriter

from engine import checkpoint as ckpt
from engine.distributed import (DistContext, DistEnv, convert_sync_batchnorm, device_for, fault_hook, remap_step,
                                scaled_lr, wrap_model)
from engine.errors import UserError
from engine.lr_schedule import apply_lr, lr_factor
from engine.optim import build_optimizer
from engine.params import EngineParams, params_dict
from engine.run_dir import RunDir
from engine.tasks import evaluator_input, task_module
from evaluate import call_evaluator, get_evaluator

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError):
    """Training produced NaN/Inf; the message names the step and the loss component."""


@dataclass
class Progress:
    epoch: int = 0  # the epoch to run next
    step: int = 0  # the step to run next within that epoch
    global_step: int = 0
    best_metric: Optional[str] = None
    best_value: Optional[float] = None
    best_epoch: Optional[int] = None
    # The evaluation owed at the end of the last finished epoch has not run yet: latest.pth is written before that
    # evaluation (so a kill during it loses no training) and again after it; a run resumed from a checkpoint that
    # still owes it evaluates first.
    eval_pending: bool = False


class StopRequest:
    """Set by SIGTERM/SIGINT or by the STOP file that ``stop_train`` writes."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir
        self.signalled = False
        self.previous_handlers: dict = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.previous_handlers[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        """Give the process its handlers back, so that a caller of Trainer.run (a notebook, a test) is not left with
        signals that only set a flag."""
        for sig, handler in self.previous_handlers.items():
            signal.signal(sig, handler)
        self.previous_handlers.clear()

    def _handle(self, signum, frame) -> None:
        self.signalled = True

    def requested(self) -> bool:
        return self.signalled or self.run_dir.stop_file.exists()


def resolve_device(params: EngineParams, env: Optional[DistEnv] = None) -> torch.device:
    """This process's device: the CPU for ``parallels: []``, else ``cuda:parallels[LOCAL_RANK]``."""
    return device_for(params.parallels, env or DistEnv())


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware (a GPU with bf16, or a CPU with AVX512-BF16 or AMX). Elsewhere bf16
    autocast is emulated and several times slower than fp32 (measured: 5× on a 2-core AVX2 CPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolve_amp(amp: str, device: torch.device) -> str:
    """The precision a run uses: ``auto`` is bf16 where the hardware computes it natively, else none (fp32)."""
    if amp == "auto":
        return "bf16" if native_bf16(device) else "none"
    return amp


def autocast_context(params: EngineParams, device: torch.device):
    amp = resolve_amp(params.amp, device)
    if amp == "none":
        return nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise UserError("amp: fp16 needs a CUDA device; use \"bf16\" on the CPU")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False


def _shown(state: dict, keys: list[str]) -> str:
    """The differing entries of a task state for a message: plain values first, long lists shortened."""
    def short(value):
        if isinstance(value, (list, tuple)) and len(value) > 4:
            return f"[{len(value)} items: {', '.join(repr(v) for v in value[:3])}, …]"
        return repr(value)

    ordered = sorted(keys, key=lambda k: (isinstance(state.get(k), (list, tuple, dict)), k))
    return ", ".join(f"{key}={short(state.get(key))}" for key in ordered) or "the same task state"


class Trainer:
    """`dist`: this process's place in a distributed run (joined already); None = one process on
    :func:`resolve_device`. ``self.model`` is always the unwrapped model (checkpoints, evaluation); ``self.net`` is
    what the training step calls (DDP and/or torch.compile around it)."""

    def __init__(self, params: EngineParams, run_dir: RunDir, show_progress: bool = False,
                 dist: Optional[DistContext] = None):
        self.params = params
        self.run_dir = run_dir
        self.dist = dist or DistContext.single(resolve_device(params))
        self.show_progress = show_progress and self.dist.is_main
        self.device = self.dist.device
        if params.cpu_threads:
            torch.set_num_threads(params.cpu_threads)
        seed_everything(params.seed, params.deterministic)
        self.parts = task_module(params.task).build(params, rank=self.dist.rank, world_size=self.dist.world_size)
        model = self.parts.model
        if params.sync_bn and self.dist.is_distributed:
            model = convert_sync_batchnorm(model, self.device)
        self.model = model.to(self.device)
        if params.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.lr_scale = scaled_lr(1.0, params.lr_scaling, self.dist.world_size)
        self._initial_lr = {group.name: group.lr * self.lr_scale for group in self.parts.param_groups}
        self.optimizer = build_optimizer(self.parts.param_groups, params.optimizer, params.weight_decay,
                                         lr_scale=self.lr_scale)
        self.net = wrap_model(self.model, self.dist, find_unused_parameters=self.parts.may_leave_parameters_unused)
        if params.compile:
            self.net = torch.compile(self.net)
        self.scaler = torch.amp.GradScaler("cuda") if params.amp == "fp16" else None
        if params.amp == "auto":
            log.info("amp auto: %s on %s", resolve_amp(params.amp, self.device), self.device)
        self.progress = Progress()
        self.evaluator_name = params.evaluation_params.type
        self.run_eval = get_evaluator(self.evaluator_name) if self.evaluator_name else None
        self.stop = StopRequest(run_dir)
        self.skipped_in_a_row = 0  # consecutive steps skipped for a non-finite loss (nonfinite_loss "skip")
        self.eval_history: list[dict] = []  # every evaluation of this run (and of the runs it continues)
        self.writer: Optional[SummaryWriter] = None

    # ----------------------------------------------------------------------------------------------------------
    # checkpoints

    def checkpoint_dict(self) -> dict:
        p = self.progress
        return {
            "format_version": ckpt.FORMAT_VERSION,
            "task": self.params.task,
            "params": params_dict(self.params),
            "task_state": dict(self.parts.state),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": p.epoch,
            "step": p.step,
            "global_step": p.global_step,
            "best": {"metric": p.best_metric, "value": p.best_value, "epoch": p.best_epoch},
            "eval_pending": p.eval_pending,
            "eval_history": list(self.eval_history),
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "world_size": self.dist.world_size,
            "steps_per_epoch": self.parts.loader.steps_per_epoch,
        }

    def save_latest(self) -> None:
        if not self.dist.is_main:
            return
        ckpt.save_atomic(self.checkpoint_dict(), self.run_dir.latest)

    def snapshot_epoch(self) -> None:
        """Keep the end-of-epoch checkpoint for `--resume N` as a hard link to latest.pth (no extra disk; the link
        survives the next atomic replace of latest.pth) and drop snapshots beyond `keep_epoch_checkpoints`."""
        keep = self.params.keep_epoch_checkpoints
        if keep == 0 or not self.dist.is_main:
            return
        epoch = self.progress.epoch
        target = self.run_dir.epoch_checkpoint(epoch)
        target.unlink(missing_ok=True)
        try:
            os.link(self.run_dir.latest, target)
        except OSError:
            shutil.copyfile(self.run_dir.latest, target)
        old = self.run_dir.epoch_checkpoint(epoch - keep)
        if epoch - keep >= 1:
            old.unlink(missing_ok=True)

    def restore(self, path) -> None:
        data = ckpt.load_checkpoint(path)
        if data["task"] != self.params.task or data["task_state"] != self.parts.state:
            differs = sorted(k for k in set(data["task_state"]) | set(self.parts.state)
                             if data["task_state"].get(k) != self.parts.state.get(k))
            raise ckpt.CheckpointError(f"{path}: trained for task {data['task']!r} with "
                                       f"{_shown(data['task_state'], differs)}; this run is {self.params.task!r} with "
                                       f"{_shown(self.parts.state, differs)}")
        ckpt.load_weights_strict(self.model, data["model"], path)
        try:
            self.optimizer.load_state_dict(data["optimizer"])
        except (ValueError, KeyError) as err:
            raise ckpt.CheckpointError(f"{path}: optimizer state does not fit this run ({err})") from None
        start_epochs = {group.name: group.start_epoch for group in self.parts.param_groups}
        for group in self.optimizer.param_groups:  # the LR schedule of this run (lr_scaling on its world size)
            group["initial_lr"] = self._initial_lr[group["name"]]
            group["start_epoch"] = start_epochs[group["name"]]
        best = data.get("best") or {}
        step = int(data["step"])
        steps = self.parts.loader.steps_per_epoch
        saved_world, saved_steps = int(data.get("world_size", 1)), int(data.get("steps_per_epoch", steps))
        if saved_steps != steps:
            step = remap_step(step, saved_steps, steps)
            say = log.warning if self.dist.is_main else log.debug
            say("%s was written by a run of %d process(es) with %d steps per epoch; this run has %d process(es) and "
                "%d: continuing at step %d of epoch %d (same fraction of the epoch, batches re-derived for this world "
                "size)", path, saved_world, saved_steps, self.dist.world_size, steps, step, int(data["epoch"]))
        self.progress = Progress(epoch=int(data["epoch"]), step=step,
                                 global_step=int(data["global_step"]), best_metric=best.get("metric"),
                                 best_value=best.get("value"), best_epoch=best.get("epoch"),
                                 eval_pending=bool(data["eval_pending"]))
        self.eval_history = list(data["eval_history"])
        torch.set_rng_state(data["rng_torch"])
        self._restore_cuda_rng(data["rng_cuda"], path)
        if self.scaler is not None and data["grad_scaler"]:
            self.scaler.load_state_dict(data["grad_scaler"])
        log.info("resumed from %s after %d epoch(s) and %d step(s) of the next (global step %d)", path,
                 self.progress.epoch, self.progress.step, self.progress.global_step)
        if self.dist.is_main:
            self._reconcile_with_run_dir()

    @staticmethod
    def _restore_cuda_rng(states: list, path) -> None:
        """Every CUDA device's generator, when this machine has as many devices as the run that saved them."""
        if not states or not torch.cuda.is_available():
            return
        if len(states) != torch.cuda.device_count():
            log.warning("%s holds the CUDA generator states of %d device(s), this machine has %d: they are not "
                        "restored (random draws on the GPU will differ from an uninterrupted run)", path, len(states),
                        torch.cuda.device_count())
            return
        torch.cuda.set_rng_state_all(states)

    def _reconcile_with_run_dir(self) -> None:
        """Make a resumed run agree with what its run directory already holds: never replace a better
        ``model_best.pth`` (it may come from an evaluation after this checkpoint: a mid-epoch one, or one of the
        continuation that `--resume N` abandons), adopt an owed evaluation that finished before the process died, and
        give a new run directory the evaluation history of the run it continues."""
        p = self.progress
        kept = self.run_dir.best
        if kept.is_file():
            best = (ckpt.load_checkpoint(kept).get("best") or {})
            if best.get("value") is not None and (p.best_value is None or (best.get("metric") == p.best_metric
                                                                           and best["value"] > p.best_value)):
                p.best_metric, p.best_value, p.best_epoch = best.get("metric"), best["value"], best.get("epoch")
                log.info("%s holds %s=%.6f (epoch %s); only a better model replaces it", kept, p.best_metric,
                         p.best_value, p.best_epoch)
        recorded = self.run_dir.read_eval_results()
        if not recorded and self.eval_history:
            for record in self.eval_history:
                self.run_dir.append_eval_result(record)
            return
        later = [r for r in recorded if r.get("global_step", -1) > p.global_step]
        owed = [r for r in recorded if p.eval_pending and r.get("epoch") == p.epoch
                and r.get("global_step") == p.global_step]
        if owed:  # the process died after the owed evaluation was recorded, before latest.pth said so
            self.eval_history.append(owed[-1])
            p.eval_pending = False
            log.info("the evaluation owed at epoch %d was recorded before the run ended; not repeated", p.epoch)
        if later:
            log.warning("%s holds %d evaluation(s) made after this checkpoint (global step %d) by the continuation "
                        "this resume replaces; they stay in the file", self.run_dir.eval_results, len(later),
                        p.global_step)

    # ----------------------------------------------------------------------------------------------------------
    # evaluation

    def evaluate(self) -> None:
        """Rank 0 evaluates; the other ranks wait for it at a barrier (dist_eval_timeout_s)."""
        if self.run_eval is None:
            return
        if self.dist.is_main:
            self._evaluate()
        self.progress.eval_pending = False
        self.dist.wait_for_main()

    def end_epoch(self) -> None:
        """After the last step of an epoch: checkpoint, evaluate when the schedule says so, checkpoint again with the
        result (the best metric and the history), then keep the snapshot for `--resume N`. A kill during the
        evaluation resumes from the first checkpoint, which owes it."""
        p, params = self.progress, self.params
        p.epoch += 1
        p.step = 0
        p.eval_pending = self.run_eval is not None and (p.epoch % params.evaluation_params.epoch == 0
                                                        or p.epoch == params.epochs)
        self.save_latest()
        if self.dist.is_main:
            self.run_dir.update_state(epoch=p.epoch, global_step=p.global_step)
        if p.eval_pending:
            self.evaluate()
            self.save_latest()
        self.snapshot_epoch()

    def _evaluate(self) -> None:
        p = self.progress
        started = time.time()
        self.model.eval()
        with torch.no_grad():
            target = evaluator_input(self.params.task, self.model, self.params)
            metrics, primary = call_evaluator(self.evaluator_name, self.run_eval, self.params, target,
                                              self.device, writer=self.writer, global_step=p.global_step,
                                              run_dir=str(self.run_dir.path))
        self.net.train()
        best_metric = self.params.evaluation_params.best_metric or primary
        if best_metric not in metrics:
            raise UserError(f"evaluation_params.best_metric: {best_metric!r} is not reported by "
                            f"{self.evaluator_name}; it reports {sorted(metrics)}")
        for name, value in metrics.items():
            self.writer.add_scalar(f"eval/{name}", value, p.global_step)
        value = metrics[best_metric]
        improved = p.best_value is None or value > p.best_value
        log.info("evaluation at epoch %d (global step %d) in %.1fs: %s", p.epoch, p.global_step,
                 time.time() - started, "  ".join(f"{k}={v:.6f}" for k, v in metrics.items()))
        record = {"epoch": p.epoch, "global_step": p.global_step, "metrics": metrics, "primary": primary,
                  "best_metric": best_metric, "is_best": improved}
        self.eval_history.append(record)
        if improved:
            p.best_metric, p.best_value, p.best_epoch = best_metric, value, p.epoch
            p.eval_pending = False  # the copy in model_best.pth owes nothing
            ckpt.save_atomic(self.checkpoint_dict(), self.run_dir.best)
            log.info("new best %s=%.6f: saved %s", best_metric, value, self.run_dir.best)
        self.run_dir.append_eval_result(record)
        self.run_dir.update_state(best_metric=p.best_metric, best_value=p.best_value)

    # ----------------------------------------------------------------------------------------------------------
    # the loop

    def to_device(self, batch: dict) -> dict:
        """The batch's tensors on this process's device; image-like (4-D) ones in the run's memory format."""
        moved = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device, non_blocking=True)
                if self.params.channels_last and value.dim() == 4:
                    value = value.contiguous(memory_format=torch.channels_last)
            moved[key] = value
        return moved

    def train_step(self, batch: dict, autocast) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
        """One optimisation step. Returns the detached total loss, its components and the task's scalars, as they
        came: they are turned into numbers only when logged, so a GPU step waits for the host once (the finiteness
        check)."""
        batch = self.to_device(batch)
        with autocast:
            outputs = self.net(*self.parts.inputs(batch))
            total, components, scalars = self.parts.criterion(outputs, batch, self.progress.global_step)
        components = {name: value.detach() for name, value in components.items()}
        checked = torch.stack([total.detach().float(), *(v.float() for v in components.values())])
        local_bad = not bool(torch.isfinite(checked).all())
        if self.dist.any(local_bad):  # every rank stops (or skips) here, not only the one that saw it
            values = {name: float(value) for name, value in components.items()}
            bad = [name for name, value in values.items() if not math.isfinite(value)]
            where = (f"{', '.join(f'{n}={values[n]}' for n in bad) or 'total'}" if local_bad
                     else "on another rank")
            message = (f"non-finite loss at {self.where()}: {where}")
            limit = self.params.nonfinite_max_consecutive_skips
            if self.params.nonfinite_loss == "skip":
                if self.skipped_in_a_row < limit:
                    self.skipped_in_a_row += 1
                    self.optimizer.zero_grad(set_to_none=True)
                    log.warning("skipped the step: %s (%d in a row; nonfinite_max_consecutive_skips=%d)", message,
                                self.skipped_in_a_row, limit)
                    return torch.tensor(float("nan")), components, scalars
                message += (f"; {limit} consecutive steps skipped before this one "
                            f"(nonfinite_max_consecutive_skips={limit})")
            raise NonFiniteLossError(f"{message}; the last good checkpoint is {self.run_dir.latest} (lower the "
                                     "learning rate or check the data)")
        self.skipped_in_a_row = 0
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            self.optimizer.step()
        return total.detach(), components, scalars

    def log_step(self, loss: torch.Tensor, components: dict, scalars: dict, images_per_s: float) -> None:
        p, w = self.progress, self.writer
        loss = float(loss)
        components = {name: float(value) for name, value in components.items()}
        scalars = {name: float(value) for name, value in scalars.items()}
        w.add_scalar("train/loss", loss, p.global_step)
        for name, value in components.items():
            w.add_scalar(f"train/loss_{name}", value, p.global_step)
        for group in self.optimizer.param_groups:
            w.add_scalar(f"train/lr_{group['name']}", group["lr"], p.global_step)
        for name, value in scalars.items():
            w.add_scalar(f"train/{name}", value, p.global_step)
        w.add_scalar("train/images_per_s", images_per_s, p.global_step)
        parts = " ".join(f"loss_{n}={v:.4f}" for n, v in components.items())
        shown = " ".join(f"{n}={v:.3g}" for n, v in scalars.items())
        log.info("%s loss=%.4f %s %s lr=%s %.1f img/s", self.where(), loss, parts, shown,
                 ",".join(f"{g['lr']:.2e}" for g in self.optimizer.param_groups), images_per_s)

    def where(self) -> str:
        """The step being run, as people count: epochs and steps from 1 (as the progress bar and epoch_NNN.pth)."""
        p = self.progress
        return (f"epoch {p.epoch + 1}/{self.params.epochs} step {p.step + 1}/{self.parts.loader.steps_per_epoch} "
                f"(global step {p.global_step})")

    def run(self) -> str:
        """Train until the last epoch or a stop request; returns the final state ('finished' or 'stopped')."""
        params, p, loader = self.params, self.progress, self.parts.loader
        main = self.dist.is_main
        self.writer = SummaryWriter(str(self.run_dir.path), flush_secs=10) if main else None
        autocast = autocast_context(params, self.device)
        steps = loader.steps_per_epoch
        eval_step = params.evaluation_params.step
        if main:
            self.run_dir.update_state(state="running", epochs=params.epochs, epoch=p.epoch,
                                      global_step=p.global_step)
        self.net.train()
        self.stop.install()
        try:
            if p.eval_pending:  # resumed from a checkpoint written before its epoch's evaluation
                log.info("running the evaluation owed at the end of epoch %d", p.epoch)
                self.evaluate()
                self.save_latest()
                self.snapshot_epoch()
            while p.epoch < params.epochs:
                window_start, window_images = time.perf_counter(), 0
                batches = loader.epoch(p.epoch, start_step=p.step)
                if self.show_progress:
                    from tqdm import tqdm

                    batches = tqdm(batches, total=steps, initial=p.step, desc=f"epoch {p.epoch + 1}/{params.epochs}",
                                   leave=False, dynamic_ncols=True)
                for batch in batches:
                    apply_lr(self.optimizer, lr_factor(p.epoch, p.step, steps, params.lr, params.epochs), p.epoch)
                    window_images += len(self.parts.inputs(batch)[0]) * self.dist.world_size
                    loss, components, scalars = self.train_step(batch, autocast)
                    if main and p.global_step % params.log_every_steps == 0:
                        elapsed = time.perf_counter() - window_start
                        self.log_step(loss, components, scalars, window_images / max(elapsed, 1e-9))
                        self.run_dir.update_state(epoch=p.epoch, global_step=p.global_step)
                        window_start, window_images = time.perf_counter(), 0
                    p.step += 1
                    p.global_step += 1
                    fault_hook(self.dist.rank, p.global_step)
                    if eval_step and p.global_step % eval_step == 0:
                        self.evaluate()
                    if self.stop_agreed():
                        return self._stop()
                self.end_epoch()
                if self.stop_agreed():
                    return self._stop()
            if main:
                self.run_dir.update_state(state="finished", message="")
            log.info("finished %d epochs; best %s=%s", params.epochs, p.best_metric, p.best_value)
            self.dist.wait_for_main()
            return "finished"
        finally:
            self.stop.uninstall()
            if self.writer is not None:
                self.writer.close()

    def stop_agreed(self) -> bool:
        """Whether to stop after this step: asked on any rank (signal, or the STOP file), agreed by all ranks."""
        return self.dist.any(self.stop.requested())

    def _stop(self) -> str:
        self.save_latest()
        p = self.progress
        message = (f"stopped after step {p.step}/{self.parts.loader.steps_per_epoch} of epoch {p.epoch + 1} "
                   f"(global step {p.global_step}); {self.run_dir.latest.name} saved")
        if self.dist.is_main:
            self.run_dir.stop_file.unlink(missing_ok=True)
            self.run_dir.update_state(state="stopped", epoch=p.epoch, global_step=p.global_step, message=message)
        log.info("%s", message)
        self.dist.wait_for_main()
        return "stopped"

