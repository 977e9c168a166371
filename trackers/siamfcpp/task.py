"""The SiamFC++ task for the engine (contract: `engine.tasks`): params, input checks, model, dense-box loss, pair
loader, parameter groups (backbone at ``lr.base_lr``, the rest at ``lr.fc_lr``, stages unfrozen on schedule), the
rebuild from a checkpoint, the tracker its evaluators receive, and its two ONNX graphs. Cheap to import: torch is
imported inside the functions that use it."""

from __future__ import annotations

from data.tracking_sets import check_training_sets, open_training_sets
from engine.errors import UserError
from engine.tasks import ParamGroup, TaskParts
from trackers.siamfcpp.params import SiamFCppParams

PARAMS = SiamFCppParams
DEFAULT_EVALUATOR = "got10k_evaluate"
__all__ = ["PARAMS", "DEFAULT_EVALUATOR", "build", "check_inputs", "evaluator_input", "export_graphs",
           "exported_tracker", "load_exported", "rebuild_model"]


def check_inputs(params: SiamFCppParams) -> None:
    """Before a run starts: the training data exists (or will be generated) and the extra sets exist."""
    check_training_sets(params.batches_dir, params.synthetic_data, params.pair_sampling.extra_datasets)


def build_model(params: SiamFCppParams):
    from networks.backbones import build_backbone
    from trackers.siamfcpp.model import SiamFCpp

    m = params.model_params
    options = {"imagenet_pretrain": m.imagenet_pretrain} if m.imagenet_pretrain is not False else {}
    return SiamFCpp(build_backbone(m.backbone, **options), head_width=m.head_width, head_conv_bn=m.head_conv_bn,
                    z_size=m.z_size, x_size=m.x_size)


class DenseBoxCriterion:
    """The SiamFC++ loss on a pair batch: dense-box targets from the search boxes, then focal + centre-ness + IoU."""

    def __init__(self, params: SiamFCppParams, grid) -> None:
        from trackers.siamfcpp.losses import SiamFCppLoss

        loss = params.loss_params
        self.loss = SiamFCppLoss(loss.focal_alpha, loss.focal_gamma, (1.0, loss.ctr_weight, loss.iou_weight))
        self.grid = grid

    def __call__(self, outputs, batch: dict, global_step: int):
        import torch

        from trackers.siamfcpp.targets import dense_box_targets

        box = batch["search_box"].float()
        xyxy = torch.cat([box[:, :2], box[:, :2] + box[:, 2:]], dim=1)
        targets = dense_box_targets(xyxy, batch["negative"], self.grid.to(xyxy.device))
        total, terms = self.loss(outputs, targets)
        positives = (targets[0] == 1).float().sum(dim=1)
        share = _global_share(positives.sum())
        if share is not None:
            total, terms = total * share, {name: term * share for name, term in terms.items()}
        return total, terms, {"positives_per_pair": float(positives.mean())}


def _global_share(local_positives):
    """Distributed runs: the factor that turns this rank's loss, normalised by its own number of positive locations,
    into W × its share of the global batch's loss (normalised by the positives of all ranks), so that DDP's average
    of the ranks' gradients is the gradient of the one-process loss on the global batch. None in a one-process run.
    Every term of `SiamFCppLoss` is a sum divided by max(#positives, 1), so one factor fits them all."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    total = local_positives.detach().clone()
    dist.all_reduce(total)
    return local_positives.detach().clamp(min=1) * dist.get_world_size() / total.clamp(min=1)


def param_groups(params: SiamFCppParams, model) -> list[ParamGroup]:
    """Backbone stages at base_lr (each from its unfreezing epoch), the rest of the backbone at base_lr from the start,
    neck and head at fc_lr."""
    stages = getattr(model.backbone, "stages", {})
    groups, scheduled = [], set()
    for step in params.unfreeze:
        for stage in step.stages:
            if stage not in stages:
                raise UserError(f"unfreeze: backbone {params.model_params.backbone!r} has no stage {stage!r}; its "
                                f"stages: {', '.join(stages) or 'none'}")
            stage_params = [p for module in stages[stage] for p in module.parameters()]
            groups.append(ParamGroup(f"backbone_{stage}", stage_params, params.lr.base_lr, start_epoch=step.epoch))
            scheduled |= {id(p) for p in stage_params}
    rest = [p for p in model.backbone.parameters() if id(p) not in scheduled]
    if rest:
        groups.append(ParamGroup("backbone", rest, params.lr.base_lr))
    backbone = {id(p) for p in model.backbone.parameters()}
    groups.append(ParamGroup("head", [p for p in model.parameters() if id(p) not in backbone], params.lr.fc_lr))
    return groups


def build(params: SiamFCppParams, rank: int = 0, world_size: int = 1) -> TaskParts:
    from data.pair_loader import CropConfig, PairLoader

    model = build_model(params)
    sampling, m = params.pair_sampling, params.model_params
    sets, ratios = open_training_sets(params.batches_dir, params.synthetic_data, sampling.train_subset,
                                      sampling.extra_datasets)
    loader = PairLoader(sets, pairs_per_epoch=sampling.pairs_per_epoch, batch_size=sampling.batch_size,
                        ratios=ratios, max_distance=sampling.max_distance, negative_ratio=sampling.negative_ratio,
                        crops=CropConfig(m.z_size, m.x_size, sampling.context, sampling.max_scale, sampling.max_shift),
                        seed=params.seed, rank=rank, world_size=world_size,
                        num_workers=params.num_preprocess_workers)
    return TaskParts(model=model, criterion=DenseBoxCriterion(params, model.grid), loader=loader,
                     inputs=lambda batch: (batch["template"], batch["search"]),
                     param_groups=param_groups(params, model),
                     state={"backbone": m.backbone, "z_size": m.z_size, "x_size": m.x_size})


def rebuild_model(params: SiamFCppParams, checkpoint: dict, path):
    from engine.checkpoint import load_weights_strict

    model = build_model(params.model_copy(update={"model_params": params.model_params.model_copy(
        update={"imagenet_pretrain": False})}))  # the checkpoint holds every weight
    load_weights_strict(model, checkpoint["model"], path)
    return model


def evaluator_input(model, params: SiamFCppParams):
    """A tracker factory: a fresh SiamFC++ tracker on this network for every sequence."""
    from trackers.siamfcpp.tracker import SiamFCppTracker, TorchNetwork

    network = TorchNetwork(model, params.tracker_params.x_size)
    return lambda sequence: SiamFCppTracker(network, params.tracker_params, network.score_size)


def export_graphs(model, params: SiamFCppParams, checkpoint: dict, batch: int, images_dir=None):
    from trackers.siamfcpp.export import export_graphs as graphs

    return graphs(model, params)


def exported_tracker(model_path: str, device):
    """(tracker factory on ONNX Runtime, the run's params as stored in the graphs' metadata) of an export."""
    from trackers.siamfcpp.onnx_network import OnnxNetwork
    from trackers.siamfcpp.tracker import SiamFCppTracker

    network = OnnxNetwork.from_export(model_path, prefer_cuda=device.type == "cuda")
    return (lambda sequence: SiamFCppTracker(network, network.tracker_params, network.score_size)), network.params


def load_exported(model_path: str, eval_params, evaluation_overrides: dict, device):
    """Offline evaluation of the exported graphs (evaluator.py): (a tracker factory on ONNX Runtime, the run's params
    from the metadata with eval_params.json's evaluation keys, no class names)."""
    from trackers.exported import load_exported_tracker

    return load_exported_tracker(exported_tracker(model_path, device), model_path, eval_params, evaluation_overrides)
