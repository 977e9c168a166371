"""Backbones, ImageNet weight loading, ReidNet / ClassifierNet outputs, the factory and the parameter split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import resnet as tv_resnet

from engine.errors import UserError
from networks.reid_params import ModelParams
from networks.backbones import build_resnet_trunk, imagenet_weights_filename, imagenet_weights_path
from networks.factory import MODEL_BUILDERS, backbone_parameters, build_model, head_parameters
from networks.reid_net import ClassifierNet, ReidNet

H, W = 64, 32


def _images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, H, W, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------------------------------------------------
# Trunks


DEPTHS = [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048), ("resnet101", 2048), ("resnet152", 2048)]


@pytest.mark.parametrize("name, channels", DEPTHS)
def test_shapes_every_depth_and_stride(name, channels):
    """Every depth at both strides, built on the meta device (shape inference without weights or compute, so the deep
    models cost nothing); real-valued forwards are tested below with resnet18 / resnet50."""
    with torch.device("meta"):
        for stride in (1, 2):
            mp = ModelParams(model=name, feature_dim=24, last_conv_stride=stride)
            reid = build_model("reid", mp, 7, False)
            assert reid.embedding.in_features == channels
            block = reid.trunk.layer4[0]
            strided = block.conv2 if channels == 2048 else block.conv1
            assert strided.stride == (stride, stride) and block.downsample[0].stride == (stride, stride)
            maps = []
            reid.trunk.register_forward_hook(lambda module, args, output: maps.append(output.shape))
            reid.eval()
            assert reid.descriptor_dim == 24 and reid(torch.empty(2, 3, H, W)).shape == (2, 24)
            # the layer4 map: stride 1 → H/16 × W/16; stride 2 → H/32 × W/32
            assert maps == [(2, channels, H // (16 * stride), W // (16 * stride))]
        reid.train()
        out = reid(torch.empty(2, 3, H, W))
        assert out["features"].shape == (2, 24) and out["logits"][0].shape == (2, 7)


def test_trunk_keys_are_torchvision_keys_without_fc():
    trunk, _ = build_resnet_trunk("resnet18", 1, False)
    expected = {k for k in tv_resnet.resnet18().state_dict() if not k.startswith("fc.")}
    assert set(trunk.state_dict()) == expected


def test_unknown_backbone_and_stride():
    with pytest.raises(UserError, match="resnet18"):
        build_resnet_trunk("vgg16", 1, False)
    with pytest.raises(UserError, match="last_conv_stride"):
        build_resnet_trunk("resnet18", 3, False)


# --------------------------------------------------------------------------------------------------------------------
# ImageNet weights (never downloaded)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> tuple[Path, dict]:
    torch.manual_seed(1)
    state = tv_resnet.resnet18().state_dict()  # includes fc.weight / fc.bias
    path = tmp_path_factory.mktemp("weights") / "resnet18-random.pth"
    torch.save(state, path)
    return path, state


def _assert_trunk_equals(trunk, state):
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_pretrain_from_path_loads_exact_weights(resnet18_file):
    path, state = resnet18_file
    trunk, _ = build_resnet_trunk("resnet18", 1, str(path))
    _assert_trunk_equals(trunk, state)


def test_pretrain_true_reads_torch_hub_cache(resnet18_file, tmp_path, monkeypatch):
    path, state = resnet18_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert imagenet_weights_filename("resnet18") == "resnet18-f37072fd.pth"
    assert imagenet_weights_path("resnet18") == target
    target.parent.mkdir(parents=True)
    target.write_bytes(path.read_bytes())
    trunk, _ = build_resnet_trunk("resnet18", 2, True)
    _assert_trunk_equals(trunk, state)


def test_pretrain_true_missing_file_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = str(tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth")
    with pytest.raises(UserError) as err:
        build_resnet_trunk("resnet50", 1, True)
    assert expected in str(err.value)
    assert "Nothing is downloaded" in str(err.value)


def test_pretrain_missing_explicit_path(tmp_path):
    with pytest.raises(UserError, match="not found"):
        build_resnet_trunk("resnet18", 1, str(tmp_path / "nope.pth"))


def test_pretrain_wrong_architecture(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(tv_resnet.resnet34().state_dict(), path)
    with pytest.raises(UserError) as err:
        build_resnet_trunk("resnet18", 1, str(path))
    message = str(err.value)
    assert str(path) in message and "unexpected key" in message and "layer1.2." in message


def test_pretrain_wrong_shapes(resnet18_file, tmp_path):
    _, state = resnet18_file
    state = dict(state, **{"layer1.0.conv1.weight": torch.zeros(32, 64, 3, 3)})
    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(UserError) as err:
        build_resnet_trunk("resnet18", 1, str(path))
    assert "shape mismatch" in str(err.value) and "layer1.0.conv1.weight (32, 64, 3, 3)" in str(err.value)


def test_pretrain_truncated_file(resnet18_file, tmp_path):
    path, _ = resnet18_file
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: 200_000])
    with pytest.raises(UserError) as err:
        build_resnet_trunk("resnet18", 1, str(truncated))
    assert str(truncated) in str(err.value) and "truncated" in str(err.value)
    junk = tmp_path / "junk.pth"
    junk.write_text("hello")
    with pytest.raises(UserError, match="junk.pth"):
        build_resnet_trunk("resnet18", 1, str(junk))


def test_pretrain_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(UserError, match="state dict"):
        build_resnet_trunk("resnet18", 1, str(path))
    checkpoint = tmp_path / "ckpt.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(1)}, "epoch": 3}, checkpoint)
    with pytest.raises(UserError, match="pretrain_snapshot"):
        build_resnet_trunk("resnet18", 1, str(checkpoint))


# --------------------------------------------------------------------------------------------------------------------
# ReidNet / ClassifierNet


def _reid(feature_dim=16, num_classes=5, stride=1, pooling="avg", dropout=0.5) -> ReidNet:
    torch.manual_seed(0)
    mp = ModelParams(model="resnet18", feature_dim=feature_dim, last_conv_stride=stride, pooling=pooling,
                     dropout=dropout)
    return build_model("reid", mp, num_classes, False)


@pytest.fixture(scope="module")
def reid18() -> ReidNet:
    return _reid()


@pytest.mark.parametrize("stride, pooling", [(1, "avg"), (2, "max")])
def test_reid_train_and_eval_outputs(reid18, stride, pooling):
    net = reid18 if (stride, pooling) == (1, "avg") else _reid(stride=stride, pooling=pooling)
    assert isinstance(net, ReidNet) and net.descriptor_dim == 16
    net.train()
    out = net(_images(4))
    assert set(out) == {"features", "logits"}
    assert out["features"].shape == (4, 16)
    assert isinstance(out["logits"], list) and len(out["logits"]) == 1 and out["logits"][0].shape == (4, 5)
    net.eval()
    with torch.no_grad():
        desc = net(_images(3))
    assert isinstance(desc, torch.Tensor) and desc.shape == (3, 16)
    assert not torch.allclose(desc.norm(dim=1), torch.ones(3))  # not L2-normalised


def test_reid_features_are_pre_bn_and_descriptor_is_bn_output(reid18):
    net = reid18
    net.train()
    x = _images(4)
    out = net(x)
    pooled = torch.flatten(net.pool(net.trunk(x)), 1)
    assert torch.allclose(out["features"], net.embedding(pooled), atol=1e-5)
    net.eval()
    with torch.no_grad():
        desc = net(x)
        assert torch.allclose(desc, net.bn(net.embedding(torch.flatten(net.pool(net.trunk(x)), 1))), atol=1e-5)
        # eval logits would be classifier(descriptor): the classifier reads the BN output
        assert net.classifier.in_features == desc.shape[1]


def test_reid_init():
    with torch.device("meta"):  # only the head is inspected: skip the trunk's weights
        trunk = build_resnet_trunk("resnet18", 1, False)[0]
    torch.manual_seed(0)
    net = ReidNet(trunk, 512, feature_dim=32, num_classes=100, dropout=0.5, pooling="avg")
    assert torch.all(net.embedding.bias == 0)
    assert torch.all(net.bn.weight == 1) and torch.all(net.bn.bias == 0)
    assert net.classifier.bias is None
    assert net.classifier.weight.std().item() == pytest.approx(0.001, rel=0.1)
    # kaiming_normal_(fan_out): std = sqrt(2 / fan_out) = sqrt(2 / 32) = 0.25
    assert net.embedding.weight.std().item() == pytest.approx(0.25, rel=0.1)


def test_reid_descriptor_resnet50():
    torch.manual_seed(0)
    net = build_model("reid", ModelParams(model="resnet50", feature_dim=24, last_conv_stride=2), 7, False)
    net.eval()
    with torch.no_grad():
        desc = net(_images(2))
    assert desc.shape == (2, 24) and torch.isfinite(desc).all()


def test_classifier_net_outputs():
    torch.manual_seed(0)
    net = build_model("classification", ModelParams(model="resnet18", feature_dim=99), 6, False)
    assert isinstance(net, ClassifierNet) and net.descriptor_dim == 6
    net.train()
    out = net(_images(3))
    assert out["features"].shape == (3, 512) and out["logits"][0].shape == (3, 6)
    net.eval()
    with torch.no_grad():
        assert net(_images(3)).shape == (3, 6)
    with torch.device("meta"):  # a 2048-channel trunk
        net = build_model("classification", ModelParams(model="resnet50", last_conv_stride=2), 6, False)
        net.train()
        out = net(torch.empty(2, 3, H, W))
        assert out["features"].shape == (2, 2048) and out["logits"][0].shape == (2, 6)


def test_factory_registry_and_errors():
    assert set(MODEL_BUILDERS) == {"reid", "classification"}
    with pytest.raises(UserError, match="unknown task"):
        build_model("detection", ModelParams(model="resnet18"), 3, False)
    with pytest.raises(UserError, match="class"):
        build_model("reid", ModelParams(model="resnet18"), 0, False)


@pytest.mark.parametrize("task", ["reid", "classification"])
def test_parameter_split_is_a_partition(task):
    torch.manual_seed(0)
    net = build_model(task, ModelParams(model="resnet18", feature_dim=16), 4, False)
    backbone, head = backbone_parameters(net), head_parameters(net)
    ids_b, ids_h = [id(p) for p in backbone], [id(p) for p in head]
    assert len(set(ids_b)) == len(ids_b) and len(set(ids_h)) == len(ids_h)
    assert not set(ids_b) & set(ids_h)
    assert set(ids_b) | set(ids_h) == {id(p) for p in net.parameters()}
    assert set(ids_b) == {id(p) for p in net.trunk.parameters()}


def test_freeze_trunk_keeps_trunk_in_eval_mode():
    net = _reid()
    net.freeze_trunk()
    net.train()
    assert net.training and net.bn.training
    assert not net.trunk.training and not any(m.training for m in net.trunk.modules())
    assert not any(p.requires_grad for p in net.trunk.parameters())
    assert all(p.requires_grad for p in head_parameters(net))
    net.eval()
    net.train()
    assert not net.trunk.training


@pytest.mark.slow
def test_reid_onnx_export_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    net = _reid(feature_dim=8, stride=1)
    net.eval()
    path = tmp_path / "reid.onnx"
    torch.onnx.export(net, (_images(2),), str(path), input_names=["images"], output_names=["descriptor"],
                      dynamic_shapes={"images": {0: torch.export.Dim("batch")}}, external_data=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _images(3)
    got = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        want = net(x).numpy()
    assert got.shape == (3, 8)
    assert abs(got - want).max() < 1e-3


# ---------------------------------------------------------------------------------------------------------------------
# the backbone registry and multi-level features


def test_backbone_registry_builds_every_resnet_and_refuses_unknown_names():
    from networks.backbones import BACKBONES, build_backbone

    assert {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152"} <= set(BACKBONES)
    with pytest.raises(UserError, match="unknown backbone 'vgg16'; expected one of resnet101"):
        build_backbone("vgg16")


@pytest.mark.parametrize("options, strides", [
    ({}, [4, 8, 16, 32]),
    ({"last_conv_stride": 1}, [4, 8, 16, 16]),
    ({"dilate": ("layer3", "layer4")}, [4, 8, 8, 8]),  # SiamMask-style: layer3 onwards keeps stride 8
])
def test_level_features_report_channels_and_strides(options, strides):
    from networks.backbones import LevelFeatures, build_backbone

    torch.manual_seed(0)
    trunk = build_backbone("resnet50", **options)
    features = LevelFeatures(trunk, ["layer4", "layer1", "layer2", "layer3"])  # returned in trunk order
    assert [(f.name, f.channels, f.stride) for f in features.feature_info] == \
        list(zip(["layer1", "layer2", "layer3", "layer4"], [256, 512, 1024, 2048], strides))
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        maps = features.eval()(x)
        assert torch.equal(maps[-1], trunk.eval()(x))  # the last level is the trunk's own output
    assert [tuple(m.shape[2:]) for m in maps] == [(64 // s, 32 // s) for s in strides]


def test_level_features_stop_after_the_last_level_and_refuse_unknown_levels():
    from networks.backbones import LevelFeatures, build_backbone

    trunk = build_backbone("resnet18")
    features = LevelFeatures(trunk, ["layer2"])
    assert [(f.channels, f.stride) for f in features.feature_info] == [(128, 8)]
    with pytest.raises(UserError, match="feature levels \\['layer9'\\]"):
        LevelFeatures(trunk, ["layer9"])
    with pytest.raises(UserError, match="resnet18 has basic blocks"):
        build_backbone("resnet18", dilate=("layer4",))
