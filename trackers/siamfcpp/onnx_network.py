"""SiamFC++ on ONNX Runtime: the two graphs written by ``python -m deploy.export`` behind the interface the tracker
uses (`trackers.siamfcpp.tracker.SiamFCppNetwork`). Needs no PyTorch.

    network = OnnxNetwork.from_export("runs/siam/model.onnx")     # model.template.onnx + model.search.onnx
    tracker = SiamFCppTracker(network, network.tracker_params, network.score_size)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from deploy.runtime import OnnxModelError, export_graph_paths, open_exported
from trackers.crop_batches import onnx_batch
from trackers.siamfcpp.params import SiamFCppTrackerParams

GRAPHS = ("template", "search")


class OnnxNetwork:
    def __init__(self, template_path: Path, search_path: Path, prefer_cuda: bool = False,
                 intra_op_threads: Optional[int] = None) -> None:
        self.template_session, meta = open_exported(Path(template_path), prefer_cuda, intra_op_threads)
        self.search_session, search_meta = open_exported(Path(search_path), prefer_cuda, intra_op_threads)
        for path, found, graph in ((template_path, meta, "template"), (search_path, search_meta, "search")):
            if found.get("task") != "siamfcpp" or found.get("graph") != graph:
                raise OnnxModelError(f"{path}: expected the SiamFC++ {graph} graph, found task "
                                     f"{found.get('task')!r} graph {found.get('graph')!r}")
        if search_meta.get("source_checkpoint") != meta.get("source_checkpoint"):
            raise OnnxModelError(f"{template_path} and {search_path} were exported from different checkpoints")
        self.metadata = search_meta
        self.z_size, self.x_size = int(meta["z_size"]), int(search_meta["x_size"])
        self.score_size = int(search_meta["score_size"])
        self.tracker_params = SiamFCppTrackerParams(**json.loads(search_meta["tracker_params"]))
        self.params = json.loads(search_meta["params"])

    @classmethod
    def from_export(cls, path: str | Path, **options) -> "OnnxNetwork":
        paths = export_graph_paths(path, [(graph,) for graph in GRAPHS], "a SiamFC++ export")
        return cls(paths["template"], paths["search"], **options)

    def template(self, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cls_kernel, reg_kernel = self.template_session.run(None, {"z": onnx_batch(crop)})
        return cls_kernel, reg_kernel

    def search(self, crop: np.ndarray, kernels) -> tuple[np.ndarray, np.ndarray]:
        score, boxes = self.search_session.run(None, {"x": onnx_batch(crop), "cls_kernel": kernels[0],
                                                      "reg_kernel": kernels[1]})
        return score[0].astype(np.float64), boxes[0].astype(np.float64)
