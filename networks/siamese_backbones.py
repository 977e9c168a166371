"""SiamFC++'s backbones (reference notes ``trackers-and-got10k.md`` §1.2): AlexNet-BN, GoogLeNet (a pruned
Inception-v3), ShuffleNetV2 x0.5 / x1.0 and TinyConv. Each maps an image crop to one feature map of total stride 8; the
tracker runs it on the 127-pixel template and the 303-pixel (GoogLeNet trains at 289) search crop.

Input convention: **RGB, float, 0..255**, as the project's frames, crops and pair loader hold them. Each backbone
normalises inside ``forward``, so an exported ONNX graph takes raw crops and no caller needs a backbone's statistics:

* ``alexnet_bn``, ``tinyconv``: none. They are trained from scratch here, and the BN after their unpadded first conv
  absorbs the input's scale and offset.
* ``googlenet``: ``(x - 127.5) / 127.5``, i.e. [-1, 1] in RGB order, what torchvision's Inception-v3 ImageNet weights
  see (with those weights torchvision's ``transform_input`` turns its ImageNet-normalised input back into
  ``(x/255 - 0.5) / 0.5`` per channel). video_analyst also swaps channels 0 and 2 because it feeds BGR frames; we feed
  RGB, so there is no swap.
* ``shufflenet_v2_x0_5`` / ``_x1_0``: ``x / 255``, then ImageNet's RGB mean and std, torchvision's convention for its
  ShuffleNet weights (video_analyst swaps BGR → RGB first; again no swap here).

Every backbone is a :class:`SiameseBackbone`: ``out_channels`` (256; TinyConv 64), ``total_stride`` (8) and
``stages``, stage name → its submodules in forward order, covering every parameter once, for scheduled unfreezing
(§1.8: AlexNet conv5/conv4/conv3, GoogLeNet Mixed_6/Mixed_5, ShuffleNet stage4/stage3/stage2).

Output side at inputs 127 / 289 / 303: AlexNet-BN 6 / 27 / 28, GoogLeNet 5 / 25 / 27, ShuffleNet 8 / 29 / 30,
TinyConv 11 / 31 / 33. Every conv that a BatchNorm follows has no bias (BN's mean subtraction would cancel it).

GoogLeNet and ShuffleNet keep torchvision's modules under ``trunk`` with torchvision's names, so torchvision's ImageNet
file loads there strictly (:func:`networks.backbones.load_imagenet_weights`) once the keys of the parts left out
(classifier, Inception's auxiliary head and Mixed_7*, ShuffleNet's conv5) are dropped by name. Their
``channel_reduce`` 1×1 conv + BN is new and starts from PyTorch's default init. AlexNet-BN and TinyConv have no
ImageNet weights (video_analyst trains TinyConv from scratch; torchvision has no AlexNet-BN).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torchvision.models import inception as tv_inception
from torchvision.models import shufflenetv2 as tv_shufflenet

from engine.errors import UserError
from networks.backbones import load_imagenet_weights

_CROP = 4  # pixels cropped off each side of GoogLeNet's and ShuffleNet's maps (video_analyst's crop_pad)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, for inputs in 0..1
_IMAGENET_STD = (0.229, 0.224, 0.225)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, *, groups: int = 1,
            relu: bool = True, eps: float = 1e-5) -> nn.Sequential:
    """Conv (no padding, no bias) + BatchNorm, + ReLU unless ``relu`` is False."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, groups=groups, bias=False),
              nn.BatchNorm2d(out_channels, eps=eps)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _crop(x: torch.Tensor) -> torch.Tensor:
    return x[:, :, _CROP:-_CROP, _CROP:-_CROP]


class InputNormalize(nn.Module):
    """``(x - mean) / std`` per channel on a raw RGB 0..255 input. The constants are non-persistent buffers: they
    follow ``.to(device)`` and become constants of an exported graph, but are not checkpoint entries."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SiameseBackbone(nn.Module):
    """A SiamFC++ backbone: raw RGB 0..255 crop (B, 3, H, W) → one map (B, ``out_channels``, h, w), total stride 8.

    ``stages`` maps each stage name to its submodules, in forward order; the constructor takes their paths, resolved on
    each access, so the backbone holds no second reference to any module."""

    total_stride = 8

    def __init__(self, out_channels: int, stage_paths: Mapping[str, Sequence[str]]) -> None:
        super().__init__()
        self.out_channels = out_channels
        self._stage_paths = {name: tuple(paths) for name, paths in stage_paths.items()}

    @property
    def stages(self) -> dict[str, list[nn.Module]]:
        return {name: [self.get_submodule(path) for path in paths] for name, paths in self._stage_paths.items()}


class ConvStack(SiameseBackbone):
    """conv+BN(+ReLU) blocks and max-pools in sequence, no padding, no input normalisation (AlexNet-BN, TinyConv);
    every block with parameters is a stage of its own."""

    def __init__(self, layers: OrderedDict[str, nn.Module], out_channels: int) -> None:
        blocks = [name for name, layer in layers.items() if list(layer.parameters())]
        super().__init__(out_channels, {name: (f"layers.{name}",) for name in blocks})
        self.layers = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _from_scratch(name: str, imagenet_pretrain: bool | str) -> None:
    if imagenet_pretrain is not False:
        raise UserError(f"{name} has no ImageNet weights (it is trained from scratch); set imagenet_pretrain to false "
                        f"or use googlenet or shufflenet_v2_x0_5 / shufflenet_v2_x1_0; found {imagenet_pretrain!r}")


def alexnet_bn(imagenet_pretrain: bool | str = False) -> ConvStack:
    """AlexNet with BN and no padding (3.75 M parameters; PyTorch's default init). ``imagenet_pretrain`` must be
    false: it is accepted only so that every backbone takes the same options."""
    _from_scratch("alexnet_bn", imagenet_pretrain)
    return ConvStack(OrderedDict(
        conv1=conv_bn(3, 96, 11, stride=2),
        pool1=nn.MaxPool2d(3, 2, ceil_mode=True),
        conv2=conv_bn(96, 256, 5),
        pool2=nn.MaxPool2d(3, 2, ceil_mode=True),
        conv3=conv_bn(256, 384, 3),
        conv4=conv_bn(384, 384, 3),
        conv5=conv_bn(384, 256, 3, relu=False),
    ), out_channels=256)


def tinyconv(imagenet_pretrain: bool | str = False) -> ConvStack:
    """TinyConv (0.048 M parameters, 64 output channels), video_analyst's from-scratch backbone: convs drawn from a
    normal of σ 0.1 truncated at ±2σ, BN weight 1 and bias 0 (PyTorch's BN default). ``imagenet_pretrain`` must be
    false, as for :func:`alexnet_bn`."""
    _from_scratch("tinyconv", imagenet_pretrain)
    net = ConvStack(OrderedDict(
        conv1=conv_bn(3, 32, 3, stride=2),
        pool1=nn.MaxPool2d(3, 2, ceil_mode=True),
        conv2=conv_bn(32, 64, 1),
        conv3=conv_bn(64, 64, 7, stride=2, groups=64),  # depth-wise
        conv4=conv_bn(64, 64, 3),
        conv5=conv_bn(64, 64, 1, relu=False),
    ), out_channels=64)
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.trunc_normal_(module.weight, std=0.1, a=-0.2, b=0.2)  # a, b are absolute bounds: ±2σ
    return net


# Inception-v3's modules up to Mixed_6e minus maxpool2 (the pool after Conv2d_4a_3x3), which keeps the stride at 8
_INCEPTION_TRUNK = {
    "stem": ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3"),
    "Mixed_5": ("Mixed_5b", "Mixed_5c", "Mixed_5d"),
    "Mixed_6": ("Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"),
}
_INCEPTION_UNUSED = ("AuxLogits.", "Mixed_7a.", "Mixed_7b.", "Mixed_7c.", "fc.")


class GoogLeNet(SiameseBackbone):
    """Pruned Inception-v3 (9.16 M parameters): normalise to [-1, 1], torchvision's Inception-v3 modules up to
    Mixed_6e without the second max-pool, crop 4 pixels per side, then ``channel_reduce``: 1×1 conv 768 → 256 + BN (eps
    1e-3, as Inception's own BNs) **without ReLU**, as in the reference (§1.2 lists a ReLU only for ShuffleNet's).
    Stages: ``stem`` (Conv2d_1a … Conv2d_4a), ``Mixed_5``, ``Mixed_6``, ``channel_reduce``."""

    def __init__(self, imagenet_pretrain: bool | str = False) -> None:
        stage_paths = {stage: tuple(f"trunk.{name}" for name in names if not name.startswith("maxpool"))
                       for stage, names in _INCEPTION_TRUNK.items()}
        super().__init__(256, {**stage_paths, "channel_reduce": ("channel_reduce",)})
        # torchvision's init (truncated normal σ 0.1) unless ImageNet weights replace it
        inception = tv_inception.Inception3(aux_logits=False, init_weights=True)
        self.normalize = InputNormalize((127.5,) * 3, (127.5,) * 3)
        self.trunk = nn.Sequential(OrderedDict((name, getattr(inception, name))
                                               for names in _INCEPTION_TRUNK.values() for name in names))
        self.channel_reduce = conv_bn(768, 256, 1, relu=False, eps=1e-3)
        load_imagenet_weights(self.trunk, "googlenet", imagenet_pretrain, unused=_INCEPTION_UNUSED)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_reduce(_crop(self.trunk(self.normalize(x))))


def googlenet(imagenet_pretrain: bool | str = False) -> GoogLeNet:
    """GoogLeNet; ``imagenet_pretrain``: False, True (torchvision's ``inception_v3_google-0cc3c7bd.pth`` from the torch
    cache) or that file's path."""
    return GoogLeNet(imagenet_pretrain)


# torchvision's ShuffleNetV2 modules kept; its conv5 (1×1 → 1024) and classifier are left out
_SHUFFLENET_TRUNK = ("conv1", "maxpool", "stage2", "stage3", "stage4")
_SHUFFLENET_STAGE_CHANNELS = {"shufflenet_v2_x0_5": (48, 96, 192), "shufflenet_v2_x1_0": (116, 232, 464)}
_SHUFFLENET_UNUSED = ("conv5.", "fc.")


def _false_stride(block: tv_shufflenet.InvertedResidual) -> None:
    """Keep a stride-2 block's structure (two branches, channels doubled) but convolve with stride 1, so the map keeps
    its size (video_analyst's ``false_stride``). ``block.stride`` stays 2: it selects torchvision's two-branch
    forward."""
    for module in block.modules():
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (1, 1)


class ShuffleNet(SiameseBackbone):
    """ShuffleNetV2 (x1.0: 0.99 M parameters, x0.5: 0.23 M): normalise, torchvision's conv1, maxpool and stage2
    (stride 2), stage3 and stage4 with a false stride (stride 1), the three stage outputs concatenated (116+232+464 or
    48+96+192 channels), crop 4 pixels per side, then ``channel_reduce``: 1×1 conv → 256 + BN + ReLU.
    Stages: ``conv1``, ``stage2``, ``stage3``, ``stage4``, ``channel_reduce``."""

    def __init__(self, name: str, imagenet_pretrain: bool | str = False) -> None:
        stage_paths = {stage: (f"trunk.{stage}",) for stage in ("conv1", "stage2", "stage3", "stage4")}
        super().__init__(256, {**stage_paths, "channel_reduce": ("channel_reduce",)})
        net = getattr(tv_shufflenet, name)(weights=None)
        for stage in (net.stage3, net.stage4):
            _false_stride(stage[0])
        self.normalize = InputNormalize([255 * m for m in _IMAGENET_MEAN], [255 * s for s in _IMAGENET_STD])
        # a dict, not a Sequential: forward reads every stage's output
        self.trunk = nn.ModuleDict(OrderedDict((child, getattr(net, child)) for child in _SHUFFLENET_TRUNK))
        self.channel_reduce = conv_bn(sum(_SHUFFLENET_STAGE_CHANNELS[name]), 256, 1)
        load_imagenet_weights(self.trunk, name, imagenet_pretrain, unused=_SHUFFLENET_UNUSED)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trunk.maxpool(self.trunk.conv1(self.normalize(x)))
        maps = []
        for stage in (self.trunk.stage2, self.trunk.stage3, self.trunk.stage4):
            x = stage(x)
            maps.append(x)
        return self.channel_reduce(_crop(torch.cat(maps, dim=1)))


def shufflenet_v2_x0_5(imagenet_pretrain: bool | str = False) -> ShuffleNet:
    """ShuffleNetV2 x0.5; ``imagenet_pretrain``: False, True (torchvision's ``shufflenetv2_x0.5-f707e7126e.pth`` from
    the torch cache) or that file's path."""
    return ShuffleNet("shufflenet_v2_x0_5", imagenet_pretrain)


def shufflenet_v2_x1_0(imagenet_pretrain: bool | str = False) -> ShuffleNet:
    """ShuffleNetV2 x1.0; ``imagenet_pretrain``: False, True (torchvision's ``shufflenetv2_x1-5666bf0f80.pth`` from
    the torch cache) or that file's path."""
    return ShuffleNet("shufflenet_v2_x1_0", imagenet_pretrain)
