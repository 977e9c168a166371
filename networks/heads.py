"""Small building blocks of the re-ID heads: AM-softmax (cosine) classifier and margin, the training-time spectral
feature transform, the learned feature mask and feature erasing.

Each piece is independent of the network that uses it (:mod:`networks.pcb`, :mod:`networks.factory`) and of the loss
(:mod:`networks.losses`), so that it can be tested on hand-computed inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ---------------------------------------------------------------------------------------------------------------------
# AM-softmax


class CosineClassifier(nn.Module):
    """``s·cosθ``: logits of L2-normalised features against L2-normalised class weights, no bias.

    The margin of AM-softmax (``s·(cosθ_y − m)`` for the target class) is *not* applied here but by the loss
    (:func:`am_softmax_margin`), which knows the labels and the global step: the network forward needs neither, the
    batch accuracy is measured on the margin-free logits, and evaluation / ONNX export never call the classifier.

    The only parameter is ``weight`` (``num_classes × in_features``), the same name and shape as the bias-free
    ``nn.Linear`` classifier it replaces, so the state dict of a network does not depend on the classifier kind.
    Computed in float32 even under autocast (a bf16 cosine times s = 30 would be off by ~0.1).
    """

    def __init__(self, in_features: int, num_classes: int, scale: float) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"AM-softmax scale must be > 0; found {scale}")
        self.in_features, self.out_features, self.scale = in_features, num_classes, float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        with torch.no_grad():  # random unit-norm class directions
            self.weight.normal_()
            self.weight.div_(self.weight.norm(dim=1, keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            cosine = F.normalize(x.float(), dim=1) @ F.normalize(self.weight.float(), dim=1).t()
            return self.scale * cosine.clamp(-1.0, 1.0)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scale={self.scale}"


def am_softmax_margin(logits: Tensor, labels: Tensor, margin: float, scale: float) -> Tensor:
    """AM-softmax logits from the classifier's ``s·cosθ``: ``s·(cosθ_j − m·[j = y])``, i.e. ``s·m`` subtracted from
    each sample's target logit (a new tensor; `logits` is not modified)."""
    if margin == 0:
        return logits
    target = F.one_hot(labels.long(), logits.shape[1]).to(logits.dtype)
    return logits - (scale * margin) * target


# ---------------------------------------------------------------------------------------------------------------------
# Spectral feature transform


def spectral_affinity(features: Tensor, temperature: float) -> Tensor:
    """Row-stochastic batch affinity ``A = row_softmax(F̂F̂ᵀ / T)`` with ``F̂`` the L2-normalised rows of `features`.

    Why rows: ``(A·F)_i = Σ_j A_ij F_j`` with ``Σ_j A_ij = 1`` makes every sample's new feature a convex combination of
    the features of its batch neighbours (itself included), weighted by similarity — a random-walk step on the batch
    graph. It is the same normalisation that the test-time refinement in :mod:`evaluate.postprocess` applies to the
    top-k gallery items, so training and evaluation propagate features the same way. (The original code used column
    normalisation in training, ``softmax(S, dim=0)``, i.e. the transpose for a symmetric S, and rows at test time.)

    Computed in float32 outside autocast; the row maximum is subtracted before ``exp`` (softmax does it).
    """
    if temperature <= 0:
        raise ValueError(f"spectral temperature must be > 0; found {temperature}")
    with torch.autocast(device_type=features.device.type, enabled=False):
        normed = F.normalize(features.float(), dim=1)
        return torch.softmax(normed @ normed.t() / temperature, dim=1)


def spectral_transform(features: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """``(A·F, A)`` with ``A = spectral_affinity(F, T)`` (float32); gradients flow through both A and F."""
    affinity = spectral_affinity(features, temperature)
    with torch.autocast(device_type=features.device.type, enabled=False):
        return affinity @ features.float(), affinity


# ---------------------------------------------------------------------------------------------------------------------
# Feature mask and feature erasing


class FeatureMask(nn.Module):
    """Per-sample channel mask ``sigmoid(BN(Linear(pooled)))`` in (0, 1), ``pooled`` being the average-pooled trunk map.

    Deterministic in evaluation (BN running statistics), so the network applies it identically in training and
    evaluation. (The original had a dropout before the sigmoid, which made the training mask differ from the
    evaluation one; it is left out.)
    """

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, dim)
        self.bn = nn.BatchNorm1d(dim)
        nn.init.kaiming_normal_(self.fc.weight, mode="fan_out")
        nn.init.zeros_(self.fc.bias)

    def forward(self, pooled: Tensor) -> Tensor:
        return torch.sigmoid(self.bn(self.fc(pooled)))


def erase_band(feature_map: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """Zero one horizontal band of ``int(ratio·H)`` consecutive rows per sample, its first row uniform in
    ``[0, H − band]`` (torch's global RNG unless `generator`); a new tensor. ``band == 0`` returns the input."""
    n, _, h, _ = feature_map.shape
    band = int(ratio * h)
    if band <= 0:
        return feature_map
    start = torch.randint(0, h - band + 1, (n,), generator=generator).to(feature_map.device)
    rows = torch.arange(h, device=feature_map.device)
    erased = (rows[None, :] >= start[:, None]) & (rows[None, :] < start[:, None] + band)  # N×H
    return feature_map * (~erased).to(feature_map.dtype)[:, None, :, None]


class FeatureErasing(nn.Module):
    """:func:`erase_band` in training mode only; the identity in evaluation mode or with ratio 0."""

    def __init__(self, ratio: float) -> None:
        super().__init__()
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"feature erasing ratio must be in [0, 1); found {ratio}")
        self.ratio = float(ratio)

    def forward(self, feature_map: Tensor) -> Tensor:
        if not self.training or self.ratio == 0:
            return feature_map
        return erase_band(feature_map, self.ratio)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}"
