"""The params files: the engine's keys, parsed once at the edge, and the machinery every task's params share.

``params.json`` is one flat JSON document, as the seed's. Its ``task`` key (default ``reid``) selects the schema: the
task's params class (``PARAMS`` of the task module, see `engine.tasks`) extends :class:`EngineParams`, the keys every
task shares (working dir, epochs, seed, devices, amp, checkpoints, logging, optimizer and LR schedule, evaluation
schedule), with its own sections. The same declarations generate the JSON Schema (``python train.py
--print-schema``) and the key reference in ``docs/params.md`` (``python -m engine.params --markdown``), so they
cannot drift apart.

Keys of the seed README and of the original code's params.json are accepted under their original names (including
the misspellings ``feature_gobal_dim`` and ``colour_jitering``); where the original behaviour was a bug, the field
description says what this tool does instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AliasChoices, BaseModel, Field, ValidationError, field_validator, model_validator

from engine.errors import UserError
from engine.sections import NonNegInt, PositiveInt, Section

# The task of a params file without a "task" key (the seed's files): what this tool was first made for.
DEFAULT_TASK = "reid"


class ParamsError(UserError):
    """A params file that cannot be used; the message names the file, the key, what was expected and what was found."""


class LrParams(Section):
    base_lr: Annotated[float, Field(gt=0.0)] = Field(0.01, description="Initial learning rate of the backbone.")
    fc_lr: Annotated[float, Field(gt=0.0)] = Field(0.1, description="Initial learning rate of everything that is not "
                                                   "the backbone (embedding, heads, classifiers).")
    decay_gamma: Annotated[float, Field(gt=0.0, le=1.0)] = Field(0.1, description="Factor applied at each decay step.")
    decay_step: list[NonNegInt] = Field([40, 80], description="Epochs (counted from the start of training, not from "
                                        "the end of warm-up as in the original) at which the LR is multiplied by "
                                        "`decay_gamma`.")
    warmup_epoch: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="Linear warm-up length in epochs, applied per iteration from lr/(warm-up iterations) up to "
        "the initial lr; 0 = off.")
    policy: Literal["step", "cosine"] = Field("step", description="After the warm-up: step = multiply by "
                                              "`decay_gamma` at each of `decay_step`; cosine = per iteration from the "
                                              "initial lr down to `final_lr_factor` × it at the last iteration.")
    final_lr_factor: Annotated[float, Field(ge=0.0, le=1.0)] = Field(0.0, description="cosine: the last "
                                                                      "iteration's lr as a fraction of the initial.")

    @field_validator("decay_step")
    @classmethod
    def _sorted(cls, steps: list[int]) -> list[int]:
        if steps != sorted(set(steps)):
            raise ValueError(f"decay_step must be strictly increasing; found {steps}")
        return steps


class EvaluationParams(Section):
    """The evaluation schedule and what every evaluator shares (data, batch size, which metric keeps the best model).
    A task's params extend it with the options of its evaluators (each evaluator's ``OPTIONS``)."""

    type: Optional[str] = Field(None, description="Evaluator run on the fly: market_evaluate, classification_evaluate, "
                                "any file NAME.py in evaluate/ exposing run_eval, or a dotted module path. null = no "
                                "evaluation (the string \"None\" is read as null too).")
    epoch: PositiveInt = Field(1, description="Evaluate every `epoch` epochs and after the last epoch.")
    step: Optional[PositiveInt] = Field(None, description="Also evaluate every `step` global iterations; null = off.")
    data_dir: Optional[str] = Field(None, description="Evaluation data: a Market-1501 root (query/, "
                                    "bounding_box_test/), a root with query/ and gallery/ folders per identity, or a "
                                    "class-folder validation set. null = `batches_dir` when that is a dataset root.")
    best_metric: Optional[str] = Field(None, description="Metric that decides model_best.pth (higher is better); "
                                       "null = the evaluator's primary metric (rank1 for market, top1 for "
                                       "classification).")
    batch_size: Optional[PositiveInt] = Field(None, description="Feature-extraction batch size; null = "
                                              "batch_sampling_params.batch_size.")
    @field_validator("type", mode="before")
    @classmethod
    def _none_string(cls, value: Any) -> Any:
        return None if value in ("None", "none", "") else value


class EngineParams(Section):
    """The keys every task shares (the engine's); a task's params class extends it with the task's own sections."""

    task: str = Field(DEFAULT_TASK, description="The task: reid, classification, a task of this repository "
                      "(trackers/<name>/task.py, networks/<name>_task.py) or a dotted module path. It selects the rest "
                      "of the schema.")
    working_dir: str = Field("runs", description="Parent directory of the run directories.")
    epochs: PositiveInt = Field(60, validation_alias=AliasChoices("epochs", "epoch"),
                                description="Training epochs (`epoch` in the seed README). The loop ends after them "
                                "(the original never ended).")
    lr: LrParams = Field(default_factory=LrParams, description="Learning-rate schedule.")
    optimizer: Literal["sgd", "nesterov", "adam", "amsgrad", "rmsprop"] = Field(
        "sgd", description="sgd and nesterov use momentum 0.9; rmsprop momentum 0.9; adam/amsgrad default betas.")
    weight_decay: Annotated[float, Field(ge=0.0)] = Field(5e-4, description="L2 weight decay (all parameters).")
    num_preprocess_workers: NonNegInt = Field(2, description="Data-loading worker processes (0 = load in the training "
                                              "process).")
    parallels: list[NonNegInt] = Field([], description="CUDA device ids to train on; [] = CPU. A non-empty list on a "
                                       "machine without CUDA is an error.")
    amp: Literal["none", "bf16", "fp16", "auto"] = Field(
        "none", description="Mixed precision: bf16 autocast (CPU or GPU), fp16 with gradient scaling (GPU only), "
        "none = fp32, or auto = bf16 where the device computes it natively (a GPU with bf16; a CPU with AVX512-BF16 "
        "or AMX) and fp32 elsewhere, where emulated bf16 is several times slower (the shipped params.json uses auto). "
        "Measured with bench/train_throughput.py (ResNet-50, 256×128, 64 images per step) on a 2-core CPU with AMX: "
        "bf16 + channels_last 13.6 img/s, fp32 + channels_last 6.5 img/s; on a 2-core AVX2 CPU bf16 was about 5× "
        "slower than fp32.")
    channels_last: bool = Field(True, description="Keep the model's weights and the input batches in channels-last "
                                "(NHWC) memory format, the fast layout for convolutions on the CPU (oneDNN) and for "
                                "tensor cores on the GPU. Checkpoints are unaffected. Default on by measurement "
                                "(bench/train_throughput.py on the 2-core CPU: 13.6 vs 12.3 img/s with bf16; fp32 "
                                "6.5 img/s against 4.4 for a contiguous fp32 torchvision step).")
    compile: bool = Field(False, description="Run the training forward/backward through torch.compile (the first "
                          "steps compile for minutes; evaluation stays eager). On the 2-core CPU it measured no faster "
                          "than eager bf16 + channels_last after a ~6 min compile, hence off by default.")
    sync_bn: bool = Field(False, description="Distributed runs: BatchNorm normalises with the statistics of the "
                          "global batch (all processes; SyncBatchNorm on CUDA, an all-reduce implementation on the "
                          "CPU), as one process with the whole global batch would. false: each process uses its own "
                          "P×K. No effect in a single process.")
    lr_scaling: Literal["none", "linear"] = Field(
        "none", description="Learning rate of a run of W processes (global batch = W × the per-process batch): "
        "none = base_lr and fc_lr as given; linear = base_lr × W and fc_lr × W (Goyal et al.). W = 1 changes nothing.")
    dist_timeout_s: PositiveInt = Field(600, description="Distributed runs: timeout of the collectives of training "
                                        "(and of joining the job). A process that died is noticed at once; one that "
                                        "hangs makes the others fail after this long instead of waiting forever.")
    dist_eval_timeout_s: PositiveInt = Field(7200, description="Distributed runs: how long the other processes wait "
                                             "for rank 0's evaluation (rank 0 evaluates alone) before failing.")
    cpu_threads: NonNegInt = Field(0, description="Threads of the training process's CPU operations "
                                   "(torch.set_num_threads); 0 = PyTorch's default (one per core; a run started "
                                   "with --nproc N gives each process cores / N). On a CPU shared with the loader "
                                   "workers or other jobs fewer threads can be faster (see bench/train_throughput.py "
                                   "--threads).")
    seed: NonNegInt = Field(0, description="Seed of every random choice (init, sampling, augmentation).")
    deterministic: bool = Field(False, description="Use deterministic algorithms (bit-identical resume).")
    nonfinite_loss: Literal["stop", "skip"] = Field(
        "stop", description="A NaN/Inf loss: stop = the run fails with a message naming the step and the loss "
        "component, keeping the last good checkpoint; skip = that step changes nothing (no weight or optimizer "
        "update) and a warning naming the step and component is logged.")
    nonfinite_max_consecutive_skips: PositiveInt = Field(
        10, description="With nonfinite_loss 'skip': at most this many steps in a row are skipped; the next "
        "non-finite loss in a row stops the run as 'stop' does. The count restarts when a run is resumed.")
    log_every_steps: PositiveInt = Field(10, description="Steps between text-log and TensorBoard training scalars.")
    keep_epoch_checkpoints: NonNegInt = Field(3, description="How many end-of-epoch snapshots epoch_NNN.pth to keep "
                                              "for `--resume N` (hard links to latest.pth: no extra disk).")
    evaluation_params: EvaluationParams = Field(default_factory=EvaluationParams,
                                                description="On-the-fly evaluation.")

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        if isinstance(data, dict) and "epoch" in data and "epochs" in data:
            raise ValueError("give either 'epochs' or its seed spelling 'epoch', not both")
        return data


# ---------------------------------------------------------------------------------------------------------------------
# Loading with readable errors


def _closest(word: str, choices: list[str]) -> Optional[str]:
    import difflib

    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return found[0] if found else None


def _section_at(model: type[BaseModel], loc: tuple) -> Optional[type[BaseModel]]:
    """The model class that owns the key at `loc` (ignoring the last element)."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _section_class(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _section_class(annotation: Any) -> Any:
    for candidate in getattr(annotation, "__args__", ()) or (annotation,):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return annotation


def _valid_keys(model: type[BaseModel]) -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(name)
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            keys.extend(str(c) for c in alias.choices)
    return sorted(set(keys))


def _describe(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (set, tuple)) else repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _field_path(model: type[BaseModel], loc: tuple) -> tuple:
    """Drop pydantic's union/validator markers from an error location, keeping field names and list indexes."""
    path, current = [], model
    for part in loc:
        if isinstance(part, int):
            path.append(part)
            continue
        fields = current.model_fields if isinstance(current, type) and issubclass(current, BaseModel) else {}
        if part in fields:
            path.append(part)
            current = _section_class(fields[part].annotation)
        elif not fields and not path:
            path.append(part)
        elif fields and part not in _MARKERS and "[" not in part and "-" not in part:
            path.append(part)  # an unknown key
    return tuple(path)


_MARKERS = {"float", "int", "str", "bool", "list", "dict", "none", "function-after", "function-before"}


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    problems: dict[tuple, list[str]] = {}
    found_at: dict[tuple, Any] = {}
    for item in err.errors(include_url=False):
        if item["type"] in ("extra_forbidden", "missing") and item["loc"]:
            loc = _field_path(model, item["loc"][:-1]) + (item["loc"][-1],)  # the key itself, whatever its text
        else:
            loc = _field_path(model, item["loc"])
        if item["type"] == "extra_forbidden":
            section = _section_at(model, loc)
            hint = _closest(str(loc[-1]), _valid_keys(section)) if section else None
            parent = ".".join(str(p) for p in loc[:-1])
            where = f"{parent}." if parent else ""
            suggestion = f"; did you mean '{where}{hint}'?" if hint else ""
            problems.setdefault(("unknown",) + loc, []).append(suggestion)
            continue
        if item["type"] == "missing":
            problems.setdefault(("missing",) + loc, []).append("")
            continue
        msg = item["msg"].removeprefix("Value error, ")
        problems.setdefault(("value",) + loc, []).append(msg)
        if item["type"] != "value_error" and "input" in item:
            found_at[loc] = item["input"]
    lines = []
    for (kind, *loc), messages in problems.items():
        path = ".".join(str(p) for p in loc)
        if kind == "unknown":
            lines.append(f"{source}: unknown key '{path}'{messages[0]}")
        elif kind == "missing":
            lines.append(f"{source}: missing required key '{path}'")
        else:
            expected = " or ".join(dict.fromkeys(m[0].lower() + m[1:] for m in messages))
            found = f", found {_describe(found_at[tuple(loc)])}" if tuple(loc) in found_at else ""
            where = f"key '{path}': " if path else ""
            lines.append(f"{source}: {where}{expected}{found}")
    return "\n".join(lines)


def params_class(task: Any, source: str = "params") -> type[EngineParams]:
    """The params class of task `task` (its module's ``PARAMS``)."""
    from engine.tasks import task_module

    if not isinstance(task, str):
        raise ParamsError(f"{source}: key 'task': expected a task name (a string), found {_describe(task)}")
    try:
        module = task_module(task)
    except UserError as err:
        raise ParamsError(f"{source}: {err}") from None
    cls = getattr(module, "PARAMS", None)
    if not (isinstance(cls, type) and issubclass(cls, EngineParams)):
        raise ParamsError(f"{source}: task {task!r}: module {module.__name__} has no PARAMS class extending "
                          "engine.params.EngineParams")
    return cls


def parse_params(data: Any, source: str = "params") -> EngineParams:
    """Validate an already-decoded JSON value against its task's schema; raises ParamsError with one line per
    problem."""
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: expected a JSON object at the top level, found {type(data).__name__}")
    cls = params_class(data.get("task", DEFAULT_TASK), source)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ParamsError(format_validation_error(err, cls, source)) from None


def read_json_file(path: str | Path) -> Any:
    """Decode a JSON file; malformed JSON becomes a UserError with line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ParamsError(f"{path}: cannot read: {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ParamsError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None


def load_params(path: str | Path) -> EngineParams:
    return parse_params(read_json_file(path), str(path))


def params_dict(params: EngineParams) -> dict:
    """The resolved params (every default filled in) as a JSON-compatible dict that parses back to the same object;
    a class's ``LEGACY_KEYS`` (older spellings folded into their sections) are left out."""
    return params.model_dump(mode="json", exclude=set(getattr(type(params), "LEGACY_KEYS", ())))


def params_to_json(params: EngineParams) -> str:
    return json.dumps(params_dict(params), indent=2)


def builtin_params_classes() -> dict[type[EngineParams], list[str]]:
    """The params class of every task of this repository, with the task names that use it."""
    from engine.tasks import builtin_task_names

    classes: dict[type[EngineParams], list[str]] = {}
    for name in builtin_task_names():
        classes.setdefault(params_class(name), []).append(name)
    return classes


def json_schema(classes: Optional[list[type[BaseModel]]] = None, combinator: str = "oneOf") -> dict:
    """The JSON Schema of a params file, for editors and validators: one of the given params classes' schemas
    (default: the tasks of this repository; `combinator` "anyOf" where a file may fit several). The older spellings
    that the loader accepts (``epoch``, ``colour_jitering``, …) are properties too, so the schema accepts every file
    the loader accepts."""
    classes = list(builtin_params_classes()) if classes is None else classes
    if len(classes) == 1:
        schema = _class_schema(classes[0], "#/$defs/{model}")
    else:
        schema = {combinator: [_class_schema(cls, f"#/{combinator}/{i}/$defs/{{model}}")
                               for i, cls in enumerate(classes)]}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def _class_schema(model: type[BaseModel], ref_template: str) -> dict:
    schema = model.model_json_schema(by_alias=False, ref_template=ref_template)
    _add_alias_properties(model, schema, schema)
    task = model.model_fields.get("task")
    if task is not None and task.default != DEFAULT_TASK:  # only a file without `task` is a default-task file
        schema["required"] = sorted({*schema.get("required", []), "task"})
    return schema


def _add_alias_properties(model: type[BaseModel], node: dict, root: dict) -> None:
    properties = node.get("properties", {})
    for name, field in model.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices) and name in properties:
            for other in (str(c) for c in alias.choices if c != name):
                properties[other] = {**properties[name], "description": f"Accepted spelling of `{name}`."}
        nested = _section_class(field.annotation)
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            _add_alias_properties(nested, root.get("$defs", {}).get(nested.__name__, {}), root)


# ---------------------------------------------------------------------------------------------------------------------
# Markdown reference generated from the schema


def _type_text(field) -> str:
    return _annotation_text(field.annotation).replace("|", "\\|")


def _annotation_text(annotation: Any) -> str:
    """A reader's name for a field type: constraints dropped (the meaning column states them), unions spelt out."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _annotation_text(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_annotation_text(a) for a in args)
    if origin is Literal:
        values = ", ".join(json.dumps(a) for a in args)
        return values if len(args) == 1 else f"one of {values}"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_annotation_text(a) for a in args)}]"
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def markdown_reference(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"`{prefix}{name}`"
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            others = [c for c in alias.choices if c != name]
            if others:
                key += " (also " + ", ".join(f"`{o}`" for o in others) + ")"
        nested = _section_class(field.annotation)
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            default = "see below" if not field.is_required() else "required"
            rows.append(f"| `{prefix}{name}` | object | {default} | {field.description} |")
            rows.extend(markdown_reference(nested, f"{prefix}{name}."))
            continue
        if field.is_required():
            default = "**required**"
        else:
            value = field.get_default(call_default_factory=True)
            default = f"`{json.dumps(value)}`"
        rows.append(f"| {key} | {_type_text(field)} | {default} | {field.description} |")
    return rows


def markdown_table(model: type[BaseModel]) -> str:
    head = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    return "\n".join(head + markdown_reference(model)) + "\n"




# ---------------------------------------------------------------------------------------------------------------------
# eval_params.json (offline evaluation with evaluator.py)


class EvalParams(Section):
    model_path: str = Field(description="Checkpoint of this tool (.pth, e.g. RUN/model_best.pth), a run directory "
                            "(its model_best.pth), an ONNX model exported by `python -m deploy.export` (.onnx), or a "
                            "reference tracker (reference:first_box, reference:noisy_truth). A .pth rebuilds the model "
                            "from the params stored inside it and evaluates it as the run did on the fly (fp32, the "
                            "run's memory format).")
    benchmark_type: Optional[str] = Field(None, description="Evaluator (as evaluation_params.type); null = the "
                                          "task's default: market_evaluate for re-ID checkpoints and ONNX models, "
                                          "classification_evaluate for classification checkpoints, got10k_evaluate "
                                          "for trackers.")
    data_dir: Optional[str] = Field(None, description="Evaluation data (as evaluation_params.data_dir); null = the "
                                    "one the checkpoint was evaluated with. Required for ONNX models, which carry no "
                                    "training params (e.g. the Market-1501 root with query/ and bounding_box_test/).")
    img_h: Optional[PositiveInt] = Field(None, description="Input height; null = the checkpoint's (or the ONNX "
                                         "metadata's). Must match an ONNX model's fixed input size.")
    img_w: Optional[PositiveInt] = Field(None, description="Input width; null = as img_h.")
    batch_size: Optional[PositiveInt] = Field(None, description="Feature-extraction batch size; null = the one the "
                                              "run evaluated with (64 for ONNX models).")
    gpus: list[NonNegInt] = Field([], description="CUDA device ids (the first is used); [] = CPU.")
    num_preprocess_workers: NonNegInt = Field(2, description="Image-decoding worker processes.")
    feature_path: str = Field("", description="Feature cache (.npz, no pickle): reused when it was computed from the "
                              "same model file and images, else (re)written; empty = no cache.")
    result_log_file: str = Field("result.json", description="Where the metrics are written as JSON.")
    model_params: Optional[dict[str, Any]] = Field(None, description="Accepted for compatibility with the original "
                                                   "eval_params.json; if given it must agree with the checkpoint's "
                                                   "model_params (it is never needed).")


def evaluation_params_class(options: Optional[type[BaseModel]]) -> type[EvaluationParams]:
    """An evaluation section with an evaluator's ``OPTIONS`` (None: the engine's keys alone), for params built without
    a task (a reference tracker evaluated offline)."""
    if options is None:
        return EvaluationParams
    return type(f"EvaluationParams[{options.__name__}]", (EvaluationParams, options), {"__module__": __name__})


def eval_params_class(options: Optional[type[BaseModel]]) -> type[EvalParams]:
    """eval_params.json for an evaluator: the shared keys plus the evaluator's ``OPTIONS`` (None: it has none)."""
    if options is None:
        return EvalParams
    return type(f"EvalParams[{options.__name__}]", (EvalParams, options), {"__module__": __name__})


def parse_eval_params(data: Any, source: str = "eval_params", options: Optional[type[BaseModel]] = None) -> EvalParams:
    """Validate eval_params.json against the shared keys and the evaluator's options; without `options` only the
    shared keys are read (to learn which evaluator runs; the options are validated once it is known)."""
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: expected a JSON object at the top level, found {type(data).__name__}")
    cls = eval_params_class(options)
    if options is None:
        data = {key: value for key, value in data.items() if key in EvalParams.model_fields}
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ParamsError(format_validation_error(err, cls, source)) from None


def markdown_reference_doc() -> str:
    """docs/params.md: one table per task's params class, then eval_params.json."""
    parts = ["# Parameter reference\n\nGenerated from the params classes (`python -m engine.params --markdown`); a "
             "test keeps it in sync. `task` selects the table; the keys of `EngineParams` are shared by every task.\n"]
    for cls, names in builtin_params_classes().items():
        tasks = ", ".join(f"`{name}`" for name in names)
        parts.append(f"## params.json: task {tasks} (`{cls.__module__}.{cls.__name__}`)\n\n{markdown_table(cls)}")
    parts.append(f"## eval_params.json (offline evaluation)\n\nThe shared keys, plus the options of the evaluator that "
                 f"runs (below).\n\n{markdown_table(EvalParams)}")
    from evaluate import available_evaluators, evaluator_options

    for name in available_evaluators():
        options = evaluator_options(name)
        if options is not None:
            parts.append(f"## {name} options (`evaluation_params` and `eval_params.json`)\n\n"
                         f"{markdown_table(options)}")
    return "\n".join(parts)


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        from engine import params  # the tasks' classes extend engine.params.EngineParams, not this __main__'s

        sys.stdout.write(params.markdown_reference_doc())
    else:
        sys.exit("usage: python -m engine.params --markdown")
