"""Knowledge distillation from a teacher checkpoint of this tool (``distillation_params``).

Recipe: train the teacher with an ordinary params file (e.g. ``"model": "resnet101"``), then train the student with
the same data and ``"distillation_params": {"teacher_checkpoint": "runs/<teacher run>/model_best.pth"}``.

The teacher is rebuilt from the params stored in its checkpoint (:func:`load_teacher`: ``load_checkpoint`` →
``parse_params`` → ``build_model`` → strict load), put in eval mode with ``requires_grad=False`` on every parameter,
and run under ``torch.no_grad()``. It is not part of the student: not in its state dict, checkpoints or optimizer.

:class:`Distiller` is attached to the criterion (:func:`networks.losses.build_criterion`), which calls
``distiller(images, student_outputs)`` and adds the returned, already weighted components:

* ``kd_logits`` = ``logit_weight · D(teacher ‖ student)`` with D = ``T²·KL`` or ``T²·JS`` between the temperature-T
  softmaxes of each network's class logits, its heads' logits averaged (PCB parts and global branch alike; spectral
  heads excluded, the teacher's are off anyway). Averaging makes the loss independent of the two architectures'
  head layouts and exactly 0 when student = teacher. Needs the same classes (number and names) in both.
* ``kd_features`` = ``feature_weight · L(student features, teacher features)`` on the full pre-BN features
  (``outputs["features"]``; the teacher's are computed the same way): "similarity" compares the batch
  cosine-similarity matrices (any widths), "cosine" the per-image cosine (equal widths).
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.checkpoint import load_checkpoint
from engine.errors import UserError
from engine.params import ParamsError, parse_params
from networks.reid_params import DistillationParams, ReidParams

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------------
# Losses (float32, outside autocast)


def kd_logit_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float, kind: str = "kl") -> Tensor:
    """``T²·KL(p_t ‖ p_s)`` (``kind="kl"``) or ``T²·JS(p_t, p_s)`` (``"js"``), averaged over the batch, with
    ``p = softmax(logits / T)``. Zero when the logits are equal; the teacher side carries no gradient."""
    if temperature <= 0:
        raise ValueError(f"distillation temperature must be > 0; found {temperature}")
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        log_s = F.log_softmax(student_logits.float() / temperature, dim=1)
        log_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
        if kind == "kl":
            divergence = F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)
        elif kind == "js":
            log_m = torch.logsumexp(torch.stack([log_s, log_t]), dim=0) - math.log(2.0)
            divergence = 0.5 * (F.kl_div(log_m, log_t, reduction="batchmean", log_target=True)
                                + F.kl_div(log_m, log_s, reduction="batchmean", log_target=True))
        else:
            raise ValueError(f"logit loss must be 'kl' or 'js'; found {kind!r}")
        return divergence * temperature ** 2


def kd_feature_loss(student: Tensor, teacher: Tensor, kind: str = "similarity") -> Tensor:
    """``"similarity"``: mean squared difference of the N×N cosine-similarity matrices of the batch (widths may
    differ); ``"cosine"``: mean over images of ``1 − cos(student_i, teacher_i)`` (equal widths)."""
    with torch.autocast(device_type=student.device.type, enabled=False):
        s = F.normalize(student.float(), dim=1)
        t = F.normalize(teacher.detach().float(), dim=1)
        if kind == "similarity":
            return (s @ s.t() - t @ t.t()).pow(2).mean()
        if kind == "cosine":
            if s.shape[1] != t.shape[1]:
                raise UserError(f"distillation_params.feature_loss 'cosine' needs equal feature widths; the student's "
                                f"are {s.shape[1]} wide, the teacher's {t.shape[1]}: use feature_loss 'similarity'")
            return (1.0 - (s * t).sum(dim=1)).mean()
        raise ValueError(f"feature loss must be 'similarity' or 'cosine'; found {kind!r}")


# ---------------------------------------------------------------------------------------------------------------------
# The teacher


@contextmanager
def training_form(model: nn.Module) -> Iterator[nn.Module]:
    """Run `model`'s training-form forward (the dict with "features" and "logits") with every submodule in eval mode:
    BatchNorm uses its running statistics, dropout, feature erasing and spectral heads are off. Only the top-level
    ``training`` flag is set (the networks of this tool pick the output form from it); it is reset on exit."""
    model.eval()
    model.training = True
    try:
        yield model
    finally:
        model.training = False


def load_teacher(path: str | Path) -> tuple[nn.Module, ReidParams, dict]:
    """The teacher network of a checkpoint of this tool, rebuilt from its stored params and loaded strictly, in eval
    mode with ``requires_grad=False``; also its params and the checkpoint's ``num_classes`` / ``class_names``."""
    from engine.tasks import task_module  # the task module imports this one; keep the import local

    data = load_checkpoint(path)
    try:
        teacher_params = parse_params(dict(data["params"]), f"{path} (teacher's stored params)")
    except ParamsError as err:
        raise UserError(f"distillation_params.teacher_checkpoint: {err}") from None
    teacher = task_module(teacher_params.task).rebuild_model(teacher_params, data, path)
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    state = data["task_state"]
    info = {"num_classes": int(state["num_classes"]), "class_names": list(state.get("class_names") or [])}
    return teacher, teacher_params, info


class Distiller:
    """``distiller(images, student_outputs) -> {"kd_logits": Tensor, "kd_features": Tensor}`` (the terms whose weight
    is > 0, already weighted). The teacher follows the images to their device on the first call."""

    def __init__(self, teacher: nn.Module, params: DistillationParams, source: str = "teacher") -> None:
        if params.logit_weight == 0 and params.feature_weight == 0:
            raise ValueError("distillation with logit_weight = feature_weight = 0 teaches nothing")
        self.teacher = teacher.eval()
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.params = params
        self.source = source

    @torch.no_grad()
    def teacher_outputs(self, images: Tensor) -> dict:
        first = next(self.teacher.parameters(), None)
        if first is not None and first.device != images.device:
            self.teacher.to(images.device)
        with training_form(self.teacher) as teacher:
            return teacher(images)

    def __call__(self, images: Tensor, student_outputs: dict) -> dict[str, Tensor]:
        p = self.params
        teacher = self.teacher_outputs(images)
        components: dict[str, Tensor] = {}
        if p.logit_weight > 0:
            target = torch.stack([h.float() for h in teacher["logits"]]).mean(dim=0)
            student = torch.stack([h.float() for h in student_outputs["logits"]]).mean(dim=0)
            if student.shape[1] != target.shape[1]:
                raise UserError(f"distillation: the student has {student.shape[1]} classes, the teacher "
                                f"{self.source} {target.shape[1]}; logit distillation needs the same classes")
            components["kd_logits"] = p.logit_weight * kd_logit_loss(student, target, p.temperature, p.logit_loss)
        if p.feature_weight > 0:
            components["kd_features"] = p.feature_weight * kd_feature_loss(student_outputs["features"],
                                                                           teacher["features"], p.feature_loss)
        return components


def build_distiller(params: ReidParams, num_classes: Optional[int] = None,
                    class_names: Optional[Sequence[str]] = None) -> Optional[Distiller]:
    """The distiller of ``params.distillation_params``, or None when no teacher is given. With logit distillation the
    teacher must have been trained on the student's classes: the same `num_classes` and, when both are known, the
    same `class_names` in the same order (else a UserError)."""
    kd = params.distillation_params
    if not kd.enabled:
        return None
    path = kd.teacher_checkpoint
    teacher, teacher_params, info = load_teacher(path)
    if teacher_params.task != params.task:
        raise UserError(f"distillation_params.teacher_checkpoint: {path} was trained for task "
                        f"{teacher_params.task!r}, this run is {params.task!r}")
    if kd.logit_weight > 0:
        if num_classes is not None and info["num_classes"] != num_classes:
            raise UserError(f"distillation_params.teacher_checkpoint: {path} was trained on {info['num_classes']} "
                            f"classes, the training data has {num_classes}; logit distillation needs the same classes "
                            "(train the teacher on this data, or set logit_weight to 0 and use the feature loss)")
        if class_names and info["class_names"] and list(class_names) != info["class_names"]:
            raise UserError(f"distillation_params.teacher_checkpoint: {path} was trained on other classes (or another "
                            "class order) than the training data; logit distillation needs the same classes")
    log.info("distillation: teacher %s (%s, %s), T=%s, logit %s×%s, feature %s×%s", path,
             teacher_params.model_params.model, type(teacher).__name__, kd.temperature, kd.logit_loss,
             kd.logit_weight, kd.feature_loss, kd.feature_weight)
    return Distiller(teacher, kd, str(path))
