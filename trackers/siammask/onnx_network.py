"""SiamMask on ONNX Runtime: the three graphs written by ``python -m deploy.export`` (``trackers.siammask.export``)
behind the interface the tracker uses (`trackers.siammask.tracker.SiamMaskNetwork`). Needs no PyTorch.

    network = OnnxNetwork.from_export("runs/siammask/model.onnx")   # model.template / .search / .refine (or .mask)
    tracker = SiamMaskTracker(network, network.tracker_params)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from deploy.runtime import OnnxModelError, export_graph_paths, open_exported
from trackers.crop_batches import onnx_batch
from trackers.siammask.tracker import SiamMaskTrackerParams

MASK_GRAPHS = ("refine", "mask")   # the sharp model's refine graph, the base model's mask graph


class OnnxNetwork:
    def __init__(self, template_path: Path, search_path: Path, mask_path: Path, prefer_cuda: bool = False,
                 intra_op_threads: Optional[int] = None) -> None:
        paths = {"template": Path(template_path), "search": Path(search_path), "mask": Path(mask_path)}
        sessions, metas = {}, {}
        for role, path in paths.items():
            sessions[role], metas[role] = open_exported(path, prefer_cuda, intra_op_threads)
        search_meta = metas["search"]
        expected = {"template": "template", "search": "search", "mask": search_meta.get("mask_graph")}
        for role, path in paths.items():
            found = metas[role]
            if found.get("task") != "siammask" or found.get("graph") != expected[role]:
                raise OnnxModelError(f"{path}: expected the SiamMask {expected[role]} graph, found task "
                                     f"{found.get('task')!r} graph {found.get('graph')!r}")
            if found.get("source_checkpoint") != search_meta.get("source_checkpoint"):
                raise OnnxModelError(f"{path} and {paths['search']} were exported from different checkpoints")
        self.template_session, self.search_session = sessions["template"], sessions["search"]
        self.mask_session = sessions["mask"]
        self.metadata = search_meta
        self.z_size, self.x_size = int(metas["template"]["z_size"]), int(search_meta["x_size"])
        self.score_size, self.mask_size = int(search_meta["score_size"]), int(search_meta["mask_size"])
        self.mask_graph = search_meta["mask_graph"]
        self.tracker_params = SiamMaskTrackerParams(**json.loads(search_meta["tracker_params"]))
        self.params = json.loads(search_meta["params"])
        self._mask_inputs = [i.name for i in self.mask_session.get_inputs()]

    @classmethod
    def from_export(cls, path: str | Path, **options) -> "OnnxNetwork":
        paths = export_graph_paths(path, [("template",), ("search",), MASK_GRAPHS], "a SiamMask export")
        return cls(paths["template"], paths["search"], paths[MASK_GRAPHS[0]], **options)

    def template(self, crop: np.ndarray) -> np.ndarray:
        return self.template_session.run(None, {"z": onnx_batch(crop)})[0]

    def search(self, crop: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        score, loc, corr, p0, p1, p2 = self.search_session.run(None, {"x": onnx_batch(crop), "zf": kernel})
        deltas = loc[0].reshape(4, -1).T                                   # (4, k, S, S) → (k·S·S, 4)
        handle = {"p0": p0, "p1": p1, "p2": p2, "corr": corr}
        return score.reshape(-1).astype(np.float64), deltas.astype(np.float64), handle

    def mask(self, handle: dict, row: int, col: int) -> np.ndarray:
        feed = {name: handle[name] for name in self._mask_inputs if name != "position"}
        feed["position"] = np.array([[row, col]], dtype=np.int64)
        return self.mask_session.run(None, feed)[0][0]
