"""Model registry: ``MODEL_BUILDERS[task](model_params, num_classes, imagenet_pretrain) -> nn.Module``.

Adding a model = writing a builder with that signature and adding it to the dict. Every model has a ``trunk``
attribute; :func:`backbone_parameters` / :func:`head_parameters` split its parameters for ``base_lr`` / ``fc_lr``.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from engine.errors import UserError
from engine.params import ModelParams
from networks.backbones import build_resnet_trunk
from networks.reid_net import ClassifierNet, ReidNet


def _check_supported(model_params: ModelParams) -> None:
    m = model_params
    unsupported = {"pcb_n_parts": m.pcb_n_parts, "random_drop_branchs": m.random_drop_branchs,
                   "spectral_trans": m.spectral_trans, "feature_mask": m.feature_mask,
                   "feature_global_dim": m.feature_global_dim}
    on = [f"{key}={value!r}" for key, value in unsupported.items() if value]
    if on:
        raise UserError(f"model_params: {', '.join(on)} not implemented yet; set them to 0/false")


def _check_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"the training data must have at least 1 class; found {num_classes!r}")


def build_reid_net(model_params: ModelParams, num_classes: int, imagenet_pretrain: bool | str) -> ReidNet:
    _check_supported(model_params)
    _check_classes(num_classes)
    trunk, channels = build_resnet_trunk(model_params.model, model_params.last_conv_stride, imagenet_pretrain)
    return ReidNet(trunk, channels, model_params.feature_dim, num_classes, model_params.dropout, model_params.pooling)


def build_classifier_net(model_params: ModelParams, num_classes: int,
                         imagenet_pretrain: bool | str) -> ClassifierNet:
    """Classification ignores ``feature_dim`` (the classifier sits directly on the pooled trunk features)."""
    _check_supported(model_params)
    _check_classes(num_classes)
    trunk, channels = build_resnet_trunk(model_params.model, model_params.last_conv_stride, imagenet_pretrain)
    return ClassifierNet(trunk, channels, num_classes, model_params.dropout, model_params.pooling)


MODEL_BUILDERS: dict[str, Callable[[ModelParams, int, bool | str], nn.Module]] = {
    "reid": build_reid_net,
    "classification": build_classifier_net,
}


def build_model(task: str, model_params: ModelParams, num_classes: int, imagenet_pretrain: bool | str) -> nn.Module:
    """The network for `task` (a key of MODEL_BUILDERS). ``fine_tune`` is applied by the caller with
    ``model.freeze_trunk()`` before :func:`engine.optim.build_optimizer`."""
    try:
        builder = MODEL_BUILDERS[task]
    except KeyError:
        raise UserError(f"unknown task {task!r}; expected one of {', '.join(MODEL_BUILDERS)}") from None
    return builder(model_params, num_classes, imagenet_pretrain)


def _unwrap(model: nn.Module) -> nn.Module:
    # DataParallel / DistributedDataParallel keep the network in `.module`.
    return model.module if not hasattr(model, "trunk") and hasattr(model, "module") else model


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of ``model.trunk`` (trained at base_lr), frozen ones included."""
    return list(_unwrap(model).trunk.parameters())


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter of the model that is not in the trunk (trained at fc_lr), frozen ones included."""
    trunk_ids = {id(p) for p in backbone_parameters(model)}
    return [p for p in _unwrap(model).parameters() if id(p) not in trunk_ids]
