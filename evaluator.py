"""Offline evaluation of a checkpoint or an exported ONNX model.

    python evaluator.py eval_params.json
    python evaluator.py --print-schema

A .pth checkpoint rebuilds its model from the params stored inside it; an .onnx model runs in ONNX Runtime with the
preprocessing recorded in its metadata; ``reference:NAME`` is one of the reference trackers of `trackers.reference`
(no model at all). Prints a table and writes the metrics as JSON to ``result_log_file``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import UserError, run_command


def evaluation_overrides(ep, options) -> dict:
    """The evaluation_params that eval_params.json sets: the evaluator's options (the same keys) and the batch size."""
    overrides = {name: getattr(ep, name) for name in (options.model_fields if options else ())}
    if ep.batch_size is not None:
        overrides["batch_size"] = ep.batch_size
    return overrides


def evaluator_name(ep, task: str | None) -> str:
    """benchmark_type, else the task's default evaluator (got10k_evaluate for a reference tracker)."""
    from engine.tasks import task_module

    if ep.benchmark_type:
        return ep.benchmark_type
    if task is None:
        return "got10k_evaluate"
    return getattr(task_module(task), "DEFAULT_EVALUATOR", None) or "market_evaluate"


def resolve_device(gpus):
    """The first listed GPU, or the CPU for []; the same checks and messages as training's `parallels`."""
    from engine.dist_env import DistEnv
    from engine.distributed import device_for

    return device_for(list(gpus[:1]), DistEnv(), key="gpus")


def load_checkpoint_of(ep):
    from engine.checkpoint import load_checkpoint, resolve_checkpoint_path

    path = resolve_checkpoint_path(ep.model_path)
    return path, load_checkpoint(path)


def model_and_params_from_checkpoint(ep, options, path, ckpt, device):
    """The model as the run evaluated it on the fly: fp32 (evaluation never runs under autocast) in the memory format
    it trained with (channels-last convolutions round differently), so that the numbers are the recorded ones."""
    import torch

    from engine.params import parse_params
    from engine.tasks import task_module

    stored = dict(ckpt["params"])
    if ep.model_params is not None:
        differing = sorted(k for k, v in ep.model_params.items() if stored["model_params"].get(k) != v)
        if differing:
            raise UserError(f"model_params: {', '.join(differing)} differ from the checkpoint's "
                            f"({ {k: stored['model_params'].get(k) for k in differing} }); remove model_params, the "
                            "model is rebuilt from the checkpoint")
    stored["evaluation_params"] = {**stored["evaluation_params"], **evaluation_overrides(ep, options)}
    if ep.data_dir:
        stored["evaluation_params"]["data_dir"] = ep.data_dir
    if ep.img_h:
        stored["img_h"], stored["img_w"] = ep.img_h, ep.img_w or stored["img_w"]
        stored["data_augmentation"] = {**stored["data_augmentation"], "crop_h": 0, "crop_w": 0}
    stored["num_preprocess_workers"] = ep.num_preprocess_workers
    params = parse_params(stored, f"{ep.model_path} (stored params)")
    model = task_module(params.task).rebuild_model(params, ckpt, path)
    model.to(device).eval()
    if params.channels_last:
        model.to(memory_format=torch.channels_last)
    return model, params


@dataclass(frozen=True)
class ReferenceParams:
    """What an evaluator reads of the params when the "model" is a reference tracker: the evaluation section alone
    (there is no task and no training params)."""

    evaluation_params: Any
    task: None = None


def reference_tracker(ep, options):
    """(tracker factory, params) of ``model_path: "reference:NAME"``."""
    from engine.params import evaluation_params_class
    from trackers.reference import reference_factory

    if not ep.data_dir:
        raise UserError(f"data_dir: required when model_path is a reference tracker ({ep.model_path}); set it to "
                        "the tracking data, e.g. a GOT-10k root with a val/ subset")
    evaluation = evaluation_params_class(options)(**{**evaluation_overrides(ep, options), "data_dir": ep.data_dir})
    return reference_factory(ep.model_path), ReferenceParams(evaluation)


def load_exported(task: str, ep, options, device):
    """(what the evaluator receives, params, class names) of an ONNX export, by its task (``load_exported`` of the
    task module: the task knows what its graphs need)."""
    from engine.tasks import task_module

    load = getattr(task_module(task), "load_exported", None)
    if not callable(load):
        raise UserError(f"model_path: {ep.model_path} is an ONNX export of task {task!r}, which has no offline ONNX "
                        "evaluation (its module has no load_exported)")
    return load(ep.model_path, ep, evaluation_overrides(ep, options), device)


def check_result_target(path: Path) -> None:
    """result_log_file is (re)written: refuse a path that holds anything but an earlier result of this tool, so a
    mistyped path cannot overwrite a user's file (params, a checkpoint, notes)."""
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_file():
        raise UserError(f"result_log_file: {path} exists and is not a file; expected a result .json written by "
                        "evaluator.py or a path that does not exist yet")
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        previous = None
    if not (isinstance(previous, dict) and {"model_path", "benchmark_type", "metrics"} <= set(previous)):
        raise UserError(f"result_log_file: {path} exists and is not a result file written by evaluator.py (expected "
                        "a JSON object with model_path, benchmark_type and metrics); refusing to overwrite it: choose "
                        "another result_log_file or remove the file")


def eval_params_schema() -> dict:
    """The JSON Schema of eval_params.json: the shared keys with the options of any evaluator in evaluate/."""
    from engine.params import eval_params_class, json_schema
    from evaluate import available_evaluators, evaluator_options

    classes = {eval_params_class(evaluator_options(name)) for name in available_evaluators()}
    return json_schema(sorted(classes, key=lambda cls: cls.__name__), combinator="anyOf")


def format_table(metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    return "\n".join(f"{k.ljust(width)}  {v:.6f}" if not float(v).is_integer() else f"{k.ljust(width)}  {int(v)}"
                     for k, v in metrics.items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("eval_params", nargs="?", help="the eval_params.json file")
    parser.add_argument("--print-schema", action="store_true",
                        help="print the JSON Schema of eval_params.json and exit")
    args = parser.parse_args(argv)
    if args.print_schema:
        print(json.dumps(eval_params_schema(), indent=2))
        return 0
    if args.eval_params is None:
        parser.error("the eval_params.json file is required (or --print-schema)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)

    from engine.params import parse_eval_params, read_json_file
    from engine.tasks import evaluator_input
    from engine.run_dir import write_text_atomic
    from evaluate import call_evaluator, evaluator_options, get_evaluator
    from evaluate.features import check_cache_target

    data = read_json_file(args.eval_params)
    ep = parse_eval_params(data, args.eval_params)  # the shared keys; the evaluator's options once it is known
    out = Path(ep.result_log_file)
    check_result_target(out)  # before any work: an evaluation must not end by overwriting a user's file
    if ep.feature_path:
        check_cache_target(ep.feature_path)
    device = resolve_device(ep.gpus)
    from trackers.reference import PREFIX as REFERENCE_PREFIX

    is_reference = ep.model_path.startswith(REFERENCE_PREFIX)
    if is_reference:
        task = None
    elif ep.model_path.endswith(".onnx"):
        from deploy.runtime import exported_task

        task = exported_task(ep.model_path)
    else:
        path, ckpt = load_checkpoint_of(ep)
        task = ckpt["task"]
    name = evaluator_name(ep, task)
    key = "benchmark_type" if ep.benchmark_type else "evaluation_params.type"
    run_eval = get_evaluator(name, key=key)
    options = evaluator_options(name, key=key)
    ep = parse_eval_params(data, args.eval_params, options)
    if is_reference:
        model, params = reference_tracker(ep, options)
        class_names = None
    elif ep.model_path.endswith(".onnx"):
        model, params, class_names = load_exported(task, ep, options, device)
    else:
        model, params = model_and_params_from_checkpoint(ep, options, path, ckpt, device)
        model = evaluator_input(params.task, model, params)
        class_names = ckpt["task_state"].get("class_names")
    # the model's class names, for an evaluator that declares `class_names` (classification_evaluate)
    extra = {"class_names": tuple(class_names)} if class_names else {}
    import torch

    with torch.no_grad():
        metrics, primary = call_evaluator(name, run_eval, params, model, device, feature_path=ep.feature_path or None,
                                          model_file=ep.model_path, **extra)
    print(format_table(metrics))
    result = {"model_path": ep.model_path, "benchmark_type": name, "primary": primary, "metrics": metrics}
    check_result_target(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"result_log_file: cannot create the directory of {out} ({err.strerror or err})") from None
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    print(f"metrics written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
