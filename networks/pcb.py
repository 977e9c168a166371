"""Part-based re-ID network (PCB, Sun et al. 2018) with the optional global branch, and the network that carries the
other re-ID methods of the params (spectral feature transform, feature mask, feature erasing).

:class:`PartReidNet` covers both layouts:

* ``n_parts > 0`` (PCB): the last feature map is cut into ``n_parts`` horizontal stripes (:func:`stripe_bounds`);
  each stripe → pool → 1×1 conv (``part_dim`` channels) → BatchNorm → dropout → its own classifier. With
  ``global_dim > 0`` a global branch (pool of the whole map → Linear → BatchNorm → dropout → classifier) is added.
* ``n_parts == 0``: the global branch alone, ``global_dim`` wide — the layout (and the state-dict keys ``embedding``,
  ``bn``, ``classifier``) of :class:`networks.reid_net.ReidNet`, used when a method switch that ReidNet lacks is on.

Outputs, BNNeck layout as ReidNet (the triplet loss sees pre-BN features; classifiers see BN → dropout; the test
descriptor is the BN output, not normalised):

* eval → ``N × descriptor_dim``: the parts' BN outputs concatenated, then the global branch's
  (``descriptor_dim = n_parts·part_dim + global_dim``). ONNX-exportable: the stripe boundaries depend only on the
  (static) input size.
* training → a dict:

  - ``"features"``: the full pre-BN features, same order and width as the descriptor (used by distillation);
  - ``"triplet_features"``: the list of feature sets the triplet loss is applied to (one term each, summed):
    ``triplet_features="parts"`` → [concatenated pre-BN parts]; ``"global"`` → [pre-BN global branch]; ``"both"`` →
    both (the parts only when there is no global branch). Without parts: [the embedding];
  - ``"logits"``: ``[part_1, …, part_n, global]`` heads (the ones that exist);
  - with the spectral transform: ``"spectral_logits"`` (one per head, same order) and ``"spectral_self_affinity"``
    (mean of diag(A), detached, for logging).

Train-only randomness (dropout, feature erasing, the spectral heads) is keyed on the *submodules'* training flags, so
a network whose submodules are in eval mode while the top-level flag is True (how :mod:`networks.distill` runs a
teacher) returns the training-form dict deterministically.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor, nn

from networks.heads import CosineClassifier, FeatureErasing, FeatureMask, spectral_transform
from networks.reid_net import _TrunkNet

TripletFeatures = Literal["parts", "global", "both"]


def trunk_output_height(input_height: int, last_conv_stride: int) -> int:
    """Rows of the ResNet layer4 map for an input `input_height` rows high: the stem conv, the max pool, layer2 and
    layer3 halve it rounding up, and layer4 divides it by `last_conv_stride` rounding up: ceil(H / (16·stride))."""
    return -(-input_height // (16 * last_conv_stride))


def stripe_bounds(height: int, n_parts: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of `n_parts` horizontal stripes over `height` rows.

    Rule: stripe i spans rows ``[b_i, b_{i+1})`` with ``b_i = round(i·height / n_parts)``, rounding half up
    (``b_i = (2·i·height + n_parts) // (2·n_parts)``). The stripes tile the map exactly, their heights differ by at most
    one row, the longer ones are spread evenly (e.g. 16 rows / 6 parts → 3,2,3,3,2,3), and every stripe has at least one
    row when ``height ≥ n_parts`` (smaller heights are refused). The original ``torch.chunk`` gave 3,3,3,3,3,1.
    """
    if n_parts < 1:
        raise ValueError(f"n_parts must be ≥ 1; found {n_parts}")
    if height < n_parts:
        raise ValueError(f"PCB: the last feature map has {height} rows, fewer than pcb_n_parts={n_parts}; each stripe "
                         "needs at least one row (use a taller input, last_conv_stride 1 or fewer parts)")
    edges = [(2 * i * height + n_parts) // (2 * n_parts) for i in range(n_parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _pool(x: Tensor, pooling: str) -> Tensor:
    """N×C×h×w → N×C (avg or max over the spatial positions)."""
    if pooling == "avg":
        return x.mean(dim=(2, 3))
    if pooling == "max":
        return x.amax(dim=(2, 3))
    raise ValueError(f"pooling must be 'avg' or 'max'; found {pooling!r}")


class PartReidNet(_TrunkNet):
    """See the module docstring. ``classifier_scale`` > 0 makes every classifier a :class:`CosineClassifier`
    (AM-softmax; the margin is applied by the loss), else each is a bias-free ``nn.Linear`` initialised N(0, 0.001)."""

    def __init__(self, trunk: nn.Module, trunk_channels: int, num_classes: int, *, n_parts: int = 0,
                 part_dim: int = 0, global_dim: int = 0, dropout: float = 0.5, pooling: str = "avg",
                 feature_mask: bool = False, feature_erasing_ratio: float = 0.0, spectral_temperature: float = 0.0,
                 triplet_features: TripletFeatures = "both", classifier_scale: Optional[float] = None) -> None:
        super().__init__(trunk)
        if n_parts < 0 or global_dim < 0 or (n_parts and part_dim < 1):
            raise ValueError(f"invalid PCB layout: n_parts={n_parts}, part_dim={part_dim}, global_dim={global_dim}")
        if not n_parts and not global_dim:
            raise ValueError("PartReidNet needs parts (n_parts > 0) or a global embedding (global_dim > 0)")
        if triplet_features not in ("parts", "global", "both"):
            raise ValueError(f"triplet_features must be 'parts', 'global' or 'both'; found {triplet_features!r}")
        if triplet_features == "global" and not global_dim:
            raise ValueError("triplet_features='global' needs a global branch (global_dim > 0)")
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max'; found {pooling!r}")
        self.num_classes = num_classes
        self.n_parts, self.part_dim, self.global_dim = n_parts, part_dim if n_parts else 0, global_dim
        self.pooling = pooling
        self.triplet_features = triplet_features
        self.descriptor_dim = self.n_parts * self.part_dim + global_dim
        self.dropout = nn.Dropout(dropout)
        self.erasing = FeatureErasing(feature_erasing_ratio)

        def classifier(dim: int) -> nn.Module:
            if classifier_scale:
                return CosineClassifier(dim, num_classes, classifier_scale)
            linear = nn.Linear(dim, num_classes, bias=False)
            nn.init.normal_(linear.weight, std=0.001)
            return linear

        if n_parts:
            self.embedding_parts = nn.ModuleList(nn.Conv2d(trunk_channels, part_dim, kernel_size=1)
                                                 for _ in range(n_parts))
            self.bn_parts = nn.ModuleList(nn.BatchNorm1d(part_dim) for _ in range(n_parts))
            self.classifier_parts = nn.ModuleList(classifier(part_dim) for _ in range(n_parts))
            for conv in self.embedding_parts:
                nn.init.kaiming_normal_(conv.weight, mode="fan_out")
                nn.init.zeros_(conv.bias)
        if global_dim:  # same names as ReidNet's embedding
            self.embedding = nn.Linear(trunk_channels, global_dim)
            self.bn = nn.BatchNorm1d(global_dim)
            self.classifier = classifier(global_dim)
            nn.init.kaiming_normal_(self.embedding.weight, mode="fan_out")
            nn.init.zeros_(self.embedding.bias)
        # The mask covers the parts (PCB) or the single embedding; never the PCB global branch.
        self.mask = FeatureMask(trunk_channels, self.n_parts * self.part_dim or global_dim) if feature_mask else None
        self.spectral_temperature = float(spectral_temperature)
        for bn in self.modules():
            if isinstance(bn, nn.BatchNorm1d):
                nn.init.ones_(bn.weight)
                nn.init.zeros_(bn.bias)

    def classifiers(self) -> list[nn.Module]:
        """The classifiers in head order: parts, then global."""
        return (list(self.classifier_parts) if self.n_parts else []) + ([self.classifier] if self.global_dim else [])

    def _branches(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """(pre-BN, BN output) per head, in head order, from the trunk map `x`."""
        mask = self.mask(x.mean(dim=(2, 3))) if self.mask is not None else None
        pre: list[Tensor] = []
        if self.n_parts:
            parts = [conv(_pool(x[:, :, top:bottom], self.pooling)[:, :, None, None]).flatten(1)
                     for conv, (top, bottom) in zip(self.embedding_parts, stripe_bounds(x.shape[2], self.n_parts))]
            if mask is not None:
                parts = list(torch.split(torch.cat(parts, dim=1) * mask, self.part_dim, dim=1))
            pre.extend(parts)
        if self.global_dim:
            g = self.embedding(_pool(x, self.pooling))
            if mask is not None and not self.n_parts:
                g = g * mask
            pre.append(g)
        bns = (list(self.bn_parts) if self.n_parts else []) + ([self.bn] if self.global_dim else [])
        return pre, [bn(f) for bn, f in zip(bns, pre)]

    def forward(self, images: Tensor):
        x = self.erasing(self.trunk(images))
        pre, post = self._branches(x)
        if not self.training:
            return torch.cat(post, dim=1)

        head_inputs = [self.dropout(f) for f in post]
        classifiers = self.classifiers()
        outputs = {"features": torch.cat(pre, dim=1),
                   "triplet_features": self._triplet_sets(pre),
                   "logits": [c(f) for c, f in zip(classifiers, head_inputs)]}
        if self.spectral_temperature > 0 and self.dropout.training:
            # One affinity from the whole descriptor propagates every head's features: A·[F_1 … F_H] = [A·F_1 … A·F_H].
            propagated, affinity = spectral_transform(torch.cat(head_inputs, dim=1), self.spectral_temperature)
            widths = [f.shape[1] for f in head_inputs]
            outputs["spectral_logits"] = [c(f) for c, f in zip(classifiers, torch.split(propagated, widths, dim=1))]
            outputs["spectral_self_affinity"] = affinity.diagonal().mean().detach()
        return outputs

    def _triplet_sets(self, pre: list[Tensor]) -> list[Tensor]:
        if not self.n_parts:
            return [pre[0]]
        parts = torch.cat(pre[:self.n_parts], dim=1)
        if not self.global_dim or self.triplet_features == "parts":
            return [parts]
        if self.triplet_features == "global":
            return [pre[-1]]
        return [parts, pre[-1]]
