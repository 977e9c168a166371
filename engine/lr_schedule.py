"""Learning-rate schedule computed in closed form from (epoch, step) — no stateful scheduler, so resuming at any
iteration gives exactly the same LR.

factor(epoch, step) = warm-up × decay, with
* warm-up: global iteration ``t = epoch·steps_per_epoch + step_in_epoch``, ``W = round(warmup_epoch·steps_per_epoch)``;
  ``(t + 1)/W`` while ``t < W``, else 1 (linear per iteration, reaching 1 at the first iteration after warm-up);
* decay, ``policy: "step"``: ``decay_gamma ** |{d ∈ decay_step : epoch ≥ d}|``, epochs counted from the start of
  training; ``policy: "cosine"``: per iteration after the warm-up, ``f + (1 − f)·(1 + cos(π·u))/2`` with
  ``u = (t − W)/(T − W)`` over the run's ``T = epochs·steps_per_epoch`` iterations and ``f = final_lr_factor``
  (SiamFC++'s schedule: linear warm-up, then cosine).

A parameter group may start later (``ParamGroup.start_epoch``: scheduled unfreezing): its LR is 0 before that epoch,
so SGD leaves its weights unchanged (momentum still accumulates its gradients, as it would had it been training).
"""

from __future__ import annotations

import math

import torch

from engine.params import LrParams


def lr_factor(epoch: int, step_in_epoch: int, steps_per_epoch: int, lr: LrParams, epochs: int = 1) -> float:
    """Multiplier of every group's initial LR at iteration ``step_in_epoch`` (0-based) of ``epoch`` (0-based) of a
    run of `epochs` epochs (the cosine policy needs the length)."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be ≥ 1; found {steps_per_epoch}")
    if epoch < 0 or step_in_epoch < 0:
        raise ValueError(f"epoch and step_in_epoch must be ≥ 0; found {epoch}, {step_in_epoch}")
    t = epoch * steps_per_epoch + step_in_epoch
    warmup_iters = round(lr.warmup_epoch * steps_per_epoch)
    if t < warmup_iters:
        return (t + 1) / warmup_iters
    if lr.policy == "cosine":
        progress = (t - warmup_iters) / max(1, epochs * steps_per_epoch - warmup_iters)
        return lr.final_lr_factor + (1 - lr.final_lr_factor) * (1 + math.cos(math.pi * min(progress, 1.0))) / 2
    return lr.decay_gamma ** sum(1 for d in lr.decay_step if epoch >= d)


def apply_lr(optimizer: torch.optim.Optimizer, factor: float, epoch: int = 0) -> None:
    """Set each group's ``lr`` to its ``initial_lr × factor``, or 0 before its ``start_epoch`` (groups built by
    :func:`engine.optim.build_optimizer`)."""
    for group in optimizer.param_groups:
        if "initial_lr" not in group:
            raise ValueError(f"param group {group.get('name', '?')!r} has no 'initial_lr'; build the optimizer with "
                             "engine.optim.build_optimizer")
        group["lr"] = group["initial_lr"] * factor if epoch >= group.get("start_epoch", 0) else 0.0
