"""Feature extraction for evaluation, and a feature cache that cannot execute code.

`extract_features` runs any callable that maps an image batch to a feature batch: a torch model in eval mode or the
ONNX Runtime wrapper of `deploy.runtime`. The cache is a NumPy ``.npz`` read with ``allow_pickle=False``; it records
what the features were computed from, and a cache made from another model or image list is recomputed, not reused.
A file at the cache path that is not such a cache (a user's file, an object array) is refused and never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch

from engine.errors import UserError

log = logging.getLogger(__name__)


def extract_features(model: Callable, batches: Iterable[dict], device: torch.device, flip: bool = False) -> np.ndarray:
    """Features of every image, in loader order, as float32 N×D. `flip` averages each image with its mirror."""
    chunks = []
    is_module = isinstance(model, torch.nn.Module)
    with torch.no_grad():
        for batch in batches:
            images = batch["images"].to(device) if is_module else batch["images"]
            feats = _forward(model, images)
            if flip:
                feats = (feats + _forward(model, torch.flip(images, dims=[3]))) / 2
            chunks.append(feats.float().cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats))
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _forward(model: Callable, images: torch.Tensor):
    out = model(images)
    if isinstance(out, torch.Tensor) and out.dim() > 2:
        out = out.flatten(1)
    return out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out))


def fingerprint(model_file: Optional[str], keys: Iterable[str], input_size: tuple[int, int], flip: bool) -> str:
    """What a cached feature file depends on: the model file (path, size, mtime), the images and the input size."""
    h = hashlib.sha256()
    if model_file:
        stat = os.stat(model_file)
        h.update(f"{Path(model_file).resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    h.update(json.dumps([list(input_size), flip]).encode())
    for key in keys:
        h.update(key.encode() + b"\0")
    return h.hexdigest()


class FeatureCacheError(UserError):
    """feature_path names something that is not a feature cache of this tool; it is never overwritten."""


def _is_feature_cache(path: Path) -> bool:
    """Whether `path` is an .npz written by :func:`save_feature_cache` (arrays only, with a fingerprint entry)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return "fingerprint" in getattr(data, "files", ())
    except Exception:  # noqa: BLE001 - anything unreadable as an .npz (np.load raises many types) is not ours
        return False


def check_cache_target(path: str | Path, key: str = "feature_path") -> None:
    """Refuse a feature cache path that holds something else: the cache is (re)written there, so a user's file at that
    path would be overwritten."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_file():
        raise FeatureCacheError(f"{key}: {path} exists and is not a file; expected a feature cache (.npz) written by "
                                "this tool or a path that does not exist yet")
    if not _is_feature_cache(path):
        raise FeatureCacheError(f"{key}: {path} exists and is not a feature cache written by this tool (expected an "
                                ".npz with a 'fingerprint' entry and no pickled objects); refusing to overwrite it: "
                                "choose another feature_path or remove the file")


def load_feature_cache(path: str | Path, expected_fingerprint: str) -> Optional[dict[str, np.ndarray]]:
    """The cached arrays if `path` holds features computed from the same inputs; None if it does not exist or was
    computed from something else (it is then recomputed and rewritten). A file that is not a feature cache is refused
    (FeatureCacheError), never read with pickle and never overwritten."""
    path = Path(path)
    check_cache_target(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as err:  # e.g. an object array inside: refused by allow_pickle=False
        raise FeatureCacheError(f"feature_path: {path} cannot be read without unpickling ({err}); refusing to use or "
                                "overwrite it: choose another feature_path or remove the file") from None
    if str(arrays.pop("fingerprint", "")) != expected_fingerprint:
        log.info("feature cache %s was made from another model or image list; recomputing", path)
        return None
    return arrays


def save_feature_cache(path: str | Path, fingerprint_value: str, **arrays: np.ndarray) -> None:
    path = Path(path)
    check_cache_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    try:
        np.savez(tmp, fingerprint=np.array(fingerprint_value), **arrays)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise FeatureCacheError(f"feature_path: cannot write {path} ({err.strerror or err})") from None
