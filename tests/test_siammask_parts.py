"""SiamMask building blocks (trackers/siammask, networks.backbones' adjusted ResNets) against the reference notes
(trackers-and-got10k.md §3.1–3.4, §5): backbone sizes and parameter counts, heads and refine module, anchors and
deltas, anchor and mask targets, losses on hand values, and the graphs' ONNX export with the location as an input."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet as tv_resnet

from engine.errors import UserError
from networks.backbones import SIAMMASK_LEVELS, LevelFeatures, build_backbone
from trackers.siammask.anchors import (all_positions, anchor_grid, anchor_shapes, as_positions, crop_windows,
                                       cxcywh_to_xyxy, decode_deltas, encode_deltas, grid_axis, score_size,
                                       tracking_anchors, training_anchors, window_padding)
from trackers.siammask.losses import (SiamMaskLoss, mask_iou, mask_loss, select_cross_entropy, select_mask_logits,
                                      weighted_l1)
from trackers.siammask.model import (DepthCorr, MaskGraph, Refine, RefineGraph, SearchGraph, SiamMask,
                                     SiamMaskOutput, TemplateGraph, foreground_probability)
from trackers.siammask.targets import (AnchorTargets, TargetConfig, anchor_targets, box_iou, mask_labels,
                                       mask_positions, mask_windows, sample, siammask_targets)


def _crop(side: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Raw RGB 0..255 crops."""
    return torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 255


def _millions(module: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 2)


@pytest.fixture(scope="module")
def small_net() -> SiamMask:
    """The CPU variant, narrowed: ResNet-18 adjusted to 32 channels, heads 32 wide; eval mode."""
    torch.manual_seed(0)
    return SiamMask(build_backbone("resnet18_siammask", adjust_channels=32), hidden=32).eval()


@pytest.fixture(scope="module")
def small_track(small_net):
    z, x = _crop(127, seed=1), _crop(255, seed=2)
    with torch.no_grad():
        zf = small_net.template(z)
        return z, x, zf, small_net.track(x, zf)


# ---------------------------------------------------------------------------------------------------------------------
# backbone (networks.backbones: resnet50_siammask, resnet18_siammask)


def _levels(trunk: torch.nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """The maps of SIAMMASK_LEVELS, as LevelFeatures returns them (without its probe forward)."""
    maps = []
    for name, stage in trunk.named_children():
        x = stage(x)
        if name in SIAMMASK_LEVELS:
            maps.append(x)
    return maps


def test_resnet50_adjusted_sizes_and_parameters_match_the_reference():
    with torch.device("meta"):
        features = LevelFeatures(build_backbone("resnet50_siammask"), SIAMMASK_LEVELS)
    assert [(f.name, f.channels, f.stride) for f in features.feature_info] == [
        ("relu", 64, 2), ("layer1", 256, 4), ("layer2", 512, 8), ("layer3", 1024, 8), ("adjust", 256, 8)]
    torch.manual_seed(0)
    trunk = build_backbone("resnet50_siammask").eval()
    with torch.no_grad():  # one real forward per crop size, batch 1
        template = _levels(trunk, _crop(127))
        search = _levels(trunk, _crop(255))
    assert [tuple(m.shape[1:]) for m in template[3:]] == [(1024, 15, 15), (256, 7, 7)]
    assert [tuple(m.shape[1:]) for m in search] == [(64, 125, 125), (256, 63, 63), (512, 31, 31), (1024, 31, 31),
                                                    (256, 31, 31)]
    assert all(torch.isfinite(m).all() for m in template + search)
    assert trunk.out_channels == 256 and trunk.total_stride == 8 and _millions(trunk) == 14.05


def test_resnet18_variant_sizes_width_and_stages():
    torch.manual_seed(0)
    trunk = build_backbone("resnet18_siammask", adjust_channels=64).eval()
    features = LevelFeatures(trunk, SIAMMASK_LEVELS)
    with torch.no_grad():
        template, search = features(_crop(127)), features(_crop(255))
    assert [tuple(m.shape[1:]) for m in template] == [(64, 61, 61), (64, 31, 31), (128, 15, 15), (256, 15, 15),
                                                      (64, 7, 7)]
    assert [tuple(m.shape[1:]) for m in search] == [(64, 125, 125), (64, 63, 63), (128, 31, 31), (256, 31, 31),
                                                    (64, 31, 31)]
    assert torch.equal(search[-1], trunk(_crop(255)).detach())  # the trunk's own output is the adjusted map
    assert trunk.out_channels == 64 and _millions(build_backbone("resnet18_siammask")) == 3.18
    staged = [p for modules in trunk.stages.values() for m in modules for p in m.parameters()]
    assert len(staged) == len({id(p) for p in staged}) == len(list(trunk.parameters()))
    # the reference's layer layout: padding-0 stem and layer2, 3×3 shortcuts, dilation 2 after layer3's first block
    assert trunk.conv1.padding == (0, 0) and trunk.layer2[0].conv1.padding == (0, 0)
    assert trunk.layer2[0].downsample[0].kernel_size == (3, 3) and trunk.layer3[0].downsample[0].padding == (1, 1)
    assert trunk.layer3[0].conv1.dilation == (1, 1) and trunk.layer3[1].conv2.dilation == (2, 2)
    with pytest.raises(UserError, match="adjust_channels"):
        build_backbone("resnet18_siammask", adjust_channels=0)
    with pytest.raises(UserError, match="resnet50_siammask"):
        build_backbone("resnet50_adjusted")


def test_imagenet_weights_load_with_one_by_one_shortcuts_as_centre_taps(tmp_path):
    torch.manual_seed(3)
    state = tv_resnet.resnet18().state_dict()
    path = tmp_path / "resnet18-random.pth"
    torch.save(state, path)
    trunk = build_backbone("resnet18_siammask", imagenet_pretrain=str(path))
    for key, value in trunk.state_dict().items():
        if key.startswith("adjust."):
            continue
        if key in ("layer2.0.downsample.0.weight", "layer3.0.downsample.0.weight"):
            assert value.shape[-2:] == (3, 3) and torch.equal(value[..., 1, 1], state[key][..., 0, 0])
            assert not value[..., 0, :].any() and not value[..., :, 0].any() and not value[..., 2, 2].any()
        else:
            assert torch.equal(value, state[key]), key
    # the widened layer2 shortcut is torchvision's 1×1 stride-2 conv read at the padding-0 main path's pixels
    t = torch.randn(1, 64, 63, 63)
    with torch.no_grad():
        assert torch.allclose(trunk.layer2[0].downsample[0](t), F.conv2d(t[:, :, 1:, 1:], state[
            "layer2.0.downsample.0.weight"], stride=2), atol=1e-5)
    bad = {k: v for k, v in state.items() if not k.startswith("layer3.1.")}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="missing key"):
        build_backbone("resnet18_siammask", imagenet_pretrain=str(tmp_path / "bad.pth"))


# ---------------------------------------------------------------------------------------------------------------------
# model


def test_parameter_counts_per_part_match_the_reference():
    with torch.device("meta"):
        net = SiamMask(build_backbone("resnet50_siammask"))
    assert {name: _millions(part) for name, part in net.parts().items()} == {
        "features": 14.05, "rpn": 2.50, "mask": 2.27, "refine": 2.67}
    parted = [p for part in net.parts().values() for p in part.parameters()]
    assert len(parted) == len({id(p) for p in parted}) == len(list(net.parameters()))


def test_track_outputs_and_layouts(small_net, small_track):
    _, _, zf, out = small_track
    assert zf.shape == (1, 32, 7, 7)
    assert out.cls.shape == (1, 10, 25, 25) and out.loc.shape == (1, 20, 25, 25)
    assert out.mask.shape == (1, 3969, 25, 25) and out.corr.shape == (1, 32, 25, 25)
    assert [tuple(m.shape[1:]) for m in out.levels] == [(64, 125, 125), (64, 63, 63), (128, 31, 31)]
    prob = foreground_probability(out.cls)
    expected = torch.softmax(torch.stack([out.cls[:, :5], out.cls[:, 5:]]), dim=0)[1]  # channel c·k + a
    assert prob.shape == (1, 5, 25, 25) and torch.allclose(prob, expected)


def test_depth_corr_is_a_per_pair_per_channel_correlation():
    torch.manual_seed(0)
    corr = DepthCorr(4, 3, 2).eval()
    z, x = torch.randn(2, 4, 7, 7), torch.randn(2, 4, 31, 31)
    with torch.no_grad():
        out = corr.correlate(z, x)
        kernel, search = corr.conv_kernel(z), corr.conv_search(x)
        for b in range(2):
            for c in range(3):
                expected = F.conv2d(search[b:b + 1, c:c + 1], kernel[b:b + 1, c:c + 1])[0, 0]
                assert torch.allclose(out[b, c], expected, atol=1e-5)
        assert corr(z, x).shape == (2, 2, 25, 25)


def test_refine_crops_are_the_reference_slices_and_unfold_windows():
    torch.manual_seed(0)
    p0, p1, p2 = torch.randn(2, 3, 125, 125), torch.randn(2, 3, 63, 63), torch.randn(2, 3, 31, 31)
    assert Refine.level_padding((p0, p1, p2), 25) == 4
    assert Refine.level_padding((torch.zeros(1, 1, 69, 69), torch.zeros(1, 1, 35, 35), torch.zeros(1, 1, 17, 17)),
                                3) == 0  # the reference's 143 sharp-stage crops: unfold without padding
    positions = torch.tensor([[1, 0, 0], [0, 24, 3], [1, 12, 12], [0, 7, 24]])
    for level, side, step, pad in ((p0, 61, 4, 16), (p1, 31, 2, 8), (p2, 15, 1, 4)):
        crops = crop_windows(level, positions, side, step, pad)
        for crop, (b, i, j) in zip(crops, positions.tolist()):
            assert torch.equal(crop, F.pad(level, [pad] * 4)[b, :, step * i:step * i + side, step * j:step * j + side])
        unfolded = F.unfold(level, side, padding=pad, stride=step)                      # (B, C·side², 625)
        assert unfolded.shape[-1] == 625
        for crop, (b, i, j) in zip(crops, positions.tolist()):
            assert torch.equal(crop.reshape(-1), unfolded[b, :, 25 * i + j])
    with pytest.raises(ValueError, match="fall outside"):
        crop_windows(p2, torch.tensor([[0, 25, 0]]), 15, 1, 4)


def test_refine_output_and_independence_of_the_other_locations(small_net, small_track):
    _, _, _, out = small_track
    positions = torch.tensor([[0, 12, 12], [0, 0, 24], [0, 5, 9]])
    with torch.no_grad():
        together = small_net.refine(out.levels, out.corr, positions)
        alone = small_net.refine(out.levels, out.corr, torch.tensor([5, 9]))
    assert together.shape == (3, 127, 127) and alone.shape == (1, 127, 127)
    assert torch.allclose(together[2:], alone, atol=1e-6)
    # two pairs, the same location: each reads its own pair's maps
    levels2 = tuple(torch.cat([m, m.flip(-1)]) for m in out.levels)
    with torch.no_grad():
        both = small_net.refine(levels2, torch.cat([out.corr, out.corr]), torch.tensor([[0, 5, 9], [1, 5, 9]]))
    assert torch.allclose(both[0], alone[0], atol=1e-6) and not torch.allclose(both[1], alone[0], atol=1e-3)


def test_mask_at_equals_the_full_mask_map_in_eval_mode(small_net, small_track):
    _, _, _, out = small_track
    with torch.no_grad():
        at = small_net.mask_at(out.corr, torch.tensor([3, 17]))
    assert at.shape == (1, 63, 63)
    assert torch.allclose(at[0], out.mask[0, :, 3, 17].reshape(63, 63), atol=1e-5)
    selected = select_mask_logits(out.mask, torch.tensor([[0, 3, 17]]))
    assert torch.equal(selected[0], out.mask[0, :, 3, 17].reshape(63, 63))


def test_training_forward_and_backward_on_both_stages():
    torch.manual_seed(0)
    net = SiamMask(build_backbone("resnet18_siammask", adjust_channels=16), hidden=16).train()
    z, x = _crop(127, batch=2, seed=3), _crop(255, batch=2, seed=4)
    net.backbone.requires_grad_(False)  # (keeps the test short: no backward through the ResNet)
    out = net(z, x, refine_at=torch.tensor([[0, 12, 12], [1, 11, 13]]))
    assert out.cls.shape == (2, 10, 25, 25) and out.loc.shape == (2, 20, 25, 25)
    assert out.mask.shape == (2, 3969, 25, 25) and out.refined.shape == (2, 127, 127)
    out.refined.square().mean().backward()
    assert net.refinement.deconv.weight.grad.abs().sum() > 0
    assert net.mask_branch.conv_search[0].weight.grad.abs().sum() > 0
    assert net.rpn.cls.head[0].weight.grad is None and net.mask_branch.head[0].weight.grad is None
    with torch.no_grad():  # the sharp stage's pass: no RPN, no per-location 63 × 63 masks
        sharp = net(z, x, refine_at=torch.tensor([[1, 0, 0]]), mask=False, rpn=False)
    assert sharp.cls is None and sharp.loc is None and sharp.mask is None and sharp.refined.shape == (1, 127, 127)


def test_graphs_export_to_onnx_with_the_location_as_an_input(small_net, small_track):
    ort = pytest.importorskip("onnxruntime")
    z, x, zf, out = small_track

    def session(module, args, names):
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, buffer, input_names=names, opset_version=17, dynamo=False)
        small_net.eval()  # the exporter restores the wrapper's (training) mode on the way out
        return ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])

    levels = {name: m.numpy() for name, m in zip(("p0", "p1", "p2"), out.levels)}
    refine = session(RefineGraph(small_net), (*out.levels, out.corr, torch.tensor([12, 12])),
                     ["p0", "p1", "p2", "corr", "position"])
    mask = session(MaskGraph(small_net), (out.corr, torch.tensor([12, 12])), ["corr", "position"])
    template = session(TemplateGraph(small_net), (z,), ["z"])
    assert np.allclose(template.run(None, {"z": z.numpy()})[0], zf.numpy(), atol=1e-4)
    for row, col in ((12, 12), (0, 24), (19, 3)):  # other locations than the traced one
        position = np.array([row, col], dtype=np.int64)
        with torch.no_grad():
            expected = torch.sigmoid(small_net.refine(out.levels, out.corr, torch.tensor([row, col]))).numpy()
        got = refine.run(None, {**levels, "corr": out.corr.numpy(), "position": position})[0]
        assert got.shape == (1, 127, 127) and np.abs(got - expected).max() < 1e-5
        got = mask.run(None, {"corr": out.corr.numpy(), "position": position})[0]
        assert np.abs(got[0] - torch.sigmoid(out.mask[0, :, row, col].reshape(63, 63)).numpy()).max() < 1e-5
    search = session(SearchGraph(small_net), (x, zf), ["x", "zf"])
    got = search.run(None, {"x": x.numpy(), "zf": zf.numpy()})
    expected = [foreground_probability(out.cls), out.loc, out.corr, *out.levels]
    assert [g.shape for g in got] == [tuple(e.shape) for e in expected]
    assert all(np.abs(g - e.numpy()).max() <= 1e-4 * max(1.0, float(e.abs().max())) for g, e in zip(got, expected))


# ---------------------------------------------------------------------------------------------------------------------
# anchors


def test_anchor_shapes_use_the_reference_integer_rounding():
    assert anchor_shapes().tolist() == [[104, 32], [88, 40], [64, 64], [40, 80], [32, 96]]


def test_score_grid_for_training_and_tracking():
    assert score_size(255, 127) == 25 and score_size(143, 127, base_size=0) == 3
    with pytest.raises(ValueError):
        score_size(250, 127)
    train, track = training_anchors(), tracking_anchors(25)
    assert train.shape == track.shape == (5, 25, 25, 4)
    axis = grid_axis(25, centre=127.5)
    assert axis[0] == 31.5 and axis[12] == 127.5 and axis[-1] == 223.5          # crop centre 255 / 2 = 127.5
    assert grid_axis(25)[0] == -96 and grid_axis(25)[12] == 0                   # the reference's ori = -(25 // 2) · 8
    assert np.array_equal(train[..., :2] - 127.5, track[..., :2]) and np.array_equal(train[..., 2:], track[..., 2:])
    a, i, j = 3, 4, 17                                                          # layout [anchor, row, column]
    assert train[a, i, j].tolist() == [31.5 + 8 * j, 31.5 + 8 * i, 40, 80]
    assert anchor_grid(3, centre=71.5)[2, 1, 1].tolist() == [71.5, 71.5, 64, 64]


def test_deltas_round_trip():
    anchors = training_anchors()
    box = np.array([135.5, 111.5, 128.0, 32.0])
    delta = encode_deltas(box, anchors[2, 12, 12])                               # the 64 × 64 anchor at 127.5
    assert delta.tolist() == [0.125, -0.25, np.log(2.0), np.log(0.5)]
    assert decode_deltas(delta, anchors[2, 12, 12]).tolist() == box.tolist()
    rng = np.random.default_rng(0)
    boxes = np.concatenate([rng.uniform(0, 255, (50, 2)), rng.uniform(5, 200, (50, 2))], axis=1)
    for a in (anchors, tracking_anchors(25)):
        back = decode_deltas(encode_deltas(boxes[:, None, None, None], a[None]), a[None])
        np.testing.assert_allclose(back, np.broadcast_to(boxes[:, None, None, None], back.shape), rtol=1e-13)
    t_boxes, t_anchors = torch.tensor(boxes[:, None]), torch.tensor(anchors.reshape(-1, 4)[None])
    back = decode_deltas(encode_deltas(t_boxes, t_anchors), t_anchors)
    assert torch.allclose(back, t_boxes.expand_as(back), rtol=1e-12, atol=0)


def test_windows_padding_positions():
    assert window_padding(255, 25) == 32 and window_padding(143, 3) == 0
    with pytest.raises(ValueError):
        window_padding(256, 25)
    positions = all_positions(2, 3)
    assert positions.shape == (18, 3) and positions[4].tolist() == [0, 1, 1] and positions[9].tolist() == [1, 0, 0]
    assert as_positions(torch.tensor([3, 4])).tolist() == [[0, 3, 4]]
    with pytest.raises(ValueError, match="position"):
        as_positions(torch.tensor([1, 2, 3]))


# ---------------------------------------------------------------------------------------------------------------------
# targets


def test_sample_keeps_min_of_count_and_limit_uniformly():
    rng = np.random.default_rng(0)
    candidates = np.zeros((3, 100), bool)
    candidates[0, :10] = candidates[1, :50] = True
    chosen = sample(candidates, [16, 16, 16], rng)
    assert chosen.sum(1).tolist() == [10, 16, 0] and not (chosen & ~candidates).any()
    hits = sum(sample(candidates[1:2], [5], rng)[0, :50] for _ in range(2000))
    assert hits.min() > 140 and hits.max() < 260                                   # each ~ 2000 · 5 / 50 = 200


def test_anchor_target_counts_thresholds_and_determinism():
    anchors = training_anchors()
    boxes = np.array([[85.5, 100.5, 169.5, 154.5],     # 84 × 54 at the centre: 18 anchors over IoU 0.6
                      [100.0, 60.0, 140.0, 140.0],     # 40 × 80 box
                      [10.0, 10.0, 14.0, 14.0],        # tiny: no anchor reaches 0.6
                      [95.5, 95.5, 159.5, 159.5]])     # the same box in a negative pair
    negative = np.array([False, False, False, True])
    t = anchor_targets(boxes, negative, anchors, np.random.default_rng(7), has_mask=[True, False, True, True])
    assert isinstance(t, AnchorTargets) and t.cls.shape == (4, 5, 25, 25) and t.delta.shape == (4, 4, 5, 25, 25)
    positives, negatives = (t.cls == 1).sum((1, 2, 3)), (t.cls == 0).sum((1, 2, 3))
    iou = box_iou(cxcywh_to_xyxy(anchors.reshape(-1, 4)), boxes).reshape(4, 5, 25, 25)
    assert (iou[0] > 0.6).sum() > 16 and positives[0] == 16 and negatives[0] == 48
    assert 0 < positives[1] <= 16 and negatives[1] == 64 - positives[1]
    assert positives[2] == 0 and negatives[2] == 64
    for b in range(3):
        assert (iou[b][t.cls[b] == 1] > 0.6).all() and (iou[b][t.cls[b] == 0] < 0.3).all()
    # negative pair: 16 negatives, all in the central 7 × 7, no positives, no delta weight, no mask
    assert positives[3] == 0 and negatives[3] == 16
    rows, cols = np.nonzero((t.cls[3] == 0).any(0))
    assert rows.min() >= 9 and rows.max() <= 15 and cols.min() >= 9 and cols.max() <= 15
    # delta weights: 1 / #positives at the positives
    assert np.allclose(t.delta_weight.sum((1, 2, 3)), [1, 1, 0, 0])
    assert np.array_equal(t.delta_weight > 0, t.cls == 1)
    assert np.allclose(t.delta[3, :, 2, 12, 12], 0)                              # the box is that anchor
    assert np.allclose(t.delta[0, :, 1, 12, 13], [-8 / 88, 0, np.log(84 / 88), np.log(54 / 40)])
    # mask weight: locations with a positive anchor, positive pairs with masks only
    assert np.array_equal(t.mask_weight[0], (t.cls[0] == 1).any(0)) and t.mask_weight[0].sum() > 0
    assert not t.mask_weight[1:].any()
    # deterministic for a seed, different for another
    again = anchor_targets(boxes, negative, anchors, np.random.default_rng(7), has_mask=[True, False, True, True])
    other = anchor_targets(boxes, negative, anchors, np.random.default_rng(8), has_mask=[True, False, True, True])
    assert np.array_equal(again.cls, t.cls) and not np.array_equal(other.cls, t.cls)
    config = TargetConfig(max_positives=4, total=10)
    small = anchor_targets(boxes[:1], [False], anchors, np.random.default_rng(0), config=config)
    assert (small.cls == 1).sum() == 4 and (small.cls == 0).sum() == 6
    with pytest.raises(ValueError, match="positive width"):
        anchor_targets([[5, 5, 5, 9]], [False], anchors, np.random.default_rng(0))


def test_mask_window_alignment_hand_case():
    """A 3 × 3 square centred on location (i, j)'s anchors sits at the centre of that location's 127 × 127 window,
    8 pixels off-centre in the neighbours' windows, as F.unfold(kernel 127, padding 32, stride 8) cuts them."""
    i, j = 5, 17
    cy, cx = 31 + 8 * i, 31 + 8 * j            # pixel indices whose centres are the anchors' 31.5 + 8i, 31.5 + 8j
    assert (cx + 0.5, cy + 0.5) == tuple(training_anchors()[0, i, j, :2])
    masks = torch.zeros(1, 255, 255)
    masks[0, cy - 1:cy + 2, cx - 1:cx + 2] = 1
    labels = mask_labels(masks)
    assert set(labels.unique().tolist()) == {-1.0, 1.0}
    positions = torch.tensor([[0, i, j], [0, i, j + 1], [0, i - 1, j]])
    windows = mask_windows(labels, positions, 25)
    assert windows.shape == (3, 127, 127)
    for window, (dy, dx) in zip(windows, ((0, 0), (0, -8), (8, 0))):
        expected = torch.zeros(127, 127, dtype=torch.bool)
        expected[62 + dy:65 + dy, 62 + dx:65 + dx] = True
        assert torch.equal(window == 1, expected)
    unfolded = F.unfold(labels[:, None], 127, padding=32, stride=8)[0]           # (127², 625)
    for window, (_, r, c) in zip(windows, positions.tolist()):
        assert torch.equal(window.reshape(-1), unfolded[:, 25 * r + c])
    corner = mask_windows(labels, torch.tensor([[0, 0, 0]]), 25)[0]
    assert not corner[:32].any() and not corner[:, :32].any() and (corner[32:, 32:] == -1).all()  # 0 = padding


def test_siammask_targets_bundle():
    anchors = training_anchors()
    boxes = np.array([[95.5, 95.5, 159.5, 159.5], [95.5, 95.5, 159.5, 159.5]])
    t = anchor_targets(boxes, [False, False], anchors, np.random.default_rng(0), has_mask=[True, False])
    masks = torch.zeros(2, 255, 255)
    masks[:, 96:160, 96:160] = 1
    bundle = siammask_targets(t, mask_labels(masks))
    assert torch.equal(bundle.mask_positions, mask_positions(torch.as_tensor(t.mask_weight)))
    assert (bundle.mask_positions[:, 0] == 0).all() and len(bundle.mask_positions) == int(t.mask_weight.sum())
    assert bundle.mask_windows.shape == (len(bundle.mask_positions), 127, 127)
    assert bundle.cls.dtype == torch.float32 and bundle.delta.shape == (2, 4, 5, 25, 25)
    none = anchor_targets(boxes, [False, False], anchors, np.random.default_rng(0))
    assert siammask_targets(none, None).mask_windows.shape == (0, 127, 127)
    with pytest.raises(ValueError, match="no mask labels"):
        siammask_targets(t, None)


# ---------------------------------------------------------------------------------------------------------------------
# losses (hand values)


def test_select_cross_entropy_hand_values():
    # k = 1, S = 1 × 3: logits (background, object) per location; labels positive, negative, ignored
    cls = torch.tensor([[0.0, np.log(2.0), 50.0], [np.log(3.0), 0.0, -50.0]]).reshape(1, 2, 1, 3)
    labels = torch.tensor([1.0, 0.0, -1.0]).reshape(1, 1, 1, 3)
    # positive: p(object) = 3 / 4; negative: p(background) = 2 / 3; the ignored location does not count
    expected = 0.5 * -np.log(3 / 4) + 0.5 * -np.log(2 / 3)
    assert select_cross_entropy(cls, labels).item() == pytest.approx(expected, rel=1e-6)
    # no positive: only the negative half remains
    assert select_cross_entropy(cls, torch.tensor([-1.0, 0.0, -1.0]).reshape(1, 1, 1, 3)).item() == \
        pytest.approx(0.5 * -np.log(2 / 3), rel=1e-6)
    # channel c · k + a: with k = 2, channel 1 is anchor 1's background, channel 2 anchor 0's object
    two = torch.tensor([0.0, np.log(4.0), np.log(4.0), 0.0]).reshape(1, 4, 1, 1)
    assert select_cross_entropy(two, torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)).item() == \
        pytest.approx(0.5 * -np.log(4 / 5) + 0.5 * -np.log(4 / 5), rel=1e-6)


def test_weighted_l1_hand_values():
    # B = 2, k = 1, S = 1 × 2
    loc = torch.zeros(2, 4, 1, 2)
    delta = torch.zeros(2, 4, 1, 1, 2)
    delta[0, :, 0, 0, 0] = torch.tensor([1.0, -2.0, 0.5, 0.5])    # |Δ| sum 4 at pair 0, location 0
    delta[1, :, 0, 0, 1] = torch.tensor([0.0, 0.0, 0.0, 3.0])     # 3 at pair 1, location 1
    weight = torch.tensor([[0.5, 0.5], [0.0, 1.0]]).reshape(2, 1, 1, 2)
    assert weighted_l1(loc, delta, weight).item() == pytest.approx((4 * 0.5 + 3 * 1.0) / 2)


def test_mask_losses_hand_values():
    windows = torch.ones(2, 127, 127)
    windows[1] = -1
    windows[1, :10] = 0                                         # padding: label 0
    logits = torch.full((2, 127, 127), 2.0)
    n = 127 * 127
    expected = (n * np.log1p(np.exp(-2.0)) + (n - 1270) * np.log1p(np.exp(2.0)) + 1270 * np.log(2.0)) / (2 * n)
    assert mask_loss(logits, windows).item() == pytest.approx(expected, rel=1e-6)
    assert mask_loss(torch.full((1, 127, 127), 200.0), -torch.ones(1, 127, 127)).item() == pytest.approx(200.0)
    # base model: 63 × 63 upsampled with align_corners=True — corners and the middle row land exactly
    small = torch.zeros(1, 63, 63)
    small[0, 31, :] = 4.0
    small[0, 0, 0] = small[0, 62, 62] = -4.0
    up = F.interpolate(small[:, None], size=(127, 127), mode="bilinear", align_corners=True)[0, 0]
    assert up[63, 5].item() == pytest.approx(4.0) and up[0, 0].item() == up[126, 126].item() == -4.0
    assert mask_loss(small, torch.ones(1, 127, 127)).item() == pytest.approx(F.softplus(-up).mean().item(), rel=1e-6)
    empty = torch.zeros(0, 63, 63, requires_grad=True)
    zero = mask_loss(empty, torch.zeros(0, 127, 127))
    assert zero.item() == 0 and zero.requires_grad
    iou, over5, over7 = mask_iou(torch.where(windows > 0, 1.0, -1.0), torch.where(windows[[0, 0]] > 0, 1.0, -1.0))
    assert (iou.item(), over5.item(), over7.item()) == (0.5, 0.5, 0.5)  # perfect, then empty vs full


def test_total_loss_base_and_sharp():
    torch.manual_seed(0)
    batch, k, size = 1, 5, 25
    cls, loc = torch.randn(batch, 2 * k, size, size), torch.randn(batch, 4 * k, size, size)
    mask = torch.randn(batch, 63 * 63, size, size)
    anchors = training_anchors()
    t = anchor_targets([[95.5, 95.5, 159.5, 159.5]], [False], anchors, np.random.default_rng(0), has_mask=[True])
    masks = torch.zeros(1, 255, 255)
    masks[:, 96:160, 96:160] = 1
    targets = siammask_targets(t, mask_labels(masks))
    total, terms, scalars = SiamMaskLoss()(SiamMaskOutput(cls, loc, mask, None), targets)
    assert set(terms) == {"cls", "loc", "mask"} and set(scalars) == {"mask_iou", "mask_iou_5", "mask_iou_7"}
    assert terms["cls"] == select_cross_entropy(cls, targets.cls)
    assert terms["loc"] == weighted_l1(loc, targets.delta, targets.delta_weight)
    assert terms["mask"] == mask_loss(select_mask_logits(mask, targets.mask_positions), targets.mask_windows)
    assert total.item() == pytest.approx((terms["cls"] + 1.2 * terms["loc"] + 36 * terms["mask"]).item(), rel=1e-6)
    refined = torch.randn(len(targets.mask_positions), 127, 127)
    total, terms, _ = SiamMaskLoss((0.0, 0.0, 36.0), sharp=True)(SiamMaskOutput(None, None, None, refined), targets)
    assert set(terms) == {"mask"}
    assert total.item() == pytest.approx(36 * mask_loss(refined, targets.mask_windows).item())
    with pytest.raises(ValueError, match="refine_at"):
        SiamMaskLoss(sharp=True)(SiamMaskOutput(cls, loc, None, refined[:1]), targets)
    with pytest.raises(ValueError, match="did not compute cls"):
        SiamMaskLoss()(SiamMaskOutput(None, loc, mask, None), targets)
