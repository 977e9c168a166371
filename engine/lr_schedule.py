"""Learning-rate schedule computed in closed form from (epoch, step) — no stateful scheduler, so resuming at any
iteration gives exactly the same LR.

factor(epoch, step) = warm-up × decay, with
* warm-up: global iteration ``t = epoch·steps_per_epoch + step_in_epoch``, ``W = round(warmup_epoch·steps_per_epoch)``;
  ``(t + 1)/W`` while ``t < W``, else 1 (linear per iteration, reaching 1 at the first iteration after warm-up);
* decay: ``decay_gamma ** |{d ∈ decay_step : epoch ≥ d}|``, epochs counted from the start of training.
"""

from __future__ import annotations

import torch

from engine.params import LrParams


def lr_factor(epoch: int, step_in_epoch: int, steps_per_epoch: int, lr: LrParams) -> float:
    """Multiplier of every group's initial LR at iteration ``step_in_epoch`` (0-based) of ``epoch`` (0-based)."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be ≥ 1; found {steps_per_epoch}")
    if epoch < 0 or step_in_epoch < 0:
        raise ValueError(f"epoch and step_in_epoch must be ≥ 0; found {epoch}, {step_in_epoch}")
    t = epoch * steps_per_epoch + step_in_epoch
    warmup_iters = round(lr.warmup_epoch * steps_per_epoch)
    warm = (t + 1) / warmup_iters if t < warmup_iters else 1.0
    decays = sum(1 for d in lr.decay_step if epoch >= d)
    return warm * lr.decay_gamma ** decays


def apply_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set each group's ``lr`` to its ``initial_lr × factor`` (groups built by :func:`engine.optim.build_optimizer`)."""
    for group in optimizer.param_groups:
        if "initial_lr" not in group:
            raise ValueError(f"param group {group.get('name', '?')!r} has no 'initial_lr'; build the optimizer with "
                             "engine.optim.build_optimizer")
        group["lr"] = group["initial_lr"] * factor
