"""The dependency direction: entry points → tasks (networks/…, trackers/<name>/) → engine / data / evaluate core.
The engine names no task: importing every engine module loads no model, loss or task code."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import importlib, pkgutil, sys
import engine
for info in pkgutil.iter_modules(engine.__path__):
    importlib.import_module("engine." + info.name)
print("\\n".join(sorted(name for name in sys.modules if name.split(".")[0] in {"networks", "trackers", "deploy",
                                                                               "evaluate"})))
"""


def test_engine_imports_no_task_code():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert not {name for name in loaded if name.split(".")[0] in {"networks", "trackers", "deploy"}}, loaded
    assert loaded <= {"evaluate"}, loaded  # the evaluator registry, not an evaluator


def test_tasks_are_found_by_name_or_dotted_path():
    from engine.errors import UserError
    from engine.tasks import task_module

    assert task_module("reid").__name__ == "networks.reid_task"
    assert task_module("classification").build is task_module("reid").build
    with pytest.raises(UserError, match="looked for trackers.nosuchtask.task and networks.nosuchtask_task"):
        task_module("nosuchtask")


CORE_PROBE = """
import importlib, pkgutil, sys
for package in ("data", "evaluate"):
    root = importlib.import_module(package)
    for info in pkgutil.iter_modules(root.__path__):
        importlib.import_module(package + "." + info.name)
print("\\n".join(sorted(sys.modules)))
"""


def test_data_and_evaluate_core_import_no_task_and_not_the_engine_params():
    """No package cycles: data/ and the evaluators sit below the tasks and do not need engine.params."""
    result = subprocess.run([sys.executable, "-c", CORE_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert not {name for name in loaded if name.split(".")[0] in {"networks", "trackers", "deploy"}}, loaded
    assert "engine.params" not in loaded and "engine.trainer" not in loaded
