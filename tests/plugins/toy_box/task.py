"""A third task, defined only here (outside the repository's packages), that proves a task plugs into the engine
without an edit to engine/, evaluate/__init__.py or deploy/: regress the box of a bright square in a noisy image.

params.json names it by its dotted path (``"task": "toy_box.task"``, with tests/plugins on the path).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from engine.params import EngineParams
from engine.sections import PositiveInt
from engine.tasks import ParamGroup, TaskParts


class ToyBoxParams(EngineParams):
    task: Literal["toy_box.task"] = Field("toy_box.task", description="This task.")
    img_size: PositiveInt = Field(24, description="Square image side.")
    num_images: PositiveInt = Field(64, description="Training images.")
    batch_size: PositiveInt = Field(16, description="Images per step.")


PARAMS = ToyBoxParams


def square_images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images N×3×S×S float32, boxes N×4 as x1, y1, x2, y2 in [0, 1]) of one bright square each on noise."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.3, (n, 3, size, size)).astype(np.float32)
    boxes = np.zeros((n, 4), dtype=np.float32)
    for i in range(n):
        side = int(rng.integers(size // 4, size // 2))
        x, y = (int(v) for v in rng.integers(0, size - side, 2))
        images[i, :, y:y + side, x:x + side] += 1.5
        boxes[i] = (x / size, y / size, (x + side) / size, (y + side) / size)
    return images, boxes


def box_iou(a, b):
    """IoU of corresponding boxes (x1, y1, x2, y2) of two N×4 tensors or arrays."""
    w = (np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])).clip(min=0)
    h = (np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])).clip(min=0)
    inter = w * h
    area = lambda x: (x[:, 2] - x[:, 0]).clip(min=0) * (x[:, 3] - x[:, 1]).clip(min=0)  # noqa: E731
    return inter / (area(a) + area(b) - inter + 1e-9)


class SquareLoader:
    """Epochs of a fixed image set in a (seed, epoch)-determined order: a pure function of (epoch, step)."""

    def __init__(self, params: ToyBoxParams) -> None:
        import torch

        images, boxes = square_images(params.num_images, params.img_size, params.seed)
        self.images, self.boxes = torch.from_numpy(images), torch.from_numpy(boxes)
        self.batch_size, self.seed = params.batch_size, params.seed
        self.steps_per_epoch = params.num_images // params.batch_size

    def epoch(self, epoch: int, start_step: int = 0):
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
        for step in range(start_step, self.steps_per_epoch):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            yield {"images": self.images[index], "boxes": self.boxes[index]}


def build_model():
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.LazyLinear(4), nn.Sigmoid())


def _materialised(params: ToyBoxParams):
    import torch

    model = build_model()
    model(torch.zeros(1, 3, params.img_size, params.img_size))  # gives the lazy layer its shape
    return model


class BoxLoss:
    def __call__(self, outputs, batch: dict, global_step: int):
        import torch

        l1 = torch.nn.functional.l1_loss(outputs.float(), batch["boxes"])
        with torch.no_grad():
            iou = float(np.mean(box_iou(outputs.float().cpu().numpy(), batch["boxes"].cpu().numpy())))
        return l1, {"l1": l1}, {"batch_iou": iou}


def build(params: ToyBoxParams, rank: int = 0, world_size: int = 1) -> TaskParts:
    model = _materialised(params)
    return TaskParts(model=model, criterion=BoxLoss(), loader=SquareLoader(params),
                     inputs=lambda batch: (batch["images"],),
                     param_groups=[ParamGroup("all", list(model.parameters()), params.lr.base_lr)],
                     state={"img_size": params.img_size})


def rebuild_model(params: ToyBoxParams, checkpoint: dict, path):
    from engine.checkpoint import load_weights_strict

    model = _materialised(params)
    load_weights_strict(model, checkpoint["model"], path)
    return model


class BoxPredictor:
    """What the toy task's evaluators receive: N×3×S×S float32 images in, N×4 boxes out (NumPy both ways)."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import torch

        device = next(self.model.parameters()).device
        with torch.no_grad():
            return self.model(torch.from_numpy(images).to(device)).float().cpu().numpy()


def evaluator_input(model, params: ToyBoxParams) -> BoxPredictor:
    return BoxPredictor(model)


def export_graphs(model, params: ToyBoxParams, checkpoint: dict, batch: int, images_dir=None):
    """One graph, ``images`` → ``boxes``, for ``python -m deploy.export`` (no edit there for this task)."""
    from deploy.export import ExportGraph

    images = square_images(batch, params.img_size, seed=99)[0]
    return [ExportGraph(module=model, inputs={"images": images}, output_names=["boxes"], compared_output="boxes",
                        primary_output="boxes", tolerance=1e-4, metadata={"task": params.task,
                                                                          "img_size": params.img_size},
                        report={"model": "toy convnet", "input_size": [params.img_size, params.img_size],
                                "output_dim": 4, "num_classes": None},
                        inputs_description=f"{batch} synthetic square images")]
