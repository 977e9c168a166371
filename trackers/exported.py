"""What every tracking task's ``load_exported`` does (offline evaluation of an ONNX export by evaluator.py): the run's
params come from the export's metadata, with eval_params.json's evaluation keys on top."""

from __future__ import annotations


def load_exported_tracker(exported: tuple, model_path: str, eval_params, evaluation_overrides: dict):
    """(tracker factory, params, no class names) from a task's ``exported_tracker(model_path, device)`` result
    `exported` = (tracker factory on ONNX Runtime, the run's params dict as stored in the metadata)."""
    from engine.params import parse_params

    make_tracker, stored = exported
    evaluation = {**stored["evaluation_params"], **evaluation_overrides}
    if eval_params.data_dir:
        evaluation["data_dir"] = eval_params.data_dir
    params = parse_params({**stored, "evaluation_params": evaluation}, f"{model_path} (ONNX metadata)")
    return make_tracker, params, None
