"""Plain image classification: the re-ID task's code with a classifier network (``networks.factory`` picks it by
``params.task``) and ``classification_evaluate`` as its evaluator."""

from networks.reid_task import build, rebuild_model

__all__ = ["build", "rebuild_model"]
