"""Optimizer groups, fine_tune freezing through a real train step, and the closed-form LR schedule."""

from __future__ import annotations

import math

import pytest
import torch

from engine.errors import UserError
from engine.lr_schedule import apply_lr, lr_factor
from engine.optim import build_optimizer
from networks.reid_task import param_groups
from engine.params import LrParams
from networks.reid_params import ModelParams, TriLossParams
from networks.factory import backbone_parameters, build_model, head_parameters
from networks.losses import ReidCriterion


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model("reid", ModelParams(model="resnet18", feature_dim=16), 4, False)


# --------------------------------------------------------------------------------------------------------------------
# Optimizer


@pytest.mark.parametrize("name, cls, extra", [
    ("sgd", torch.optim.SGD, {"momentum": 0.9, "nesterov": False}),
    ("nesterov", torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    ("adam", torch.optim.Adam, {"amsgrad": False}),
    ("amsgrad", torch.optim.Adam, {"amsgrad": True}),
    ("rmsprop", torch.optim.RMSprop, {"momentum": 0.9}),
])
def test_optimizer_groups(net, name, cls, extra):
    opt = build_optimizer(param_groups(net, 0.01, 0.1), name, 5e-4)
    assert type(opt) is cls
    groups = {g["name"]: g for g in opt.param_groups}
    assert list(groups) == ["backbone", "head"]
    assert groups["backbone"]["lr"] == groups["backbone"]["initial_lr"] == 0.01
    assert groups["head"]["lr"] == groups["head"]["initial_lr"] == 0.1
    for group in opt.param_groups:
        assert group["weight_decay"] == 5e-4
        for key, value in extra.items():
            assert group[key] == value
    in_groups = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(in_groups) == len(set(in_groups))
    assert set(in_groups) == {id(p) for p in net.parameters() if p.requires_grad}
    assert {id(p) for p in groups["backbone"]["params"]} == {id(p) for p in backbone_parameters(net)}
    assert {id(p) for p in groups["head"]["params"]} == {id(p) for p in head_parameters(net)}


def test_unknown_optimizer(net):
    with pytest.raises(UserError, match="optimizer"):
        build_optimizer(param_groups(net, 0.01, 0.1), "lbfgs", 0.0)


def test_fine_tune_freezes_trunk_weights_and_bn_stats():
    torch.manual_seed(0)
    net = build_model("reid", ModelParams(model="resnet18", feature_dim=16, dropout=0.0), 4, False)
    net.freeze_trunk()
    opt = build_optimizer(param_groups(net, 0.01, 0.1), "sgd", 5e-4)
    assert [g["name"] for g in opt.param_groups] == ["head"]

    trunk_before = {k: v.clone() for k, v in net.trunk.state_dict().items()}
    head_before = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("trunk.")}
    crit = ReidCriterion(TriLossParams(margin=0.3), focal=False, focal_gamma=2.0, label_smoothing=0.0)

    net.train()
    images = torch.randn(8, 3, 64, 32) * 2 + 1  # far from the trunk BN running stats (0 / 1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    total, _, _ = crit(net(images), labels)
    opt.zero_grad()
    total.backward()
    opt.step()

    after = net.trunk.state_dict()
    for key, value in trunk_before.items():
        assert torch.equal(after[key], value), key
    assert torch.equal(after["bn1.running_mean"], trunk_before["bn1.running_mean"])
    state = net.state_dict()
    assert not torch.equal(state["embedding.weight"], head_before["embedding.weight"])
    assert not torch.equal(state["classifier.weight"], head_before["classifier.weight"])
    assert not torch.equal(state["bn.running_mean"], head_before["bn.running_mean"])  # head BN is still training


# --------------------------------------------------------------------------------------------------------------------
# LR schedule

# warmup_epoch = 2, steps_per_epoch = 5 → W = 10 warm-up iterations, factor (t + 1)/10 for t = 0..9;
# decay_step = [4, 6], gamma 0.1 → ×0.1 from epoch 4, ×0.01 from epoch 6.
LR_TABLE = {
    0: [0.1, 0.2, 0.3, 0.4, 0.5],
    1: [0.6, 0.7, 0.8, 0.9, 1.0],
    2: [1.0, 1.0, 1.0, 1.0, 1.0],
    3: [1.0, 1.0, 1.0, 1.0, 1.0],
    4: [0.1, 0.1, 0.1, 0.1, 0.1],
    5: [0.1, 0.1, 0.1, 0.1, 0.1],
    6: [0.01, 0.01, 0.01, 0.01, 0.01],
    7: [0.01, 0.01, 0.01, 0.01, 0.01],
}


def test_lr_table():
    lr = LrParams(warmup_epoch=2.0, decay_step=[4, 6], decay_gamma=0.1)
    got = {epoch: [lr_factor(epoch, step, 5, lr) for step in range(5)] for epoch in range(8)}
    for epoch, row in LR_TABLE.items():
        assert got[epoch] == pytest.approx(row), epoch


def test_lr_fractional_warmup():
    # warmup_epoch 1.5 × 4 steps → W = 6: (t+1)/6 for t = 0..5, then 1
    lr = LrParams(warmup_epoch=1.5, decay_step=[10])
    got = [lr_factor(e, s, 4, lr) for e in range(3) for s in range(4)]
    assert got == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_lr_no_warmup():
    lr = LrParams(warmup_epoch=0.0, decay_step=[0, 2], decay_gamma=0.5)
    # decay_step 0 applies from the very first iteration
    assert [lr_factor(e, 3, 7, lr) for e in range(4)] == pytest.approx([0.5, 0.5, 0.25, 0.25])
    lr = LrParams(warmup_epoch=0.0, decay_step=[])
    assert lr_factor(0, 0, 3, lr) == 1.0 and lr_factor(100, 2, 3, lr) == 1.0


def test_lr_bad_arguments():
    with pytest.raises(ValueError):
        lr_factor(0, 0, 0, LrParams())
    with pytest.raises(ValueError):
        lr_factor(-1, 0, 5, LrParams())


def test_apply_lr(net):
    opt = build_optimizer(param_groups(net, 0.02, 0.2), "adam", 0.0)
    apply_lr(opt, 0.5)
    assert {g["name"]: g["lr"] for g in opt.param_groups} == pytest.approx({"backbone": 0.01, "head": 0.1})
    apply_lr(opt, 1.0)  # from initial_lr, not compounded
    assert {g["name"]: g["lr"] for g in opt.param_groups} == pytest.approx({"backbone": 0.02, "head": 0.2})
    bare = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="initial_lr"):
        apply_lr(bare, 0.5)


def test_cosine_policy_after_linear_warmup():
    lr = LrParams(warmup_epoch=1, policy="cosine", final_lr_factor=0.1)
    steps, epochs = 4, 3
    got = [lr_factor(e, s, steps, lr, epochs) for e in range(epochs) for s in range(steps)]
    assert got[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # iterations 4..11 of 12: u = (t - 4) / 8, factor = 0.1 + 0.9 (1 + cos(pi u)) / 2
    expected = [0.1 + 0.9 * (1 + math.cos(math.pi * (t - 4) / 8)) / 2 for t in range(4, 12)]
    assert got[4:] == pytest.approx(expected) and got[4] == 1.0 and got[-1] > 0.1


def test_a_group_starts_at_its_epoch(net):
    from engine.tasks import ParamGroup

    params = list(net.parameters())
    opt = build_optimizer([ParamGroup("head", params[:1], 0.1), ParamGroup("trunk", params[1:], 0.01, start_epoch=2)],
                          "sgd", 0.0)
    apply_lr(opt, 0.5, epoch=1)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.0]
    apply_lr(opt, 0.5, epoch=2)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.005]
