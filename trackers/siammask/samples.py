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

import cv2
import numpy as np
import torch

from data.crops import CropWindow, channel_mean, crop_image, frame_to_crop, sample_search_window, template_window
from data.pair_loader import CropConfig, LoadedPair, stack_images
from trackers.siammask.anchors import training_anchors
from trackers.siammask.targets import TargetConfig, anchor_targets


@functools.lru_cache(maxsize=4)
def _anchors(search_size: int, template_size: int) -> np.ndarray:
    return training_anchors(search_size, template_size)


def crop_mask(mask: np.ndarray, window: CropWindow) -> np.ndarray:
    """out_size × out_size float32 {0, 1} crop of an H×W mask with `window` (the same map as ``crop_image``):
    bilinear, 0 outside the frame, then > 0.5."""
    inv_x, inv_y = 1.0 / window.scale_x, 1.0 / window.scale_y
    dst_to_src = np.array([[inv_x, 0.0, window.x0 + 0.5 * inv_x - 0.5],
                           [0.0, inv_y, window.y0 + 0.5 * inv_y - 0.5]])
    size = int(window.out_size)
    warped = cv2.warpAffine(np.ascontiguousarray(mask, dtype=np.float32), dst_to_src, (size, size),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0.0)
    return (warped > 0.5).astype(np.float32)


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
        templates, template_boxes, searches, search_boxes, masks = [], [], [], [], []
        for pair, rng in zip(pairs, rngs):
            template_mean = channel_mean(pair.template)
            search_mean = template_mean if pair.search is pair.template else channel_mean(pair.search)
            z_window = template_window(pair.template_box, self.context, self.template_size)
            x_window, x_box = sample_search_window(rng, pair.search_box, context=self.context,
                                                   template_size=self.template_size, search_size=self.search_size,
                                                   max_scale=self.max_scale, max_shift=self.max_shift)
            templates.append(crop_image(pair.template, z_window, template_mean))
            template_boxes.append(frame_to_crop(pair.template_box, z_window))
            searches.append(crop_image(pair.search, x_window, search_mean))
            search_boxes.append(x_box)
            masks.append(None if pair.search_mask is None else crop_mask(pair.search_mask, x_window))
        anchors = _anchors(self.search_size, self.template_size)
        drawn = [anchor_targets(np.concatenate([box[:2], box[:2] + box[2:]])[None], [pair.negative], anchors, rng,
                                [mask is not None], self.targets)
                 for pair, rng, box, mask in zip(pairs, rngs, search_boxes, masks)]
        search_mask = np.zeros((len(pairs), self.search_size, self.search_size), np.float32)
        for slot, mask in zip(search_mask, masks):
            if mask is not None:
                slot[...] = mask
        return {"template": stack_images(templates), "search": stack_images(searches),
                "template_box": torch.as_tensor(np.stack(template_boxes), dtype=torch.float32),
                "search_box": torch.as_tensor(np.stack(search_boxes), dtype=torch.float32),
                "negative": torch.as_tensor([pair.negative for pair in pairs], dtype=torch.bool),
                "search_mask": torch.from_numpy(search_mask),
                "has_mask": torch.as_tensor([mask is not None for mask in masks], dtype=torch.bool),
                **{key: torch.from_numpy(np.concatenate([getattr(t, name) for t in drawn]))
                   for key, name in (("anchor_cls", "cls"), ("anchor_delta", "delta"),
                                     ("delta_weight", "delta_weight"), ("mask_weight", "mask_weight"))}}
