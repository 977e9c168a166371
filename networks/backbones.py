"""The backbone registry shared by every task, and its ResNet trunks (torchvision ResNet v1 without the average pool
and the ImageNet classifier).

``BACKBONES`` maps a name to a constructor of a trunk: an ``nn.Sequential`` whose children are its stages. A task
takes the last map (``trunk(x)``), or the maps of several stages with :class:`LevelFeatures`, whose
``feature_info`` gives each level's channels and stride (timm's multi-level features; SiamMask needs ResNet-50's
intermediate maps). Options every ResNet takes: ``last_conv_stride`` (layer4's stride, 1 or 2: re-ID's "last
stride") and ``dilate`` (layers whose stride becomes dilation, as torchvision's ``replace_stride_with_dilation``).

The trunk is an ``nn.Sequential`` whose child names are torchvision's (``conv1``, ``bn1``, ``relu``, ``maxpool``,
``layer1`` … ``layer4``), so its state dict has exactly torchvision's keys minus ``fc.*``; ImageNet weights are loaded
with a strict ``load_state_dict`` after dropping the ``fc.*`` keys. Weights are never downloaded: the file must already
be on disk (see :func:`imagenet_weights_path`).
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
_TRUNK_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
_DILATABLE = ("layer2", "layer3", "layer4")
_SHOWN_KEYS = 5  # how many mismatching keys an error message lists


def _check_name(name: str) -> None:
    if name not in _RESNETS:
        raise UserError(f"unknown backbone {name!r}; expected one of {', '.join(TRUNK_NAMES)}")


def imagenet_weights_filename(name: str) -> str:
    """File name of torchvision's ImageNet-1k V1 weights for `name` (e.g. ``resnet50-0676ba61.pth``)."""
    _check_name(name)
    url = _RESNETS[name][1].IMAGENET1K_V1.url
    return os.path.basename(urlparse(url).path)


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


def _load_imagenet(trunk: nn.Sequential, name: str, path: Path) -> None:
    state = _read_state_dict(path, name)
    state = OrderedDict((k, v) for k, v in state.items() if not k.startswith("fc."))
    own = trunk.state_dict()
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
        raise UserError(f"imagenet_pretrain: {path} does not match a torchvision {name} "
                        f"(expected {imagenet_weights_filename(name)}): " + "; ".join(parts))
    trunk.load_state_dict(state, strict=True)


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

    if imagenet_pretrain is True:
        path = imagenet_weights_path(name)
        if not path.is_file():
            raise UserError(f"imagenet_pretrain is true but the ImageNet weights of {name} are not at {path}. Nothing "
                            f"is downloaded: put torchvision's {imagenet_weights_filename(name)} (from "
                            f"{_RESNETS[name][1].IMAGENET1K_V1.url}) at {path}, or give its path as imagenet_pretrain, "
                            f"or set imagenet_pretrain to false.")
        _load_imagenet(trunk, name, path)
    elif isinstance(imagenet_pretrain, str):
        path = Path(imagenet_pretrain).expanduser()
        if not path.is_file():
            raise UserError(f"imagenet_pretrain: weights file {path} not found. Nothing is downloaded: put "
                            f"torchvision's {imagenet_weights_filename(name)} there (from "
                            f"{_RESNETS[name][1].IMAGENET1K_V1.url}).")
        _load_imagenet(trunk, name, path)
    elif imagenet_pretrain is not False:
        raise UserError(f"imagenet_pretrain must be true, false or a file path; found {imagenet_pretrain!r}")
    return trunk


BACKBONES: dict[str, Callable[..., nn.Sequential]] = {name: partial(resnet, name) for name in _RESNETS}


def build_backbone(name: str, **options) -> nn.Sequential:
    """The trunk registered as `name`, built with its `options`; an unknown name lists the registered ones."""
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; expected one of {', '.join(sorted(BACKBONES))}")
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
