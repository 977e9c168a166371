"""Feature extraction for evaluation, and a feature cache that cannot execute code.

`extract_features` runs any callable that maps an image batch to a feature batch: a torch model in eval mode or the
ONNX Runtime wrapper of `deploy.runtime`. The cache is a NumPy ``.npz`` read with ``allow_pickle=False``; it records
what the features were computed from, and a cache made from another model or image list is recomputed, not reused.
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


def load_feature_cache(path: str | Path, expected_fingerprint: str) -> Optional[dict[str, np.ndarray]]:
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as err:
        log.warning("feature cache %s unreadable (%s); recomputing", path, err)
        return None
    if str(arrays.pop("fingerprint", "")) != expected_fingerprint:
        log.info("feature cache %s was made from another model or image list; recomputing", path)
        return None
    return arrays


def save_feature_cache(path: str | Path, fingerprint_value: str, **arrays: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    np.savez(tmp, fingerprint=np.array(fingerprint_value), **arrays)
    os.replace(tmp, path)
