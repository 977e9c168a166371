"""The task contract: what a task supplies to the engine, and how the engine finds a task by name.

The engine knows no task. For ``params.task`` it imports the task's module lazily; the module supplies:

- ``PARAMS``: its params class, extending `engine.params.EngineParams` with the task's own sections;
- ``build(params, rank=0, world_size=1) -> TaskParts``: model, loss, data, parameter groups, task state;
- ``rebuild_model(params, checkpoint, path)``: the one way to rebuild its model from a checkpoint, used by offline
  evaluation, export and distillation alike;
- ``export_graphs(model, params, checkpoint, batch, images_dir)``: its ONNX graphs (`deploy.export.ExportGraph`);
- optionally ``check_inputs(params)`` (refuse missing or wrong inputs before a run starts), ``RESUMABLE_CHANGES``
  (keys of its own that a resumed run may change, beyond the engine's), ``DEFAULT_EVALUATOR`` and
  ``evaluator_input(model, params)``: what evaluators receive (default: the model in eval mode; a tracker task hands
  them a tracker built around its network).

The module must be cheap to import (torch inside functions): ``start_train`` reads ``PARAMS`` and runs
``check_inputs`` and returns without loading torch.

Where a task lives: ``trackers/<name>/task.py`` or ``networks/<name>_task.py`` for a task of this repository, or any
importable module given by its dotted path (``mypkg.my_task``). Adding a task needs no edit here.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from engine.errors import UserError


@dataclass
class ParamGroup:
    """Parameters trained at one learning rate; ``name`` labels the group in logs and TensorBoard (``train/lr_<name>``)
    and matches it again on resume."""

    name: str
    params: list
    lr: float
    start_epoch: int = 0
    """The group trains from this epoch on (0-based); before it its LR is 0 (scheduled unfreezing)."""


@dataclass
class TaskParts:
    """What a task builds for one training run. A batch is whatever the loader yields (a dict of tensors): the engine
    moves its tensors to the device, calls ``model(*inputs(batch))`` and ``criterion(outputs, batch, global_step) ->
    (total loss, {component: loss}, {name: scalar to log})``, and logs every component and scalar."""

    model: Any  # torch.nn.Module
    criterion: Callable
    loader: Any  # data.loader.TrainLoader (or anything with steps_per_epoch and epoch(e, start_step))
    inputs: Callable  # batch -> tuple of the model's input tensors (the first one's length is the batch size)
    param_groups: list[ParamGroup]
    # JSON-able facts the checkpoint must agree with on resume (re-ID: the number and names of the classes)
    state: dict = field(default_factory=dict)
    # whether a step can leave trainable parameters out of the loss (DistributedDataParallel must be told)
    may_leave_parameters_unused: bool = False


def evaluator_input(task: str, model, params):
    """What the evaluators of `task` receive for `model` (in eval mode)."""
    make = getattr(task_module(task), "evaluator_input", None)
    return make(model, params) if callable(make) else model


def builtin_task_names() -> list[str]:
    """The tasks of this repository, by their files (nothing is imported)."""
    root = Path(__file__).resolve().parent.parent
    names = {path.name[:-len("_task.py")] for path in (root / "networks").glob("*_task.py")}
    names |= {path.parent.name for path in (root / "trackers").glob("*/task.py")}
    return sorted(names)


def task_module(name: str) -> ModuleType:
    """The module of task `name` (see the module docstring); a UserError lists where it was looked for."""
    candidates = [name] if "." in name else [f"trackers.{name}.task", f"networks.{name}_task"]
    for module_name in candidates:
        try:
            found = importlib.util.find_spec(module_name) is not None
        except ModuleNotFoundError:  # a parent package that does not exist
            found = False
        if found:
            module = importlib.import_module(module_name)
            if not callable(getattr(module, "build", None)):
                raise UserError(f"task: module {module_name!r} ({module.__file__}) has no build(params) function")
            return module
    raise UserError(f"task: unknown task {name!r}; looked for {' and '.join(candidates)}")
