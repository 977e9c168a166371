"""The GOTURN network (reference notes §2.1): a tower for the previous frame's target crop, a tower for the current
frame's search crop, and a fully connected regressor from their concatenated features to the target's box in the
search crop, ``(x1, y1, x2, y2)`` per crop side × 10 (`trackers.goturn.geometry`).

    box = net(target, search)      # (B, 3, S, S) raw RGB 0..255 crops each → (B, 4)

In training each real pair gives one target crop and 1 + k search crops (`trackers.goturn.samples`): ``net(target,
search)`` with ``len(search) = m · len(target)`` runs the target tower once per pair and repeats its features for its
m consecutive search crops, instead of running it m times on copies.

Initialisation (reference ``network.py``): hidden FC weights N(0, 0.005) with bias 1, the output layer N(0, 0.01)
with bias 0. The towers start as their backbone builds them (`networks.caffenet`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

HIDDEN_INIT_STD = 0.005
OUTPUT_INIT_STD = 0.01


def regressor(in_features: int, width: int, layers: int, dropout: float) -> nn.Sequential:
    modules: list[nn.Module] = []
    for i in range(layers):
        linear = nn.Linear(in_features if i == 0 else width, width)
        nn.init.normal_(linear.weight, std=HIDDEN_INIT_STD)
        nn.init.ones_(linear.bias)
        modules += [linear, nn.ReLU(inplace=True), nn.Dropout(dropout)]
    output = nn.Linear(width if layers else in_features, 4)
    nn.init.normal_(output.weight, std=OUTPUT_INIT_STD)
    nn.init.zeros_(output.bias)
    return nn.Sequential(*modules, output)


class Goturn(nn.Module):
    def __init__(self, target_tower: nn.Module, search_tower: Optional[nn.Module], *, feature_shape: tuple[int, ...],
                 fc_width: int = 4096, fc_layers: int = 3, dropout: float = 0.5, input_size: int = 227) -> None:
        """`search_tower` None: both crops go through `target_tower` (tied towers). `feature_shape`: one tower's
        (C, h, w) at `input_size`."""
        super().__init__()
        self.target_tower = target_tower
        self.search_tower = search_tower
        self.input_size = input_size
        features = 1
        for side in feature_shape:
            features *= side
        self.regressor = regressor(2 * features, fc_width, fc_layers, dropout)

    def features(self, target: torch.Tensor, search: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flattened tower features of the target and the search crops."""
        search_tower = self.target_tower if self.search_tower is None else self.search_tower
        return self.target_tower(target).flatten(1), search_tower(search).flatten(1)

    def regress(self, target_features: torch.Tensor, search_features: torch.Tensor) -> torch.Tensor:
        return self.regressor(torch.cat([target_features, search_features], dim=1))

    def forward(self, target: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        target_features, search_features = self.features(target, search)
        if len(search_features) != len(target_features):  # training: each target serves m consecutive searches
            repeats, rest = divmod(len(search_features), len(target_features))
            if rest:
                raise ValueError(f"{len(search_features)} search crops for {len(target_features)} target crops: "
                                 f"expected a multiple")
            target_features = target_features.repeat_interleave(repeats, dim=0)
        return self.regress(target_features, search_features)


class RegressionGraph(nn.Module):
    """The exported graph: ``(target, search) → box``, with equal batches (tracking pairs one target with one
    search crop)."""

    def __init__(self, net: Goturn) -> None:
        super().__init__()
        self.net = net

    def forward(self, target: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        return self.net.regress(*self.net.features(target, search))
