"""SiamMask's three ONNX graphs, so that a consumer needs nothing but the three files (and ONNX Runtime):

* ``template``: ``z`` (1×3×127×127 float32 RGB 0..255) → ``zf`` (the adjusted map, computed once per sequence);
* ``search``: ``x`` (1×3×X×X), ``zf`` → ``score`` (1×k×S×S foreground probability, the two-way softmax inside),
  ``loc`` (1×4k×S×S deltas, channel d·k + a), ``corr`` (the mask branch's correlation), ``p0``, ``p1``, ``p2`` (the
  search crop's backbone maps, the refine module's input);
* ``refine`` (``tracker_params.mask_source`` "refine": ``p0``, ``p1``, ``p2``, ``corr``, ``position``) → ``mask``
  (1×127×127 probability) or ``mask`` (mask_source "base": ``corr``, ``position`` → 1×63×63 probability).
  ``position`` is a 1×2 int64 (row, column) input, so one graph serves every location.

The backbone normalises inside the graph, so the inputs are raw crops. Every graph has batch 1 (the depth-wise
cross-correlation is a grouped convolution whose group count holds the batch; ``position`` names one location of
pair 0). The metadata carries the crop sizes, stride, score size, the anchors, which mask graph was exported, the
tracker's hyper-parameters and the run's params, which is all the online tracker needs
(``trackers.siammask.onnx_network``).
"""

from __future__ import annotations

import numpy as np

PARITY_SEED = 0
PROBABILITY_TOLERANCE = 1e-4   # score and mask probabilities in [0, 1]
INPUT_DESCRIPTION = "float32 RGB 0..255, N×3×H×W, not normalised (the backbone normalises inside the graph)"
MASK_GRAPHS = {"refine": "refine", "base": "mask"}   # tracker_params.mask_source → graph name


def _position_graph(graph):
    """``graph`` (RefineGraph / MaskGraph, which take a (2,) position) behind a (1, 2) position input: the export
    core treats axis 0 of every input as the batch."""
    import torch

    class PositionRow(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.graph = graph

        def forward(self, *inputs):
            *maps, position = inputs
            return self.graph(*maps, position.reshape(2))

    return PositionRow()


def export_graphs(model, params, checkpoint=None, batch: int = 1, images_dir=None) -> list:
    """The template, search and refine (or mask) graphs of ``model`` (a ``SiamMask``): ``params.tracker_params``
    (x_size, mask_source) and ``params.model_params.backbone`` are read. ``checkpoint``, ``batch`` and ``images_dir``
    (deploy.export's arguments) are not used: the graphs have batch 1 and are checked on random crops."""
    import torch

    from deploy.export import ExportGraph
    from engine.params import params_dict
    from trackers.siammask.anchors import RATIOS, SCALES, STRIDE, TEMPLATE_SIZE, WINDOW, score_size, window_padding
    from trackers.siammask.model import MaskGraph, RefineGraph, SearchGraph, TemplateGraph

    t = params.tracker_params
    backbone = params.model_params.backbone
    if t.mask_source == "refine" and getattr(model, "refinement", None) is None:
        raise ValueError("tracker_params.mask_source 'refine' exports the refine graph, but the model has no refine "
                         "module (model_params.refine false); export with mask_source 'base'")
    model.eval()
    rng = np.random.default_rng(PARITY_SEED)
    z = rng.uniform(0, 255, (1, 3, TEMPLATE_SIZE, TEMPLATE_SIZE)).astype(np.float32)
    x = rng.uniform(0, 255, (1, 3, t.x_size, t.x_size)).astype(np.float32)
    search_module = SearchGraph(model).eval()
    with torch.no_grad():
        zf_tensor = model.template(torch.from_numpy(z))
        score, loc, corr, p0, p1, p2 = (o.float().numpy() for o in search_module(torch.from_numpy(x), zf_tensor))
    zf = zf_tensor.float().numpy()
    size = score_size(t.x_size)
    if score.shape[-1] != size:
        raise ValueError(f"the model's score map at x_size {t.x_size} is {score.shape[-1]} wide, not {size}")
    mask_graph = MASK_GRAPHS[t.mask_source]
    mask_size = WINDOW if t.mask_source == "refine" else int(model.mask_size)
    common = {"task": params.task, "backbone": backbone, "z_size": str(TEMPLATE_SIZE), "x_size": str(t.x_size),
              "score_size": str(size), "total_stride": str(STRIDE), "anchor_ratios": list(RATIOS),
              "anchor_scales": list(SCALES), "anchor_num": str(model.anchor_num), "mask_graph": mask_graph,
              "mask_source": t.mask_source, "mask_size": str(mask_size), "mask_window": str(WINDOW),
              "window_padding": str(window_padding(t.x_size, size)), "input_layout": "NCHW",
              "input_description": INPUT_DESCRIPTION, "color_order": "RGB", "batch_axis": "fixed: 1",
              "tracker_params": t.model_dump(mode="json"), "params": params_dict(params)}
    report = {"model": f"siammask/{backbone}", "num_classes": None}
    description = f"deterministic random crops (seed {PARITY_SEED}), 0..255"
    template = ExportGraph(module=TemplateGraph(model).eval(), inputs={"z": z}, output_names=["zf"],
                           compared_output="zf", primary_output="zf",
                           tolerance=1e-3 * max(1.0, float(np.abs(zf).max())),
                           metadata={**common, "graph": "template"},
                           report={**report, "input_size": [TEMPLATE_SIZE, TEMPLATE_SIZE],
                                   "output_dim": int(zf[0].size)},
                           inputs_description=description, name="template", static_batch=1)
    search = ExportGraph(module=search_module, inputs={"x": x, "zf": zf},
                         output_names=["score", "loc", "corr", "p0", "p1", "p2"], compared_output="score",
                         primary_output="score", tolerance=PROBABILITY_TOLERANCE,
                         metadata={**common, "graph": "search"},
                         report={**report, "input_size": [t.x_size, t.x_size], "output_dim": int(score[0].size)},
                         inputs_description=description + ", zf from the template graph", name="search",
                         static_batch=1)
    # a location off the centre (the position is an input: any other works the same, tested)
    position = np.array([[size // 2 + size // 5, size // 2 - size // 4]], dtype=np.int64)
    if mask_graph == "refine":
        module, inputs = RefineGraph(model), {"p0": p0, "p1": p1, "p2": p2, "corr": corr, "position": position}
    else:
        module, inputs = MaskGraph(model), {"corr": corr, "position": position}
    mask = ExportGraph(module=_position_graph(module).eval(), inputs=inputs, output_names=["mask"],
                       compared_output="mask", primary_output="mask", tolerance=PROBABILITY_TOLERANCE,
                       metadata={**common, "graph": mask_graph},
                       report={**report, "input_size": [mask_size, mask_size], "output_dim": mask_size * mask_size},
                       inputs_description=description + f", maps from the search graph, position "
                       f"{position[0].tolist()} (int64 row, column)", name=mask_graph, static_batch=1)
    return [template, search, mask]
