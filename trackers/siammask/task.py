"""The SiamMask task for the engine (contract: `engine.tasks`): params, input checks, model, the two training stages,
mask-aware pair loader, parameter groups, the rebuild from a checkpoint, the tracker its evaluators receive, and its
ONNX graphs. Cheap to import: torch is imported inside the functions that use it.

Stages (``params.stage``, reference recipe ``trackers-and-got10k.md`` §3.5):

* **base**: RPN (cls + loc) and the base mask branch, loss ``cls_weight · cls + loc_weight · loc + mask_weight ·
  mask`` on every location's 63 × 63 mask; adjust layer and heads train from the start at ``lr.fc_lr``; backbone
  layer2 + layer3 from ``unfreeze_epoch`` at ``lr.base_lr`` (`engine.tasks.ParamGroup.start_epoch`); the stem and
  layer1 never train when the backbone starts from ImageNet weights (the reference); from scratch
  (``imagenet_pretrain`` false) they train with layer2 + layer3. A refine module, if built, gets no gradient (``may_leave_parameters_unused``).
* **sharp**: starts from ``base_checkpoint`` (strictly, except the refine module, which a base checkpoint lacks);
  the forward pass skips the RPN and the base mask head and refines the mask locations only; the loss is
  ``mask_weight`` × the refined masks' soft-margin loss (weights 0, 0, mask_weight); only the mask branch (its
  correlation convolutions; its head gets no gradient) and the refine module train, at ``lr.fc_lr``.

Parameters that never train in a stage are frozen for real: ``requires_grad`` False and their BatchNorm layers kept
in eval mode (`StagedSiamMask.train`), so their running statistics stay those of the pretrained / stage-1 weights.

The anchor targets are drawn by the loader (`trackers.siammask.samples`: per pair, from its own seeded generator),
because the sharp stage's forward pass needs the mask locations as an input; the criterion turns them and the search
masks into the loss's targets (`trackers.siammask.targets.siammask_targets`).

Gradient clipping: the reference clips the gradient norm at 10; the engine has no clipping, so none is applied.
"""

from __future__ import annotations

import functools
from pathlib import Path

from data.tracking_sets import check_training_sets, open_training_sets
from engine.errors import UserError
from engine.tasks import ParamGroup, TaskParts
from trackers.siammask.params import SiamMaskParams

PARAMS = SiamMaskParams
DEFAULT_EVALUATOR = "davis_evaluate"
__all__ = ["PARAMS", "DEFAULT_EVALUATOR", "build", "check_inputs", "evaluator_input", "export_graphs",
           "exported_tracker", "load_exported", "rebuild_model"]

BACKBONE_TRAINED = ("layer2", "layer3")   # unfrozen at unfreeze_epoch (stage base)
BACKBONE_HEAD = ("adjust",)               # trains from the start (stage base)


def check_inputs(params: SiamMaskParams) -> None:
    """Before a run starts: the training data exists (or will be generated), the extra sets exist, and stage sharp's
    base checkpoint exists."""
    check_training_sets(params.batches_dir, params.synthetic_data, params.pair_sampling.extra_datasets)
    _check_base_checkpoint(params)


def _check_base_checkpoint(params: SiamMaskParams) -> None:
    if params.stage == "sharp" and not Path(params.base_checkpoint).is_file():
        raise UserError(f"base_checkpoint: {params.base_checkpoint} does not exist (stage sharp starts from the "
                        "stage-1 checkpoint, e.g. runs/siammask_demo/model_best.pth: train stage base first)")


@functools.lru_cache(maxsize=1)
def _staged_class():
    from trackers.siammask.model import SiamMask

    class StagedSiamMask(SiamMask):
        """`SiamMask` with the training stage's forward pass (base: cls, loc, every location's mask; sharp: the refined
        masks at the given locations only) and frozen parts kept in eval mode. Same state dict as `SiamMask`."""

        stage = "base"

        def forward(self, z, x, refine_at=None, **options):  # noqa: D401 - see the class docstring
            if self.stage == "sharp" and not options:
                return super().forward(z, x, refine_at=refine_at, mask=False, rpn=False)
            return super().forward(z, x, refine_at=refine_at, **options)

        def train(self, mode: bool = True):
            super().train(mode)
            if mode:
                for module in self.modules():   # a module whose parameters are all frozen: its whole subtree
                    params = list(module.parameters())
                    if params and not any(p.requires_grad for p in params):
                        module.eval()
            return self

    return StagedSiamMask


def build_model(params: SiamMaskParams):
    from networks.backbones import build_backbone

    m = params.model_params
    options = {"adjust_channels": m.adjust_channels}
    if m.imagenet_pretrain is not False:
        options["imagenet_pretrain"] = m.imagenet_pretrain
    model = _staged_class()(build_backbone(m.backbone, **options), hidden=m.hidden, refine=m.refine)
    model.stage = params.stage
    return model


def backbone_trained(params: SiamMaskParams) -> tuple[str, ...]:
    """Backbone children that train from ``unfreeze_epoch`` in stage base: layer2 and layer3 of a pretrained backbone
    (the reference), every layer of one trained from scratch (a random stem cannot stay frozen)."""
    if params.model_params.imagenet_pretrain is False:
        return ("conv1", "bn1", "layer1") + BACKBONE_TRAINED
    return BACKBONE_TRAINED


def _freeze(params: SiamMaskParams, model) -> None:
    """requires_grad False for what never trains in this stage (module docstring)."""
    if params.stage == "base":
        frozen = [module for name, module in model.backbone.named_children()
                  if name not in backbone_trained(params) + BACKBONE_HEAD]
    else:
        frozen = [model.backbone, model.rpn]
    for module in frozen:
        module.requires_grad_(False)


def load_base_checkpoint(params: SiamMaskParams, model) -> list[str]:
    """Stage sharp: load ``base_checkpoint`` into `model`, every weight strictly except the refine module's, which may
    be absent (a base checkpoint) or present (a sharp one). Returns the refine keys that kept their initialisation."""
    import torch

    from engine.checkpoint import CheckpointError, load_file, state_dict_of

    _check_base_checkpoint(params)
    path = params.base_checkpoint
    state = state_dict_of(load_file(path), path)
    own = model.state_dict()
    refine = {key for key in own if key.startswith("refinement.")}
    missing = sorted(set(own) - set(state) - refine)
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(state)
                    if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        parts = [f"{label}: {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''} ({len(keys)})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
                 if keys]
        raise CheckpointError(f"base_checkpoint {path}: weights do not fit this model ({'; '.join(parts)}); was it "
                              "trained with the same model_params (backbone, adjust_channels, hidden)?")
    kept = sorted(refine - set(state))
    own.update({key: value for key, value in state.items()})
    with torch.no_grad():
        model.load_state_dict(own, strict=True)
    return kept


class SiamMaskCriterion:
    """The SiamMask loss on a batch of `trackers.siammask.samples.SiamMaskCrops`: the loader's anchor targets and
    search masks → `targets.siammask_targets` → `losses.SiamMaskLoss` (sharp: on the refined masks)."""

    def __init__(self, params: SiamMaskParams) -> None:
        from trackers.siammask.losses import SiamMaskLoss

        loss = params.loss_params
        sharp = params.stage == "sharp"
        weights = (0.0, 0.0, loss.mask_weight) if sharp else (loss.cls_weight, loss.loc_weight, loss.mask_weight)
        self.loss = SiamMaskLoss(weights, sharp=sharp)

    def __call__(self, outputs, batch: dict, global_step: int):
        targets = batch_targets(batch)
        total, terms, monitors = self.loss(outputs, targets)
        scalars = {name: float(value) for name, value in monitors.items()}
        scalars["mask_locations_per_pair"] = targets.mask_positions.shape[0] / max(len(batch["negative"]), 1)
        scalars["mask_pairs"] = float(batch["has_mask"].float().mean())
        return total, terms, scalars


def batch_targets(batch: dict):
    """`targets.SiamMaskTargets` of a batch (on its device)."""
    from trackers.siammask.targets import AnchorTargets, mask_labels, siammask_targets

    anchor = AnchorTargets(batch["anchor_cls"], batch["anchor_delta"], batch["delta_weight"], batch["mask_weight"])
    labels = mask_labels(batch["search_mask"]) if bool(batch["has_mask"].any()) else None
    return siammask_targets(anchor, labels, device=batch["search_mask"].device)


def batch_inputs(params: SiamMaskParams):
    """batch → the model's inputs: (template, search), plus the mask locations in stage sharp."""
    if params.stage == "base":
        return lambda batch: (batch["template"], batch["search"])

    from trackers.siammask.targets import mask_positions

    return lambda batch: (batch["template"], batch["search"], mask_positions(batch["mask_weight"]))


def param_groups(params: SiamMaskParams, model) -> list[ParamGroup]:
    """Stage base: adjust + heads (+ refine, which gets no gradient) at fc_lr from the start, layer2 + layer3 at
    base_lr from unfreeze_epoch. Stage sharp: mask branch + refine module at fc_lr. Frozen parts are in no group."""
    if params.stage == "sharp":
        return [ParamGroup("mask", list(model.mask_branch.parameters()), params.lr.fc_lr),
                ParamGroup("refine", list(model.refinement.parameters()), params.lr.fc_lr)]
    children = dict(model.backbone.named_children())
    backbone = [p for name in backbone_trained(params) for p in children[name].parameters()]
    heads = list(children["adjust"].parameters())
    heads += [p for name, p in model.named_parameters() if not name.startswith("features.")]
    return [ParamGroup("heads", heads, params.lr.fc_lr),
            ParamGroup("backbone", backbone, params.lr.base_lr, start_epoch=params.unfreeze_epoch)]


def build(params: SiamMaskParams, rank: int = 0, world_size: int = 1) -> TaskParts:
    import logging

    from data.pair_loader import PairLoader
    from trackers.siammask.samples import SiamMaskCrops
    from trackers.siammask.targets import TargetConfig

    model = build_model(params)
    if params.stage == "sharp":
        kept = load_base_checkpoint(params, model)
        logging.getLogger(__name__).info("stage sharp: loaded %s%s", params.base_checkpoint,
                                         f" (the refine module starts from its initialisation: {len(kept)} tensors "
                                         "not in the checkpoint)" if kept else "")
    _freeze(params, model)
    sampling, loss = params.pair_sampling, params.loss_params
    sets, ratios = open_training_sets(params.batches_dir, params.synthetic_data, sampling.train_subset,
                                      sampling.extra_datasets)
    crops = SiamMaskCrops(sampling.template_size, sampling.search_size, sampling.context, sampling.max_scale,
                          sampling.max_shift,
                          targets=TargetConfig(positive_iou=loss.positive_iou, negative_iou=loss.negative_iou,
                                               max_positives=loss.max_positives, total=loss.total_anchors))
    loader = PairLoader(sets, pairs_per_epoch=sampling.pairs_per_epoch, batch_size=sampling.batch_size,
                        ratios=ratios, max_distance=sampling.max_distance, negative_ratio=sampling.negative_ratio,
                        crops=crops, seed=params.seed, rank=rank, world_size=world_size,
                        num_workers=params.num_preprocess_workers)
    m = params.model_params
    return TaskParts(model=model, criterion=SiamMaskCriterion(params), loader=loader, inputs=batch_inputs(params),
                     param_groups=param_groups(params, model),
                     state={"backbone": m.backbone, "stage": params.stage, "refine": m.refine},
                     # base: the refine module (if built) gets no gradient; sharp: the mask head gets none
                     may_leave_parameters_unused=params.stage == "sharp" or m.refine)


def rebuild_model(params: SiamMaskParams, checkpoint: dict, path):
    from engine.checkpoint import load_weights_strict

    model = build_model(params.model_copy(update={"model_params": params.model_params.model_copy(
        update={"imagenet_pretrain": False})}))  # the checkpoint holds every weight
    load_weights_strict(model, checkpoint["model"], path)
    return model


def evaluator_input(model, params: SiamMaskParams):
    """A tracker factory: a fresh SiamMask tracker on this network for every sequence."""
    from trackers.siammask.tracker import SiamMaskTracker, TorchNetwork

    tracker = params.tracker_params
    network = TorchNetwork(model, tracker.x_size, tracker.mask_source)
    return lambda sequence: SiamMaskTracker(network, tracker)


def export_graphs(model, params: SiamMaskParams, checkpoint: dict, batch: int, images_dir=None):
    from trackers.siammask.export import export_graphs as graphs

    return graphs(model, params)


def exported_tracker(model_path: str, device):
    """(tracker factory on ONNX Runtime, the run's params as stored in the graphs' metadata) of an export."""
    from trackers.siammask.onnx_network import OnnxNetwork
    from trackers.siammask.tracker import SiamMaskTracker

    network = OnnxNetwork.from_export(model_path, prefer_cuda=device.type == "cuda")
    return (lambda sequence: SiamMaskTracker(network, network.tracker_params)), network.params


def load_exported(model_path: str, eval_params, evaluation_overrides: dict, device):
    """Offline evaluation of the exported graphs (evaluator.py): (a tracker factory on ONNX Runtime, the run's params
    from the metadata with eval_params.json's evaluation keys, no class names)."""
    from trackers.exported import load_exported_tracker

    return load_exported_tracker(exported_tracker(model_path, device), model_path, eval_params, evaluation_overrides)
