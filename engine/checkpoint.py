"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint is a dict of tensors and plain JSON-like values only, so it loads with PyTorch's weights-only unpickler
and a file carrying any other object (a pickle payload) is refused. Layout (``FORMAT_VERSION`` 2)::

    format_version, task, params (the resolved params as a JSON-compatible dict), task_state (what the task records
    and checks on resume; re-ID: num_classes, class_names), model (state dict), optimizer (state dict), epoch / step
    (where to continue: the next epoch and the next step in it), global_step, best {metric, value, epoch}, eval_pending (the evaluation owed at the end of the last epoch
    has not run), eval_history (every evaluation record), rng_torch (CPU generator state), rng_cuda (the generator
    state of every CUDA device, [] without CUDA), grad_scaler (fp16 GradScaler state, or None)

Version 1 (num_classes and class_names at the top level; before eval_pending, eval_history, rng_cuda and
grad_scaler) is read as version 2: its classes become the task state, the rest takes neutral values.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from engine.errors import UserError
from engine.run_dir import write_atomic

FORMAT_VERSION = 2
# Entries a checkpoint may lack (version 1 never has them), at values that mean "nothing to restore".
_OPTIONAL_DEFAULTS = {"eval_pending": False, "eval_history": [], "rng_cuda": [], "grad_scaler": None}
REQUIRED_KEYS = {1: ("format_version", "task", "params", "num_classes", "model"),
                 2: ("format_version", "task", "params", "task_state", "model")}


class CheckpointError(UserError):
    """A checkpoint that cannot be written or used; the message names the file."""


def save_atomic(obj: Any, path: str | Path) -> None:
    """Write `obj` to `path` so that a crash or a full disk at any moment leaves the previous file intact."""
    try:
        write_atomic(Path(path), lambda handle: torch.save(obj, handle))
    except OSError as err:
        raise CheckpointError(f"{path}: cannot write checkpoint ({err.strerror or err}); the previous file, if any, "
                              "is intact") from None


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run directory, which means its model_best.pth."""
    path = Path(path)
    if path.is_dir():
        best = path / "model_best.pth"
        if not best.is_file():
            kept = sorted(p.name for p in path.glob("*.pth"))
            there = f" (there: {', '.join(kept)})" if kept else ""
            raise CheckpointError(f"{path}: a run directory without model_best.pth (no evaluation has finished yet); "
                                  f"give a checkpoint file explicitly{there}")
        return best
    return path


def load_file(path: str | Path) -> Any:
    """torch.load with weights_only=True, turning every failure into one readable CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        operand = re.search(r"Unsupported operand (\d+)", str(err))
        if operand and "global" not in str(err).lower():
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (its bytes are not a weights-only pickle: "
                                  f"unsupported opcode {operand.group(1)}); expected a file written by this tool "
                                  "(latest.pth, model_best.pth) or a state dict saved with torch.save") from None
        if "weights only" in str(err).lower() or "unsupported global" in str(err).lower():
            raise CheckpointError(f"{path}: refused: the file holds Python objects other than tensors and plain "
                                  "values (only weights-only checkpoints are loaded, as arbitrary pickles can run "
                                  "code)") from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({first})") from None
    except Exception as err:  # the legacy unpickler fails in many ways on foreign bytes
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (reading it failed: {type(err).__name__}: {err}); "
                              "expected a file written by this tool (latest.pth, model_best.pth) or a state dict "
                              "saved with torch.save") from None


def load_checkpoint(path: str | Path) -> dict:
    """A full checkpoint of this tool, validated."""
    data = load_file(path)
    version = data.get("format_version") if isinstance(data, dict) else None
    if version is not None and version not in REQUIRED_KEYS:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise CheckpointError(f"{path}: checkpoint format {version!r}; this version of the tool reads formats 1 to "
                              f"{FORMAT_VERSION}" + ("; it was written by a newer version: update the tool" if newer
                                                     else ""))
    required = REQUIRED_KEYS.get(version, REQUIRED_KEYS[FORMAT_VERSION])
    if not isinstance(data, dict) or any(key not in data for key in required):
        found = sorted(data)[:8] if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not a checkpoint of this tool (expected keys {list(required)}, found "
                              f"{found}); a bare state dict can be used as pretrain_snapshot")
    if version == 1:
        upgraded = {**_OPTIONAL_DEFAULTS, **data, "format_version": FORMAT_VERSION,
                    "task_state": {"num_classes": data["num_classes"],
                                   "class_names": list(data.get("class_names") or [])}}
        for key in ("num_classes", "class_names"):
            upgraded.pop(key, None)
        return upgraded
    return {**_OPTIONAL_DEFAULTS, **data}


def state_dict_of(data: Any, path: str | Path) -> dict:
    """The model state dict inside a checkpoint of this tool or a bare state dict."""
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        data = data["model"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: holds neither a checkpoint of this tool nor a state dict of tensors")
    return {key.removeprefix("module."): value for key, value in data.items()}


def load_weights_strict(model: torch.nn.Module, state: dict, path: str | Path,
                        ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load `state` into `model` strictly; a mismatch names the missing, unexpected and mis-shaped keys.

    `ignore_prefixes` drops keys deliberately (e.g. the classifier when the number of classes changes); they are
    dropped from both sides, so nothing else can go missing silently.
    """
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    expected = {k for k in own if not k.startswith(ignore_prefixes)}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in expected & set(state)
                    if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''} ({len(keys)})")
        raise CheckpointError(f"{path}: weights do not fit this model ({'; '.join(parts)}); was it trained with a "
                              "different model_params or number of classes?")
    own.update(state)
    model.load_state_dict(own, strict=True)
