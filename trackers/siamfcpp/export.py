"""SiamFC++'s two ONNX graphs, so that a consumer needs nothing but the two files (and ONNX Runtime):

* ``template``: ``z`` (1×3×Z×Z float32 RGB 0..255) → ``cls_kernel``, ``reg_kernel`` (computed once per sequence);
* ``search``: ``x`` (1×3×X×X), ``cls_kernel``, ``reg_kernel`` → ``score`` (1×S·S, sigmoid(cls)·sigmoid(ctr)) and
  ``boxes`` (1×S·S×4, xyxy in search-crop pixels).

The backbone normalises inside the graph, so the inputs are raw crops. Both graphs have batch 1 (the depth-wise
cross-correlation is a grouped convolution whose group count holds the batch). The metadata carries the crop sizes,
stride, score size, the tracker's hyper-parameters and the run's params, which is all the online tracker needs
(`trackers.siamfcpp.onnx_network`).
"""

from __future__ import annotations

import numpy as np

from trackers.siamfcpp.params import SiamFCppParams

PARITY_SEED = 0
SCORE_TOLERANCE = 1e-4  # score in [0, 1]
INPUT_DESCRIPTION = "float32 RGB 0..255, N×3×H×W, not normalised (the backbone normalises inside the graph)"


def export_graphs(model, params: SiamFCppParams) -> list:
    import torch

    from deploy.export import ExportGraph
    from engine.params import params_dict
    from trackers.siamfcpp.model import SearchGraph, TemplateGraph

    m, t = params.model_params, params.tracker_params
    rng = np.random.default_rng(PARITY_SEED)
    z = rng.uniform(0, 255, (1, 3, m.z_size, m.z_size)).astype(np.float32)
    x = rng.uniform(0, 255, (1, 3, t.x_size, t.x_size)).astype(np.float32)
    with torch.no_grad():
        cls_kernel, reg_kernel = (k.float().numpy() for k in model.template(torch.from_numpy(z)))
    size = model.score_size(t.x_size)
    common = {"task": params.task, "backbone": m.backbone, "z_size": str(m.z_size), "x_size": str(t.x_size),
              "score_size": str(size), "total_stride": str(model.total_stride), "input_layout": "NCHW",
              "input_description": INPUT_DESCRIPTION, "color_order": "RGB", "batch_axis": "fixed: 1",
              "tracker_params": t.model_dump(mode="json"), "params": params_dict(params)}
    report = {"model": f"siamfcpp/{m.backbone}", "num_classes": None}
    description = f"deterministic random crops (seed {PARITY_SEED}), 0..255"
    template = ExportGraph(module=TemplateGraph(model).eval(), inputs={"z": z},
                           output_names=["cls_kernel", "reg_kernel"], compared_output="cls_kernel",
                           primary_output="cls_kernel", tolerance=1e-3 * max(1.0, float(np.abs(cls_kernel).max())),
                           metadata={**common, "graph": "template"},
                           report={**report, "input_size": [m.z_size, m.z_size], "output_dim": cls_kernel.shape[1]},
                           inputs_description=description, name="template", static_batch=1)
    search = ExportGraph(module=SearchGraph(model).eval(),
                         inputs={"x": x, "cls_kernel": cls_kernel, "reg_kernel": reg_kernel},
                         output_names=["score", "boxes"], compared_output="score", primary_output="score",
                         tolerance=SCORE_TOLERANCE, metadata={**common, "graph": "search"},
                         report={**report, "input_size": [t.x_size, t.x_size], "output_dim": size * size},
                         inputs_description=description + ", kernels from the template graph", name="search",
                         static_batch=1)
    return [template, search]
