"""Model registry: ``MODEL_BUILDERS[task](model_params, num_classes, imagenet_pretrain, asoftmax_params=None)
-> nn.Module``.

Adding a model = writing a builder with that signature and adding it to the dict. Every model has a ``trunk``
attribute; :func:`backbone_parameters` / :func:`head_parameters` split its parameters for ``base_lr`` / ``fc_lr``.
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from engine.errors import UserError
from networks.reid_params import AsoftmaxParams, ModelParams
from networks.backbones import build_resnet_trunk
from networks.heads import CosineClassifier
from networks.pcb import PartReidNet
from networks.reid_net import ClassifierNet, ReidNet


def _check_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"the training data must have at least 1 class; found {num_classes!r}")


def _check_methods(model_params: ModelParams) -> None:
    """Build-time twin of the load-time checks in engine.params (a ModelParams can be made without a params file)."""
    m = model_params
    n = m.pcb_n_parts
    if n and m.feature_dim % n:
        raise UserError(f"model_params.feature_dim={m.feature_dim} is not divisible by pcb_n_parts={n} (each part "
                        "gets feature_dim / pcb_n_parts channels)")
    if not n and (m.feature_global_dim or m.random_drop_branchs):
        raise UserError("model_params.feature_global_dim and random_drop_branchs apply to PCB heads; pcb_n_parts is 0")
    if m.pcb_triplet_features == "global" and not m.feature_global_dim:
        raise UserError("model_params.pcb_triplet_features='global' needs feature_global_dim > 0")


def _classifier_scale(asoftmax_params: Optional[AsoftmaxParams]) -> Optional[float]:
    return asoftmax_params.scale if asoftmax_params is not None and asoftmax_params.enabled else None


def build_reid_net(model_params: ModelParams, num_classes: int, imagenet_pretrain: bool | str,
                   asoftmax_params: Optional[AsoftmaxParams] = None) -> nn.Module:
    """A plain :class:`ReidNet` when no re-ID method switch of `model_params` is on, else a
    :class:`networks.pcb.PartReidNet` (PCB and/or global branch, spectral heads, feature mask, feature erasing).

    With AM-softmax on (`asoftmax_params`) every classifier is a :class:`networks.heads.CosineClassifier`; its state
    dict equals the bias-free linear classifier's, so a checkpoint loads into a network built without
    `asoftmax_params` (as the evaluator does: evaluation never uses the classifier).
    """
    _check_methods(model_params)
    _check_classes(num_classes)
    m = model_params
    trunk, channels = build_resnet_trunk(m.model, m.last_conv_stride, imagenet_pretrain)
    scale = _classifier_scale(asoftmax_params)
    if not m.methods_on:
        net = ReidNet(trunk, channels, m.feature_dim, num_classes, m.dropout, m.pooling)
        if scale is not None:
            net.classifier = CosineClassifier(m.feature_dim, num_classes, scale)
        return net
    n = m.pcb_n_parts
    return PartReidNet(trunk, channels, num_classes, n_parts=n, part_dim=m.feature_dim // n if n else 0,
                       global_dim=m.feature_global_dim if n else m.feature_dim, dropout=m.dropout, pooling=m.pooling,
                       feature_mask=m.feature_mask, feature_erasing_ratio=m.feature_erasing_ratio,
                       spectral_temperature=m.spectral_trans, triplet_features=m.pcb_triplet_features,
                       classifier_scale=scale)


def build_classifier_net(model_params: ModelParams, num_classes: int, imagenet_pretrain: bool | str,
                         asoftmax_params: Optional[AsoftmaxParams] = None) -> ClassifierNet:
    """Classification ignores ``feature_dim`` (the classifier sits directly on the pooled trunk features); the re-ID
    method switches and AM-softmax are refused."""
    on = model_params.methods_on + (["asoftmax_params.margin>0"] if _classifier_scale(asoftmax_params) else [])
    if on:
        raise UserError(f"task 'classification': {', '.join(on)} need task 'reid'")
    _check_classes(num_classes)
    trunk, channels = build_resnet_trunk(model_params.model, model_params.last_conv_stride, imagenet_pretrain)
    return ClassifierNet(trunk, channels, num_classes, model_params.dropout, model_params.pooling)


MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "reid": build_reid_net,
    "classification": build_classifier_net,
}


def build_model(task: str, model_params: ModelParams, num_classes: int, imagenet_pretrain: bool | str,
                asoftmax_params: Optional[AsoftmaxParams] = None) -> nn.Module:
    """The network for `task` (a key of MODEL_BUILDERS). ``fine_tune`` is applied by the caller with
    ``model.freeze_trunk()`` before :func:`engine.optim.build_optimizer`. Training passes ``asoftmax_params`` (AM-softmax
    classifiers); rebuilding a checkpoint for evaluation may leave it out (same state dict)."""
    try:
        builder = MODEL_BUILDERS[task]
    except KeyError:
        raise UserError(f"unknown task {task!r}; expected one of {', '.join(MODEL_BUILDERS)}") from None
    return builder(model_params, num_classes, imagenet_pretrain, asoftmax_params=asoftmax_params)


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
