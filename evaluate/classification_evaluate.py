"""Image-classification evaluation: top-1 / top-5 accuracy on a class-folder validation set.

``evaluation_params.data_dir`` is a folder per class (or a root whose val/ holds them); class folders are mapped to
the training classes by name. Per-class accuracy goes to the log. The primary metric is top1.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from data.formats import CLASS_EVAL_LAYOUT, check_eval_root, open_classification_eval, open_train_set
from engine.errors import UserError

if TYPE_CHECKING:  # the params of the task these evaluators serve; only a type here
    from networks.reid_params import ReidParams

log = logging.getLogger(__name__)
PRIMARY = "top1"


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of samples whose label is among the k highest logits (ties broken by the lower class index)."""
    k = min(k, logits.shape[1])
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(order == labels[:, None], axis=1)))


def _has_class_folders(root: Path) -> bool:
    base = root / "val" if (root / "val").is_dir() else root
    return any(entry.is_dir() and not entry.name.startswith(".") for entry in base.iterdir())


def check_inputs(params: ReidParams) -> None:
    """Before training: the validation data is a folder per class (data that the run generates itself is checked
    when it exists)."""
    ev = params.evaluation_params
    if ev.data_dir is None and params.synthetic_data is not None:
        return
    key = "evaluation_params.data_dir" if ev.data_dir else "evaluation_params.data_dir (not set, so batches_dir)"
    check_eval_root(ev.data_dir or params.batches_dir, key, CLASS_EVAL_LAYOUT, _has_class_folders)


def run_eval(params: ReidParams, model: Callable, device, writer=None,
             global_step: int = 0, class_names=None) -> tuple[dict[str, float], str]:
    # Imported here so that importing this module (start_train checks its inputs) does not load torch.
    from data.loader import build_eval_loader
    from data.transforms import build_eval_transform
    from evaluate.features import extract_features

    data_dir = Path(params.evaluation_params.data_dir or params.batches_dir)
    if class_names is None:
        class_names = open_train_set(params.batches_dir, "classification").class_names
    val = open_classification_eval(data_dir, class_names)
    transform = build_eval_transform(params.img_h, params.img_w, params.data_augmentation)
    batch_size = params.evaluation_params.batch_size or params.batch_sampling_params.batch_size
    logits = extract_features(model, build_eval_loader(val, transform, batch_size, params.num_preprocess_workers),
                              device)
    labels = np.array([r.label for r in val.records], dtype=np.int64)
    if logits.shape[1] != len(class_names):
        raise UserError(f"classification_evaluate: the model outputs {logits.shape[1]} scores but the training set "
                        f"has {len(class_names)} classes; is this a classification model?")
    predictions = logits.argmax(1)
    per_class = {name: float(np.mean(predictions[labels == c] == c)) for c, name in enumerate(class_names)
                 if np.any(labels == c)}
    log.info("per-class accuracy: %s", ", ".join(f"{n}={v:.3f}" for n, v in per_class.items()))
    metrics = {"top1": topk_accuracy(logits, labels, 1), "top5": topk_accuracy(logits, labels, 5),
               "num_images": float(len(labels))}
    return metrics, PRIMARY
