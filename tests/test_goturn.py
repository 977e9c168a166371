"""GOTURN's parts on hand cases: the CaffeNet tower and the regressor, crop and label geometry (a box at the frame
border included), the motion model's distribution, clipping and retry limit, the training samples, the loss, the
parameter groups' LRs, ONNX parity of the exported graph, and the tracker on a synthetic sequence through PyTorch and
ONNX Runtime alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.crops import crop_image
from data.pair_loader import LoadedPair
from data.sequences import open_sequences
from data.synthetic import Got10kSpec, generate_got10k
from engine.checkpoint import save_atomic
from engine.optim import build_optimizer
from engine.params import params_dict, parse_params
from evaluate.tracking_run import track_frames
from networks.backbones import build_backbone
from trackers.goturn import task as goturn_task
from trackers.goturn.geometry import box_to_target, crop_window, target_to_box
from trackers.goturn.motion import MotionModel
from trackers.goturn.onnx_network import OnnxRegressor
from trackers.goturn.samples import GoturnSamples
from trackers.goturn.tracker import GoturnTracker, TorchRegressor

SMALL_MODEL = {"tower_width": 0.25, "fc_width": 32, "fc_layers": 2}


def goturn_params(**overrides):
    return parse_params({"task": "goturn", "batches_dir": "unused", **overrides}, "test params")


# ---------------------------------------------------------------------------------------------------------------------
# network


def test_caffenet_tower_maps_a_227_crop_to_256x6x6(one_torch_thread):
    tower = build_backbone("caffenet").eval()
    with torch.no_grad():
        features = tower(torch.rand(2, 3, 227, 227) * 255)
    assert features.shape == (2, 256, 6, 6) and tower.output_shape(227) == (256, 6, 6)
    assert sum(p.numel() for p in tower.parameters()) == 2_334_080  # CaffeNet's conv layers, weights and biases
    assert [type(m).__name__ for m in tower.layers][:4] == ["Conv2d", "ReLU", "MaxPool2d", "LocalResponseNorm"]
    assert (tower.layers.norm1.size, tower.layers.norm1.alpha, tower.layers.norm1.beta) == (5, 1e-4, 0.75)
    assert build_backbone("caffenet", width=0.5).output_shape(227) == (128, 6, 6)
    assert build_backbone("caffenet").output_shape(131) == (256, 3, 3)


def test_local_response_norm_equals_pytorchs():
    from networks.caffenet import LocalResponseNorm

    x = torch.randn(2, 12, 5, 5, dtype=torch.float64) * 60
    ours = LocalResponseNorm(12).double()
    torch.testing.assert_close(ours(x), torch.nn.functional.local_response_norm(x, 5, 1e-4, 0.75, 1.0))


def test_regressor_outputs_four_numbers_with_the_reference_initialisation(one_torch_thread):
    torch.manual_seed(0)
    params = goturn_params(model_params={"tower_width": 0.25, "fc_width": 512})
    model = goturn_task.build_model(params).eval()
    hidden = [m for m in model.regressor if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in hidden] == [(2 * 64 * 36, 512), (512, 512), (512, 512), (512, 4)]
    for layer in hidden[:-1]:
        assert layer.weight.std().item() == pytest.approx(0.005, rel=0.05) and (layer.bias == 1).all()
    assert hidden[-1].weight.std().item() == pytest.approx(0.01, rel=0.1) and (hidden[-1].bias == 0).all()
    target, search = torch.rand(3, 3, 227, 227) * 255, torch.rand(6, 3, 227, 227) * 255
    with torch.no_grad():
        shared = model(target, search)  # each target serves two consecutive search crops
        repeated = model(target.repeat_interleave(2, dim=0), search)
    assert shared.shape == (6, 4)
    torch.testing.assert_close(shared, repeated, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="expected a multiple"):
        model(target, search[:5])


def test_tied_towers_share_one_module():
    untied = goturn_task.build_model(goturn_params(model_params=SMALL_MODEL))
    tied = goturn_task.build_model(goturn_params(model_params={**SMALL_MODEL, "tied_towers": True}))
    tower = sum(p.numel() for p in untied.target_tower.parameters())
    assert tied.search_tower is None
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == tower


# ---------------------------------------------------------------------------------------------------------------------
# crops and labels


def test_crop_window_and_labels_on_a_hand_box():
    window = crop_window([40, 30, 20, 10], context=2.0, out_size=227)
    assert (window.cx, window.cy, window.width, window.height) == (50, 35, 40, 20)
    np.testing.assert_allclose(box_to_target([40, 30, 20, 10], window), [2.5, 2.5, 7.5, 7.5])
    # the object moved half its width right and shrank to 3/4 of its height
    np.testing.assert_allclose(box_to_target([50, 30, 20, 7.5], window), [5.0, 2.5, 10.0, 6.25])
    np.testing.assert_allclose(target_to_box([5.0, 2.5, 10.0, 6.25], window), [50, 30, 20, 7.5])
    assert crop_window([3, 4, 0.2, 0.3], 2.0, 227).width == 1.0, "at least one frame pixel per side"


def test_a_box_touching_the_frame_border_is_padded_with_zeros():
    frame = np.full((80, 100, 3), 200, np.uint8)
    window = crop_window([0, 30, 20, 10], context=2.0, out_size=227)  # covers frame x in [-10, 30]
    crop = crop_image(frame, window, "zero")
    # crop column j samples frame x = (j + 0.5) · 40/227 − 10; bilinear sampling blends the zero border with the frame
    # for x in (−0.5, 0.5), so only columns left of x = −0.5 are all zero and only those right of 0.5 all frame
    assert (crop[:, :53] == 0).all() and (crop[:, 60:] == 200).all() and 0 < crop[0, 57, 0] < 200
    np.testing.assert_allclose(box_to_target([0, 30, 20, 10], window), [2.5, 2.5, 7.5, 7.5])
    np.testing.assert_allclose(target_to_box([2.5, 2.5, 7.5, 7.5], window), [0, 30, 20, 10], atol=1e-12)


def test_samples_of_a_still_image_and_of_a_moving_object():
    frame = np.zeros((120, 160, 3), np.uint8)
    box = np.array([60.0, 40.0, 32.0, 24.0])
    samples = GoturnSamples(input_size=63, examples_per_pair=4)
    still = samples.batch([LoadedPair(frame, box, frame, box, False)], [np.random.default_rng(0)])
    assert still["target"].shape == (1, 3, 63, 63) and still["search"].shape == (5, 3, 63, 63)
    torch.testing.assert_close(still["search"][0], still["target"][0])
    np.testing.assert_allclose(still["box"][0].numpy(), [2.5, 2.5, 7.5, 7.5], atol=1e-6)
    moved = box + [8, -4, 0, 0]
    batch = samples.batch([LoadedPair(frame, box, frame.copy(), moved, False)], [np.random.default_rng(0)])
    # the true sample: the current frame around the previous box (a 64 × 48 window), labelled with the current box
    np.testing.assert_allclose(batch["box"][0].numpy(), [2.5 + 1.25, 2.5 - 10 / 12, 7.5 + 1.25, 7.5 - 10 / 12], atol=1e-5)
    # the synthetic samples: crops around moved copies of the current box, so the label moves off the centre
    synthetic = batch["box"][1:].numpy()
    assert not np.allclose(synthetic, [2.5, 2.5, 7.5, 7.5], atol=0.05)
    again = samples.batch([LoadedPair(frame, box, frame.copy(), moved, False)], [np.random.default_rng(0)])
    torch.testing.assert_close(again["box"], batch["box"])


def test_alov_videos_and_imagenet_det_still_images_train_together(tmp_path):
    """The reference's data: ALOV300++ pairs of annotated frames (every 5th) plus ImageNet DET still images as
    same-frame pairs, read from their real formats through the task's loader."""
    from data.options import PairDataset
    from data.synthetic import AlovSpec, ImagenetDetSpec, generate_alov, generate_imagenet_det
    from data.tracking_sets import open_training_sets

    generate_alov(tmp_path / "alov", AlovSpec(num_categories=1, videos_per_category=2, min_frames=11, max_frames=11,
                                              img_w=96, img_h=72), workers=1)
    generate_imagenet_det(tmp_path / "det", ImagenetDetSpec(num_synsets=1, images_per_synset=3, img_w=96, img_h=72),
                          workers=1)
    sets, ratios = open_training_sets(str(tmp_path / "alov"), None, "train",
                                      [PairDataset(path=str(tmp_path / "det"), type="imagenet_det", ratio=1.0)])
    assert [s.layout for s in sets] == ["alov", "still"] and ratios == [1.0, 1.0]
    params = goturn_params(model_params={**SMALL_MODEL, "input_size": 67},
                           pair_sampling={"batch_size": 8, "pairs_per_epoch": 32, "examples_per_pair": 2,
                                          "max_distance": 5})
    from data.pair_loader import PairLoader

    loader = PairLoader(sets, pairs_per_epoch=32, batch_size=8, ratios=ratios, max_distance=5,
                        crops=goturn_task.samples(params), seed=0)
    pairs = [pair for step in range(loader.steps_per_epoch) for pair in loader.sampler.batch(0, step)]
    still = [pair.template[0] >= len(sets[0]) for pair in pairs]
    assert 0 < sum(still) < len(pairs), "both sets are drawn"
    for pair, is_still in zip(pairs, still):
        distance = pair.search[1] - pair.template[1]
        assert distance == 0 if is_still else abs(distance) == 5, "still: the same image; ALOV: the next annotation"
    for step, batch in enumerate(loader.epoch(0)):
        assert batch["target"].shape == (8, 3, 67, 67) and batch["search"].shape == (24, 3, 67, 67)
        true_samples = batch["box"][::3].numpy()
        for pair, box in zip(loader.sampler.batch(0, step), true_samples):
            if pair.template[0] >= len(sets[0]):  # a still image: the object has not moved
                np.testing.assert_allclose(box, [2.5, 2.5, 7.5, 7.5], atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# motion model


def moved(model: MotionModel, box, frame_size, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([model.sample(rng, box, frame_size) for _ in range(n)])


def test_motion_statistics_follow_the_laplace_parameters():
    box, n = np.array([4950.0, 4950.0, 100.0, 100.0]), 20000
    out = moved(MotionModel(), box, (10_000, 10_000), n)
    scale = out[:, 2] / box[2] - 1
    assert scale.min() >= -0.4 and scale.max() <= 0.4
    # |Laplace(0, 1/15)| has mean 1/15; the clip at ±0.4 (probability e^-6) changes it by < 0.1 %
    assert np.abs(scale).mean() == pytest.approx(1 / 15, rel=0.03)
    assert np.median(scale) == pytest.approx(0.0, abs=0.005)
    shift = (out[:, 0] + out[:, 2] / 2 - 5000) / 100
    # a try that moves more than one box width is drawn again: |Laplace(0, 0.2)| given |x| <= 1 has mean
    # (b − (1 + b)e^(−1/b)) / (1 − e^(−1/b)) = 0.19322
    assert np.abs(shift).max() <= 1.0
    assert np.abs(shift).mean() == pytest.approx(0.19322, rel=0.03)
    np.testing.assert_array_equal(out, moved(MotionModel(), box, (10_000, 10_000), n), "seeded: reproducible")


def test_motion_retries_at_most_max_tries_times_then_keeps_the_last_try():
    box, n = np.array([4950.0, 4950.0, 100.0, 100.0]), 20000
    wide = MotionModel(lambda_shift=0.1)  # b = 10: a try stays within one box width with probability 1 − e^−0.1
    for tries, expected in ((10, np.exp(-1.0)), (1, np.exp(-0.1))):
        out = moved(MotionModel(lambda_shift=0.1, max_tries=tries), box, (10_000, 10_000), n)
        too_far = np.abs(out[:, 0] + out[:, 2] / 2 - 5000) > 100
        assert too_far.mean() == pytest.approx(expected, abs=0.015), tries
    assert wide.max_tries == 10


def test_moved_boxes_stay_inside_a_small_frame():
    out = moved(MotionModel(lambda_shift=1.0, lambda_scale=2.0), [0.0, 50.0, 30.0, 20.0], (64, 80), 3000)
    assert (out[:, :2] >= 0).all() and (out[:, 0] + out[:, 2] <= 64 + 1e-9).all()
    assert (out[:, 1] + out[:, 3] <= 80 + 1e-9).all()
    assert (out[:, 2:] >= 1).all() and (out[:, 2] <= 63).all()


# ---------------------------------------------------------------------------------------------------------------------
# loss and parameter groups


def test_loss_sums_the_coordinates_and_averages_the_samples():
    outputs = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    batch = {"box": torch.tensor([[2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, -1.0]])}
    total, components, _ = goturn_task.BoxL1Criterion()(outputs, batch, 0)
    assert float(total) == pytest.approx((1 + 0 + 1 + 2 + 1 + 1 + 1 + 1) / 2)
    assert set(components) == {"l1"}


def test_parameter_groups_give_towers_fc_weights_and_fc_biases_their_lrs():
    params = goturn_params(model_params=SMALL_MODEL, lr={"base_lr": 0.01, "fc_lr": 0.1}, fc_bias_lr_factor=2.0)
    model = goturn_task.build_model(params)
    optimizer = build_optimizer(goturn_task.param_groups(params, model), "sgd", 5e-4)
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert lrs == {"towers": 0.01, "fc_weights": 0.1, "fc_biases": pytest.approx(0.2)}
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters()), "every parameter exactly once"
    frozen = goturn_params(model_params=SMALL_MODEL, freeze_towers=True)
    model = goturn_task.build_model(frozen)
    names = [g.name for g in goturn_task.param_groups(frozen, model)]
    assert names == ["fc_weights", "fc_biases"]
    assert not any(p.requires_grad for p in model.target_tower.parameters())


# ---------------------------------------------------------------------------------------------------------------------
# export and tracking


@pytest.fixture(scope="module")
def val_sequences(tmp_path_factory):
    root = tmp_path_factory.mktemp("got10k") / "got10k"
    generate_got10k(root, Got10kSpec(num_train_seqs=1, num_val_seqs=1, min_frames=10, max_frames=10), workers=1)
    return open_sequences(root, "val")


@pytest.fixture(scope="module")
def random_export(tmp_path_factory):
    """(model, params, OUT.onnx, reports) of a random GOTURN written as a checkpoint and exported by deploy.export.
    The reference init (hidden biases 1, weights N(0, 0.005)) gives nearly the same box for every crop, which would let
    a wrong graph pass: the FC layers get He-normal weights and zero biases instead, and the output layer the bias of an
    unmoved box with small weights, so that boxes vary from crop to crop while a tracker stays on a box of sane size."""
    from deploy.export import export_checkpoint

    directory = tmp_path_factory.mktemp("goturn_export")
    params = goturn_params(model_params=SMALL_MODEL)
    torch.manual_seed(0)
    model = goturn_task.build_model(params)
    for layer in model.regressor:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            torch.nn.init.zeros_(layer.bias)
    with torch.no_grad():
        model.regressor[-1].weight.mul_(0.02)
        model.regressor[-1].bias.copy_(torch.tensor([2.5, 2.5, 7.5, 7.5]))
    model.eval()
    checkpoint = directory / "random.pth"
    save_atomic({"format_version": 2, "task": "goturn", "params": params_dict(params), "task_state": {},
                 "model": model.state_dict(), "epoch": 0}, checkpoint)
    out = directory / "random.onnx"
    return model, params, out, export_checkpoint(checkpoint, out)


def test_exported_graph_matches_pytorch_with_a_dynamic_batch(random_export, one_torch_thread):
    from deploy.runtime import open_exported

    model, params, out, reports = random_export
    [report] = reports
    assert report.passed and [r.batch_size for r in report.parity] == [1, 4]
    assert max(r.max_abs_diff for r in report.parity) <= 1e-3
    session, meta = open_exported(out)
    assert (meta["task"], meta["input_size"], meta["context"], meta["output_scale"]) == ("goturn", "227", "2.0",
                                                                                         "10.0")
    assert [i.name for i in session.get_inputs()] == ["target", "search"]
    import onnx

    assert sum(node.op_type == "LRN" for node in onnx.load(out).graph.node) == 4, "two LRNs per tower, as ONNX LRN"
    rng = np.random.default_rng(1)
    target, search = (rng.uniform(0, 255, (3, 3, 227, 227)).astype(np.float32) for _ in range(2))
    (boxes,) = session.run(None, {"target": target, "search": search})
    with torch.no_grad():
        expected = model(torch.from_numpy(target), torch.from_numpy(search)).numpy()
    assert boxes.shape == (3, 4) and np.abs(boxes - expected).max() <= 1e-3
    assert np.abs(np.diff(expected, axis=0)).max() > 0.02, "different crops give different boxes"


def test_tracker_follows_a_constant_regression_exactly():
    class Constant:
        input_size, context = 63, 2.0

        def __init__(self, output):
            self.output = np.asarray(output, dtype=np.float64)

        def regress(self, target, search):
            assert target.shape == search.shape == (63, 63, 3)
            return self.output

    frames = [np.zeros((100, 200, 3), np.uint8)] * 6
    still, _ = track_frames(GoturnTracker(Constant([2.5, 2.5, 7.5, 7.5])), frames, [20, 30, 40, 20])
    np.testing.assert_allclose(still, [[20, 30, 40, 20]] * 6, atol=1e-9)
    # one output unit = a tenth of the crop = 0.2 box widths: the box moves 8 px right per frame, then meets the border
    moving, _ = track_frames(GoturnTracker(Constant([3.5, 2.5, 8.5, 7.5])), frames, [100, 30, 40, 20])
    np.testing.assert_allclose(moving[:, 0], [100, 108, 116, 124, 132, 140], atol=1e-9)
    edge, _ = track_frames(GoturnTracker(Constant([7.5, 2.5, 12.5, 7.5])), frames, [100, 30, 40, 20])
    assert edge[-1, 0] + edge[-1, 2] == pytest.approx(200) and (edge[:, 2] >= 1).all()


def test_tracker_on_pytorch_and_on_onnx_runtime_gives_the_same_boxes(random_export, val_sequences,
                                                                      one_torch_thread):
    model, params, out, _ = random_export
    sequence = val_sequences.sequences[0]
    frames = [val_sequences.frame(sequence, i) for i in range(len(sequence))]
    boxes = {}
    for name, network in (("torch", TorchRegressor(model, 2.0)), ("onnx", OnnxRegressor(out))):
        boxes[name], _ = track_frames(GoturnTracker(network), frames, sequence.boxes[0])
    assert boxes["torch"].shape == (len(frames), 4) and np.isfinite(boxes["torch"]).all()
    # float rounding differences feed back through the next crops: they grow over the frames, but stay tiny
    assert np.abs(boxes["onnx"] - boxes["torch"]).max() <= 1e-2
    assert np.abs(np.diff(boxes["torch"], axis=0)).max() > 0.5, "the tracker moves"
    assert (boxes["torch"][:, 2:] > 5).all(), "on boxes of sane size"
