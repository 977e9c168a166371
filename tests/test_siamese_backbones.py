"""SiamFC++ backbones (networks/siamese_backbones.py): output shapes and stride, parameter counts and stages against the
reference table (trackers-and-got10k.md §1.2), normalisation inside forward, and ImageNet loading (never downloaded)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models import inception as tv_inception
from torchvision.models import shufflenetv2 as tv_shufflenet

from engine.errors import UserError
from networks.backbones import BACKBONES, build_backbone
from networks.siamese_backbones import SiameseBackbone, googlenet, shufflenet_v2_x0_5

# name → (out channels, map side at inputs 127 / 289 / 303, parameters in the reference table)
TABLE = {
    "alexnet_bn": (256, (6, 27, 28), 3.75e6),
    "googlenet": (256, (5, 25, 27), 9.16e6),
    "shufflenet_v2_x1_0": (256, (8, 29, 30), 0.99e6),
    "shufflenet_v2_x0_5": (256, (8, 29, 30), 0.23e6),
    "tinyconv": (64, (11, 31, 33), 0.048e6),
}
STAGES = {
    "alexnet_bn": {"conv1", "conv2", "conv3", "conv4", "conv5"},
    "googlenet": {"stem", "Mixed_5", "Mixed_6", "channel_reduce"},
    "shufflenet_v2_x1_0": {"conv1", "stage2", "stage3", "stage4", "channel_reduce"},
    "shufflenet_v2_x0_5": {"conv1", "stage2", "stage3", "stage4", "channel_reduce"},
    "tinyconv": {"conv1", "conv2", "conv3", "conv4", "conv5"},
}
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _crop(side: int) -> torch.Tensor:
    """A raw RGB 0..255 crop, batch 1."""
    return torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(side)) * 255


@pytest.fixture(scope="module")
def nets() -> dict[str, SiameseBackbone]:
    torch.manual_seed(0)
    return {name: build_backbone(name).eval() for name in TABLE}


@pytest.fixture(scope="module")
def meta_nets() -> dict[str, SiameseBackbone]:
    """Built on the meta device: shapes and parameter counts without weights or compute."""
    with torch.device("meta"):
        return {name: build_backbone(name).eval() for name in TABLE}


@pytest.mark.parametrize("name", TABLE)
def test_shapes_stride_and_channels_match_the_reference(meta_nets, name):
    channels, sides, _ = TABLE[name]
    net = meta_nets[name]
    assert isinstance(net, SiameseBackbone) and net.out_channels == channels and net.total_stride == 8
    shapes = [tuple(net(torch.empty(1, 3, side, side, device="meta")).shape) for side in (127, 289, 303, 303 + 16)]
    assert shapes[:3] == [(1, channels, s, s) for s in sides]
    assert shapes[3][2] - shapes[2][2] == 16 // net.total_stride  # 16 more input pixels → 2 more map pixels


def test_real_forward_on_a_template_crop(nets):
    with torch.no_grad():
        for name, (channels, sides, _) in TABLE.items():
            out = nets[name](_crop(127))
            assert out.shape == (1, channels, sides[0], sides[0]) and torch.isfinite(out).all(), name


@pytest.mark.parametrize("name", TABLE)
def test_parameter_counts_and_stages(meta_nets, name):
    """Within 0.9 % of the table (which gives 2–3 digits); every parameter belongs to exactly one stage."""
    net = meta_nets[name]
    count = sum(p.numel() for p in net.parameters())
    assert count == pytest.approx(TABLE[name][2], rel=0.02)
    assert set(net.stages) == STAGES[name]
    staged = [p for modules in net.stages.values() for module in modules for p in module.parameters()]
    assert len({id(p) for p in staged}) == len(staged) and sum(p.numel() for p in staged) == count


def _inputs(net: SiameseBackbone, modules: list[torch.nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """What each of `modules` receives when `net` runs once on `x`."""
    seen = {}
    handles = [module.register_forward_pre_hook(lambda m, args: seen.setdefault(m, args[0].clone()))
               for module in modules]
    with torch.no_grad():
        net(x)
    for handle in handles:
        handle.remove()
    return [seen[module] for module in modules]


def test_normalisation_happens_inside_forward(nets):
    x = _crop(127)
    # GoogLeNet: RGB order kept, (x - 127.5) / 127.5 → [-1, 1]
    [googlenet_in] = _inputs(nets["googlenet"], [nets["googlenet"].trunk.Conv2d_1a_3x3], x)
    torch.testing.assert_close(googlenet_in, (x - 127.5) / 127.5)
    # ShuffleNet: x / 255, then ImageNet RGB mean / std
    shufflenet = nets["shufflenet_v2_x0_5"]
    [shufflenet_in] = _inputs(shufflenet, [shufflenet.trunk.conv1], x)
    torch.testing.assert_close(shufflenet_in, (x / 255 - MEAN) / STD)
    # AlexNet-BN, TinyConv: the raw crop
    for name in ("alexnet_bn", "tinyconv"):
        assert torch.equal(_inputs(nets[name], [nets[name].layers.conv1], x)[0], x)


def test_googlenet_output_is_the_trunk_on_the_normalised_crop(nets):
    net = nets["googlenet"]
    x = _crop(127)
    with torch.no_grad():
        by_hand = net.channel_reduce(net.trunk((x - 127.5) / 127.5)[:, :, 4:-4, 4:-4])
        torch.testing.assert_close(net(x), by_hand)
    assert not isinstance(net.channel_reduce[-1], torch.nn.ReLU)  # no ReLU after GoogLeNet's channel_reduce (§1.2)


def test_shufflenet_false_stride_keeps_stage2_size_and_doubles_channels(nets):
    net = nets["shufflenet_v2_x1_0"]
    maps = _inputs(net, [net.trunk.stage3, net.trunk.stage4, net.channel_reduce], _crop(127))
    assert [tuple(m.shape[1:]) for m in maps] == [(116, 16, 16), (232, 16, 16), (812, 8, 8)]


def test_tinyconv_init_is_a_truncated_normal():
    torch.manual_seed(0)
    weights = torch.cat([module.weight.flatten() for module in build_backbone("tinyconv").modules()
                         if isinstance(module, torch.nn.Conv2d)])
    assert weights.abs().max() <= 0.2 and 0.07 < weights.std() < 0.1  # σ 0.1 truncated at ±2σ has std 0.088


# --------------------------------------------------------------------------------------------------------------------
# ImageNet weights


def _random_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """torchvision's model's state dict with every float tensor random, so a loaded tensor can only match its own."""
    return {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory) -> tuple[Path, dict]:
    torch.manual_seed(1)
    state = _random_state(tv_inception.Inception3(aux_logits=True, init_weights=False))  # with AuxLogits, Mixed_7*, fc
    path = tmp_path_factory.mktemp("weights") / "inception_v3.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def shufflenet_state() -> dict:
    torch.manual_seed(2)
    return _random_state(tv_shufflenet.shufflenet_v2_x0_5())


def _assert_trunk_equals(net: SiameseBackbone, state: dict) -> None:
    trunk = net.trunk.state_dict()
    assert trunk and all(torch.equal(value, state[key]) for key, value in trunk.items())


def test_googlenet_loads_the_inception_file_from_a_path_or_the_torch_cache(inception_file, tmp_path, monkeypatch):
    """The file has torchvision's AuxLogits, Mixed_7* and fc entries too: dropped by name, the rest loads strictly."""
    path, state = inception_file
    net = googlenet(str(path))
    _assert_trunk_equals(net, state)
    assert torch.equal(net.trunk.Mixed_6e.branch_pool.conv.weight, state["Mixed_6e.branch_pool.conv.weight"])

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = tmp_path / "hub" / "checkpoints" / "inception_v3_google-0cc3c7bd.pth"
    target.parent.mkdir(parents=True)
    target.symlink_to(path)
    _assert_trunk_equals(build_backbone("googlenet", imagenet_pretrain=True), state)


def test_true_without_the_cached_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError) as err:
        build_backbone("shufflenet_v2_x0_5", imagenet_pretrain=True)
    target = tmp_path / "hub" / "checkpoints" / "shufflenetv2_x0.5-f707e7126e.pth"
    assert str(target) in str(err.value) and "Nothing is downloaded" in str(err.value)


def test_shufflenet_loads_a_file_without_batchnorm_counters(shufflenet_state, tmp_path):
    """torchvision's older ImageNet files have no num_batches_tracked entries; they load, the rest strictly."""
    state = {k: v for k, v in shufflenet_state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "shufflenet.pth"
    torch.save(state, path)
    net = shufflenet_v2_x0_5(str(path))
    _assert_trunk_equals(net, dict(state, **{k: v for k, v in net.trunk.state_dict().items()
                                             if k.endswith("num_batches_tracked")}))


def test_missing_wrong_and_foreign_files_are_refused_by_name(shufflenet_state, tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(UserError, match="not found") as err:
        shufflenet_v2_x0_5(str(missing))
    assert str(missing) in str(err.value)

    extra = tmp_path / "extra.pth"
    torch.save(dict(shufflenet_state, **{"stage2.0.branch9.weight": torch.zeros(1)}), extra)
    with pytest.raises(UserError) as err:
        shufflenet_v2_x0_5(str(extra))
    assert str(extra) in str(err.value) and "unexpected key(s): stage2.0.branch9.weight" in str(err.value)

    lacking = tmp_path / "lacking.pth"
    torch.save({k: v for k, v in shufflenet_state.items() if k != "stage4.0.branch1.0.weight"}, lacking)
    with pytest.raises(UserError, match="missing key\\(s\\): stage4.0.branch1.0.weight"):
        shufflenet_v2_x0_5(str(lacking))

    other = tmp_path / "x1_0.pth"
    torch.save(tv_shufflenet.shufflenet_v2_x1_0().state_dict(), other)
    with pytest.raises(UserError, match=r"shape mismatch.*stage2.0.branch1.2.weight \(58, 24, 1, 1\) vs \(24, 24,"):
        shufflenet_v2_x0_5(str(other))


@pytest.mark.parametrize("name", ["alexnet_bn", "tinyconv"])
def test_from_scratch_backbones_refuse_imagenet_weights(name):
    with pytest.raises(UserError, match=f"{name} has no ImageNet weights"):
        build_backbone(name, imagenet_pretrain=True)


# --------------------------------------------------------------------------------------------------------------------
# registry


def test_registry_names_and_lazy_import():
    assert set(TABLE) <= set(BACKBONES)
    with pytest.raises(UserError, match="expected one of resnet101.*alexnet_bn, googlenet"):
        build_backbone("vgg16")
    script = "import sys, networks.backbones; assert 'networks.siamese_backbones' not in sys.modules"
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parents[1])
