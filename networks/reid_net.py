"""Re-ID and classification networks built on a convolutional trunk (see :mod:`networks.backbones`).

Both networks expose ``trunk`` (the backbone, trained at ``base_lr``; everything else is the head, trained at
``fc_lr``), ``descriptor_dim`` (width of the eval-mode output) and ``freeze_trunk()`` (``fine_tune``).
In training mode ``forward`` returns ``{"features": Tensor, "logits": [Tensor, ...]}``; in eval mode a single tensor.
"""

from __future__ import annotations

import torch
from torch import nn


def _global_pool(pooling: str) -> nn.Module:
    if pooling == "avg":
        return nn.AdaptiveAvgPool2d(1)
    if pooling == "max":
        return nn.AdaptiveMaxPool2d(1)
    raise ValueError(f"pooling must be 'avg' or 'max'; found {pooling!r}")


class _TrunkNet(nn.Module):
    """Holds ``trunk`` and implements ``freeze_trunk``: frozen trunk weights and frozen trunk BatchNorm statistics."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.trunk_frozen = False

    def freeze_trunk(self) -> None:
        """Stop training the trunk: its parameters get ``requires_grad=False`` and it stays in eval mode (BatchNorm uses
        and keeps its running statistics) even when ``.train()`` is called on the network."""
        for param in self.trunk.parameters():
            param.requires_grad_(False)
        self.trunk_frozen = True
        self.trunk.eval()

    def train(self, mode: bool = True) -> "_TrunkNet":
        super().train(mode)
        if self.trunk_frozen:
            self.trunk.eval()
        return self


class ReidNet(_TrunkNet):
    """trunk → global pool → Linear(C, feature_dim) → BatchNorm1d → Dropout → Linear(feature_dim, num_classes, no bias).

    BNNeck layout: the triplet loss sees the embedding *before* the BatchNorm (``outputs["features"]``), the classifier
    sees it *after* BatchNorm and dropout, and the test descriptor is the BatchNorm output (no dropout, not
    L2-normalised: the evaluator normalises).

    * training forward → ``{"features": N×feature_dim pre-BN embedding, "logits": [N×num_classes]}`` (a list so that
      part-based models can add heads);
    * eval forward → the ``N×descriptor_dim`` descriptor (ONNX-exportable: no data-dependent Python control flow).
    """

    def __init__(self, trunk: nn.Module, trunk_channels: int, feature_dim: int, num_classes: int, dropout: float,
                 pooling: str = "avg") -> None:
        super().__init__(trunk)
        self.pool = _global_pool(pooling)
        self.embedding = nn.Linear(trunk_channels, feature_dim)
        self.bn = nn.BatchNorm1d(feature_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_dim, num_classes, bias=False)
        self.descriptor_dim = feature_dim
        self.num_classes = num_classes

        nn.init.kaiming_normal_(self.embedding.weight, mode="fan_out")
        nn.init.zeros_(self.embedding.bias)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, images: torch.Tensor):
        pooled = torch.flatten(self.pool(self.trunk(images)), 1)
        embedding = self.embedding(pooled)
        descriptor = self.bn(embedding)
        if not self.training:
            return descriptor
        logits = self.classifier(self.dropout(descriptor))
        return {"features": embedding, "logits": [logits]}


class ClassifierNet(_TrunkNet):
    """Plain image classifier (task "classification"): trunk → global pool → Dropout → Linear(C, num_classes).

    * training forward → ``{"features": N×C pooled trunk features, "logits": [N×num_classes]}``;
    * eval forward → the ``N×num_classes`` logits (``descriptor_dim == num_classes``), which the classification
      evaluator ranks.
    """

    def __init__(self, trunk: nn.Module, trunk_channels: int, num_classes: int, dropout: float,
                 pooling: str = "avg") -> None:
        super().__init__(trunk)
        self.pool = _global_pool(pooling)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(trunk_channels, num_classes)
        self.descriptor_dim = num_classes
        self.num_classes = num_classes

        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, images: torch.Tensor):
        pooled = torch.flatten(self.pool(self.trunk(images)), 1)
        logits = self.classifier(self.dropout(pooled))
        if not self.training:
            return logits
        return {"features": pooled, "logits": [logits]}
