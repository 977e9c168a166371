"""The evaluator registry.

An evaluator is a module exposing ``run_eval``; ``evaluation_params.type`` names it. A bare name ``NAME`` is the file
``evaluate/NAME.py`` (drop a file in this folder and it is available, no other edit); a dotted name
``pkg.module`` is any importable module. The contract (see README, "Writing an evaluator")::

    def run_eval(params, model, device, writer=None, global_step=0) -> tuple[dict[str, float], str]

returns a flat dict of float metrics and the name of the primary one (higher is better). ``params`` is the run's
parsed params (`engine.params.EngineParams` extended by its task's sections); ``model`` is what the task's
``evaluator_input`` hands over: for re-ID and classification a model that maps an image batch to outputs (a torch
module in eval mode, or the ONNX Runtime wrapper offline), for trackers a tracker factory; ``writer`` is the run's
TensorBoard writer (None offline). Optional context keywords an evaluator may declare: ``feature_path`` and ``model_file`` (offline
feature cache), ``class_names`` (classification), ``run_dir`` (the run directory, on the fly only). Only the
keywords a ``run_eval`` declares are passed to it.

An evaluator may declare ``OPTIONS``, a params section (`engine.sections.Section`) of its own keys: a task composes
them into its ``evaluation_params`` and ``evaluator.py`` reads the same keys from ``eval_params.json``. It may also
define ``check_inputs(params)``: ``start_train`` calls it before anything runs, so missing or
wrong evaluation data is refused at once rather than at the first evaluation (hours later on real data). Keep the
module cheap to import (import torch inside functions) so that ``start_train`` returns quickly.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import numbers
import pkgutil
from pathlib import Path
from typing import Callable, Optional

from engine.errors import UserError

_HERE = Path(__file__).resolve().parent
# Modules in this folder that are library code, not evaluators.
_LIBRARY_MODULES = {"metrics", "rerank", "postprocess", "features", "visualize", "reid_data", "tracking_metrics",
                    "tracking_results", "tracking_run", "vot_metrics", "davis_metrics"}


def available_evaluators() -> list[str]:
    names = []
    for info in pkgutil.iter_modules([str(_HERE)]):
        if info.name.startswith("_") or info.name in _LIBRARY_MODULES:
            continue
        names.append(info.name)
    return sorted(names)


class EvaluatorError(UserError):
    """An evaluator that cannot be found, imported, or that returned something other than (metrics, primary)."""


def get_evaluator(name: str, key: str = "evaluation_params.type") -> Callable:
    """The ``run_eval`` of evaluator `name`; a UserError lists the available ones when it does not exist. `key`
    names the params key the name came from, for the message."""
    module = _evaluator_module(name, key)
    run_eval = getattr(module, "run_eval", None)
    if not callable(run_eval):
        raise EvaluatorError(f"{key}: module {module.__name__!r} ({getattr(module, '__file__', '?')}) has no run_eval "
                             "function")
    return run_eval


def evaluator_options(name: str, key: str = "evaluation_params.type"):
    """The evaluator's typed options (``OPTIONS``: a params section whose keys it reads from
    ``evaluation_params`` on the fly and from ``eval_params.json`` offline), or None if it has none."""
    return getattr(_evaluator_module(name, key), "OPTIONS", None)


def check_evaluator_inputs(name: str, params) -> None:
    """Run the evaluator's optional ``check_inputs(params)`` hook, which refuses missing or wrong evaluation data
    before training starts instead of at the first evaluation. Also checks that the evaluator exists."""
    check = getattr(_evaluator_module(name, "evaluation_params.type"), "check_inputs", None)
    get_evaluator(name)
    if callable(check):
        check(params)


def _evaluator_module(name: str, key: str):
    if "." in name:
        module_name = name
        found = importlib.util.find_spec(name.split(".")[0]) is not None
    else:
        module_name = f"evaluate.{name}"
        found = name in available_evaluators()
    if not found:
        raise EvaluatorError(f"{key}: unknown evaluator {name!r}; available: {', '.join(available_evaluators())} "
                             "(or a dotted module path such as mypkg.my_eval)")
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise EvaluatorError(f"{key}: cannot import evaluator module {module_name!r}: {err}") from None


def _where(name: str, run_eval: Optional[Callable]) -> str:
    """'name' (path/to/module.py): which plugin, for messages."""
    module = inspect.getmodule(run_eval) if run_eval is not None else None
    source = getattr(module, "__file__", None)
    return f"{name!r} ({source})" if source else repr(name)


_CONTRACT = "(metrics: dict[str, float], primary: str) with primary one of the metric names"


def check_result(name: str, result, run_eval: Optional[Callable] = None) -> tuple[dict[str, float], str]:
    """Validate what an evaluator returned, so a plugin bug is reported as such (a UserError naming the plugin, what
    run_eval must return and what it returned) and not as a crash elsewhere."""
    where = _where(name, run_eval)
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], dict)):
        found = type(result).__name__
        if isinstance(result, tuple):
            found = f"a tuple of {len(result)} ({', '.join(type(v).__name__ for v in result[:4])})"
        raise EvaluatorError(f"evaluator {where}: run_eval must return {_CONTRACT}; it returned {found}")
    metrics, primary = result
    clean = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise EvaluatorError(f"evaluator {where}: run_eval must return {_CONTRACT}; metric {key!r} is "
                                 f"{value!r} ({type(value).__name__})")
        clean[key] = float(value)
    if not isinstance(primary, str) or primary not in clean:
        raise EvaluatorError(f"evaluator {where}: run_eval must return {_CONTRACT}; primary is {primary!r}, not "
                             f"among {sorted(clean)}")
    return clean, primary


def call_evaluator(name: str, run_eval: Callable, params, model, device, **context) -> tuple[dict[str, float], str]:
    """Call a ``run_eval`` with the context keywords it declares, and validate its result."""
    signature = inspect.signature(run_eval)
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    accepted = {k: v for k, v in context.items() if takes_all or k in signature.parameters}
    return check_result(name, run_eval(params, model, device, **accepted), run_eval)
