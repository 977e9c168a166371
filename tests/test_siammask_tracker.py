"""The SiamMask tracker (trackers/siammask/tracker.py): the post-processing on hand-made network outputs (best anchor,
box decoding, size smoothing, the mask's window mapped to the frame, the rotated rectangle and its fallback), the
ONNX export of the three graphs (trackers/siammask/export.py through deploy.export's core) and the tracker end to end
on a synthetic DAVIS video with PyTorch and with ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import BaseModel

from data.crops import context_side
from trackers.siammask.anchors import anchor_shapes
from trackers.siammask.tracker import SiamMaskTracker, SiamMaskTrackerParams, mask_to_frame

pytestmark = [pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
              pytest.mark.filterwarnings("ignore:Exporting aten..index:UserWarning"),
              pytest.mark.filterwarnings("ignore:Constant folding:UserWarning")]

S, K = 25, 5
FRAME_W, FRAME_H = 320, 240
# a box whose template context square is 127 wide and whose search crop is the frame square [0, 255]²: crop pixels
# are frame pixels (scale 1, origin 0)
UNIT_BOX = np.array([95.75, 95.75, 63.5, 63.5])


class FakeNetwork:
    """Score 1 at one anchor (0 elsewhere) with the given deltas there, and a given mask for every location."""

    z_size, x_size, score_size = 127, 255, S

    def __init__(self, anchor: int, row: int, col: int, deltas=(0.0, 0.0, 0.0, 0.0), mask=None) -> None:
        self.index = np.ravel_multi_index((anchor, row, col), (K, S, S))
        self.deltas, self.mask_value = np.asarray(deltas, dtype=np.float64), mask
        self.crops, self.asked = [], []

    def template(self, crop):
        assert crop.shape == (127, 127, 3) and crop.dtype == np.uint8
        return "kernel"

    def search(self, crop, kernel):
        assert kernel == "kernel"
        self.crops.append(crop)
        score, loc = np.zeros(K * S * S), np.zeros((K * S * S, 4))
        score[self.index], loc[self.index] = 1.0, self.deltas
        return score, loc, "handle"

    def mask(self, handle, row, col):
        assert handle == "handle"
        self.asked.append((row, col))
        return np.zeros((127, 127), np.float32) if self.mask_value is None else self.mask_value


def _frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (FRAME_H, FRAME_W, 3), dtype=np.uint8)


def _track(network, params=SiamMaskTrackerParams(), box=UNIT_BOX):
    tracker = SiamMaskTracker(network, params)
    tracker.init(_frame(0), box)
    out_box = tracker.update(_frame(1))
    return tracker, out_box


def test_the_tracker_module_loads_without_torch():
    """The task's params and the ONNX Runtime tracker import it: no PyTorch (anchors' constants are restated)."""
    import subprocess
    import sys

    from trackers.siammask import anchors, tracker

    assert (tracker.TEMPLATE_SIZE, tracker.STRIDE) == (anchors.TEMPLATE_SIZE, anchors.STRIDE)
    code = ("import sys; import trackers.siammask.tracker, trackers.siammask.onnx_network; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_the_tracker_moves_to_the_best_anchor_and_smooths_the_size():
    params = SiamMaskTrackerParams(penalty_k=0.0)     # penalty 1: lr = score · lr = 0.38
    anchor, row, col, deltas = 3, 15, 9, (0.25, -0.5, np.log(1.5), np.log(0.8))
    box = np.array([100.0, 80.0, 40.0, 30.0])
    network = FakeNetwork(anchor, row, col, deltas)
    tracker, out = _track(network, params, box)
    aw, ah = anchor_shapes()[anchor]
    side = float(context_side(40, 30)) * 255 / 127
    scale = 255 / side
    # the anchor sits 8·(col − 12), 8·(row − 12) crop pixels from the crop centre, which is the previous centre
    dx, dy = (8 * (col - 12) + deltas[0] * aw) / scale, (8 * (row - 12) + deltas[1] * ah) / scale
    predicted = np.array([aw * 1.5, ah * 0.8]) / scale
    size = np.array([40.0, 30.0]) * (1 - 0.38) + predicted * 0.38
    centre = np.array([120.0 + dx, 95.0 + dy])
    assert np.allclose(out, [*(centre - size / 2), *size], atol=1e-9)
    assert tracker.last.score == 1.0 and network.asked == [(row, col)]
    assert tracker.last.mask.shape == (FRAME_H, FRAME_W) and not tracker.last.mask.any()
    # the empty mask: the polygon is the RPN box's corners
    x, y, w, h = out
    assert np.allclose(tracker.last.polygon, [[x, y], [x + w, y], [x + w, y + h], [x, y + h]])
    # with the penalty (k > 0) the size moves less: lr = penalty · score · lr < 0.38
    _, damped = _track(FakeNetwork(anchor, row, col, deltas), SiamMaskTrackerParams(penalty_k=0.3), box)
    assert np.allclose(damped[:2] + damped[2:] / 2, centre) and np.all(np.abs(damped[2:] - box[2:]) <
                                                                        np.abs(size - box[2:]))


@pytest.mark.parametrize("row, col", [(13, 10), (24, 23)])    # the second window reaches past the frame's bottom
def test_the_refine_mask_lands_on_its_location_window_in_the_frame(row, col):
    mask = np.zeros((127, 127), np.float32)
    cv2.circle(mask, (80, 50), 20, 1.0, -1)
    mask[100:, 100:] = 1.0
    tracker, _ = _track(FakeNetwork(2, row, col, mask=mask))
    # the window of (row, col) is [8·col − 32, +127) × [8·row − 32, +127) of the crop = of the frame here
    expected = np.zeros((FRAME_H, FRAME_W), bool)
    u0, v0 = 8 * col - 32, 8 * row - 32
    expected[v0:v0 + 127, u0:u0 + 127] = (mask > 0.5)[:FRAME_H - v0, :FRAME_W - u0]
    assert np.array_equal(tracker.last.mask, expected)
    assert np.array_equal(tracker.network.crops[0][:FRAME_H], _frame(1)[:, :255])   # crop pixels = frame pixels


def test_the_polygon_is_the_rotated_rectangle_of_the_mask():
    row, col = 11, 14
    rectangle = ((60.0, 70.0), (70.0, 30.0), 30.0)              # OpenCV pixel-centre coordinates in the window
    mask = np.zeros((127, 127), np.uint8)
    cv2.fillPoly(mask, [np.round(cv2.boxPoints(rectangle)).astype(np.int32)], 1)
    params = SiamMaskTrackerParams(box_output="polygon")
    tracker, out = _track(FakeNetwork(2, row, col, mask=mask.astype(np.float32)), params)
    u0, v0 = 8 * col - 32, 8 * row - 32
    corners = cv2.boxPoints(rectangle) + 0.5 + [u0, v0]          # continuous frame coordinates
    polygon = tracker.last.polygon
    assert polygon.shape == (4, 2)
    distances = np.linalg.norm(corners[:, None] - polygon[None], axis=2)
    assert distances.min(axis=1).max() < 1.0
    # box_output "polygon": the polygon's bounding rectangle
    assert np.allclose(out, [*polygon.min(0), *(polygon.max(0) - polygon.min(0))])
    # a small blob (area ≤ min_contour_area) falls back to the RPN box
    small = np.zeros((127, 127), np.float32)
    small[60:66, 60:66] = 1.0
    tracker, out = _track(FakeNetwork(2, 12, 12, mask=small), params)
    assert tracker.last.mask.sum() == 36
    x, y, w, h = out
    assert np.allclose(tracker.last.polygon, [[x, y], [x + w, y], [x + w, y + h], [x, y + h]])


def test_the_base_mask_maps_with_align_corners():
    """63 × 63: its pixel centres 0 and 62 sit on the window's pixel centres 0 and 126 (training's align_corners
    upsampling), so mask pixel m lands at window coordinate 0.5 + m · 126 / 62."""
    from data.crops import CropWindow

    probability = np.zeros((63, 63), np.float32)
    probability[20:41, 10:31] = 1.0                        # centre: mask pixel (30, 20)
    window = CropWindow(127.5, 127.5, 255.0, 255)
    frame = mask_to_frame(probability, window, 12, 12, 32, (FRAME_W, FRAME_H), 8, 127) > 0.5
    ys, xs = np.nonzero(frame)
    assert abs((xs + 0.5).mean() - (64 + 0.5 + 20 * 126 / 62)) < 0.5
    assert abs((ys + 0.5).mean() - (64 + 0.5 + 30 * 126 / 62)) < 0.5
    # the whole window is covered from the first to the last pixel centre
    full = mask_to_frame(np.ones((63, 63), np.float32), window, 12, 12, 32, (FRAME_W, FRAME_H), 8, 127)
    assert np.all(full[65:190, 65:190] == 1.0) and full[:63].max() == 0.0 and full[:, 192:].max() == 0.0


# ---------------------------------------------------------------------------------------------------------------------
# ONNX export and end to end


class _Model(BaseModel):
    backbone: str = "resnet18_siammask"


class _Params(BaseModel):
    """What export_graphs reads of the task's params (the task itself is not needed here)."""

    task: str = "siammask"
    model_params: _Model = _Model()
    tracker_params: SiamMaskTrackerParams = SiamMaskTrackerParams(mask_source="refine")


@pytest.fixture(scope="module")
def small_net():
    import torch

    from networks.backbones import build_backbone
    from trackers.siammask.model import SiamMask

    torch.manual_seed(0)
    return SiamMask(build_backbone("resnet18_siammask", adjust_channels=32), hidden=32).eval()


def _export(graphs, out: Path) -> list:
    from deploy.export import DEFAULT_OPSET, QUANTIZATION_TEXT, _export_graph, graph_out_path

    facts = {"source_checkpoint": "random init (resnet18_siammask, seed 0)", "checkpoint_epoch": "",
             "checkpoint_best": {}, "quantization": QUANTIZATION_TEXT["none"]}
    return [_export_graph(graph, graph_out_path(out, graph), Path(facts["source_checkpoint"]), "siammask", facts, [1],
                          DEFAULT_OPSET, "torchscript", "none") for graph in graphs]


@pytest.fixture(scope="module")
def exported(small_net, tmp_path_factory):
    from trackers.siammask.export import export_graphs

    out = tmp_path_factory.mktemp("siammask_onnx") / "model.onnx"
    reports = _export(export_graphs(small_net, _Params()), out)
    small_net.eval()
    return out, reports


def test_the_three_graphs_export_with_parity_and_the_position_as_an_input(small_net, exported):
    from trackers.siammask.onnx_network import OnnxNetwork
    from trackers.siammask.tracker import TorchNetwork

    out, reports = exported
    assert [Path(r.out_path).name for r in reports] == ["model.template.onnx", "model.search.onnx",
                                                        "model.refine.onnx"]
    assert all(r.passed and r.parity[0].max_abs_diff <= 1e-4 for r in reports[1:])
    network = OnnxNetwork.from_export(out.with_name("model.refine.onnx"), intra_op_threads=1)
    assert (network.z_size, network.x_size, network.score_size, network.mask_size) == (127, 255, 25, 127)
    assert network.tracker_params == _Params().tracker_params and network.params["task"] == "siammask"
    torch_network = TorchNetwork(small_net, 255, "refine")
    rng = np.random.default_rng(3)
    z, x = (rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for side in (127, 255))
    kernel, torch_kernel = network.template(z), torch_network.template(z)
    assert np.abs(kernel - torch_kernel.numpy()).max() <= 1e-3 * max(1.0, float(np.abs(kernel).max()))
    score, loc, handle = network.search(x, torch_kernel.numpy())
    torch_score, torch_loc, torch_handle = torch_network.search(x, torch_kernel)
    assert score.shape == (K * S * S,) and loc.shape == (K * S * S, 4)
    assert np.abs(score - torch_score).max() < 1e-4 and np.abs(loc - torch_loc).max() < 1e-3
    for row, col in ((12, 12), (0, 24), (20, 3)):       # other locations than the traced one
        got, expected = network.mask(handle, row, col), torch_network.mask(torch_handle, row, col)
        assert got.shape == (127, 127) and np.abs(got - expected).max() < 1e-4


def test_the_base_mask_graph_exports(small_net, tmp_path):
    from trackers.siammask.export import export_graphs
    from trackers.siammask.tracker import TorchNetwork

    params = _Params(tracker_params=SiamMaskTrackerParams(mask_source="base"))
    graphs = export_graphs(small_net, params)
    assert [g.name for g in graphs] == ["template", "search", "mask"]
    (report,) = _export(graphs[2:], tmp_path / "model.onnx")
    small_net.eval()
    assert report.passed and Path(report.out_path).name == "model.mask.onnx"
    import onnxruntime as ort

    session = ort.InferenceSession(report.out_path, providers=["CPUExecutionProvider"])
    network = TorchNetwork(small_net, 255, "base")
    _, _, (levels, corr) = network.search(np.full((255, 255, 3), 90, np.uint8), network.template(
        np.full((127, 127, 3), 60, np.uint8)))
    got = session.run(None, {"corr": corr.numpy(), "position": np.array([[4, 17]], np.int64)})[0][0]
    assert got.shape == (63, 63) and np.abs(got - network.mask((levels, corr), 4, 17)).max() < 1e-4


def test_torch_and_onnx_trackers_agree_on_a_synthetic_davis_video(small_net, exported, tmp_path):
    from data.mask_sequences import open_davis
    from data.synthetic import DavisSpec, generate_davis
    from trackers.siammask.onnx_network import OnnxNetwork
    from trackers.siammask.tracker import TorchNetwork

    generate_davis(tmp_path / "davis", DavisSpec(num_train_videos=1, num_val_videos=1, min_frames=8, max_frames=8),
                   workers=1)
    videos = open_davis(tmp_path / "davis", "val", workers=1)
    sequence = videos.sequences[0]
    frames = [videos.frame(sequence, i) for i in range(6)]
    # the random network's refine probabilities spread over ~0.5–0.7: a threshold inside that range makes partial masks
    params = _Params().tracker_params.model_copy(update={"seg_thr": 0.585})
    trackers = [SiamMaskTracker(TorchNetwork(small_net, 255, "refine"), params),
                SiamMaskTracker(OnnxNetwork.from_export(exported[0], intra_op_threads=1), params)]
    for tracker in trackers:
        tracker.init(frames[0], sequence.boxes[0])
    for index, frame in enumerate(frames[1:]):
        outputs = []
        for tracker in trackers:
            tracker.update(frame)
            outputs.append(tracker.last)
        ours, theirs = outputs
        assert np.abs(ours.box - theirs.box).max() < 1e-3
        assert ours.mask.shape == frame.shape[:2]
        # the first update starts from the same state: identical masks. Later the trajectories differ by ~1e-4 px
        # (ONNX Runtime's and PyTorch's deltas differ by ~1e-6), which moves the crop and may flip a boundary pixel
        # whose probability is within ~1e-5 of seg_thr (measured: 1 pixel of 3,351 on one of five frames)
        different = int((ours.mask != theirs.mask).sum())
        assert different == 0 if index == 0 else different <= max(3, ours.mask.sum() // 1000)
        assert 100 < ours.mask.sum() < 127 * 127 * 0.9
        assert np.abs(ours.polygon - theirs.polygon).max() < 1e-3


def test_a_diverged_network_keeps_the_state_and_a_refine_source_needs_the_refine_module(small_net, exported,
                                                                                         tmp_path):
    import shutil

    import torch

    from deploy.runtime import OnnxModelError
    from networks.backbones import build_backbone
    from trackers.siammask.export import export_graphs
    from trackers.siammask.model import SiamMask
    from trackers.siammask.onnx_network import OnnxNetwork
    from trackers.siammask.tracker import TorchNetwork

    network = FakeNetwork(2, 12, 12)
    network.search = lambda crop, kernel: (np.full(K * S * S, np.nan), np.zeros((K * S * S, 4)), "handle")
    tracker, out = _track(network)
    assert np.allclose(out, UNIT_BOX) and tracker.last.score == 0.0
    torch.manual_seed(0)
    base = SiamMask(build_backbone("resnet18_siammask", adjust_channels=16), hidden=16, refine=False).eval()
    with pytest.raises(ValueError, match="refine module"):
        TorchNetwork(base, 255, "refine")
    with pytest.raises(ValueError, match="refine module"):
        export_graphs(base, _Params())
    # an export without its mask graph is refused, naming the missing file
    for graph in ("template", "search"):
        shutil.copy(exported[0].with_name(f"model.{graph}.onnx"), tmp_path / f"model.{graph}.onnx")
    with pytest.raises(OnnxModelError, match="model.refine.onnx"):
        OnnxNetwork.from_export(tmp_path / "model.onnx")
