"""The training sets of a tracking task: its ``batches_dir`` (generated first when ``synthetic_data`` asks for it)
and the further sets of ``extra_datasets`` (`data.options.PairDataset`), with their sampling ratios. Shared by the
tracking tasks so that each reads its data the same way. Nothing heavy is imported until a set is opened."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

from data.options import PairDataset, SyntheticDataParams
from engine.errors import UserError

log = logging.getLogger(__name__)


def check_training_sets(batches_dir: str, synthetic_data: Optional[SyntheticDataParams],
                        extra_datasets: Sequence[PairDataset]) -> None:
    """Before a run starts: the training data exists (or will be generated into a folder free for it) and the
    further sets exist."""
    if synthetic_data is None and not Path(batches_dir).exists():
        raise UserError(f"batches_dir: {batches_dir} does not exist (expected a GOT-10k root, a LaSOT/OTB-style "
                        "root or a pack made by `python -m data.pack`)")
    if synthetic_data is not None:
        from data.synthetic import check_target

        check_target(batches_dir, synthetic_data.type)
    for i, extra in enumerate(extra_datasets):
        if not Path(extra.path).exists():
            raise UserError(f"pair_sampling.extra_datasets[{i}].path: {extra.path} does not exist")


def open_training_sets(batches_dir: str, synthetic_data: Optional[SyntheticDataParams], train_subset: str,
                       extra_datasets: Sequence[PairDataset]) -> tuple[list, list[float]]:
    """(the sequence sets to draw pairs from, their ratios): `batches_dir`'s `train_subset` at ratio 1, then each
    further set at its own ratio."""
    from data.sequences import open_sequences
    from data.still_images import open_coco_detection, open_imagenet_det

    openers = {"sequences": lambda extra: open_sequences(extra.path, extra.subset),
               "coco": lambda extra: open_coco_detection(extra.path, split=extra.subset),
               "imagenet_det": lambda extra: open_imagenet_det(extra.path)}
    if synthetic_data is not None:
        from data.synthetic import ensure_from_params

        ensure_from_params(batches_dir, synthetic_data)
    sets, ratios = [open_sequences(batches_dir, train_subset)], [1.0]
    for extra in extra_datasets:
        opened = openers[extra.type](extra)
        sets.append(opened)
        ratios.append(extra.ratio)
    for opened in sets:
        log.info("training data: %s", opened.description)
    return sets, ratios
