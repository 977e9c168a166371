"""Plain image classification: the re-ID task's code with a classifier network (``networks.factory`` picks it by
``params.task``) and ``classification_evaluate`` as its evaluator."""

from networks.reid_task import PARAMS, build, check_inputs, export_graphs, load_exported, rebuild_model

DEFAULT_EVALUATOR = "classification_evaluate"
__all__ = ["PARAMS", "DEFAULT_EVALUATOR", "build", "check_inputs", "export_graphs", "load_exported",
           "rebuild_model"]
