"""GOTURN on ONNX Runtime: the graph written by ``python -m deploy.export`` behind the interface the tracker uses
(`trackers.goturn.tracker.GoturnNetwork`). Needs no PyTorch.

    network = OnnxRegressor("runs/goturn/model.onnx")
    tracker = GoturnTracker(network)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from deploy.runtime import OnnxModelError, open_exported
from trackers.crop_batches import onnx_batch
from trackers.goturn.geometry import OUTPUT_SCALE


class OnnxRegressor:
    def __init__(self, path: str | Path, prefer_cuda: bool = False, intra_op_threads: Optional[int] = None) -> None:
        self.session, meta = open_exported(Path(path), prefer_cuda, intra_op_threads)
        if meta.get("task") != "goturn":
            raise OnnxModelError(f"{path}: expected a GOTURN export, found one of task {meta.get('task')!r}")
        if float(meta.get("output_scale", "nan")) != OUTPUT_SCALE:
            raise OnnxModelError(f"{path}: the graph's boxes are scaled by {meta.get('output_scale')!r} per crop side; "
                                 f"this tracker un-scales by {OUTPUT_SCALE}")
        self.metadata = meta
        self.input_size, self.context = int(meta["input_size"]), float(meta["context"])
        self.params = json.loads(meta["params"])

    def regress(self, target: np.ndarray, search: np.ndarray) -> np.ndarray:
        (box,) = self.session.run(None, {"target": onnx_batch(target), "search": onnx_batch(search)})
        return box[0].astype(np.float64)
