"""The re-ID task (and plain image classification, which shares all of it but the head and the evaluator): params,
input checks, model, loss, data, parameter groups and rebuild-from-checkpoint for the engine (the contract:
`engine.tasks`). Cheap to import: what needs torch is imported inside the functions that use it."""

from __future__ import annotations

import logging
from pathlib import Path

from engine.errors import UserError
from engine.tasks import ParamGroup, TaskParts
from networks.reid_export import export_graphs, load_exported
from networks.reid_params import ReidParams

log = logging.getLogger(__name__)
PARAMS = ReidParams
DEFAULT_EVALUATOR = "market_evaluate"
SYNTHETIC_TYPES = ("market", "classes")
__all__ = ["PARAMS", "DEFAULT_EVALUATOR", "build", "check_inputs", "export_graphs", "load_exported",
           "rebuild_model"]


def check_inputs(params: ReidParams) -> None:
    """Before a run starts: the training data exists (or will be generated), and a pretrain snapshot exists."""
    if params.synthetic_data is None and not Path(params.batches_dir).exists():
        raise UserError(f"batches_dir: {params.batches_dir} does not exist (expected a Market-1501 root, a folder "
                        "per identity/class, or an LMDB pack)")
    if params.synthetic_data is not None:
        from data.synthetic import check_target

        if params.synthetic_data.type not in SYNTHETIC_TYPES:
            raise UserError(f"synthetic_data.type: {params.synthetic_data.type!r} makes tracking data; the "
                            f"{params.task} task trains on {' or '.join(map(repr, SYNTHETIC_TYPES))}")
        check_target(params.batches_dir, params.synthetic_data.type)
    if params.pretrain_snapshot and not Path(params.pretrain_snapshot).is_file():
        raise UserError(f"pretrain_snapshot: {params.pretrain_snapshot} does not exist")


def build(params: ReidParams, rank: int = 0, world_size: int = 1) -> TaskParts:
    """Re-ID and image classification share everything but the model head and the default evaluator."""
    from data.formats import open_train_set
    from data.loader import TrainLoader
    from data.samplers import PKBatchSampler, ShuffledBatchSampler
    from data.transforms import build_train_transform
    from networks.factory import build_model
    from networks.losses import build_criterion

    if params.synthetic_data is not None:
        from data.synthetic import ensure_from_params

        ensure_from_params(params.batches_dir, params.synthetic_data)
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
    criterion = ReidLoss(build_criterion(params, image_set.num_classes, image_set.class_names))
    groups = param_groups(model, params.lr.base_lr, params.lr.fc_lr)
    state = {"num_classes": image_set.num_classes, "class_names": list(image_set.class_names)}
    return TaskParts(model, criterion, loader, model_inputs, groups, state, may_leave_parameters_unused(params))


def model_inputs(batch: dict) -> tuple:
    return (batch["images"],)


class ReidLoss:
    """The engine's loss contract around the re-ID criterion: it follows the global step (the AM-softmax margin
    schedule) and reports the batch accuracy and the criterion's statistics (triplet activity, distances, kept heads)
    as scalars to log."""

    def __init__(self, criterion) -> None:
        self.criterion = criterion

    def __call__(self, outputs, batch: dict, global_step: int):
        self.criterion.set_global_step(global_step)
        total, components, accuracy = self.criterion(outputs, batch["labels"], batch["images"])
        return total, components, {"batch_accuracy": accuracy, **self.criterion.last_stats}


def param_groups(model, base_lr: float, fc_lr: float) -> list[ParamGroup]:
    """"backbone" (the trunk, at ``lr.base_lr``) and "head" (everything else, at ``lr.fc_lr``)."""
    from networks.factory import backbone_parameters, head_parameters

    return [ParamGroup("backbone", backbone_parameters(model), base_lr),
            ParamGroup("head", head_parameters(model), fc_lr)]


def may_leave_parameters_unused(params: ReidParams) -> bool:
    """Whether some step can leave trainable parameters out of the loss: heads dropped at random, a spectral head
    gated off until the batch accuracy is reached, or classifiers with no classification loss and no logit
    distillation to train them."""
    m, kd = params.model_params, params.distillation_params
    classifiers_idle = params.tri_loss_params.lambda_cls == 0 and not (kd.enabled and kd.logit_weight > 0)
    return m.random_drop_branchs > 0 or (m.spectral_trans > 0 and m.spectral_start_accuracy > 0) or classifiers_idle


def rebuild_model(params: ReidParams, checkpoint: dict, path: str | Path):
    """The trained model of a checkpoint of this task (in train mode, on the CPU), built from `params` (the ones stored
    in it, possibly with evaluation settings changed) and its recorded number of classes, weights loaded strictly."""
    from engine.checkpoint import CheckpointError, load_weights_strict
    from networks.factory import build_model

    num_classes = checkpoint["task_state"].get("num_classes")
    if not isinstance(num_classes, int):
        raise CheckpointError(f"{path}: its task state has no number of classes (found {checkpoint['task_state']!r})")
    model = build_model(params.task, params.model_params, num_classes, imagenet_pretrain=False,
                        asoftmax_params=params.asoftmax_params)
    load_weights_strict(model, checkpoint["model"], path)
    return model


def load_pretrain_snapshot(model, path: str) -> None:
    """Initialise from a checkpoint (or bare state dict); the classifier is skipped, and said so, only when the
    number of classes differs."""
    from engine.checkpoint import load_file, load_weights_strict, state_dict_of

    state = state_dict_of(load_file(path), path)
    own = model.state_dict()
    skip = tuple(sorted({key.rsplit(".", 1)[0] + "." for key in own if key.startswith("classifier")
                         and key in state and state[key].shape != own[key].shape}))
    if skip:
        log.info("pretrain_snapshot: not loading %s (trained for a different number of classes)", ", ".join(skip))
    load_weights_strict(model, state, path, ignore_prefixes=skip)
    log.info("pretrain_snapshot: loaded %s", path)
