"""SiamMask's training crops (a `data.pair_loader.PairCrops`): the Siamese template / search crops of
`data.pair_loader.CropConfig` (same windows, same random draws, same images) plus the search frame's object mask cut
with the search crop's window.

Batch keys: ``template`` B×3×Z×Z, ``search`` B×3×X×X (float32 RGB 0..255), ``template_box``, ``search_box`` B×4 (xywh
in crop pixels), ``negative`` (B,) bool — exactly `CropConfig`'s — and ``search_mask`` B×X×X float32 in {0, 1},
``has_mask`` (B,) bool (the pair's search frame came with a mask: a positive pair of a DAVIS / YouTube-VOS set;
all-zero ``search_mask`` rows otherwise, which the targets never read), and the anchor targets of
``trackers.siammask.targets.anchor_targets``: ``anchor_cls`` (B, k, S, S), ``anchor_delta`` (B, 4, k, S, S),
``delta_weight`` (B, k, S, S), ``mask_weight`` (B, S, S).

Why the anchor targets are drawn here and not in the loss: the sharp stage's forward pass needs the mask locations
(``targets.mask_positions`` of ``mask_weight``, which come from the *sampled* positive anchors) as an input, before
the criterion runs. Each pair's targets are drawn from the pair's own generator after its crop (so the crops are
exactly `CropConfig`'s), which makes them a pure function of (seed, epoch, step, position in the global batch):
independent of the number of workers and of processes, like the crops.

The mask crop: the H×W bool mask as float32, warped with the search crop's exact affine map (``data.crops.
crop_image``'s, bilinear, zero outside the frame), then thresholded at 0.5. That is the reference's
``crop_hwc(mask, …, padding=0)`` (``cv2.warpAffine`` bilinear) followed by its ``> 0.5`` label threshold
(``trackers-and-got10k.md`` §3.3). The crop adds no randomness of its own: a pair's images are the same as
`CropConfig` makes from the same generator.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from data.crops import crop_mask
from data.pair_loader import CropConfig, LoadedPair
from trackers.siammask.anchors import training_anchors
from trackers.siammask.targets import TargetConfig, anchor_targets


@functools.lru_cache(maxsize=4)
def _anchors(search_size: int, template_size: int) -> np.ndarray:
    return training_anchors(search_size, template_size)


@dataclass(frozen=True)
class SiamMaskCrops(CropConfig):
    """`CropConfig` with SiamMask's sizes (127 / 255) and the search mask (module docstring)."""

    template_size: int = 127
    search_size: int = 255
    max_scale: float = 0.18
    max_shift: float = 0.5
    targets: TargetConfig = TargetConfig()
    wants_masks = True  # read by data.pair_loader: load the search frames' masks

    def batch(self, pairs: Sequence[LoadedPair], rngs: Sequence[np.random.Generator]) -> dict:
        crops = [self.crop_pair(pair, rng) for pair, rng in zip(pairs, rngs)]
        masks = [None if pair.search_mask is None else crop_mask(pair.search_mask, crop[4])
                 for pair, crop in zip(pairs, crops)]
        search_boxes = [crop[3] for crop in crops]
        anchors = _anchors(self.search_size, self.template_size)
        drawn = [anchor_targets(np.concatenate([box[:2], box[:2] + box[2:]])[None], [pair.negative], anchors, rng,
                                [mask is not None], self.targets)
                 for pair, rng, box, mask in zip(pairs, rngs, search_boxes, masks)]
        search_mask = np.zeros((len(pairs), self.search_size, self.search_size), np.float32)
        for slot, mask in zip(search_mask, masks):
            if mask is not None:
                slot[...] = mask
        return {**self.stack(pairs, crops), "search_mask": torch.from_numpy(search_mask),
                "has_mask": torch.as_tensor([mask is not None for mask in masks], dtype=torch.bool),
                **{key: torch.from_numpy(np.concatenate([getattr(t, name) for t in drawn]))
                   for key, name in (("anchor_cls", "cls"), ("anchor_delta", "delta"),
                                     ("delta_weight", "delta_weight"), ("mask_weight", "mask_weight"))}}
