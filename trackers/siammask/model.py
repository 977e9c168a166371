"""The SiamMask network (SiamMask's ``Custom`` model, re-written; notes ``trackers-and-got10k.md`` §3.1–3.2): the
adjusted ResNet of the shared registry (``resnet50_siammask``, or ``resnet18_siammask`` on a CPU budget), depth-wise
correlation heads for the RPN (classification 2k, regression 4k, k = 5 anchors) and the mask (63² = 3969 logits per
location), and the refine module of the sharp variant (127 × 127 mask logits at a chosen location).

    zf = net.template(z)                          # z (B, 3, 127, 127) RGB 0..255 → (B, C, 7, 7), once per sequence
    out = net.track(x, zf)                        # x (B, 3, 255, 255) → TrackOutput(cls, loc, mask, corr, levels)
    masks = net.refine(out.levels, out.corr, position)    # (N, 127, 127) logits at the given location(s)
    masks = net.mask_at(out.corr, position)               # (N, 63, 63) base-model logits at the given location(s)
    out = net(z, x, refine_at=positions)          # training: SiamMaskOutput(cls, loc, mask, refined)

Layouts: ``cls`` (B, 2k, S, S) with channel ``c · k + a`` (class c of anchor a), ``loc`` (B, 4k, S, S) with channel
``d · k + a`` (delta d of anchor a), ``mask`` (B, 63², S, S) with channel ``63 · r + c`` (row r, column c of the
63 × 63 mask), S = 25 for 255 / 127 (``trackers.siammask.anchors``). ``position`` is a (2,) int64 tensor
(row, column) for one location of pair 0, the tracker's case and an ONNX graph input, or (N, 3) int64 (batch index,
row, column) rows.

The kernel the tracker caches is the template's adjusted map ``zf``, as in the reference (each head's 3×3 kernel conv
then runs per frame on a 7 × 7 map, a negligible cost next to the backbone), so the exported graphs are the
reference's: template z → zf; search (x, zf) → score, loc, corr, p0, p1, p2; refine (p0, p1, p2, corr, position).

Refine module (sharp variant): the mask branch's 256-channel correlation vector at the location is deconvolved to
32 × 15 × 15 and fused, coarse to fine, with crops of p2 (15 × 15), p1 (31 × 31) and p0 (61 × 61) around the same
location, upsampled (nearest, the reference's ``F.upsample`` default) to 31, 61 and 127. The crops are the
reference's test-time slices ``pad(p0, 16)[4i : 4i + 61]``, ``pad(p1, 8)[2i : 2i + 31]``, ``pad(p2, 4)[i : i + 15]``
(for 255 crops; the pads follow from the map sizes, 0 for the reference's 143 sharp-stage crops, which then equal its
training-time ``F.unfold`` without padding). Each crop is centred on the location's 127 × 127 window
(``anchors.crop_windows``), so the 127 × 127 output covers exactly the mask target's window.

Training the refine module: ``forward(z, x, refine_at=positions)`` refines only the given locations — the positive
ones, ``targets.mask_positions`` — where the reference unfolds every location and then selects. The module has no
batch-statistics layer, so a location's output does not depend on which others are refined (tested), and the
positives of a 255 pair are a few of its 625 locations.

Parameters, ResNet-50 with the reference's widths (tested; the reference's figures in brackets): features 14.05 M
(14.05 M), RPN 2.50 M (2.50 M), mask 2.27 M (2.27 M), refine 2.67 M (2.67 M). Init: PyTorch's defaults, except the
refine convolutions' ``kaiming_uniform_(a=1)`` (the reference's).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from networks.backbones import LevelFeatures
from networks.xcorr import depthwise_xcorr
from trackers.siammask.anchors import ANCHOR_NUM, as_positions, crop_windows

MASK_SIZE = 63          # side of the base model's per-location mask
REFINE_SIZE = 127       # side of the refine module's mask (the location's window of the search crop)
# (crop side, map pixels per score step) of p0, p1, p2 in the refine module; the pads are 4, 2, 1 times P (see doc)
_REFINE_CROPS = ((61, 4), (31, 2), (15, 1))
_REFINE_SIDES = (31, 61, REFINE_SIZE)   # sides after each fusion's upsampling


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class DepthCorr(nn.Module):
    """Depth-wise correlation head: 3×3 conv (no bias) + BN + ReLU on the template map (7 → 5) and, with its own
    weights, on the search map (31 → 29); depth-wise cross-correlation (→ 25); ``head``: 1×1 conv + BN + ReLU, then
    a 1×1 conv with bias to ``out_channels``."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv_kernel = _conv_bn_relu(in_channels, hidden, kernel_size)
        self.conv_search = _conv_bn_relu(in_channels, hidden, kernel_size)
        self.head = nn.Sequential(nn.Conv2d(hidden, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                                  nn.ReLU(inplace=True), nn.Conv2d(hidden, out_channels, 1))

    def correlate(self, z_features: torch.Tensor, x_features: torch.Tensor) -> torch.Tensor:
        """The correlation map (B, hidden, S, S), before ``head`` (the refine module's input)."""
        return depthwise_xcorr(self.conv_search(x_features), self.conv_kernel(z_features))

    def forward(self, z_features: torch.Tensor, x_features: torch.Tensor) -> torch.Tensor:
        return self.head(self.correlate(z_features, x_features))


class RPN(nn.Module):
    """Anchor classification (2k channels) and box-delta regression (4k channels), each its own :class:`DepthCorr`."""

    def __init__(self, in_channels: int, hidden: int, anchor_num: int = ANCHOR_NUM) -> None:
        super().__init__()
        self.anchor_num = anchor_num
        self.cls = DepthCorr(in_channels, hidden, 2 * anchor_num)
        self.loc = DepthCorr(in_channels, hidden, 4 * anchor_num)

    def forward(self, z_features: torch.Tensor, x_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls(z_features, x_features), self.loc(z_features, x_features)


def _two_convs(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(hidden, out_channels, 3, padding=1), nn.ReLU())


class Refine(nn.Module):
    """SiamMask's refine module (see the module docstring). ``level_channels``: channels of p0, p1, p2 (ResNet-50:
    64, 256, 512; ResNet-18: 64, 64, 128); ``corr_channels``: the mask correlation's (256). The reference's
    widths: p0 → 16 → 4, p1 → 64 → 16, p2 → 128 → 32, deconv 15 × 15 stride 15 → 32."""

    def __init__(self, level_channels: Sequence[int] = (64, 256, 512), corr_channels: int = 256) -> None:
        super().__init__()
        c0, c1, c2 = level_channels
        self.v0, self.v1, self.v2 = _two_convs(c0, 16, 4), _two_convs(c1, 64, 16), _two_convs(c2, 128, 32)
        self.h2, self.h1, self.h0 = _two_convs(32, 32, 32), _two_convs(16, 16, 16), _two_convs(4, 4, 4)
        self.deconv = nn.ConvTranspose2d(corr_channels, 32, 15, 15)
        self.post0 = nn.Conv2d(32, 16, 3, padding=1)
        self.post1 = nn.Conv2d(16, 4, 3, padding=1)
        self.post2 = nn.Conv2d(4, 1, 3, padding=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)

    @staticmethod
    def level_padding(levels: Sequence[torch.Tensor], size: int) -> int:
        """P such that S crops of p2 (15 wide, padded by P), p1 (31, by 2P) and p0 (61, by 4P) line up with the S × S
        correlation map: 4 for 255 search crops (p2 31, S 25), 0 for the reference's 143 (p2 17, S 3)."""
        twice = size - 1 + _REFINE_CROPS[2][0] - levels[2].shape[-1]
        padding = twice // 2
        ok = twice >= 0 and twice % 2 == 0 and all(
            (level.shape[-1] + 2 * (step * padding) - side) == step * (size - 1)
            for level, (side, step) in zip(levels, _REFINE_CROPS))
        if not ok:
            raise ValueError(f"refine: maps of sides {[int(m.shape[-1]) for m in levels]} do not line up with a "
                             f"{size} × {size} correlation map")
        return padding

    def forward(self, levels: Sequence[torch.Tensor], corr: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Mask logits (N, 127, 127) at ``positions`` (N, 3) int64 (batch index, row, column) of ``corr``."""
        padding = self.level_padding(levels, corr.shape[-1])
        p0, p1, p2 = (crop_windows(level, positions, side, step, step * padding)
                      for level, (side, step) in zip(levels[:3], _REFINE_CROPS))
        vector = crop_windows(corr, positions, 1, 1, 0)                      # (N, C, 1, 1)
        out = self.deconv(vector)                                              # (N, 32, 15, 15)
        out = self.post0(F.interpolate(self.h2(out) + self.v2(p2), size=_REFINE_SIDES[0], mode="nearest"))
        out = self.post1(F.interpolate(self.h1(out) + self.v1(p1), size=_REFINE_SIDES[1], mode="nearest"))
        out = self.post2(F.interpolate(self.h0(out) + self.v0(p0), size=_REFINE_SIDES[2], mode="nearest"))
        return out[:, 0]


class TrackOutput(NamedTuple):
    """``track``'s outputs: ``cls`` (B, 2k, S, S) and ``loc`` (B, 4k, S, S) logits / deltas, ``mask`` (B, 63², S, S)
    logits or None, ``corr`` (B, hidden, S, S) the mask branch's correlation (refine and ``mask_at`` input), ``levels``
    (p0, p1, p2) of the search crop (refine input)."""

    cls: torch.Tensor
    loc: torch.Tensor
    mask: Optional[torch.Tensor]
    corr: torch.Tensor
    levels: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class SiamMaskOutput(NamedTuple):
    """``forward``'s outputs for the losses: ``cls``, ``loc`` (None without the RPN), ``mask`` (B, 63², S, S) or None,
    ``refined`` (N, 127, 127) mask logits at ``refine_at`` or None."""

    cls: Optional[torch.Tensor]
    loc: Optional[torch.Tensor]
    mask: Optional[torch.Tensor]
    refined: Optional[torch.Tensor]


def foreground_probability(cls: torch.Tensor, anchor_num: int = ANCHOR_NUM) -> torch.Tensor:
    """Softmax over the two classes of each anchor: (B, 2k, S, S) logits → (B, k, S, S) object probability."""
    batch, _, height, width = cls.shape
    return torch.softmax(cls.reshape(batch, 2, anchor_num, height, width), dim=1)[:, 1]


class SiamMask(nn.Module):
    """SiamMask on a backbone of the shared registry whose ``levels`` name p0, p1, p2, p3 and the adjusted map
    (``networks.backbones.SiamMaskResNet``). ``hidden``: width of the correlation heads (reference 256);
    ``refine``: build the sharp variant's refine module (False: base model only)."""

    def __init__(self, backbone: nn.Sequential, *, hidden: int = 256, anchor_num: int = ANCHOR_NUM,
                 mask_size: int = MASK_SIZE, refine: bool = True) -> None:
        super().__init__()
        self.features = LevelFeatures(backbone, backbone.levels)
        channels = [level.channels for level in self.features.feature_info]
        self.anchor_num, self.mask_size = anchor_num, mask_size
        self.rpn = RPN(channels[-1], hidden, anchor_num)
        self.mask_branch = DepthCorr(channels[-1], hidden, mask_size * mask_size)
        self.refinement = Refine(channels[:3], hidden) if refine else None

    @property
    def backbone(self) -> nn.Sequential:
        return self.features.trunk

    def parts(self) -> dict[str, nn.Module]:
        """The reference's parameter groups: ``features`` (backbone + adjust), ``rpn``, ``mask``, ``refine``."""
        parts = {"features": self.backbone, "rpn": self.rpn, "mask": self.mask_branch}
        if self.refinement is not None:
            parts["refine"] = self.refinement
        return parts

    def template(self, z: torch.Tensor) -> torch.Tensor:
        """The template's adjusted map zf (B, C, 7, 7): the kernel ``track`` takes."""
        return self.backbone(z)

    def track(self, x: torch.Tensor, kernel: torch.Tensor, *, mask: bool = True, rpn: bool = True) -> TrackOutput:
        """RPN outputs (skipped, as None, with ``rpn=False``), the mask logits of every location (skipped with
        ``mask=False``), the mask correlation and p0, p1, p2 of the search crops ``x``."""
        p0, p1, p2, _, adjusted = self.features(x)
        cls, loc = self.rpn(kernel, adjusted) if rpn else (None, None)
        corr = self.mask_branch.correlate(kernel, adjusted)
        return TrackOutput(cls, loc, self.mask_branch.head(corr) if mask else None, corr, (p0, p1, p2))

    def refine(self, levels: Sequence[torch.Tensor], corr_feature: torch.Tensor, position: torch.Tensor
               ) -> torch.Tensor:
        """Refined mask logits (N, 127, 127) at ``position``: (2,) (row, column) of pair 0 or (N, 3) rows (batch
        index, row, column), int64 tensors (an ONNX input of the refine graph)."""
        if self.refinement is None:
            raise RuntimeError("this SiamMask was built without the refine module (refine=False)")
        return self.refinement(levels, corr_feature, as_positions(position))

    def mask_at(self, corr_feature: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """The base model's mask logits (N, 63, 63) at ``position`` (as for ``refine``): the mask head on the
        correlation vectors of those locations only. Equal to ``track(...).mask`` there in eval mode (the head is
        1×1 convolutions and BN with running statistics)."""
        vector = crop_windows(corr_feature, as_positions(position), 1, 1, 0)
        return self.mask_branch.head(vector).reshape(-1, self.mask_size, self.mask_size)

    def forward(self, z: torch.Tensor, x: torch.Tensor, *, refine_at: Optional[torch.Tensor] = None,
                mask: bool = True, rpn: bool = True) -> SiamMaskOutput:
        """Training pass. Base stage: ``cls``, ``loc`` and the mask logits of every location. Sharp stage: pass
        ``refine_at`` (N, 3) — the locations that the mask loss reads, ``targets.mask_positions`` — and usually
        ``mask=False`` (and ``rpn=False`` when the RPN's loss weights are 0, as in the reference's stage 2)."""
        out = self.track(x, self.template(z), mask=mask, rpn=rpn)
        refined = None if refine_at is None else self.refine(out.levels, out.corr, refine_at)
        return SiamMaskOutput(out.cls, out.loc, out.mask, refined)


class TemplateGraph(nn.Module):
    """Exported template graph: ``z → zf``.

    The graph wrappers share the network's modules; put the wrapper in eval mode before tracing it
    (``TemplateGraph(net).eval()``). ``torch.onnx.export`` traces in eval mode but restores the module's own mode on
    the way out, and a new wrapper is in training mode, so exporting a fresh wrapper leaves ``net`` in training mode."""

    def __init__(self, net: SiamMask) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net.template(z)


class SearchGraph(nn.Module):
    """Exported search graph: ``(x, zf) → (score (B, k, S, S) object probability, loc (B, 4k, S, S) deltas, corr,
    p0, p1, p2)``. The two-way softmax is in the graph, as SiamFC++'s sigmoids; the per-location masks are not (the
    tracker asks the refine or mask graph for the one location it picks)."""

    def __init__(self, net: SiamMask) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, zf: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net.track(x, zf, mask=False)
        return (foreground_probability(out.cls, self.net.anchor_num), out.loc, out.corr, *out.levels)


class RefineGraph(nn.Module):
    """Exported refine graph (sharp model): ``(p0, p1, p2, corr, position (2,) int64 row, column) → mask (1, 127, 127)``
    object probability (sigmoid of the logits)."""

    def __init__(self, net: SiamMask) -> None:
        super().__init__()
        self.net = net

    def forward(self, p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, corr: torch.Tensor,
                position: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net.refine((p0, p1, p2), corr, position))


class MaskGraph(nn.Module):
    """Exported mask graph (base model): ``(corr, position (2,) int64) → mask (1, 63, 63)`` object probability."""

    def __init__(self, net: SiamMask) -> None:
        super().__init__()
        self.net = net

    def forward(self, corr: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net.mask_at(corr, position))
