"""PCB network: stripe rule, output shapes and descriptor sizes, the global branch, load-time refusals, triplet on PCB
features, random head drop, focal loss on PCB heads, ONNX export of the eval forward."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from engine.errors import UserError
from engine.params import ParamsError, parse_params
from networks.reid_params import ModelParams, TriLossParams
from networks.backbones import build_resnet_trunk
from networks.factory import build_model, head_parameters
from networks.losses import ReidCriterion, focal_loss
from networks.pcb import PartReidNet, stripe_bounds, trunk_output_height
from networks.reid_net import ReidNet

H, W = 64, 32  # resnet18, stride 1 → a 4×2 last feature map


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n: int = 4, h: int = H) -> torch.Tensor:
    return torch.randn(n, 3, h, W, generator=torch.Generator().manual_seed(0))


def _pcb(n_parts=2, feature_dim=16, global_dim=0, num_classes=5, dropout=0.0, **kw) -> PartReidNet:
    torch.manual_seed(0)
    mp = ModelParams(model="resnet18", pcb_n_parts=n_parts, feature_dim=feature_dim, feature_global_dim=global_dim,
                     dropout=dropout, **kw)
    net = build_model("reid", mp, num_classes, False)
    assert isinstance(net, PartReidNet)
    return net


LABELS8 = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])

# ---------------------------------------------------------------------------------------------------------------------
# stripes


@pytest.mark.parametrize("height, n, heights", [
    (16, 6, [3, 2, 3, 3, 2, 3]),
    (24, 6, [4] * 6),
    (4, 3, [1, 2, 1]),
    (7, 7, [1] * 7),
    (5, 2, [3, 2]),
    (8, 1, [8]),
])
def test_stripe_bounds_rule(height, n, heights):
    bounds = stripe_bounds(height, n)
    assert [b - a for a, b in bounds] == heights
    assert bounds[0][0] == 0 and bounds[-1][1] == height
    assert all(a2 == b1 for (_, b1), (a2, _) in zip(bounds, bounds[1:]))
    assert bounds == [(round_half_up(i * height / n), round_half_up((i + 1) * height / n)) for i in range(n)]


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def test_stripe_bounds_every_height_has_rows_and_tiles():
    for n in range(1, 9):
        for height in range(n, 40):
            sizes = [b - a for a, b in stripe_bounds(height, n)]
            assert min(sizes) >= 1 and sum(sizes) == height and max(sizes) - min(sizes) <= 1


def test_stripe_bounds_refuses_fewer_rows_than_parts():
    with pytest.raises(ValueError, match="3 rows, fewer than pcb_n_parts=4"):
        stripe_bounds(3, 4)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("height", [32, 48, 50, 64, 100])
def test_trunk_output_height_matches_the_trunk(height, stride):
    with torch.device("meta"):
        trunk, _ = build_resnet_trunk("resnet18", stride, False)
        out = trunk.eval()(torch.empty(1, 3, height, 16))
    assert out.shape[2] == trunk_output_height(height, stride)


# ---------------------------------------------------------------------------------------------------------------------
# shapes


@pytest.mark.parametrize("global_dim", [0, 8])
def test_pcb_train_and_eval_shapes(global_dim):
    net = _pcb(n_parts=2, feature_dim=16, global_dim=global_dim)
    heads = 2 + (1 if global_dim else 0)
    net.train()
    out = net(_images(4))
    assert out["features"].shape == (4, 16 + global_dim)
    assert len(out["logits"]) == heads and all(h.shape == (4, 5) for h in out["logits"])
    assert "spectral_logits" not in out
    net.eval()
    with torch.no_grad():
        desc = net(_images(3))
    assert desc.shape == (3, 16 + global_dim) and net.descriptor_dim == 16 + global_dim


def test_pcb_uneven_stripes_three_parts_over_four_rows():
    net = _pcb(n_parts=3, feature_dim=24)
    net.train()
    out = net(_images(4))
    assert out["features"].shape == (4, 24) and len(out["logits"]) == 3
    net.eval()
    x = _images(2)
    with torch.no_grad():
        desc = net(x)
        fmap = net.trunk(x)
        assert fmap.shape[2] == 4
        # stripe rows 0 | 1-2 | 3: each part = BN(conv(avg over its rows))
        manual = []
        for i, (a, b) in enumerate([(0, 1), (1, 3), (3, 4)]):
            pooled = fmap[:, :, a:b].mean(dim=(2, 3))[:, :, None, None]
            manual.append(net.bn_parts[i](net.embedding_parts[i](pooled).flatten(1)))
    assert torch.allclose(desc, torch.cat(manual, dim=1), atol=1e-5)


def test_descriptor_is_parts_then_global_bn_outputs():
    net = _pcb(n_parts=2, feature_dim=16, global_dim=8, pooling="max")
    net.eval()
    x = _images(2)
    with torch.no_grad():
        desc = net(x)
        g = net.bn(net.embedding(net.trunk(x).amax(dim=(2, 3))))
    assert torch.allclose(desc[:, 16:], g, atol=1e-5)


def test_triplet_feature_sets_follow_the_param():
    for choice, widths in (("both", [16, 8]), ("parts", [16]), ("global", [8])):
        net = _pcb(n_parts=2, feature_dim=16, global_dim=8, pcb_triplet_features=choice)
        out = net.train()(_images(4))
        assert [f.shape[1] for f in out["triplet_features"]] == widths
        full = out["features"]
        expected = {"both": [full[:, :16], full[:, 16:]], "parts": [full[:, :16]], "global": [full[:, 16:]]}[choice]
        assert all(torch.equal(a, b) for a, b in zip(out["triplet_features"], expected))
    out = _pcb(n_parts=2, feature_dim=16, global_dim=0).train()(_images(4))
    assert [f.shape[1] for f in out["triplet_features"]] == [16]  # "both" without a global branch = parts


def test_part_layers_are_head_parameters_and_classifiers_prefixed():
    net = _pcb(n_parts=2, feature_dim=16, global_dim=8)
    head = {id(p) for p in head_parameters(net)}
    assert all(id(p) in head for p in net.embedding_parts.parameters())
    keys = net.state_dict().keys()
    classifier_keys = [k for k in keys if "classifier" in k]
    assert classifier_keys and all(k.startswith("classifier") for k in classifier_keys)  # pretrain_snapshot skips them


def test_pcb_forward_refuses_a_map_shorter_than_the_parts():
    net = _pcb(n_parts=3, feature_dim=24).eval()
    with pytest.raises(ValueError, match="2 rows, fewer than pcb_n_parts=3"):
        net(_images(2, h=32))


# ---------------------------------------------------------------------------------------------------------------------
# load-time refusals

BASE = {"batches_dir": "d", "img_h": H, "img_w": W, "model_params": {"model": "resnet18"}}


def _params(**model) -> dict:
    return {**BASE, "model_params": {"model": "resnet18", **model}}


def test_params_refuse_pcb_taller_than_the_map():
    with pytest.raises(ParamsError) as info:
        parse_params(_params(pcb_n_parts=6, feature_dim=24))
    msg = str(info.value)
    assert "input height of 64" in msg and "last_conv_stride=1" in msg and "pcb_n_parts=6" in msg and "4-row" in msg
    with pytest.raises(ParamsError, match="last_conv_stride=2 gives a 2-row map"):
        parse_params(_params(pcb_n_parts=4, feature_dim=24, last_conv_stride=2))
    # the crop is what the network sees
    with pytest.raises(ParamsError, match="input height of 64"):
        parse_params({**_params(pcb_n_parts=5, feature_dim=25), "img_h": 80,
                      "data_augmentation": {"crop_h": 64, "crop_w": 32}})
    assert parse_params({**_params(pcb_n_parts=5, feature_dim=25), "img_h": 80}).model_params.pcb_n_parts == 5
    assert parse_params(_params(pcb_n_parts=4, feature_dim=24)).model_params.pcb_n_parts == 4


def test_params_refuse_feature_dim_not_divisible():
    with pytest.raises(ParamsError, match="feature_dim=25 is not divisible by pcb_n_parts=2"):
        parse_params(_params(pcb_n_parts=2, feature_dim=25))


@pytest.mark.parametrize("model, expected", [
    ({"feature_gobal_dim": 8}, "feature_global_dim=8 applies to PCB heads, but pcb_n_parts is 0"),
    ({"random_drop_branchs": 2}, "random_drop_branchs=2 applies to PCB heads"),
    ({"pcb_n_parts": 2, "feature_dim": 16, "pcb_triplet_features": "global"}, "needs the PCB global branch"),
])
def test_params_refuse_pcb_only_switches_without_pcb(model, expected):
    with pytest.raises(ParamsError, match=expected):
        parse_params(_params(**model))


def test_seed_spelling_of_the_global_branch():
    p = parse_params(_params(pcb_n_parts=2, feature_dim=16, feature_gobal_dim=8))
    assert p.model_params.feature_global_dim == 8


def test_factory_refuses_what_params_refuse():
    with pytest.raises(UserError, match="not divisible"):
        build_model("reid", ModelParams(model="resnet18", pcb_n_parts=3, feature_dim=16), 4, False)
    with pytest.raises(UserError, match="need task 'reid'"):
        build_model("classification", ModelParams(model="resnet18", pcb_n_parts=2, feature_dim=16), 4, False)


# ---------------------------------------------------------------------------------------------------------------------
# losses on PCB outputs


def _tri_criterion(margin, lambda_cls=0.0):
    return ReidCriterion(TriLossParams(margin=margin, lambda_cls=lambda_cls), focal=False, focal_gamma=2.0,
                         label_smoothing=0.0)


def _hand_pcb_outputs():
    # parts (2-D): distances a-b 3, a-c 4, a-d 5, b-c 5, b-d 4, c-d 3; global (1-D): 0, 2 | 1, 6
    parts = torch.tensor([[0.0, 0.0], [0.0, 3.0], [4.0, 0.0], [4.0, 3.0]], requires_grad=True)
    glob = torch.tensor([[0.0], [2.0], [1.0], [6.0]], requires_grad=True)
    logits = [torch.zeros(4, 3)]
    return {"features": torch.cat([parts, glob], 1), "triplet_features": [parts, glob], "logits": logits}


def test_triplet_hard_on_part_and_global_features_hand_computed():
    labels = torch.tensor([0, 0, 1, 1])
    _, comps, _ = _tri_criterion(2.0)(_hand_pcb_outputs(), labels)
    # parts: every anchor d_ap = 3, d_an = 4 → relu(3 − 4 + 2) = 1; global: anchors 3, 3, 6, 3 → 3.75
    assert comps["triplet"].item() == pytest.approx(1.0 + 3.75, abs=1e-5)


def test_triplet_soft_on_part_and_global_features_hand_computed():
    labels = torch.tensor([0, 0, 1, 1])
    _, comps, _ = _tri_criterion("soft_margin")(_hand_pcb_outputs(), labels)
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    want = sp(-1.0) + (sp(1.0) + sp(1.0) + sp(4.0) + sp(1.0)) / 4
    assert comps["triplet"].item() == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("margin", [0.3, "soft_margin"])
def test_pcb_triplet_survives_an_unbalanced_last_batch(margin):
    net = _pcb(n_parts=2, feature_dim=16, global_dim=8).train()
    labels = torch.tensor([0, 0, 0, 1, 2])  # one identity with positives, two singletons
    total, comps, _ = _tri_criterion(margin, lambda_cls=1.0)(net(_images(5)), labels)
    assert torch.isfinite(total) and "triplet" in comps
    total.backward()
    assert net.embedding_parts[0].weight.grad is not None and net.embedding.weight.grad is not None


def test_focal_loss_sums_over_pcb_heads():
    net = _pcb(n_parts=2, feature_dim=16, global_dim=8).train()
    out = net(_images(8))
    crit = ReidCriterion(TriLossParams(margin=0.0), focal=True, focal_gamma=2.0, label_smoothing=0.0)
    _, comps, acc = crit(out, LABELS8)
    want = sum(focal_loss(h, LABELS8, 2.0) for h in out["logits"])
    assert comps["cls"].item() == pytest.approx(want.item(), rel=1e-5)
    assert 0.0 <= acc <= 1.0


# ---------------------------------------------------------------------------------------------------------------------
# random branch drop


def _drop_criterion(b):
    return ReidCriterion(TriLossParams(margin=0.0), focal=False, focal_gamma=2.0, label_smoothing=0.0,
                         random_drop_branchs=b)


def test_random_drop_keeps_at_least_one_head_and_is_seeded():
    crit = _drop_criterion(50)  # 50 draws over 3 heads: nearly always all drawn → one random head kept
    for seed in range(30):
        torch.manual_seed(seed)
        kept = crit.kept_heads(3)
        assert 1 <= len(kept) <= 3 and set(kept) <= {0, 1, 2}
    crit = _drop_criterion(2)
    torch.manual_seed(7)
    first = [crit.kept_heads(7) for _ in range(20)]
    torch.manual_seed(7)
    again = [crit.kept_heads(7) for _ in range(20)]
    assert first == again
    assert any(len(k) < 7 for k in first) and all(len(k) >= 5 for k in first)  # 2 draws drop at most 2 of 7
    assert _drop_criterion(0).kept_heads(4) == [0, 1, 2, 3]


def test_random_drop_sums_only_the_kept_heads():
    torch.manual_seed(1)
    logits = [torch.randn(8, 4) for _ in range(3)]
    crit = _drop_criterion(2)
    torch.manual_seed(5)
    kept = crit.kept_heads(3)
    torch.manual_seed(5)
    _, comps, _ = crit({"features": torch.zeros(8, 2), "logits": logits}, LABELS8)
    want = sum(F.cross_entropy(logits[h], LABELS8) for h in kept)
    assert comps["cls"].item() == pytest.approx(want.item(), rel=1e-6)
    assert crit.last_stats["heads_kept"] == len(kept)


# ---------------------------------------------------------------------------------------------------------------------
# plain network compatibility


def test_plain_params_still_build_reid_net():
    net = build_model("reid", ModelParams(model="resnet18", feature_dim=16), 4, False)
    assert isinstance(net, ReidNet)


def test_part_net_without_parts_keeps_reid_net_keys():
    """n_parts = 0 (e.g. feature erasing on) is ReidNet's layout: a ReidNet checkpoint loads strictly."""
    torch.manual_seed(0)
    plain = build_model("reid", ModelParams(model="resnet18", feature_dim=16), 4, False)
    net = build_model("reid", ModelParams(model="resnet18", feature_dim=16, feature_erasing_ratio=0.25), 4, False)
    assert isinstance(net, PartReidNet) and net.descriptor_dim == 16
    net.load_state_dict(plain.state_dict(), strict=True)
    plain.eval(), net.eval()
    with torch.no_grad():
        assert torch.allclose(plain(_images(2)), net(_images(2)), atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# ONNX


def test_pcb_eval_forward_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    net = _pcb(n_parts=3, feature_dim=24, global_dim=8, feature_mask=True, feature_erasing_ratio=0.25,
               spectral_trans=0.5).eval()
    path = tmp_path / "pcb.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (_images(2),), str(path), input_names=["images"], output_names=["descriptor"],
                          dynamic_axes={"images": {0: "batch"}}, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _images(3)
    got = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        want = net(x).numpy()
    assert got.shape == (3, 32)
    assert abs(got - want).max() < 1e-3
