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
* ``resnet50_siammask`` (SiamMask's "ResNet-50 adjusted", reference notes ``trackers-and-got10k.md`` §3.1) and
  ``resnet18_siammask`` (the same cut of ResNet-18: a CPU-sized variant with channels 64/64/128/256), built by
  :func:`siammask_resnet`: a :class:`SiamMaskResNet`, an ``nn.Sequential`` whose children are ``normalize``
  (raw RGB 0..255 → ImageNet mean/std), ``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer1``, ``layer2``,
  ``layer3`` and ``adjust``. ``trunk(x)`` is the adjusted map; ``LevelFeatures(trunk, SIAMMASK_LEVELS)`` gives
  p0 (``relu``), p1 (``layer1``), p2 (``layer2``), p3 (``layer3``) and the adjusted map, which SiamMask's refine
  module needs. Options: ``adjust_channels`` (width of the adjusted map, default 256) and ``imagenet_pretrain``.
  Architecture, as the reference's (every size below is tested):

  - conv1 7×7 stride 2 with **padding 0**, BN, ReLU (p0), max-pool 3×3 stride 2 padding 1, layer1;
  - layer2 with stride 2, its first block's strided 3×3 conv with **padding 0** and its shortcut a **3×3 conv,
    stride 2, padding 0** (torchvision: padding 1 and a 1×1 shortcut). We replicate this: the maps keep the
    reference's odd sizes (search 255 → 31, template 127 → 15), p2 pixel r sits at crop coordinate 8r + 7.5 so the
    31-wide map is centred on the 255 crop, and the refine module's crop arithmetic holds as written;
  - layer3 at stride 1: its first block undilated with a **3×3 shortcut, padding 1**, the other blocks' 3×3 convs
    with dilation 2 and padding 2 (total stride 8); layer4 is cut;
  - ``adjust``: 1×1 conv layer3 → ``adjust_channels`` without bias, BN, and a centre crop ``[4:-4]`` when the map is
    narrower than 20 (the template's 15 × 15 → 7 × 7; the search's 31 × 31 is kept).

  Sizes, resnet50: template 127 → p3 (1024, 15, 15) → adjusted (256, 7, 7); search 255 → p0 (64, 125, 125),
  p1 (256, 63, 63), p2 (512, 31, 31), p3 (1024, 31, 31), adjusted (256, 31, 31). resnet18: the same sides with
  p1 64, p2 128 and p3 256 channels. Parameters: resnet50 14.05 M with adjust 256 (the reference's figure, which
  counts its 3×3 shortcuts), resnet18 3.18 M.

  ImageNet weights: torchvision's files hold 1×1 shortcuts. They load as the centre tap of our 3×3 shortcuts (the
  other eight taps zero), which computes exactly torchvision's 1×1 shortcut, sampled at the pixels that the
  padding-0 main path uses. (The reference loads its own ``resnet.model``, which we do not have.) ``adjust``
  always starts from PyTorch's default init. Input: RGB 0..255, normalised inside with ImageNet's mean and std as
  torchvision's weights expect (the reference feeds its own weights raw BGR 0..255), so an exported graph takes raw
  crops, as the SiamFC++ backbones' do.

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


def _load_file(trunk: nn.Module, name: str, path: Path, unused: tuple[str, ...],
               convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None) -> None:
    state = _read_state_dict(path, name)
    state = OrderedDict((k, v) for k, v in state.items() if not k.startswith(unused))
    if convert is not None:
        state = OrderedDict(convert(state))
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


def load_imagenet_weights(trunk: nn.Module, name: str, imagenet_pretrain: bool | str, unused: tuple[str, ...],
                          convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None) -> None:
    """Load torchvision's ImageNet-1k V1 weights of backbone `name` into `trunk`, whose state-dict keys are
    torchvision's, as ``imagenet_pretrain`` says: False → nothing (the trunk keeps its init); True → the file at
    :func:`imagenet_weights_path`; a string → that file. The file's keys starting with one of `unused` (the parts of
    torchvision's model the trunk leaves out, e.g. ``"fc."``) are dropped; ``convert``, if given, then maps the
    remaining state dict to the trunk's (SiamMask's ResNet widens two 1×1 shortcut kernels to 3×3); any other
    missing, unexpected or mis-shaped key is a :class:`UserError` naming the file and the keys. Nothing is ever
    downloaded."""
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
    _load_file(trunk, name, path, unused, convert)


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


SIAMMASK_LEVELS = ("relu", "layer1", "layer2", "layer3", "adjust")
"""The children of a :class:`SiamMaskResNet` whose maps SiamMask uses: p0, p1, p2, p3 and the adjusted map."""
SIAMMASK_NAMES = ("resnet18_siammask", "resnet50_siammask")
_SIAMMASK_CROP_BELOW = 20  # the adjust layer crops maps narrower than this (the template's)
_SIAMMASK_CROP = 4         # pixels cropped off each side then
_RGB_MEAN, _RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, for RGB inputs in 0..1
_SIAMMASK_SHORTCUTS = ("layer2.0.downsample.0.weight", "layer3.0.downsample.0.weight")


class SiamMaskAdjust(nn.Module):
    """SiamMask's adjust layer: 1×1 conv without bias + BN, then the centre crop ``[4:-4]`` of a map narrower than 20
    (a template's 15 × 15 → 7 × 7). The crop is decided from the map's width, so an exported graph has it or not
    depending on the size it was traced at (a constant of the graph, as in the reference)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        if x.shape[-1] < _SIAMMASK_CROP_BELOW:
            x = x[:, :, _SIAMMASK_CROP:-_SIAMMASK_CROP, _SIAMMASK_CROP:-_SIAMMASK_CROP]
        return x


class SiamMaskResNet(nn.Sequential):
    """SiamMask's "adjusted" ResNet cut after layer3 (see the module docstring for the architecture and sizes):
    raw RGB 0..255 crop → the adjusted map (``out_channels``, total stride 8). Children: ``normalize``, ``conv1``,
    ``bn1``, ``relu``, ``maxpool``, ``layer1``, ``layer2``, ``layer3``, ``adjust``; :data:`SIAMMASK_LEVELS` names
    the maps of p0…p3 and the adjusted map for :class:`LevelFeatures`. ``stages`` maps ``stem``, ``layer1``,
    ``layer2``, ``layer3``, ``adjust`` to their modules, for scheduled unfreezing (the reference trains ``adjust``
    from the start and ``layer2`` + ``layer3`` from half-way)."""

    total_stride = 8
    levels = SIAMMASK_LEVELS

    def __init__(self, children: OrderedDict[str, nn.Module], out_channels: int) -> None:
        super().__init__(children)
        self.out_channels = out_channels

    @property
    def stages(self) -> dict[str, list[nn.Module]]:
        return {"stem": [self.conv1, self.bn1], "layer1": [self.layer1], "layer2": [self.layer2],
                "layer3": [self.layer3], "adjust": [self.adjust]}


def _strided_conv(block: nn.Module) -> nn.Conv2d:
    """The 3×3 conv that carries a block's stride (torchvision ResNet v1.5: conv2 of a Bottleneck, conv1 of a
    BasicBlock)."""
    return block.conv2 if isinstance(block, tv_resnet.Bottleneck) else block.conv1


def _widen_shortcuts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's 1×1 shortcut kernels of layer2 and layer3 as the centre tap of 3×3 kernels (other taps 0)."""
    state = dict(state)
    for key in _SIAMMASK_SHORTCUTS:
        if key in state and state[key].shape[-2:] == (1, 1):
            state[key] = nn.functional.pad(state[key], (1, 1, 1, 1))
    return state


def siammask_resnet(name: str, *, adjust_channels: int = 256, imagenet_pretrain: bool | str = False
                    ) -> SiamMaskResNet:
    """SiamMask's adjusted ResNet built from torchvision's ResNet `name` (``resnet50`` in the reference;
    ``resnet18`` for a CPU-sized variant; any registered depth works). See the module docstring."""
    _check_name(name)
    if not isinstance(adjust_channels, int) or isinstance(adjust_channels, bool) or adjust_channels < 1:
        raise UserError(f"adjust_channels must be a positive integer; found {adjust_channels!r}")
    from networks.siamese_backbones import InputNormalize  # on first use, as the Siamese backbones

    net = _RESNETS[name][0](weights=None)
    stem = nn.Sequential(OrderedDict((child, getattr(net, child)) for child in _TRUNK_CHILDREN[:-1]))
    stem.conv1.padding = (0, 0)
    first2, first3 = stem.layer2[0], stem.layer3[0]
    _strided_conv(first2).padding = (0, 0)
    _strided_conv(first3).stride = (1, 1)
    for block, stride, padding in ((first2, 2, 0), (first3, 1, 1)):
        shortcut = block.downsample[0]
        block.downsample[0] = nn.Conv2d(shortcut.in_channels, shortcut.out_channels, 3, stride=stride,
                                        padding=padding, bias=False)
    for block in stem.layer3[1:]:
        for conv in (m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)):
            conv.dilation, conv.padding = (2, 2), (2, 2)
    load_imagenet_weights(stem, name, imagenet_pretrain, unused=("fc.", "layer4."), convert=_widen_shortcuts)
    layer3_channels = _RESNETS[name][2] // 2
    normalize = InputNormalize([255 * m for m in _RGB_MEAN], [255 * s for s in _RGB_STD])
    return SiamMaskResNet(OrderedDict([("normalize", normalize), *stem.named_children(),
                                       ("adjust", SiamMaskAdjust(layer3_channels, adjust_channels))]),
                          out_channels=adjust_channels)


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
    **{name: partial(siammask_resnet, name.removesuffix("_siammask")) for name in SIAMMASK_NAMES},
}


def build_backbone(name: str, **options) -> nn.Module:
    """The backbone registered as `name`, built with its `options`; an unknown name lists the registered ones."""
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; expected one of {', '.join(sorted(_RESNETS))} (ResNet trunks) or "
                        f"{', '.join(SIAMESE_NAMES)} (SiamFC++ backbones) or caffenet (GOTURN's tower) or "
                        f"{', '.join(SIAMMASK_NAMES)} (SiamMask's adjusted ResNets)")
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
