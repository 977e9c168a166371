"""GOTURN's training samples from the shared pair loader (`data.pair_loader.PairLoader` with these crops): reference
notes §2.3, without the reference's batch carry-over (each step's batch is exactly its pairs' samples).

For a pair (previous frame with its box, current frame with its box) — two nearby frames of a video, or one still
image twice:

* the **target** crop: the previous frame around the previous box (`trackers.goturn.geometry.crop_window`);
* one **true** sample: the current frame cropped around the *previous* box, labelled with the current box in that
  crop (what tracking sees);
* ``examples_per_pair`` **synthetic** samples: the current frame cropped around a randomly moved copy of the current
  box (`trackers.goturn.motion.MotionModel`), each labelled with the current box in its crop.

Crops are padded with zeros, as the reference's canvas. A batch is a dict of tensors: ``target`` P×3×S×S and
``search`` P·(1 + k)×3×S×S (float32 RGB 0..255; search crops grouped by pair, true sample first) and ``box``
P·(1 + k)×4 (the regression targets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from data.crops import crop_image
from data.pair_loader import LoadedPair, stack_images
from trackers.goturn.geometry import box_to_target, crop_window
from trackers.goturn.motion import MotionModel


@dataclass(frozen=True)
class GoturnSamples:
    input_size: int = 227
    context: float = 2.0
    examples_per_pair: int = 10
    motion: MotionModel = field(default_factory=MotionModel)

    def batch(self, pairs: Sequence[LoadedPair], rngs: Sequence[np.random.Generator]) -> dict:
        targets, searches, boxes = [], [], []
        for pair, rng in zip(pairs, rngs):
            targets.append(crop_image(pair.template, crop_window(pair.template_box, self.context, self.input_size),
                                      "zero"))
            height, width = pair.search.shape[:2]
            centred_on = [pair.template_box] + [self.motion.sample(rng, pair.search_box, (width, height))
                                                for _ in range(self.examples_per_pair)]
            for box in centred_on:
                window = crop_window(box, self.context, self.input_size)
                searches.append(crop_image(pair.search, window, "zero"))
                boxes.append(box_to_target(pair.search_box, window))
        return {"target": stack_images(targets), "search": stack_images(searches),
                "box": torch.as_tensor(np.stack(boxes), dtype=torch.float32)}
