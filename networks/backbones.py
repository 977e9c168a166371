"""ResNet trunks (torchvision ResNet v1 without the average pool and the ImageNet classifier).

The trunk is an ``nn.Sequential`` whose child names are torchvision's (``conv1``, ``bn1``, ``relu``, ``maxpool``,
``layer1`` … ``layer4``), so its state dict has exactly torchvision's keys minus ``fc.*``; ImageNet weights are loaded
with a strict ``load_state_dict`` after dropping the ``fc.*`` keys. Weights are never downloaded: the file must already
be on disk (see :func:`imagenet_weights_path`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Callable
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
    """A torchvision ResNet without avgpool/fc, returning the layer4 feature map, and that map's channel count.

    ``last_conv_stride`` (1 or 2) is the stride of layer4's first block (its strided 3×3 conv and its downsample conv).
    ``imagenet_pretrain``: False → torchvision's random init; True → torchvision's IMAGENET1K_V1 file from
    :func:`imagenet_weights_path`; a string → that file. Nothing is ever downloaded; a missing or mismatching file is a
    :class:`UserError`.
    """
    _check_name(name)
    if last_conv_stride not in (1, 2):
        raise UserError(f"last_conv_stride must be 1 or 2; found {last_conv_stride!r}")
    constructor, _, channels = _RESNETS[name]
    net = constructor(weights=None)
    trunk = nn.Sequential(OrderedDict((child, getattr(net, child)) for child in _TRUNK_CHILDREN))
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
    return trunk, channels
