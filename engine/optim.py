"""Optimizer with two named parameter groups: "backbone" (the trunk, ``base_lr``) and "head" (everything else,
``fc_lr``). Each group stores ``initial_lr`` so that :func:`engine.lr_schedule.apply_lr` can set ``lr`` from a factor.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.errors import UserError
from networks.factory import backbone_parameters, head_parameters

OPTIMIZERS = ("sgd", "nesterov", "adam", "amsgrad", "rmsprop")


def build_optimizer(model: nn.Module, name: str, base_lr: float, fc_lr: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """``name``: sgd (momentum 0.9), nesterov (SGD, momentum 0.9, Nesterov), adam, amsgrad (Adam with amsgrad=True),
    rmsprop (momentum 0.9); default betas/eps otherwise. Weight decay applies to all trainable parameters.
    Only parameters with ``requires_grad`` are given to the optimizer; a group without any (the backbone after
    ``freeze_trunk()``) is left out."""
    if name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    groups = []
    for group_name, params, lr in (("backbone", backbone_parameters(model), base_lr),
                                   ("head", head_parameters(model), fc_lr)):
        trainable = [p for p in params if p.requires_grad]
        if trainable:
            groups.append({"name": group_name, "params": trainable, "lr": lr, "initial_lr": lr})
    if not groups:
        raise UserError("the model has no trainable parameters")

    if name in ("sgd", "nesterov"):
        return torch.optim.SGD(groups, lr=fc_lr, momentum=0.9, nesterov=(name == "nesterov"),
                               weight_decay=weight_decay)
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(groups, lr=fc_lr, amsgrad=(name == "amsgrad"), weight_decay=weight_decay)
    return torch.optim.RMSprop(groups, lr=fc_lr, momentum=0.9, weight_decay=weight_decay)
