"""The GOTURN task for the engine (contract: `engine.tasks`): params, input checks, model, L1 regression loss, the
pair loader with GOTURN's samples, parameter groups, the rebuild from a checkpoint, the tracker its evaluators
receive, and its ONNX graph. Cheap to import: torch is imported inside the functions that use it.

**Loss.** L1 between the regressed and the true box (both per crop side × 10), summed over the 4 coordinates and
*averaged* over the step's samples. The reference sums over the batch as well (``L1Loss(size_average=False)`` on 50
samples); averaging makes the learning rate independent of the batch size: the reference's LRs correspond to ours
multiplied by its batch of 50 (base 1e-6 → 5e-5; FC weights 1e-5 → 5e-4, biases 2e-5 → 1e-3).

**Parameter groups.** Towers at ``lr.base_lr`` (none when ``freeze_towers``), FC weights at ``lr.fc_lr``, FC biases at
``fc_bias_lr_factor`` × ``lr.fc_lr`` (reference: ×10 and ×20 the base LR). The reference exempts biases from weight
decay; the engine applies ``weight_decay`` to every trained parameter (5e-4 on a bias of order 1 is negligible).

**Optimiser.** PyTorch's SGD (momentum 0.9 with ``optimizer: "sgd"``). The reference's Caffe-style SGD multiplies the
gradient by the LR *before* the momentum buffer (``buf = m·buf + lr·g``; PyTorch: ``buf = m·buf + g``, then ``lr·buf``).
At a constant LR the two make identical steps; they differ only for about 1/(1 − m) = 10 steps after an LR change,
where Caffe's buffer still carries steps at the old LR: a few dozen steps of a run of thousands with a step schedule,
so we do not offer it.
"""

from __future__ import annotations

from data.tracking_sets import check_training_sets, open_training_sets
from engine.tasks import ParamGroup, TaskParts
from trackers.goturn.params import GoturnParams

PARAMS = GoturnParams
DEFAULT_EVALUATOR = "got10k_evaluate"
__all__ = ["PARAMS", "DEFAULT_EVALUATOR", "build", "check_inputs", "evaluator_input", "export_graphs",
           "exported_tracker", "load_exported", "rebuild_model"]


def check_inputs(params: GoturnParams) -> None:
    """Before a run starts: the training data exists (or will be generated) and the extra sets exist."""
    check_training_sets(params.batches_dir, params.synthetic_data, params.pair_sampling.extra_datasets)


def build_model(params: GoturnParams):
    from networks.backbones import build_backbone
    from trackers.goturn.model import Goturn

    m = params.model_params

    def tower():
        return build_backbone(m.backbone, width=m.tower_width)

    target_tower = tower()
    return Goturn(target_tower, None if m.tied_towers else tower(),
                  feature_shape=target_tower.output_shape(m.input_size), fc_width=m.fc_width,
                  fc_layers=m.fc_layers, dropout=m.dropout, input_size=m.input_size)


class BoxL1Criterion:
    """Per-sample L1 over the 4 coordinates, averaged over the samples (see the module docstring)."""

    def __call__(self, outputs, batch: dict, global_step: int):
        error = (outputs.float() - batch["box"].float()).abs().sum(dim=1)
        loss = error.mean()
        return loss, {"l1": loss}, {}


def param_groups(params: GoturnParams, model) -> list[ParamGroup]:
    towers = [p for name, p in model.named_parameters() if not name.startswith("regressor.")]
    if params.freeze_towers:
        for parameter in towers:
            parameter.requires_grad_(False)
    weights = [p for name, p in model.regressor.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.regressor.named_parameters() if name.endswith("bias")]
    fc_lr = params.lr.fc_lr
    groups = [] if params.freeze_towers else [ParamGroup("towers", towers, params.lr.base_lr)]
    return groups + [ParamGroup("fc_weights", weights, fc_lr),
                     ParamGroup("fc_biases", biases, fc_lr * params.fc_bias_lr_factor)]


def samples(params: GoturnParams):
    from trackers.goturn.motion import MotionModel
    from trackers.goturn.samples import GoturnSamples

    s = params.pair_sampling
    motion = MotionModel(lambda_shift=s.lambda_shift, lambda_scale=s.lambda_scale, min_scale=s.min_scale,
                         max_scale=s.max_scale, context=s.context)
    return GoturnSamples(params.model_params.input_size, s.context, s.examples_per_pair, motion)


def build(params: GoturnParams, rank: int = 0, world_size: int = 1) -> TaskParts:
    from data.pair_loader import PairLoader

    model = build_model(params)
    s = params.pair_sampling
    sets, ratios = open_training_sets(params.batches_dir, params.synthetic_data, s.train_subset, s.extra_datasets)
    loader = PairLoader(sets, pairs_per_epoch=s.pairs_per_epoch, batch_size=s.batch_size, ratios=ratios,
                        max_distance=s.max_distance, negative_ratio=0.0, crops=samples(params), seed=params.seed,
                        rank=rank, world_size=world_size, num_workers=params.num_preprocess_workers)
    m = params.model_params
    return TaskParts(model=model, criterion=BoxL1Criterion(), loader=loader,
                     inputs=lambda batch: (batch["target"], batch["search"]),
                     param_groups=param_groups(params, model),
                     state={"backbone": m.backbone, "input_size": m.input_size, "fc_width": m.fc_width})


def rebuild_model(params: GoturnParams, checkpoint: dict, path):
    from engine.checkpoint import load_weights_strict

    model = build_model(params)
    load_weights_strict(model, checkpoint["model"], path)
    return model


def evaluator_input(model, params: GoturnParams):
    """A tracker factory: a fresh GOTURN tracker on this network for every sequence."""
    from trackers.goturn.tracker import GoturnTracker, TorchRegressor

    network = TorchRegressor(model, params.pair_sampling.context)
    return lambda sequence: GoturnTracker(network)


def export_graphs(model, params: GoturnParams, checkpoint: dict, batch: int, images_dir=None):
    from trackers.goturn.export import export_graphs as graphs

    return graphs(model, params, batch)


def exported_tracker(model_path: str, device):
    """(tracker factory on ONNX Runtime, the run's params as stored in the graph's metadata) of an export."""
    from trackers.goturn.onnx_network import OnnxRegressor
    from trackers.goturn.tracker import GoturnTracker

    network = OnnxRegressor(model_path, prefer_cuda=device.type == "cuda")
    return (lambda sequence: GoturnTracker(network)), network.params


def load_exported(model_path: str, eval_params, evaluation_overrides: dict, device):
    """Offline evaluation of the exported graph (evaluator.py): (a tracker factory on ONNX Runtime, the run's params
    from the metadata with eval_params.json's evaluation keys, no class names)."""
    from trackers.exported import load_exported_tracker

    return load_exported_tracker(exported_tracker(model_path, device), model_path, eval_params, evaluation_overrides)
