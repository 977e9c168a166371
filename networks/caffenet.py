"""CaffeNet's convolutional tower (BVLC reference CaffeNet, AlexNet's Caffe variant): GOTURN's feature extractor
(reference notes ``trackers-and-got10k.md`` §2.1).

conv1 11×11 stride 4 → ReLU → max-pool 3/2 → LRN; conv2 5×5 pad 2 groups 2 → ReLU → max-pool 3/2 → LRN; conv3 3×3
pad 1 → ReLU; conv4 3×3 pad 1 groups 2 → ReLU; conv5 3×3 pad 1 groups 2 → ReLU → max-pool 3/2. Pooling comes before
the LRN, Caffe's order (AlexNet's paper has the opposite). LRN: size 5, α 1e-4, β 0.75, k 1, with α divided by the
size, in Caffe, PyTorch and ONNX alike. A 227-pixel crop gives 256×6×6 (2.33 M parameters).

Input convention, as every backbone of the registry: raw **RGB 0..255** crops; the tower subtracts Caffe's ImageNet
mean (the reference's BGR (104, 117, 123), here in RGB order) and divides by ``input_scale`` inside ``forward``, so an
exported graph takes raw crops. With CaffeNet's ImageNet weights the scale would be 1; those weights cannot be
downloaded here, so the tower trains from scratch, and for that the default divides by 64 (about the pixels' standard
deviation) and draws the convolutions from He's normal: activations then start near unit scale instead of the
hundreds a raw 0..255 input gives, which the fully connected regressor's N(0, 0.005) initialisation would amplify.

LRN runs as :class:`LocalResponseNorm`: the channel window's sum of squares as a 1×1 convolution with a fixed banded
matrix (about twice as fast as PyTorch's average-pool formulation on this CPU, forward and backward, equal to it to
float rounding), exported as ONNX's own ``LRN`` operator rather than PyTorch's traced pad/pool/slice sequence.

``width`` scales every layer's channels (1 = CaffeNet; 0.5 quarters the convolution cost, for CPU demos; channel
counts are rounded to even numbers for the two-group convolutions).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import UserError

CAFFE_MEAN_RGB = (123.0, 117.0, 104.0)
DEFAULT_INPUT_SCALE = 64.0
_CHANNELS = (96, 256, 384, 384, 256)


class LocalResponseNorm(nn.Module):
    """Cross-channel LRN, ``x / (k + α/n · Σ x²)^β`` with the sum over channels c − n//2 … c + (n − 1)//2 (PyTorch's
    and ONNX's window)."""

    def __init__(self, channels: int, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        index = torch.arange(channels)
        offset = index[None, :] - index[:, None]  # [c, c']: c' − c
        window = (offset >= -(size // 2)) & (offset <= (size - 1) // 2)
        self.register_buffer("window", (window.float() * alpha / size).view(channels, channels, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return _OnnxLrn.apply(x, self.size, self.alpha, self.beta, self.k)
        return x / (self.k + F.conv2d(x * x, self.window)).pow(self.beta)


class _OnnxLrn(torch.autograd.Function):
    """Traced as one ONNX ``LRN`` node (its forward only runs while exporting)."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        return F.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(graph, x, size, alpha, beta, k):
        return graph.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


def _even(channels: float) -> int:
    return max(2, 2 * round(channels / 2))


class CaffeNetTower(nn.Module):
    """Raw RGB 0..255 crop (B, 3, H, W) → the conv5 map after its pooling (B, ``out_channels``, h, w)."""

    def __init__(self, width: float = 1.0, input_scale: float = DEFAULT_INPUT_SCALE) -> None:
        super().__init__()
        if not width > 0 or not input_scale > 0:
            raise UserError(f"caffenet: width and input_scale must be > 0, found {width} and {input_scale}")
        c1, c2, c3, c4, c5 = (_even(c * width) for c in _CHANNELS)
        self.out_channels = c5
        self.input_scale = float(input_scale)
        self.register_buffer("mean", torch.tensor(CAFFE_MEAN_RGB).view(1, 3, 1, 1), persistent=False)
        self.layers = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(3, c1, 11, stride=4), relu1=nn.ReLU(inplace=True),
            pool1=nn.MaxPool2d(3, 2), norm1=LocalResponseNorm(c1),
            conv2=nn.Conv2d(c1, c2, 5, padding=2, groups=2), relu2=nn.ReLU(inplace=True),
            pool2=nn.MaxPool2d(3, 2), norm2=LocalResponseNorm(c2),
            conv3=nn.Conv2d(c2, c3, 3, padding=1), relu3=nn.ReLU(inplace=True),
            conv4=nn.Conv2d(c3, c4, 3, padding=1, groups=2), relu4=nn.ReLU(inplace=True),
            conv5=nn.Conv2d(c4, c5, 3, padding=1, groups=2), relu5=nn.ReLU(inplace=True),
            pool5=nn.MaxPool2d(3, 2),
        ))
        for module in self.layers:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    @property
    def stages(self) -> dict[str, list[nn.Module]]:
        """conv1 … conv5, for per-stage learning rates and scheduled unfreezing."""
        return {name: [module] for name, module in self.layers.named_children() if name.startswith("conv")}

    def output_shape(self, input_size: int) -> tuple[int, int, int]:
        """(channels, height, width) of the map for a square crop of side `input_size`."""
        side = (input_size - 11) // 4 + 1
        for _ in range(3):  # pool1, pool2, pool5 (3/2, no padding); the convolutions in between keep the size
            side = (side - 3) // 2 + 1
        if side < 1:
            raise UserError(f"caffenet: a {input_size}-pixel crop is too small (it needs at least 67 pixels)")
        return self.out_channels, side, side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - self.mean) / self.input_scale)


def caffenet(width: float = 1.0, input_scale: float = DEFAULT_INPUT_SCALE,
             imagenet_pretrain: bool | str = False) -> CaffeNetTower:
    """The CaffeNet tower. ``imagenet_pretrain`` must be false (CaffeNet's weights are a Caffe file that cannot be
    fetched here; the option exists so that every backbone takes it)."""
    if imagenet_pretrain is not False:
        raise UserError(f"caffenet has no ImageNet weights available here (it is trained from scratch); set "
                        f"imagenet_pretrain to false; found {imagenet_pretrain!r}")
    return CaffeNetTower(width, input_scale)
