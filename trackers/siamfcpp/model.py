"""The SiamFC++ network (video_analyst's SiamTrack + DenseboxHead, re-written): a shared backbone, four unshared neck
convolutions, depth-wise cross-correlation, and classification / centre-ness / box towers.

    kernels = net.template(z)                        # z: (B, 3, Z, Z) RGB 0..255 → (c_z_k, r_z_k), once per sequence
    cls, ctr, boxes = net.track(x, *kernels)         # x: (B, 3, X, X) → logits (B, S·S), boxes (B, S·S, 4) xyxy
    cls, ctr, boxes = net(z, x)                      # training: both paths

Boxes are in search-crop pixels (continuous convention, `data.boxes`), decoded around the score locations of
`trackers.siamfcpp.geometry` as ``exp(si · raw + bi) · total_stride`` distances to the four edges. The score map's size
follows from ``x_size``, ``z_size``, the backbone's stride and the tower depth (17×17 for 303/127/8/3); ``track``
accepts another search size (GOTURN-style testing at a different size, GoogLeNet's 289 → 303) and recomputes the grid.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from networks.xcorr import depthwise_xcorr
from trackers.siamfcpp.geometry import decode_boxes, location_grid_tensor, score_offset, score_size

HEAD_INIT_STD = 1e-4     # reference: head convs N(0, 1e-4)
NECK_INIT_STD = 0.01     # reference: neck convs N(0, 0.01)
CLS_PRIOR = 0.01         # focal-loss prior: the classifier starts at p = 0.01 everywhere


def _conv_bn(in_channels: int, out_channels: int, relu: bool, bn: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(out_channels))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _tower(width: int, with_bn: Sequence[bool]) -> nn.Sequential:
    return nn.Sequential(*(_conv_bn(width, width, relu=True, bn=bn) for bn in with_bn))


class SiamFCpp(nn.Module):
    def __init__(self, backbone: nn.Module, *, head_width: int = 256, head_conv_bn: Sequence[bool] = (False, False,
                 True), z_size: int = 127, x_size: int = 303) -> None:
        super().__init__()
        self.backbone = backbone
        channels, self.total_stride = backbone.out_channels, backbone.total_stride
        self.z_size, self.x_size, self.num_conv3x3 = z_size, x_size, len(head_conv_bn)
        # the four neck convs are not shared between template and search (reference: c_z_k, r_z_k, c_x, r_x)
        self.c_z_k, self.r_z_k, self.c_x, self.r_x = (_conv_bn(channels, head_width, relu=False) for _ in range(4))
        self.cls_tower, self.reg_tower = _tower(head_width, head_conv_bn), _tower(head_width, head_conv_bn)
        self.cls_score = nn.Conv2d(head_width, 1, 1)
        self.ctr_score = nn.Conv2d(head_width, 1, 1)
        self.bbox_offsets = nn.Conv2d(head_width, 4, 1)
        self.bi = nn.Parameter(torch.zeros(1))
        self.si = nn.Parameter(torch.ones(1))
        self._init_weights()
        self.register_buffer("grid", self.location_grid(x_size), persistent=False)

    def _init_weights(self) -> None:
        for neck in (self.c_z_k, self.r_z_k, self.c_x, self.r_x):
            nn.init.normal_(neck[0].weight, std=NECK_INIT_STD)
        head_convs = [m for tower in (self.cls_tower, self.reg_tower) for m in tower.modules()
                      if isinstance(m, nn.Conv2d)] + [self.cls_score, self.ctr_score, self.bbox_offsets]
        for conv in head_convs:
            nn.init.normal_(conv.weight, std=HEAD_INIT_STD)  # biases keep PyTorch's U(±1/sqrt(fan_in))
        nn.init.constant_(self.cls_score.bias, -math.log((1 - CLS_PRIOR) / CLS_PRIOR))

    def score_size(self, x_size: int) -> int:
        return score_size(x_size, self.z_size, self.total_stride, self.num_conv3x3)

    def location_grid(self, x_size: int) -> torch.Tensor:
        """(S·S, 2) crop coordinates of the score locations for search crops of side `x_size`."""
        size = self.score_size(x_size)
        return location_grid_tensor(size, score_offset(x_size, size, self.total_stride), self.total_stride)

    def template(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Classification and regression kernels of the template crops."""
        features = self.backbone(z)
        return self.c_z_k(features), self.r_z_k(features)

    def track(self, x: torch.Tensor, cls_kernel: torch.Tensor, reg_kernel: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(classification logits (B, S·S), centre-ness logits (B, S·S), boxes (B, S·S, 4) xyxy crop pixels)."""
        features = self.backbone(x)
        cls_features = self.cls_tower(depthwise_xcorr(self.c_x(features), cls_kernel))
        reg_features = self.reg_tower(depthwise_xcorr(self.r_x(features), reg_kernel))
        cls = self.cls_score(cls_features).flatten(1)
        ctr = self.ctr_score(cls_features).flatten(1)
        raw = self.bbox_offsets(reg_features).flatten(2).transpose(1, 2)  # (B, S·S, 4) distances l, t, r, b
        offsets = torch.exp(self.si * raw.float() + self.bi) * self.total_stride
        grid = self.grid if x.shape[-1] == self.x_size else self.location_grid(x.shape[-1]).to(x.device)
        return cls, ctr, decode_boxes(offsets, grid)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.track(x, *self.template(z))


class TemplateGraph(nn.Module):
    """The exported template graph: ``z → (cls_kernel, reg_kernel)``."""

    def __init__(self, net: SiamFCpp) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.template(z)


class SearchGraph(nn.Module):
    """The exported search graph: ``(x, cls_kernel, reg_kernel) → (score, boxes)``, score = sigmoid(cls) ·
    sigmoid(centre-ness), as the tracker consumes them."""

    def __init__(self, net: SiamFCpp) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, cls_kernel: torch.Tensor, reg_kernel: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        cls, ctr, boxes = self.net.track(x, cls_kernel, reg_kernel)
        return torch.sigmoid(cls) * torch.sigmoid(ctr), boxes
