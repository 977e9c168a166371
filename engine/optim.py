"""The optimizer over the parameter groups a task supplies (`engine.tasks.ParamGroup`: a name, parameters and a
learning rate). Each group stores ``initial_lr`` so that :func:`engine.lr_schedule.apply_lr` can set ``lr`` from a
factor.
"""

from __future__ import annotations

from typing import Sequence

import torch

from engine.errors import UserError
from engine.tasks import ParamGroup

OPTIMIZERS = ("sgd", "nesterov", "adam", "amsgrad", "rmsprop")


def build_optimizer(param_groups: Sequence[ParamGroup], name: str, weight_decay: float,
                    lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """``name``: sgd (momentum 0.9), nesterov (SGD, momentum 0.9, Nesterov), adam, amsgrad (Adam with amsgrad=True),
    rmsprop (momentum 0.9); default betas/eps otherwise. Weight decay applies to all trainable parameters; every
    group's LR is multiplied by `lr_scale` (``lr_scaling`` over processes). Only parameters with ``requires_grad``
    are given to the optimizer; a group without any (a frozen backbone) is left out."""
    if name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    groups = []
    for group in param_groups:
        trainable = [p for p in group.params if p.requires_grad]
        if trainable:
            lr = group.lr * lr_scale
            groups.append({"name": group.name, "params": trainable, "lr": lr, "initial_lr": lr,
                           "start_epoch": group.start_epoch})
    if not groups:
        raise UserError("the model has no trainable parameters")
    first_lr = groups[0]["lr"]  # every group sets its own LR; the constructors want a default

    if name in ("sgd", "nesterov"):
        return torch.optim.SGD(groups, lr=first_lr, momentum=0.9, nesterov=(name == "nesterov"),
                               weight_decay=weight_decay)
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(groups, lr=first_lr, amsgrad=(name == "amsgrad"), weight_decay=weight_decay)
    return torch.optim.RMSprop(groups, lr=first_lr, momentum=0.9, weight_decay=weight_decay)
