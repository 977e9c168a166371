"""The training loop shared by every task.

One readable loop with explicit steps: set the LR, forward, loss, backward, optimizer step, log; at epoch ends save
``latest.pth`` (atomically) and, on the evaluation schedule, run the evaluator and keep ``model_best.pth``. A stop
request (SIGTERM, SIGINT or ``stop_train``) finishes the current step, saves a checkpoint that resumes exactly there,
and marks the run stopped.
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
from engine.errors import UserError
from engine.lr_schedule import apply_lr, lr_factor
from engine.optim import build_optimizer
from engine.params import TrainParams
from engine.run_dir import RunDir
from engine.tasks import TASK_BUILDERS
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


class StopRequest:
    """Set by SIGTERM/SIGINT or by the STOP file that ``stop_train`` writes."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir
        self.signalled = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signalled = True

    def requested(self) -> bool:
        return self.signalled or self.run_dir.stop_file.exists()


def resolve_device(params: TrainParams) -> torch.device:
    if not params.parallels:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"parallels: {params.parallels} asks for CUDA devices, but CUDA is not available on this "
                        "machine; set \"parallels\": [] to train on the CPU")
    if len(params.parallels) > 1:
        raise UserError("parallels: several GPUs are trained with torchrun (see README, 'Distributed training'); "
                        "give one device id here")
    count = torch.cuda.device_count()
    if params.parallels[0] >= count:
        raise UserError(f"parallels: device {params.parallels[0]} does not exist (this machine has {count})")
    return torch.device("cuda", params.parallels[0])


def autocast_context(params: TrainParams, device: torch.device):
    if params.amp == "none":
        return nullcontext()
    if params.amp == "fp16" and device.type != "cuda":
        raise UserError("amp: fp16 needs a CUDA device; use \"bf16\" on the CPU")
    dtype = torch.bfloat16 if params.amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False


class Trainer:
    def __init__(self, params: TrainParams, run_dir: RunDir, show_progress: bool = False):
        self.params = params
        self.run_dir = run_dir
        self.show_progress = show_progress
        self.device = resolve_device(params)
        seed_everything(params.seed, params.deterministic)
        self.parts = TASK_BUILDERS[params.task](params)
        self.model = self.parts.model.to(self.device)
        self.optimizer = build_optimizer(self.model, params.optimizer, params.lr.base_lr, params.lr.fc_lr,
                                         params.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if params.amp == "fp16" else None
        self.progress = Progress()
        self.evaluator_name = params.evaluation_params.type
        self.run_eval = get_evaluator(self.evaluator_name) if self.evaluator_name else None
        self.stop = StopRequest(run_dir)
        self.writer: Optional[SummaryWriter] = None

    # ----------------------------------------------------------------------------------------------------------
    # checkpoints

    def checkpoint_dict(self) -> dict:
        p = self.progress
        return {
            "format_version": ckpt.FORMAT_VERSION,
            "task": self.params.task,
            "params": self.params.model_dump(mode="json", exclude={"tri_loss_margin", "tri_loss_lambda_cls"}),
            "num_classes": self.parts.num_classes,
            "class_names": list(self.parts.class_names),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": p.epoch,
            "step": p.step,
            "global_step": p.global_step,
            "best": {"metric": p.best_metric, "value": p.best_value, "epoch": p.best_epoch},
            "rng_torch": torch.get_rng_state(),
        }

    def save_latest(self) -> None:
        ckpt.save_atomic(self.checkpoint_dict(), self.run_dir.latest)

    def snapshot_epoch(self) -> None:
        """Keep the end-of-epoch checkpoint for `--resume N` as a hard link to latest.pth (no extra disk; the link
        survives the next atomic replace of latest.pth) and drop snapshots beyond `keep_epoch_checkpoints`."""
        keep = self.params.keep_epoch_checkpoints
        if keep == 0:
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
        if data["task"] != self.params.task or data["num_classes"] != self.parts.num_classes:
            raise ckpt.CheckpointError(f"{path}: trained for task {data['task']!r} with {data['num_classes']} "
                                       f"classes; this run is {self.params.task!r} with {self.parts.num_classes}")
        ckpt.load_weights_strict(self.model, data["model"], path)
        try:
            self.optimizer.load_state_dict(data["optimizer"])
        except (ValueError, KeyError) as err:
            raise ckpt.CheckpointError(f"{path}: optimizer state does not fit this run ({err})") from None
        best = data.get("best") or {}
        self.progress = Progress(epoch=int(data["epoch"]), step=int(data["step"]),
                                 global_step=int(data["global_step"]), best_metric=best.get("metric"),
                                 best_value=best.get("value"), best_epoch=best.get("epoch"))
        torch.set_rng_state(data["rng_torch"])
        log.info("resumed from %s at epoch %d step %d (global step %d)", path, self.progress.epoch,
                 self.progress.step, self.progress.global_step)

    # ----------------------------------------------------------------------------------------------------------
    # evaluation

    def evaluate(self) -> None:
        if self.run_eval is None:
            return
        p = self.progress
        started = time.time()
        self.model.eval()
        with torch.no_grad():
            metrics, primary = call_evaluator(self.evaluator_name, self.run_eval, self.params, self.model,
                                              self.device, writer=self.writer, global_step=p.global_step)
        self.model.train()
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
        if improved:
            p.best_metric, p.best_value, p.best_epoch = best_metric, value, p.epoch
            ckpt.save_atomic(self.checkpoint_dict(), self.run_dir.best)
            log.info("new best %s=%.6f: saved %s", best_metric, value, self.run_dir.best)
        self.run_dir.append_eval_result({"epoch": p.epoch, "global_step": p.global_step, "metrics": metrics,
                                         "primary": primary, "best_metric": best_metric, "is_best": improved})
        self.run_dir.update_state(best_metric=p.best_metric, best_value=p.best_value)

    # ----------------------------------------------------------------------------------------------------------
    # the loop

    def train_step(self, batch: dict, autocast) -> tuple[float, dict[str, float], float]:
        images = batch["images"].to(self.device, non_blocking=True)
        labels = batch["labels"].to(self.device, non_blocking=True)
        with autocast:
            outputs = self.model(images)
            total, components, accuracy = self.parts.criterion(outputs, labels)
        values = {name: float(value.detach()) for name, value in components.items()}
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad or not math.isfinite(float(total.detach())):
            raise NonFiniteLossError(
                f"non-finite loss at epoch {self.progress.epoch} step {self.progress.step} (global step "
                f"{self.progress.global_step}): {', '.join(f'{n}={values[n]}' for n in bad) or 'total'}; the last "
                f"good checkpoint is {self.run_dir.latest} (lower the learning rate or check the data)")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            self.optimizer.step()
        return float(total.detach()), values, float(accuracy)

    def log_step(self, loss: float, components: dict, accuracy: float, images_per_s: float) -> None:
        p, w = self.progress, self.writer
        w.add_scalar("train/loss", loss, p.global_step)
        for name, value in components.items():
            w.add_scalar(f"train/loss_{name}", value, p.global_step)
        for group in self.optimizer.param_groups:
            w.add_scalar(f"train/lr_{group['name']}", group["lr"], p.global_step)
        w.add_scalar("train/batch_accuracy", accuracy, p.global_step)
        w.add_scalar("train/images_per_s", images_per_s, p.global_step)
        parts = " ".join(f"loss_{n}={v:.4f}" for n, v in components.items())
        log.info("epoch %d step %d/%d global %d loss=%.4f %s acc=%.3f lr=%s %.1f img/s", p.epoch, p.step,
                 self.parts.loader.steps_per_epoch, p.global_step, loss, parts, accuracy,
                 ",".join(f"{g['lr']:.2e}" for g in self.optimizer.param_groups), images_per_s)

    def run(self) -> str:
        """Train until the last epoch or a stop request; returns the final state ('finished' or 'stopped')."""
        params, p, loader = self.params, self.progress, self.parts.loader
        self.writer = SummaryWriter(str(self.run_dir.path), flush_secs=10)
        self.stop.install()
        autocast = autocast_context(params, self.device)
        steps = loader.steps_per_epoch
        eval_epoch = params.evaluation_params.epoch
        eval_step = params.evaluation_params.step
        self.run_dir.update_state(state="running", epochs=params.epochs, epoch=p.epoch, global_step=p.global_step)
        self.model.train()
        try:
            while p.epoch < params.epochs:
                window_start, window_images = time.perf_counter(), 0
                batches = loader.epoch(p.epoch, start_step=p.step)
                if self.show_progress:
                    from tqdm import tqdm

                    batches = tqdm(batches, total=steps, initial=p.step, desc=f"epoch {p.epoch + 1}/{params.epochs}",
                                   leave=False, dynamic_ncols=True)
                for batch in batches:
                    apply_lr(self.optimizer, lr_factor(p.epoch, p.step, steps, params.lr))
                    loss, components, accuracy = self.train_step(batch, autocast)
                    window_images += len(batch["labels"])
                    if p.global_step % params.log_every_steps == 0:
                        elapsed = time.perf_counter() - window_start
                        self.log_step(loss, components, accuracy, window_images / max(elapsed, 1e-9))
                        self.run_dir.update_state(epoch=p.epoch, global_step=p.global_step)
                        window_start, window_images = time.perf_counter(), 0
                    p.step += 1
                    p.global_step += 1
                    if eval_step and p.global_step % eval_step == 0:
                        self.evaluate()
                    if self.stop.requested():
                        return self._stop()
                p.epoch += 1
                p.step = 0
                self.save_latest()
                self.snapshot_epoch()
                self.run_dir.update_state(epoch=p.epoch, global_step=p.global_step)
                if p.epoch % eval_epoch == 0 or p.epoch == params.epochs:
                    self.evaluate()
                if self.stop.requested():
                    return self._stop()
            self.run_dir.update_state(state="finished", message="")
            log.info("finished %d epochs; best %s=%s", params.epochs, p.best_metric, p.best_value)
            return "finished"
        finally:
            self.writer.close()

    def _stop(self) -> str:
        self.save_latest()
        self.run_dir.stop_file.unlink(missing_ok=True)
        self.run_dir.update_state(state="stopped", epoch=self.progress.epoch, global_step=self.progress.global_step,
                                  message=f"stopped at epoch {self.progress.epoch} step {self.progress.step}")
        log.info("stopped at epoch %d step %d; resume with --resume latest", self.progress.epoch, self.progress.step)
        return "stopped"

