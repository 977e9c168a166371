"""GOTURN's ONNX graph, so that a consumer needs nothing but the file (and ONNX Runtime): ``target`` and ``search``
(N×3×S×S float32 RGB 0..255 crops, dynamic batch) → ``box`` (N×4: x1, y1, x2, y2 of the target in the search crop, per
crop side × 10). The towers subtract the mean inside the graph. The metadata carries the crop size, the context
factor, the output scale and the run's params: all the online tracker needs (`trackers.goturn.onnx_network`)."""

from __future__ import annotations

import numpy as np

from trackers.goturn.geometry import OUTPUT_SCALE
from trackers.goturn.params import GoturnParams

PARITY_SEED = 0
PARITY_ROWS = 4
BOX_TOLERANCE = 1e-3  # on outputs of a 0..10 scale: 1e-4 of a crop side
INPUT_DESCRIPTION = "float32 RGB 0..255, N×3×S×S, not normalised (the towers normalise inside the graph)"


def export_graphs(model, params: GoturnParams, batch: int) -> list:
    from deploy.export import ExportGraph
    from engine.params import params_dict
    from trackers.goturn.model import RegressionGraph

    m, size = params.model_params, params.model_params.input_size
    rows = max(PARITY_ROWS, batch)
    rng = np.random.default_rng(PARITY_SEED)
    target, search = (rng.uniform(0, 255, (rows, 3, size, size)).astype(np.float32) for _ in range(2))
    metadata = {"task": params.task, "backbone": m.backbone, "input_size": str(size),
                "context": str(params.pair_sampling.context), "output_scale": str(OUTPUT_SCALE),
                "input_layout": "NCHW", "input_description": INPUT_DESCRIPTION, "color_order": "RGB",
                "output_description": "x1, y1, x2, y2 of the target in the search crop, per crop side × output_scale",
                "params": params_dict(params)}
    return [ExportGraph(module=RegressionGraph(model).eval(), inputs={"target": target, "search": search},
                        output_names=["box"], compared_output="box", primary_output="box", tolerance=BOX_TOLERANCE,
                        metadata=metadata,
                        report={"model": f"goturn/{m.backbone}", "num_classes": None, "input_size": [size, size],
                                "output_dim": 4},
                        inputs_description=f"deterministic random crops (seed {PARITY_SEED}), 0..255")]
