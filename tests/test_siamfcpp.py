"""SiamFC++ end to end: the tracker's post-processing on hand-made score maps (penalty, cosine window, smoothing,
clamping), ONNX parity of the template and search graphs (TinyConv and AlexNet-BN, random weights), refusals, and
(slow) a short train.py run whose checkpoint evaluates, exports, tracks and evaluates again on ONNX Runtime with the
same numbers as on PyTorch."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from data.crops import CropWindow, channel_mean, context_side, crop_image
from data.sequences import open_sequences
from data.synthetic import Got10kSpec, generate_got10k
from engine.checkpoint import load_checkpoint, save_atomic
from engine.errors import UserError
from engine.params import params_dict, parse_params
from evaluate.tracking_run import track_frames
from trackers.siamfcpp import task as siamfcpp_task
from trackers.siamfcpp.onnx_network import OnnxNetwork
from trackers.siamfcpp.params import SiamFCppTrackerParams
from trackers.siamese import cosine_window, select_box
from trackers.siamfcpp.tracker import SiamFCppTracker, TorchNetwork

ROOT = Path(__file__).resolve().parent.parent
SLOW = pytest.mark.slow
# tracing a graph of static batch and search size: the shape checks of the xcorr and the grid become constants
pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


def write_eval_params(directory: Path, name: str, model_path: Path, data_dir: Path, **options) -> Path:
    """eval_params.json for got10k_evaluate on the val subset; the result goes to ``directory/name.result.json``."""
    return write_json(directory / f"{name}.eval.json", {
        "model_path": str(model_path), "benchmark_type": "got10k_evaluate", "data_dir": str(data_dir),
        "subset": "val", "result_dir": str(directory / f"{name}_results"),
        "result_log_file": str(directory / f"{name}.result.json"), **options})


def evaluate(directory: Path, name: str, model_path: Path, data_dir: Path, **options) -> dict:
    done = run("evaluator.py", str(write_eval_params(directory, name, model_path, data_dir, **options)))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((directory / f"{name}.result.json").read_text())["metrics"]


# ---------------------------------------------------------------------------------------------------------------------
# 1. post-processing on hand-made score maps


def xywh_rows_to_xyxy(rows) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:]], axis=1)


def context_size(w: float, h: float) -> float:
    pad = (w + h) / 2
    return math.sqrt((w + pad) * (h + pad))


def test_penalty_makes_an_unchanged_box_beat_a_higher_score_whose_box_changes():
    previous = np.array([64.0, 32.0])  # the target's size in crop pixels
    same, changed = [100.0, 100.0, 64.0, 32.0], [90.0, 100.0, 128.0, 32.0]  # changed: twice as wide
    boxes = xywh_rows_to_xyxy([same, changed, same] + [same] * 6)
    score = np.array([0.1, 0.75, 0.7] + [0.1] * 6)
    window = cosine_window(3)
    no_window = (0.04, 0.0, 0.52)  # penalty_k, window_influence, lr: the GOT-10k defaults without the window
    # by hand for the changed box: scale change sqrt((128+80)(32+80)) / sqrt((64+48)(32+48)) = sqrt(2.6), ratio change
    # (64/32) / (128/32) = 1/2 -> 2, penalty exp(-(2·sqrt(2.6) - 1)·0.04) = 0.91485
    penalty = math.exp(-(2 * math.sqrt(2.6) - 1) * 0.04)
    assert context_size(128, 32) / context_size(64, 32) == pytest.approx(math.sqrt(2.6), rel=1e-12)
    assert penalty == pytest.approx(0.914849, abs=1e-6) and 0.75 * penalty < 0.7 < 0.75

    best, box, lr = select_box(score, boxes, previous, window, *no_window)
    assert int(np.argmax(score)) == 1 and best == 2, "the penalty moves the choice to the unchanged box"
    np.testing.assert_allclose(box, same, atol=1e-12)
    assert lr == pytest.approx(1.0 * 0.7 * 0.52, abs=1e-12), "unchanged box: penalty 1, lr = score · test_lr"

    assert select_box(score, boxes, previous, window, 0.0, 0.0, 0.52)[0] == 1  # without the penalty

    score[1] = 0.9  # 0.9 · 0.91485 = 0.823 > 0.7: the changed box wins despite its penalty
    best, box, lr = select_box(score, boxes, previous, window, *no_window)
    assert best == 1
    np.testing.assert_allclose(box, changed, atol=1e-12)
    assert lr == pytest.approx(penalty * 0.9 * 0.52, abs=1e-12)


def test_cosine_window_pulls_the_choice_toward_the_centre():
    np.testing.assert_allclose(cosine_window(3), [0, 0, 0, 0, 1, 0, 0, 0, 0], atol=1e-12)  # hanning(3) = 0, 1, 0
    five = cosine_window(5).reshape(5, 5)  # hanning(5) = 0, .5, 1, .5, 0
    assert five[2, 2] == pytest.approx(1.0) and five[1, 1] == pytest.approx(0.25) and five[1, 2] == pytest.approx(0.5)
    same = [140.0, 140.0, 20.0, 20.0]
    boxes = xywh_rows_to_xyxy([same] * 9)
    score = np.zeros(9)
    score[0], score[4] = 0.9, 0.6  # a corner beats the centre on the raw score
    # pscore: corner 0.9·(1 − wi), centre 0.6·(1 − wi) + wi: the centre wins once wi > 0.3 / 1.3 = 0.2308
    for influence, expected in ((0.0, 0), (0.21, 0), (0.22, 0), (0.24, 4), (0.5, 4)):
        best, _, lr = select_box(score, boxes, np.array([20.0, 20.0]), cosine_window(3), 0.04, influence, 0.52)
        assert best == expected, influence
        assert lr == pytest.approx(score[expected] * 0.52, abs=1e-12), "the window does not enter lr"


class FakeNetwork:
    """A network whose search returns the score map and boxes the test put in `outputs`; records what it saw."""

    z_size = 127

    def __init__(self) -> None:
        self.outputs: tuple[np.ndarray, np.ndarray] | None = None
        self.template_crops: list[tuple] = []
        self.search_crops: list[tuple] = []

    def template(self, crop: np.ndarray) -> str:
        self.template_crops.append((crop.shape, crop.dtype))
        return "kernels"

    def search(self, crop: np.ndarray, kernels) -> tuple[np.ndarray, np.ndarray]:
        assert kernels == "kernels"
        self.search_crops.append((crop.shape, crop.dtype))
        return self.outputs


def hand_crop_box(frame_box, centre, target_size, context: float = 0.5, z_size: int = 127, x_size: int = 303):
    """A frame box xywh as the xyxy box of the search crop around `centre` for a target of `target_size`, written out:
    crop scale = z_size / context side, and the frame point `centre` sits at the crop centre x_size / 2."""
    w, h = target_size
    pad = context * (w + h)
    scale = z_size / math.sqrt((w + pad) * (h + pad))
    x, y, bw, bh = frame_box
    return np.array([(x - centre[0]) * scale, (y - centre[1]) * scale, (x + bw - centre[0]) * scale,
                     (y + bh - centre[1]) * scale]) + x_size / 2


def fake_outputs(best_box_xyxy, best_score: float, other_box_xyxy) -> tuple[np.ndarray, np.ndarray]:
    """3×3 map: location 0 (a corner) holds the prediction, the others score 0."""
    score = np.zeros(9)
    score[0] = best_score
    boxes = np.repeat(np.asarray(other_box_xyxy, dtype=np.float64)[None], 9, axis=0)
    boxes[0] = best_box_xyxy
    return score, boxes


FRAME = np.full((240, 320, 3), 90, dtype=np.uint8)  # H = 240, W = 320


def test_tracker_moves_to_the_peak_and_smooths_the_size():
    network = FakeNetwork()
    tracker = SiamFCppTracker(network, SiamFCppTrackerParams(), score_size=3)
    tracker.init(FRAME, [100, 80, 40, 20])  # centre (120, 90), size 40 × 20
    assert network.template_crops == [((127, 127, 3), np.uint8)]
    predicted = [108.0, 84.0, 44.0, 22.0]  # centre (130, 95), 1.1 × the size, same aspect ratio
    network.outputs = fake_outputs(hand_crop_box(predicted, (120, 90), (40, 20)), 0.8,
                                   hand_crop_box([100, 80, 40, 20], (120, 90), (40, 20)))
    box = tracker.update(FRAME)
    assert network.search_crops == [((303, 303, 3), np.uint8)]
    # corner: penalty·0.8·0.79 ≈ 0.63 beats the centre's window 0.21; scale change 1.1, ratio change 1
    lr = math.exp(-(1.1 - 1) * 0.04) * 0.8 * 0.52
    np.testing.assert_allclose(tracker.center, [130, 95], atol=1e-9)
    np.testing.assert_allclose(tracker.size, [40 * (1 - lr) + 44 * lr, 20 * (1 - lr) + 22 * lr], atol=1e-9)
    np.testing.assert_allclose(box, [130 - (40 + 4 * lr) / 2, 95 - (20 + 2 * lr) / 2, 40 + 4 * lr, 20 + 2 * lr],
                               atol=1e-9)
    assert tracker.last.score == pytest.approx(0.8)
    tracker.update(FRAME)
    assert len(network.template_crops) == 1 and len(network.search_crops) == 2, "the kernels are cached"


def test_tracker_clamps_the_centre_into_the_frame_and_the_size_to_min_size_and_frame():
    network = FakeNetwork()
    # test_lr 1 and no penalty: lr = score = 1, so the size becomes the prediction before clamping
    tracker = SiamFCppTracker(network, SiamFCppTrackerParams(test_lr=1.0, penalty_k=0.0), score_size=3)
    tracker.init(FRAME, [100, 80, 40, 20])
    outside = [399.0, -30.5, 2.0, 1.0]  # centre (400, -30): right of and above the frame, 2 × 1 px
    network.outputs = fake_outputs(hand_crop_box(outside, (120, 90), (40, 20)), 1.0,
                                   hand_crop_box([100, 80, 40, 20], (120, 90), (40, 20)))
    box = tracker.update(FRAME)
    np.testing.assert_allclose(tracker.center, [320, 0], atol=1e-9)
    np.testing.assert_allclose(tracker.size, [10, 10], atol=1e-9)  # min_size
    x, y, w, h = box
    assert x >= 0 and y >= 0 and x + w <= 320 + 1e-9 and y + h <= 240 + 1e-9 and w >= 1 and h >= 1, box
    np.testing.assert_allclose(box, [315, 0, 5, 5], atol=1e-9)  # the visible part of the 10 × 10 box at the corner

    huge = [-200.0, -380.0, 1000.0, 800.0]  # centre (300, 20), larger than the frame
    network.outputs = fake_outputs(hand_crop_box(huge, (320, 0), (10, 10)), 1.0,
                                   hand_crop_box([315, -5, 10, 10], (320, 0), (10, 10)))
    tracker.update(FRAME)
    np.testing.assert_allclose(tracker.center, [300, 20], atol=1e-9)
    np.testing.assert_allclose(tracker.size, [320, 240], atol=1e-9)  # the frame size


def test_non_finite_outputs_are_never_chosen_and_a_frame_without_any_keeps_the_state():
    """A diverged network (NaN scores) or an overflowing box regression (inf sides) must not poison the tracker: a NaN
    size would make every later crop window invalid and stop the whole evaluation."""
    network = FakeNetwork()
    tracker = SiamFCppTracker(network, SiamFCppTrackerParams(), score_size=3)
    tracker.init(FRAME, [100, 80, 40, 20])
    same = hand_crop_box([100, 80, 40, 20], (120, 90), (40, 20))
    score, boxes = fake_outputs(hand_crop_box([108.0, 84.0, 44.0, 22.0], (120, 90), (40, 20)), 0.8, same)
    network.outputs = (np.full(9, np.nan), boxes)
    np.testing.assert_allclose(tracker.update(FRAME), [100, 80, 40, 20], atol=1e-12)
    assert tracker.last.score == 0.0 and np.isfinite(tracker.size).all()
    score[8], boxes[8, 2:] = 0.99, np.inf  # the best raw score, but an infinite box
    network.outputs = (score, boxes)
    tracker.update(FRAME)
    np.testing.assert_allclose(tracker.center, [130, 95], atol=1e-9)  # location 0, as in the hand case above
    assert tracker.last.score == pytest.approx(0.8)


# ---------------------------------------------------------------------------------------------------------------------
# 3. ONNX parity of the two graphs on random weights


@pytest.fixture(scope="module")
def val_sequences(tmp_path_factory):
    root = tmp_path_factory.mktemp("got10k") / "got10k"
    generate_got10k(root, Got10kSpec(num_train_seqs=1, num_val_seqs=1, min_frames=12, max_frames=12), workers=1)
    return open_sequences(root, "val")


def sequence_crops(sequences, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """(template crop of frame 0, search crop of `frame`) around the first box of the first sequence, as the tracker
    cuts them."""
    sequence = sequences.sequences[0]
    first = sequences.frame(sequence, 0)
    x, y, w, h = sequence.boxes[0]
    side, mean = float(context_side(w, h)), channel_mean(first)
    return (crop_image(first, CropWindow(x + w / 2, y + h / 2, side, 127), mean),
            crop_image(sequences.frame(sequence, frame), CropWindow(x + w / 2, y + h / 2, side * 303 / 127, 303), mean))


def random_weights_export(backbone: str, head_width: int, directory: Path, sequences):
    """(model, params, OUT.onnx, export reports) of a randomly initialised SiamFC++ written as a checkpoint and exported
    by deploy.export. The reference init (head N(0, 1e-4), classifier prior 0.01, BN at identity) makes every score
    and box nearly the same, which would let a wrong graph pass: the head convs get He-normal weights (the box
    regression a smaller std, so that exp() gives box sides of tens of pixels rather than overflowing), the classifier
    bias 0, and BatchNorm the statistics of two pairs of crops of `sequences` and a pair of noise crops (what
    deploy.export checks parity on), so scores spread over (0, 1) and the boxes differ."""
    from deploy.export import export_checkpoint

    params = parse_params({"task": "siamfcpp", "batches_dir": str(directory / "unused"),
                           "model_params": {"backbone": backbone, "head_width": head_width}}, "test params")
    torch.manual_seed(0)
    model = siamfcpp_task.build_model(params)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and not name.startswith("backbone."):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # running statistics = those of the batch below
    nn.init.zeros_(model.cls_score.bias)
    nn.init.normal_(model.bbox_offsets.weight, std=0.3 / math.sqrt(head_width))
    rng = np.random.default_rng(0)
    noise = tuple(rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for side in (127, 303))  # like export's
    pairs = [sequence_crops(sequences, 3), sequence_crops(sequences, 8), noise]
    with torch.no_grad():
        model.train()(*(torch.from_numpy(np.stack([p[i] for p in pairs]).transpose(0, 3, 1, 2).astype(np.float32))
                        for i in (0, 1)))
    model.eval()
    checkpoint = directory / "random.pth"
    save_atomic({"format_version": 2, "task": "siamfcpp", "params": params_dict(params), "task_state": {},
                 "model": model.state_dict(), "epoch": 0}, checkpoint)
    out = directory / "random.onnx"
    reports = export_checkpoint(checkpoint, out, batch_check=(1,))
    return model, params, out, reports


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, val_sequences, one_torch_thread):
    return random_weights_export("tinyconv", 64, tmp_path_factory.mktemp("tiny_export"), val_sequences)


@pytest.mark.parametrize("backbone", ["tinyconv", "alexnet_bn"])
def test_template_and_search_graphs_match_pytorch(backbone, tiny_export, val_sequences, tmp_path, one_torch_thread):
    exported = (tiny_export if backbone == "tinyconv"
                else random_weights_export("alexnet_bn", 256, tmp_path, val_sequences))
    model, params, out, reports = exported
    assert [Path(r.out_path).name for r in reports] == ["random.template.onnx", "random.search.onnx"]
    assert all(r.passed for r in reports) and reports[1].parity[0].compared == "score"
    assert reports[1].parity[0].max_abs_diff <= 1e-4, reports
    assert [r.parity[0].batch_size for r in reports] == [1, 1], "static batch 1"

    onnx_net, torch_net = OnnxNetwork.from_export(out), TorchNetwork(model, params.tracker_params.x_size)
    assert (onnx_net.z_size, onnx_net.x_size, onnx_net.score_size) == (127, 303, 17) == (
        torch_net.z_size, 303, torch_net.score_size)
    assert onnx_net.tracker_params == params.tracker_params
    z, x = sequence_crops(val_sequences, 5)
    score, boxes = onnx_net.search(x, onnx_net.template(z))
    expected_score, expected_boxes = torch_net.search(x, torch_net.template(z))
    assert score.shape == (17 * 17,) and boxes.shape == (17 * 17, 4)
    assert expected_score.max() - expected_score.min() > 0.2, "a spread of scores, not a constant map"
    assert np.abs(score - expected_score).max() <= 1e-4
    assert np.abs(boxes - expected_boxes).max() <= 1e-2 < (expected_boxes[:, 2:] - expected_boxes[:, :2]).std()


def tracked_boxes(networks: dict, tracker_params: SiamFCppTrackerParams, sequences) -> dict[str, np.ndarray]:
    """Boxes (N×4) of a SiamFC++ tracker on each network over the first sequence of `sequences`."""
    sequence = sequences.sequences[0]
    boxes = {}
    for name, network in networks.items():
        tracker = SiamFCppTracker(network, tracker_params, network.score_size)
        frames = (sequences.frame(sequence, i) for i in range(len(sequence)))
        boxes[name] = track_frames(tracker, frames, sequence.boxes[0])[0]
        assert boxes[name].shape == (len(sequence), 4)
    return boxes


class TwinNetwork:
    """The PyTorch network that drives the tracker, with ONNX Runtime run on every same crop alongside; the ONNX
    outputs are kept in `onnx_outputs`, the PyTorch ones in `torch_outputs`."""

    def __init__(self, torch_net: TorchNetwork, onnx_net: OnnxNetwork) -> None:
        self.torch_net, self.onnx_net = torch_net, onnx_net
        self.z_size, self.score_size = torch_net.z_size, torch_net.score_size
        self.torch_outputs: list = []
        self.onnx_outputs: list = []

    def template(self, crop: np.ndarray):
        return self.torch_net.template(crop), self.onnx_net.template(crop)

    def search(self, crop: np.ndarray, kernels):
        self.onnx_outputs.append(self.onnx_net.search(crop, kernels[1]))
        self.torch_outputs.append(self.torch_net.search(crop, kernels[0]))
        return self.torch_outputs[-1]


class ReplayNetwork:
    """Hands the tracker recorded (score, boxes) outputs in order, whatever the crop."""

    z_size, score_size = 127, 17

    def __init__(self, outputs: list) -> None:
        self.outputs = iter(outputs)

    def template(self, crop: np.ndarray) -> None:
        return None

    def search(self, crop: np.ndarray, kernels) -> tuple[np.ndarray, np.ndarray]:
        return next(self.outputs)


def test_onnx_outputs_on_the_trackers_crops_drive_it_to_the_same_boxes(tiny_export, val_sequences,
                                                                       one_torch_thread):
    """Random weights make the closed loop chaotic (a 1e-5 px difference grows ~10–100× per frame as the next crop
    moves), so ONNX Runtime runs on the crops of the PyTorch-driven tracker, and its outputs, replayed, must drive a
    second tracker to the same boxes. The closed loop on a trained checkpoint is tested below (slow)."""
    model, params, out, _ = tiny_export
    twin = TwinNetwork(TorchNetwork(model, params.tracker_params.x_size), OnnxNetwork.from_export(out))
    boxes = tracked_boxes({"torch": twin}, params.tracker_params, val_sequences)["torch"]
    replayed = tracked_boxes({"onnx": ReplayNetwork(twin.onnx_outputs)}, params.tracker_params, val_sequences)["onnx"]
    assert len(twin.onnx_outputs) == len(boxes) - 1
    for (score, crop_boxes), (expected_score, expected_boxes) in zip(twin.onnx_outputs, twin.torch_outputs):
        assert np.abs(score - expected_score).max() <= 1e-4
        assert np.abs(crop_boxes - expected_boxes).max() <= 1e-2
    assert np.abs(replayed - boxes).max() <= 1e-3
    assert np.abs(np.diff(boxes, axis=0)).max() > 5, "random weights: the tracker wanders"


# ---------------------------------------------------------------------------------------------------------------------
# 4. refusals


def test_evaluator_refuses_an_export_whose_search_graph_is_missing(tiny_export, tmp_path):
    out = tiny_export[2]
    shutil.copy(out.with_name("random.template.onnx"), tmp_path / "half.template.onnx")
    eval_params = write_eval_params(tmp_path, "half", tmp_path / "half.onnx", tmp_path / "data")
    done = run("evaluator.py", str(eval_params))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert f"missing: {tmp_path / 'half.search.onnx'}" in done.stderr, done.stderr[-2000:]


def test_unfreeze_refuses_a_stage_the_backbone_does_not_have(tiny_export):
    model, params = tiny_export[:2]
    scheduled = parse_params({**params_dict(params), "unfreeze": [{"epoch": 2, "stages": ["conv5"]}]}, "test")
    groups = {g.name: g for g in siamfcpp_task.param_groups(scheduled, model)}
    assert groups["backbone_conv5"].start_epoch == 2 and groups["backbone"].start_epoch == 0
    assert sum(len(g.params) for g in groups.values()) == len(list(model.parameters()))
    wrong = parse_params({**params_dict(params), "unfreeze": [{"epoch": 1, "stages": ["Mixed_6"]}]}, "test")
    with pytest.raises(UserError) as refused:
        siamfcpp_task.param_groups(wrong, model)
    assert "has no stage 'Mixed_6'" in str(refused.value)
    assert "its stages: conv1, conv2, conv3, conv4, conv5" in str(refused.value)


# ---------------------------------------------------------------------------------------------------------------------
# 2. a short training run, then everything that consumes its checkpoint (slow)

EVAL_BOUNDS = {"max_sequences": 2, "max_frames": 10}
LOSS_TAGS = ("train/loss_cls", "train/loss_ctr", "train/loss_iou")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(run directory, data root) of 3 epochs × 4 steps of 16 pairs on 4 synthetic sequences, evaluated every epoch."""
    base = tmp_path_factory.mktemp("siamfcpp_run")
    data = base / "got10k"
    config = write_json(base / "params.json", {
        "task": "siamfcpp", "working_dir": str(base / "runs"), "batches_dir": str(data), "seed": 0, "epochs": 3,
        "synthetic_data": {"type": "got10k", "seed": 0, "options": {"num_train_seqs": 4, "num_val_seqs": 2,
                                                                    "min_frames": 12, "max_frames": 16}},
        "model_params": {"backbone": "tinyconv", "head_width": 64},
        "pair_sampling": {"batch_size": 16, "pairs_per_epoch": 64},
        "lr": {"base_lr": 0.08, "fc_lr": 0.08, "warmup_epoch": 1, "policy": "cosine", "final_lr_factor": 0.0},
        "optimizer": "sgd", "num_preprocess_workers": 0, "log_every_steps": 1,
        "evaluation_params": {"type": "got10k_evaluate", "epoch": 1, "subset": "val", **EVAL_BOUNDS}})
    done = run("train.py", "--operation", "train", "--config_path", str(config), "--sub_working_dir", "siam")
    assert done.returncode == 0, done.stderr[-3000:]
    return base / "runs" / "siam", data


@pytest.fixture(scope="module")
def exported(trained) -> tuple[Path, list]:
    run_dir = trained[0]
    done = run("-m", "deploy.export", "--checkpoint", str(run_dir / "model_best.pth"), "--out",
               str(run_dir / "model.onnx"))
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir / "model.onnx", json.loads(done.stdout)


@pytest.fixture(scope="module")
def pth_metrics(trained, tmp_path_factory) -> dict:
    run_dir, data = trained
    return evaluate(tmp_path_factory.mktemp("eval_pth"), "pth", run_dir / "model_best.pth", data, **EVAL_BOUNDS)


@SLOW
def test_training_lowers_every_loss_component(trained):
    events = EventAccumulator(str(trained[0]), size_guidance={"scalars": 0}).Reload()
    means = {}
    for tag in LOSS_TAGS:
        values = [e.value for e in events.Scalars(tag)]
        assert len(values) == 12, (tag, values)  # 3 epochs × 4 steps, logged every step
        means[tag] = (np.mean(values[:4]), np.mean(values[-4:]))
    assert all(last < 0.95 * first for first, last in means.values()), means


@SLOW
def test_offline_evaluation_reproduces_the_on_the_fly_metrics(trained, pth_metrics):
    run_dir = trained[0]
    best = load_checkpoint(run_dir / "model_best.pth")["best"]
    records = [json.loads(line) for line in (run_dir / "eval_results.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    [recorded] = [r["metrics"] for r in records if r["epoch"] == best["epoch"]]
    assert recorded["ao"] == best["value"] and recorded["sequences"] == 2
    assert set(pth_metrics) == set(recorded)
    for name, value in recorded.items():
        if name != "fps":
            assert pth_metrics[name] == pytest.approx(value, abs=1e-9), name


@SLOW
def test_export_writes_both_graphs_with_the_tracker_metadata(trained, exported):
    from deploy.runtime import open_exported

    out, reports = exported
    assert [Path(r["out_path"]).name for r in reports] == ["model.template.onnx", "model.search.onnx"]
    assert all(r["passed"] for r in reports)
    stored = load_checkpoint(trained[0] / "model_best.pth")["params"]
    for graph in ("template", "search"):
        _, meta = open_exported(out.with_name(f"model.{graph}.onnx"))
        assert meta["graph"] == graph and meta["task"] == "siamfcpp"
        assert (meta["z_size"], meta["x_size"], meta["score_size"]) == ("127", "303", "17")
        assert json.loads(meta["tracker_params"]) == stored["tracker_params"]


@SLOW
def test_onnx_evaluation_gives_the_pytorch_metrics(trained, exported, pth_metrics, tmp_path):
    metrics = evaluate(tmp_path, "onnx", exported[0], trained[1], **EVAL_BOUNDS)
    for name in ("ao", "sr50", "sr75"):
        assert metrics[name] == pytest.approx(pth_metrics[name], abs=1e-3), name
    assert metrics["frames"] == pth_metrics["frames"]


@SLOW
def test_onnx_and_pytorch_trackers_return_the_same_boxes(trained, exported, one_torch_thread):
    from deploy.export import load_model_from_checkpoint

    run_dir, data = trained
    model, params, _ = load_model_from_checkpoint(run_dir / "model_best.pth")
    networks = {"onnx": OnnxNetwork.from_export(exported[0]),
                "torch": TorchNetwork(model, params.tracker_params.x_size)}
    boxes = tracked_boxes(networks, params.tracker_params, open_sequences(data, "val"))
    assert np.abs(boxes["onnx"] - boxes["torch"]).max() <= 1e-3
    # 12 steps leave the head near its N(0, 1e-4) init: a flat score map, so the tracker moves little (size smoothing)
    assert np.abs(np.diff(boxes["torch"], axis=0)).max() > 0.1, "the tracker moves"


@SLOW
def test_track_command_runs_on_the_export_and_on_the_checkpoint_alike(trained, exported, tmp_path):
    run_dir, data = trained
    folder = data / "val" / "GOT-10k_Val_000001"
    first = (folder / "groundtruth.txt").read_text().splitlines()[0]
    boxes = {}
    for name, model in (("onnx", exported[0]), ("pth", run_dir / "model_best.pth")):
        done = run("-m", "trackers.track", "--frames", str(folder), "--box", first, "--model", str(model),
                   "--out", str(tmp_path / name), "--save", "none")
        assert done.returncode == 0, done.stderr[-3000:]
        boxes[name] = np.loadtxt(tmp_path / name / "boxes.txt", delimiter=",")
    assert boxes["pth"].shape == (len(list(folder.glob("*.jpg"))), 4)
    # both files hold %.3f: the same box may round one last digit apart
    assert np.abs(boxes["onnx"] - boxes["pth"]).max() <= 1e-3 + 1e-9
