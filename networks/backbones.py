"""The backbone registry shared by every task, its ResNet trunks (torchvision ResNet v1 without the average pool
and the ImageNet classifier) and the ImageNet-weight loader every backbone uses.

``BACKBONES`` maps a name to a constructor:

* ``resnet18`` … ``resnet152``: a trunk, an ``nn.Sequential`` whose children are its stages. A task takes the last
  map (``trunk(x)``), or the maps of several stages with :class:`LevelFeatures`, whose ``feature_info`` gives each
  level's channels and stride (timm's multi-level features; SiamMask needs ResNet-50's intermediate maps). Options:
  ``last_conv_stride`` (layer4's stride, 1 or 2: re-ID's "last stride"), ``dilate`` (layers whose stride becomes
  dilation, as torchvision's ``replace_stride_with_dilation``) and ``imagenet_pretrain``.
* ``alexnet_bn``, ``googlenet``, ``shufflenet_v2_x0_5``, ``shufflenet_v2_x1_0``, ``tinyconv``: SiamFC++'s backbones
  (:mod:`networks.siamese_backbones`, imported on first use), one map of total stride 8 from a raw RGB 0..255 crop.
  Option: ``imagenet_pretrain`` (always false for ``alexnet_bn`` and ``tinyconv``, which are trained from scratch).
* ``caffenet``: GOTURN's CaffeNet tower (:mod:`networks.caffenet`, imported on first use), 227 → 256×6×6 from a raw
  RGB 0..255 crop. Options: ``width`` (channel multiplier), ``input_scale``; trained from scratch.

The ResNet trunk's child names are torchvision's (``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer1`` … ``layer4``),
so its state dict has exactly torchvision's keys minus ``fc.*``. :func:`load_imagenet_weights` loads torchvision's
ImageNet file into such a trunk with a strict ``load_state_dict`` after dropping, by name, the keys of the parts the
trunk leaves out. Weights are never downloaded: the file must already be on disk (see :func:`imagenet_weights_path`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import Inception_V3_Weights, ShuffleNet_V2_X0_5_Weights, ShuffleNet_V2_X1_0_Weights, WeightsEnum
from torchvision.models import resnet as tv_resnet

from engine.errors import UserError

# name → (torchvision constructor, weights enum, channels of the layer4 map)
_RESNETS: dict[str, tuple[Callable[..., tv_resnet.ResNet], type, int]] = {
    "resnet18": (tv_resnet.resnet18, tv_resnet.ResNet18_Weights, 512),
    "resnet34": (tv_resnet.resnet34, tv_resnet.ResNet34_Weights, 512),
    "resnet50": (tv_resnet.resnet50, tv_resnet.ResNet50_Weights, 2048),
    "resnet101": (tv_resnet.resnet101, tv_resnet.ResNet101_Weights, 2048),
    "resnet152": (tv_resnet.resnet152, tv_resnet.ResNet152_Weights, 2048),
}

TRUNK_NAMES = tuple(_RESNETS)
SIAMESE_NAMES = ("alexnet_bn", "googlenet", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "tinyconv")

# backbone name → (the torchvision model whose ImageNet-1k V1 weights it takes, that model's weights enum)
_IMAGENET_WEIGHTS: dict[str, tuple[str, type[WeightsEnum]]] = {
    **{name: (name, weights) for name, (_, weights, _) in _RESNETS.items()},
    "googlenet": ("inception_v3", Inception_V3_Weights),
    "shufflenet_v2_x0_5": ("shufflenet_v2_x0_5", ShuffleNet_V2_X0_5_Weights),
    "shufflenet_v2_x1_0": ("shufflenet_v2_x1_0", ShuffleNet_V2_X1_0_Weights),
}
_TRUNK_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
_DILATABLE = ("layer2", "layer3", "layer4")
_SHOWN_KEYS = 5  # how many mismatching keys an error message lists


def _check_name(name: str) -> None:
    if name not in _RESNETS:
        raise UserError(f"unknown backbone {name!r}; expected one of {', '.join(TRUNK_NAMES)}")


def _imagenet_url(name: str) -> str:
    if name not in _IMAGENET_WEIGHTS:
        raise UserError(f"backbone {name!r} has no torchvision ImageNet weights; those exist for "
                        f"{', '.join(_IMAGENET_WEIGHTS)}")
    return _IMAGENET_WEIGHTS[name][1].IMAGENET1K_V1.url


def imagenet_weights_filename(name: str) -> str:
    """File name of torchvision's ImageNet-1k V1 weights for backbone `name` (e.g. ``resnet50-0676ba61.pth``,
    ``inception_v3_google-0cc3c7bd.pth`` for ``googlenet``)."""
    return os.path.basename(urlparse(_imagenet_url(name)).path)


def imagenet_weights_path(name: str) -> Path:
    """Where ``imagenet_pretrain: true`` looks for the weights: ``torch.hub.get_dir()/checkpoints/<file>`` (i.e.
    ``$TORCH_HOME/hub/checkpoints`` when TORCH_HOME is set), the same place torchvision itself caches them."""
    return Path(torch.hub.get_dir()) / "checkpoints" / imagenet_weights_filename(name)


def _set_last_stride(layer4: nn.Sequential, stride: int) -> None:
    block = layer4[0]
    # torchvision ResNet v1.5: the stride sits on conv2 (3×3) of a Bottleneck and on conv1 (3×3) of a BasicBlock.
    strided = block.conv2 if isinstance(block, tv_resnet.Bottleneck) else block.conv1
    strided.stride = (stride, stride)
    if block.downsample is not None:
        block.downsample[0].stride = (stride, stride)


def _describe_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    more = f" (+{len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else ""
    return shown + more


def _read_state_dict(path: Path, name: str) -> Mapping[str, torch.Tensor]:
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - any unreadable file (truncated zip, junk bytes, foreign pickle) alike
        detail = str(err).splitlines()[0] if str(err) else "no detail"
        if len(detail) > 160:
            detail = detail[:157] + "..."
        raise UserError(f"imagenet_pretrain: cannot read {path} as a PyTorch weights file ({type(err).__name__}: "
                        f"{detail}); the file may be truncated or not a torch.save file. Expected torchvision's "
                        f"{imagenet_weights_filename(name)}.") from None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in state.items()):
        hint = ""
        if isinstance(state, Mapping) and any(k in state for k in ("state_dict", "model")):
            hint = " (it looks like a training checkpoint; use pretrain_snapshot for those)"
        raise UserError(f"imagenet_pretrain: {path} does not hold a state dict of tensors (found "
                        f"{type(state).__name__}){hint}. Expected torchvision's {imagenet_weights_filename(name)}.")
    return state


def _load_file(trunk: nn.Module, name: str, path: Path, unused: tuple[str, ...]) -> None:
    state = _read_state_dict(path, name)
    state = OrderedDict((k, v) for k, v in state.items() if not k.startswith(unused))
    own = trunk.state_dict()
    # torchvision's older ImageNet files predate BatchNorm's num_batches_tracked counter: keep the trunk's own (it only
    # matters for momentum=None), as torch's load_state_dict does for such files; every other key must be there.
    for key in own:
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = own[key]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                   if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_describe_keys(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_describe_keys(unexpected)}")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} shape mismatch(es) (file vs {name}): {_describe_keys(wrong_shape)}")
        raise UserError(f"imagenet_pretrain: {path} does not match a torchvision {_IMAGENET_WEIGHTS[name][0]} "
                        f"(expected {imagenet_weights_filename(name)}): " + "; ".join(parts))
    trunk.load_state_dict(state, strict=True)


def load_imagenet_weights(trunk: nn.Module, name: str, imagenet_pretrain: bool | str, unused: tuple[str, ...]) -> None:
    """Load torchvision's ImageNet-1k V1 weights of backbone `name` into `trunk`, whose state-dict keys are
    torchvision's, as ``imagenet_pretrain`` says: False → nothing (the trunk keeps its init); True → the file at
    :func:`imagenet_weights_path`; a string → that file. The file's keys starting with one of `unused` (the parts of
    torchvision's model the trunk leaves out, e.g. ``"fc."``) are dropped; any other missing, unexpected or
    mis-shaped key is a :class:`UserError` naming the file and the keys. Nothing is ever downloaded."""
    if imagenet_pretrain is False:
        return
    if imagenet_pretrain is True:
        path = imagenet_weights_path(name)
        if not path.is_file():
            raise UserError(f"imagenet_pretrain is true but the ImageNet weights of {name} are not at {path}. Nothing "
                            f"is downloaded: put torchvision's {imagenet_weights_filename(name)} (from "
                            f"{_imagenet_url(name)}) at {path}, or give its path as imagenet_pretrain, "
                            f"or set imagenet_pretrain to false.")
    elif isinstance(imagenet_pretrain, str):
        path = Path(imagenet_pretrain).expanduser()
        if not path.is_file():
            raise UserError(f"imagenet_pretrain: weights file {path} not found. Nothing is downloaded: put "
                            f"torchvision's {imagenet_weights_filename(name)} there (from {_imagenet_url(name)}).")
    else:
        raise UserError(f"imagenet_pretrain must be true, false or a file path; found {imagenet_pretrain!r}")
    _load_file(trunk, name, path, unused)


def build_resnet_trunk(name: str, last_conv_stride: int, imagenet_pretrain: bool | str) -> tuple[nn.Module, int]:
    """A torchvision ResNet without avgpool/fc, returning the layer4 feature map, and that map's channel count (the
    re-ID networks' trunk)."""
    trunk = resnet(name, last_conv_stride=last_conv_stride, imagenet_pretrain=imagenet_pretrain)
    return trunk, _RESNETS[name][2]


def resnet(name: str, *, last_conv_stride: int = 2, dilate: tuple[str, ...] = (),
           imagenet_pretrain: bool | str = False) -> nn.Sequential:
    """A torchvision ResNet without avgpool/fc as a Sequential of its stages (torchvision's child names, so the state
    dict has torchvision's keys minus ``fc.*``).

    ``last_conv_stride`` (1 or 2) is the stride of layer4's first block (its strided 3×3 conv and its downsample conv).
    ``dilate``: stages among layer2, layer3, layer4 whose stride becomes a dilation (the map keeps its size; bottleneck
    ResNets only, as in torchvision). ``imagenet_pretrain``: False → torchvision's random init; True → torchvision's
    IMAGENET1K_V1 file from :func:`imagenet_weights_path`; a string → that file. Nothing is ever downloaded; a missing
    or mismatching file is a :class:`UserError`.
    """
    _check_name(name)
    if last_conv_stride not in (1, 2):
        raise UserError(f"last_conv_stride must be 1 or 2; found {last_conv_stride!r}")
    unknown = sorted(set(dilate) - set(_DILATABLE))
    if unknown:
        raise UserError(f"dilate: {', '.join(unknown)} cannot be dilated; expected some of {', '.join(_DILATABLE)}")
    constructor, _, _ = _RESNETS[name]
    if dilate and name in ("resnet18", "resnet34"):
        raise UserError(f"dilate: {name} has basic blocks, which torchvision does not dilate; use resnet50 or deeper")
    net = constructor(weights=None, replace_stride_with_dilation=[stage in dilate for stage in _DILATABLE])
    trunk = nn.Sequential(OrderedDict((child, getattr(net, child)) for child in _TRUNK_CHILDREN))
    if "layer4" not in dilate:
        _set_last_stride(trunk.layer4, last_conv_stride)
    load_imagenet_weights(trunk, name, imagenet_pretrain, unused=("fc.",))
    return trunk


def _siamese_backbone(name: str, **options) -> nn.Module:
    from networks import siamese_backbones  # on first use: importing this registry stays as light as the ResNets

    return getattr(siamese_backbones, name)(**options)


def _caffenet(**options) -> nn.Module:
    from networks.caffenet import caffenet  # on first use, as the Siamese backbones

    return caffenet(**options)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    **{name: partial(resnet, name) for name in _RESNETS},
    **{name: partial(_siamese_backbone, name) for name in SIAMESE_NAMES},
    "caffenet": _caffenet,
}


def build_backbone(name: str, **options) -> nn.Module:
    """The backbone registered as `name`, built with its `options`; an unknown name lists the registered ones."""
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; expected one of {', '.join(sorted(_RESNETS))} (ResNet trunks) or "
                        f"{', '.join(SIAMESE_NAMES)} (SiamFC++ backbones) or caffenet (GOTURN's tower)")
    return BACKBONES[name](**options)


@dataclass(frozen=True)
class FeatureLevel:
    name: str  # the trunk's child that produces the map
    channels: int
    stride: int  # input pixels per map pixel


class LevelFeatures(nn.Module):
    """A trunk that returns the maps of several of its stages, in trunk order (stages after the last one asked for
    do not run). ``feature_info`` says each map's channels and stride, measured once on a probe input."""

    def __init__(self, trunk: nn.Sequential, levels: Sequence[str], probe_size: tuple[int, int] = (256, 256)) -> None:
        super().__init__()
        names = [name for name, _ in trunk.named_children()]
        missing = [level for level in levels if level not in names]
        if missing or not levels:
            raise UserError(f"feature levels {list(levels)}: expected some of the trunk's stages {names}")
        self.trunk = trunk
        self.levels = tuple(sorted(levels, key=names.index))
        with torch.no_grad():
            was_training = trunk.training
            maps = self.eval()(torch.zeros(1, 3, *probe_size))
            trunk.train(was_training)
        self.feature_info = [FeatureLevel(level, int(m.shape[1]), probe_size[0] // int(m.shape[2]))
                             for level, m in zip(self.levels, maps)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for name, stage in self.trunk.named_children():
            x = stage(x)
            if name in self.levels:
                maps.append(x)
                if len(maps) == len(self.levels):
                    break
        return maps
