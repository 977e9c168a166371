"""What a task supplies to the training engine: model, loss and data.

The engine (`engine.trainer`) knows nothing about re-ID or classification; it asks ``TASK_BUILDERS[params.task]``
for a `TaskParts` and runs the same loop for every task.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from data.formats import open_train_set
from data.loader import TrainLoader
from data.samplers import PKBatchSampler, ShuffledBatchSampler
from data.transforms import build_train_transform
from engine.checkpoint import load_file, load_weights_strict, state_dict_of
from engine.errors import UserError
from engine.params import SyntheticDataParams, TrainParams
from networks.factory import build_model
from networks.losses import build_criterion

log = logging.getLogger(__name__)


@dataclass
class TaskParts:
    model: torch.nn.Module
    criterion: Callable  # (outputs, labels, images) -> (total loss, {component: loss}, batch accuracy)
    loader: TrainLoader
    num_classes: int
    class_names: tuple[str, ...]


def ensure_synthetic_data(root: str | Path, spec: SyntheticDataParams) -> None:
    """Generate the synthetic dataset named by params into `root` unless it is already there."""
    from data import synthetic

    ensure, spec_class = {
        "market": (synthetic.ensure_market, synthetic.MarketSpec),
        "classes": (synthetic.ensure_classes, synthetic.ClassesSpec),
    }[spec.type]
    try:
        generator_spec = spec_class(seed=spec.seed, **spec.options)
    except TypeError as err:
        raise UserError(f"synthetic_data.options: {err}") from None
    if not Path(root).exists():
        log.info("generating synthetic %s dataset into %s", spec.type, root)
    try:
        ensure(Path(root), generator_spec)
    except FileExistsError as err:
        raise UserError(f"batches_dir: {err}") from None


def build_classification_or_reid(params: TrainParams, rank: int = 0, world_size: int = 1) -> TaskParts:
    """Re-ID and image classification share everything but the model head and the default evaluator."""
    if params.synthetic_data is not None:
        ensure_synthetic_data(params.batches_dir, params.synthetic_data)
    image_set = open_train_set(params.batches_dir, params.task)
    log.info("training data: %s", image_set.description)
    labels = [record.label for record in image_set.records]
    sampling = params.batch_sampling_params
    if sampling.class_balanced:
        sampler = PKBatchSampler(labels, sampling.P, sampling.K, params.seed, rank, world_size)
    else:
        sampler = ShuffledBatchSampler(len(labels), sampling.batch_size, params.seed, rank, world_size)
    transform = build_train_transform(params.data_augmentation, params.img_h, params.img_w)
    loader = TrainLoader(image_set, sampler, transform, params.num_preprocess_workers, params.seed)

    model = build_model(params.task, params.model_params, image_set.num_classes, params.imagenet_pretrain,
                        asoftmax_params=params.asoftmax_params)
    if params.pretrain_snapshot:
        load_pretrain_snapshot(model, params.pretrain_snapshot)
    if params.fine_tune:
        model.freeze_trunk()
    criterion = build_criterion(params, image_set.num_classes, image_set.class_names)
    return TaskParts(model, criterion, loader, image_set.num_classes, image_set.class_names)


def load_pretrain_snapshot(model: torch.nn.Module, path: str) -> None:
    """Initialise from a checkpoint (or bare state dict); the classifier is skipped, and said so, only when the
    number of classes differs."""
    state = state_dict_of(load_file(path), path)
    own = model.state_dict()
    skip = tuple(sorted({key.rsplit(".", 1)[0] + "." for key in own if key.startswith("classifier")
                         and key in state and state[key].shape != own[key].shape}))
    if skip:
        log.info("pretrain_snapshot: not loading %s (trained for a different number of classes)", ", ".join(skip))
    load_weights_strict(model, state, path, ignore_prefixes=skip)
    log.info("pretrain_snapshot: loaded %s", path)


TASK_BUILDERS: dict[str, Callable[..., TaskParts]] = {
    "reid": build_classification_or_reid,
    "classification": build_classification_or_reid,
}
