"""Training batches of template/search crop pairs for the trackers (SiamFC++, SiamMask, GOTURN).

Sequences (video sets from :func:`data.sequences.open_sequences`, still-image sets from
:mod:`data.still_images`) → :class:`~data.pair_sampler.PairSampler` pairs → crops (:mod:`data.crops`) → batches:

* **Sampling.** A set is drawn with probability ∝ its ratio and a sequence uniformly within it (video_analyst's rule):
  sequence weight = ratio / (the set's sequences that have a usable frame), so sets that contain unusable sequences
  still get exactly their ratio. A usable frame is a visible one (the set's rule) whose box is valid (w, h > 0).
  A one-frame sequence is a still image: its positive pair is its only frame twice.
* **Crops** (video_analyst ``crop_track_pair`` with its defaults, re-stated in :mod:`data.crops`): the template is the
  box's context square, centred and unaugmented (``template_window``); the search crop is scaled and shifted at random
  (``sample_search_window``). Each crop's border (the part of the window outside the frame) is filled with the
  per-channel mean of *its own* frame. video_analyst fills both with the template frame's mean; for a negative pair
  that paints the search crop's border in another video's colours, a cue that could tell negatives apart without
  looking at the object, and at inference a tracker pads with the mean of the same video anyway.
* **Negative pairs** (template and search from different sequences) take the search crop around the search frame's
  own target, as the reference does: ``search_box`` is that object's box, ``negative`` tells the loss not to treat it
  as the template's object.
* **Determinism.** Which pairs form step s of epoch e is the sampler's pure function of (seed, e, s); the crop
  randomness of the pair at position p of the *global* batch (rank × batch_size + its position) comes from a NumPy
  generator seeded with ``sample_seed(seed, e, s, p)``. So batches do not depend on the number of workers, a rank's
  batch is its slice of the single-process batch of the same global size, and ``epoch(e, start_step)`` is exactly the
  tail of ``epoch(e)`` without drawing, reading or cropping the skipped steps (workers draw each step's pairs).

The crops are pluggable (`PairCrops`): the default, `CropConfig`, makes the Siamese crops above; GOTURN brings its
own (`trackers.goturn.samples`), SiamMask its mask-aware ones (`trackers.siammask.samples`: crops with
``wants_masks = True`` get each positive pair's search-frame mask in ``LoadedPair.search_mask`` when its sequence has
masks, read with ``SequenceSet.mask``; other crops never read a mask). The sampling, frame reading, seeding and error
handling are the same for all.

The Siamese batch is a dict of tensors: ``template`` B×3×Z×Z and ``search`` B×3×X×X (float32 RGB, 0..255, CHW, unnormalised),
``template_box`` and ``search_box`` B×4 (float32 x, y, w, h in crop pixels, continuous coordinates as in
:mod:`data.boxes`), ``negative`` (B, bool).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from data.boxes import is_valid_xywh
from data.crops import channel_mean, crop_image, frame_to_crop, sample_search_window, template_window
from data.loader import _ERROR, StepLoader, load_image, sample_seed
from data.pair_sampler import Pair, PairSampler, SequenceSource
from data.records import DataError
from data.sequences import Sequence as TrackSequence
from data.sequences import SequenceSet


@dataclass(frozen=True)
class CropConfig:
    """Crop sizes and search-crop augmentation. Defaults: SiamFC++ (video_analyst); SiamMask uses 127/255."""

    template_size: int = 127
    search_size: int = 303
    context: float = 0.5
    """Context margin of ``data.crops.context_side``."""
    max_scale: float = 0.3
    """Search side × U(1/(1 + max_scale), 1 + max_scale)."""
    max_shift: float = 0.4
    """Search centre shifted by up to max_shift × side/2 per axis."""

    def __post_init__(self) -> None:
        for name in ("template_size", "search_size"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, found {value}")
        for name in ("context", "max_scale", "max_shift"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, found {getattr(self, name)}")

    def batch(self, pairs: Sequence["LoadedPair"], rngs: Sequence[np.random.Generator]) -> dict:
        """The batch dict of the module docstring: one template and one search crop per pair."""
        crops = [self.crop_pair(pair, rng) for pair, rng in zip(pairs, rngs)]
        return self.stack(pairs, crops)

    def crop_pair(self, pair: "LoadedPair", rng: np.random.Generator) -> tuple:
        """(template crop, template box, search crop, search box, search window) of one pair; see the module
        docstring. The window lets a subclass cut more of the search frame (SiamMask: its mask) the same way."""
        template_mean = channel_mean(pair.template)
        search_mean = template_mean if pair.search is pair.template else channel_mean(pair.search)
        z_window = template_window(pair.template_box, self.context, self.template_size)
        x_window, x_box = sample_search_window(rng, pair.search_box, context=self.context,
                                               template_size=self.template_size, search_size=self.search_size,
                                               max_scale=self.max_scale, max_shift=self.max_shift)
        return (crop_image(pair.template, z_window, template_mean), frame_to_crop(pair.template_box, z_window),
                crop_image(pair.search, x_window, search_mean), x_box, x_window)

    @staticmethod
    def stack(pairs: Sequence["LoadedPair"], crops: Sequence[tuple]) -> dict:
        """The Siamese batch dict of the pairs' `crop_pair` results."""
        templates, template_boxes, searches, search_boxes, _ = zip(*crops)
        return {"template": stack_images(templates), "search": stack_images(searches),
                "template_box": torch.as_tensor(np.stack(template_boxes), dtype=torch.float32),
                "search_box": torch.as_tensor(np.stack(search_boxes), dtype=torch.float32),
                "negative": torch.as_tensor([pair.negative for pair in pairs], dtype=torch.bool)}


@dataclass(frozen=True)
class LoadedPair:
    """A sampled pair with its frames read: H×W×3 uint8 RGB frames and their xywh boxes. A same-frame pair (a still
    image) has ``search is template``."""

    template: np.ndarray
    template_box: np.ndarray
    search: np.ndarray
    search_box: np.ndarray
    negative: bool
    search_mask: Optional[np.ndarray] = None
    """H×W bool mask of the search frame's object, loaded only for crops that ask for masks (``wants_masks``) and
    only when the search frame's sequence has segmentation masks (DAVIS, YouTube-VOS) and the pair is positive."""


class PairCrops(Protocol):
    """What turns a step's loaded pairs into its batch dict (`CropConfig` for the Siamese trackers; another tracker
    brings its own). ``rngs[i]`` is pair i's generator (see the module docstring), its only source of randomness."""

    def batch(self, pairs: Sequence[LoadedPair], rngs: Sequence[np.random.Generator]) -> dict: ...


def wants_masks(crops: PairCrops) -> bool:
    """Whether `crops` uses the search frames' masks (an optional ``wants_masks = True`` attribute; SiamMask's crops).
    Other crops never pay for decoding the annotation PNGs."""
    return bool(getattr(crops, "wants_masks", False))


def sequence_sources(sets: Sequence[SequenceSet], ratios: Optional[Sequence[float]] = None
                     ) -> tuple[list[SequenceSource], list[float]]:
    """The sampler's view of every sequence of `sets`, in order, and their weights (see the module docstring)."""
    ratios = [1.0] * len(sets) if ratios is None else [float(r) for r in ratios]
    if len(ratios) != len(sets) or not all(np.isfinite(r) and r >= 0 for r in ratios):
        raise ValueError(f"ratios must be one finite ratio >= 0 per set ({len(sets)}), found {ratios}")
    sources: list[SequenceSource] = []
    weights: list[float] = []
    for sequence_set, ratio in zip(sets, ratios):
        usable = [_usable_frames(sequence, sequence_set) for sequence in sequence_set.sequences]
        count = sum(bool(flags.any()) for flags in usable)
        if count == 0:
            raise DataError(f"{sequence_set.description}: no sequence has a visible frame with a valid box to train on")
        sources += [SequenceSource(flags, still=flags.size == 1) for flags in usable]
        weights += [ratio / count if flags.any() else 0.0 for flags in usable]
    return sources, weights


def _usable_frames(sequence: TrackSequence, sequence_set: SequenceSet) -> np.ndarray:
    if sequence.visible is None or not sequence.fully_annotated:
        raise DataError(f"{sequence.where or sequence.name}: only the first frame's box is known (a GOT-10k test "
                        f"sequence?); training pairs need a box and visibility flag per frame ({sequence_set.layout} "
                        f"set: {sequence_set.description})")
    return sequence.visible & is_valid_xywh(sequence.boxes)


class _PairDataset(Dataset):
    """Items are (epoch, step); each gives that step's batch dict (or an error marker). Picklable: the sequences, their
    readers (LMDB opens lazily per process), the sampler and the crop maker."""

    def __init__(self, sets: Sequence[SequenceSet], sampler: PairSampler, crops: PairCrops, seed: int) -> None:
        self.sequences = [(sequence_set.reader, sequence) for sequence_set in sets
                          for sequence in sequence_set.sequences]
        # the set of each sequence, to read its masks (SequenceSet.mask) when the crops want them
        self.mask_sets = ([sequence_set for sequence_set in sets for _ in sequence_set.sequences]
                          if wants_masks(crops) else None)
        self.sampler = sampler
        self.crops = crops
        self.seed = seed

    def __len__(self) -> int:
        return self.sampler.steps_per_epoch

    def __getitem__(self, item: tuple[int, int]) -> dict:
        epoch, step = item
        first = self.sampler.rank * self.sampler.batch_size
        pairs = self.sampler.batch(epoch, step)
        rngs = [np.random.default_rng(sample_seed(self.seed, epoch, step, first + position))
                for position in range(len(pairs))]
        try:
            return self.crops.batch([self._load(pair) for pair in pairs], rngs)
        except DataError as err:
            return {_ERROR: str(err)}

    def _frame(self, where: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(H×W×3 uint8 RGB frame, its xywh box) of (sequence index, frame index)."""
        reader, sequence = self.sequences[where[0]]
        return np.asarray(load_image(reader, sequence.frames[where[1]])), sequence.boxes[where[1]]

    def _load(self, pair: Pair) -> LoadedPair:
        template, template_box = self._frame(pair.template)
        search, search_box = (template, template_box) if pair.search == pair.template else self._frame(pair.search)
        return LoadedPair(template, template_box, search, search_box, pair.negative, self._mask(pair))

    def _mask(self, pair: Pair) -> Optional[np.ndarray]:
        """The search frame's object mask (H×W bool) when the crops want masks, the pair is positive and the
        sequence has them; else None."""
        if self.mask_sets is None or pair.negative:
            return None
        index, frame = pair.search
        _, sequence = self.sequences[index]
        if sequence.masks is None or sequence.object_id is None or sequence.masks[frame] is None:
            return None
        return self.mask_sets[index].mask(sequence, frame)


def stack_images(crops: Sequence[np.ndarray]) -> torch.Tensor:
    """B H×W×3 uint8 crops → B×3×H×W float32, C-contiguous: each crop is cast and transposed in one copy into its
    slot (faster than stacking, then transposing the float batch)."""
    height, width, _ = crops[0].shape
    batch = np.empty((len(crops), 3, height, width), dtype=np.float32)
    for slot, crop in zip(batch, crops):
        slot[...] = crop.transpose(2, 0, 1)
    return torch.from_numpy(batch)


class PairLoader(StepLoader):
    """Reproducible batches of template/search pairs (see the module docstring): ``steps_per_epoch`` and
    ``epoch(e, start_step=0)``, as the engine expects of a task's loader.

    `sets`: the training sets, mixed ∝ `ratios` (default: equally); one ``batch_size`` per rank, ``pairs_per_epoch``
    over all ranks; `max_distance` and `negative_ratio` as in :class:`~data.pair_sampler.PairSampler`; `crops` makes
    each step's batch from its loaded pairs (default: the Siamese template/search crops).
    """

    def __init__(self, sets: Sequence[SequenceSet], *, pairs_per_epoch: int, batch_size: int,
                 ratios: Optional[Sequence[float]] = None, max_distance: int = 100, negative_ratio: float = 0.0,
                 crops: PairCrops = CropConfig(), seed: int = 0, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0) -> None:
        if not sets:
            raise ValueError("PairLoader needs at least one sequence set")
        sources, weights = sequence_sources(sets, ratios)
        self.sampler = PairSampler(sources, pairs_per_epoch=pairs_per_epoch, batch_size=batch_size,
                                   max_distance=max_distance, negative_ratio=negative_ratio, seed=seed, rank=rank,
                                   world_size=world_size, weights=weights)
        self.sets = tuple(sets)
        self.crops = crops
        super().__init__(_PairDataset(self.sets, self.sampler, crops, int(seed)), num_workers, seed)

    @property
    def steps_per_epoch(self) -> int:
        return self.sampler.steps_per_epoch

    def _step_items(self, epoch: int) -> list[tuple[int, int]]:
        return [(epoch, step) for step in range(self.steps_per_epoch)]
