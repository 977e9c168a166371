"""AM-softmax, spectral feature transform, feature mask, feature erasing, distillation, the load-time refusals and the
matrix of method combinations (each builds and trains one step, or is refused by parse_params)."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from engine.checkpoint import FORMAT_VERSION
from engine.errors import UserError
from engine.optim import build_optimizer
from networks.reid_task import param_groups
from engine.params import ParamsError, parse_params
from networks.reid_params import AsoftmaxParams, DistillationParams, ModelParams, TriLossParams
from networks import factory
from networks.distill import Distiller, build_distiller, kd_feature_loss, kd_logit_loss, training_form
from networks.factory import build_model
from networks.heads import (CosineClassifier, FeatureErasing, am_softmax_margin, erase_band, spectral_affinity,
                            spectral_transform)
from networks.losses import ReidCriterion, build_criterion
from networks.pcb import PartReidNet

H, W = 64, 32
LABELS8 = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
CLASS_NAMES = ("a", "b", "c", "d")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, H, W, generator=torch.Generator().manual_seed(seed))


_TRUNKS: dict = {}


@pytest.fixture(autouse=True)
def cached_trunks(monkeypatch):
    """Building a resnet18 (random init of 11M weights) dominates these tests: copy one cached trunk instead."""
    real = factory.build_resnet_trunk

    def cached(name, stride, imagenet_pretrain):
        if (name, stride) not in _TRUNKS:
            _TRUNKS[name, stride] = real(name, stride, imagenet_pretrain)
        trunk, channels = _TRUNKS[name, stride]
        return copy.deepcopy(trunk), channels

    monkeypatch.setattr(factory, "build_resnet_trunk", cached)


def _params(model=None, **top) -> dict:
    return {"batches_dir": "d", "img_h": H, "img_w": W, "batch_sampling_params": {"P": 4, "K": 2},
            "model_params": {"model": "resnet18", "feature_dim": 16, "dropout": 0.0, **(model or {})}, **top}


def _ce(logits, labels):
    return F.cross_entropy(logits, labels).item()


# ---------------------------------------------------------------------------------------------------------------------
# AM-softmax


def test_cosine_classifier_and_margin_hand_computed():
    layer = CosineClassifier(2, 2, scale=10.0)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.5]]))  # normalised → e1, e2
    x = torch.tensor([[3.0, 4.0], [-1.0, 0.0]])
    logits = layer(x)  # s·cosθ: [6, 8] and [-10, 0]
    assert torch.allclose(logits, torch.tensor([[6.0, 8.0], [-10.0, 0.0]]), atol=1e-5)
    labels = torch.tensor([0, 1])
    with_margin = am_softmax_margin(logits, labels, margin=0.2, scale=10.0)  # s·m = 2 off the target logit
    assert torch.allclose(with_margin, torch.tensor([[4.0, 8.0], [-10.0, -2.0]]), atol=1e-5)
    assert torch.equal(am_softmax_margin(logits, labels, 0.0, 10.0), logits)
    crit = ReidCriterion(TriLossParams(margin=0.0), focal=False, focal_gamma=2.0, label_smoothing=0.0,
                         asoftmax=AsoftmaxParams(margin=0.2, scale=10.0))
    _, comps, acc = crit({"features": x, "logits": [logits]}, labels)
    want = (math.log1p(math.exp(4.0)) + math.log1p(math.exp(-8.0))) / 2  # CE of [4, 8]→0 and [−10, −2]→1
    assert comps["cls"].item() == pytest.approx(want, rel=1e-5)
    assert acc == 0.5  # accuracy on s·cosθ, without the margin
    assert crit.last_stats["asoftmax_margin"] == pytest.approx(0.2)


def test_margin_schedule_advances_every_step_iterations():
    a = AsoftmaxParams(margin=[0.1, 0.2, 0.35], step=5)
    assert [a.margin_at(s) for s in (0, 4, 5, 9, 10, 11, 1000)] == [0.1, 0.1, 0.2, 0.2, 0.35, 0.35, 0.35]
    assert AsoftmaxParams(margin=0.3).margin_at(10 ** 6) == 0.3
    crit = ReidCriterion(TriLossParams(margin=0.0), focal=False, focal_gamma=2.0, label_smoothing=0.0,
                         asoftmax=a)
    logits, labels = torch.tensor([[6.0, 8.0]]), torch.tensor([0])
    seen = []
    for step in (0, 5, 12):
        crit.set_global_step(step)
        _, comps, _ = crit({"features": logits, "logits": [logits]}, labels)
        seen.append(comps["cls"].item())
    want = [_ce(am_softmax_margin(logits, labels, m, 30.0), labels) for m in (0.1, 0.2, 0.35)]
    assert seen == pytest.approx(want, rel=1e-5)


def test_asoftmax_swaps_every_classifier_and_keeps_the_state_dict():
    a = AsoftmaxParams(margin=[0.1, 0.3], step=10, scale=16.0)
    for mp in (ModelParams(model="resnet18", feature_dim=16),
               ModelParams(model="resnet18", pcb_n_parts=2, feature_dim=16, feature_global_dim=8)):
        net = build_model("reid", mp, 4, False, asoftmax_params=a)
        classifiers = [m for name, m in net.named_modules() if name.startswith("classifier") and
                       not isinstance(m, torch.nn.ModuleList)]
        assert classifiers and all(isinstance(c, CosineClassifier) and c.scale == 16.0 for c in classifiers)
        plain = build_model("reid", mp, 4, False)  # how the evaluator rebuilds a checkpoint
        plain.load_state_dict(net.state_dict(), strict=True)
        net.eval(), plain.eval()
        with torch.no_grad():
            assert torch.allclose(net(_images(2)), plain(_images(2)), atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# spectral feature transform


def test_spectral_affinity_rows_hand_computed():
    feats = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    a = spectral_affinity(feats, temperature=0.5)
    assert torch.allclose(a.sum(dim=1), torch.ones(3), atol=1e-6)
    c = 1 / math.sqrt(2)
    sims = torch.tensor([[1.0, 0.0, c], [0.0, 1.0, c], [c, c, 1.0]]) / 0.5
    assert torch.allclose(a, torch.softmax(sims, dim=1), atol=1e-6)
    e = math.exp(2.0)
    assert a[0, 0].item() == pytest.approx(e / (e + 1 + math.exp(2 * c)), rel=1e-5)
    propagated, affinity = spectral_transform(feats, 0.5)
    assert propagated.shape == feats.shape and torch.allclose(propagated, affinity @ feats)


def test_spectral_transform_gradients_flow_through_affinity_and_features():
    feats = torch.randn(6, 5, requires_grad=True)
    propagated, _ = spectral_transform(feats, 0.3)
    (propagated ** 2).sum().backward()
    direct = feats.detach().clone().requires_grad_(True)
    (direct ** 2).sum().backward()
    assert torch.isfinite(feats.grad).all() and not torch.allclose(feats.grad, direct.grad)


@pytest.mark.parametrize("model, heads", [
    ({"spectral_trans": 0.5}, 1),
    ({"spectral_trans": 0.5, "pcb_n_parts": 2}, 2),
    ({"spectral_trans": 0.5, "pcb_n_parts": 2, "feature_global_dim": 8}, 3),
])
def test_spectral_heads_with_and_without_pcb(model, heads):
    torch.manual_seed(0)
    net = build_model("reid", ModelParams(model="resnet18", feature_dim=16, dropout=0.0, **model), 4, False).train()
    out = net(_images())
    assert len(out["logits"]) == heads and len(out["spectral_logits"]) == heads
    assert all(s.shape == (8, 4) for s in out["spectral_logits"])
    assert 0 < out["spectral_self_affinity"].item() <= 1
    net.eval()
    with torch.no_grad():
        assert net(_images(2)).shape == (2, net.descriptor_dim)  # no spectral part at evaluation
    with training_form(net):
        assert "spectral_logits" not in net(_images(2))  # off when the submodules are in eval mode


def test_spectral_gate_is_a_function_of_the_batch_accuracy():
    logits = [torch.eye(4)[[0, 0, 1, 1, 2, 2, 3, 3]] * 5]  # every prediction right: accuracy 1
    wrong = [torch.eye(4)[[1, 1, 2, 2, 3, 3, 0, 0]] * 5]  # accuracy 0
    spectral = [torch.zeros(8, 4)]

    def crit(start):
        return ReidCriterion(TriLossParams(margin=0.0), focal=False, focal_gamma=2.0, label_smoothing=0.0,
                             spectral_start_accuracy=start)

    _, comps, acc = crit(0.9)({"features": None, "logits": logits, "spectral_logits": spectral}, LABELS8)
    assert acc == 1.0 and comps["spectral"].item() == pytest.approx(math.log(4), rel=1e-5)
    _, comps, acc = crit(0.9)({"features": None, "logits": wrong, "spectral_logits": spectral}, LABELS8)
    assert acc == 0.0 and "spectral" not in comps
    _, comps, _ = crit(0.0)({"features": None, "logits": wrong, "spectral_logits": spectral}, LABELS8)
    assert "spectral" in comps


# ---------------------------------------------------------------------------------------------------------------------
# feature mask and feature erasing


def test_feature_mask_is_applied_alike_in_training_form_and_evaluation():
    torch.manual_seed(0)
    net = build_model("reid", ModelParams(model="resnet18", feature_dim=16, feature_mask=True), 4, False)
    net.train()
    net(_images())  # one training pass moves the BN statistics away from their init
    x = _images(3, seed=1)
    with torch.no_grad(), training_form(net):
        out = net(x)
    net.eval()
    with torch.no_grad():
        desc = net(x)
        fmap = net.trunk(x)
        mask = net.mask(fmap.mean(dim=(2, 3)))
        manual = net.embedding(fmap.mean(dim=(2, 3))) * mask
    assert ((mask > 0) & (mask < 1)).all() and not torch.allclose(mask, torch.ones_like(mask))
    assert torch.allclose(out["features"], manual, atol=1e-5)
    assert torch.allclose(desc, net.bn(manual), atol=1e-5)


def test_pcb_feature_mask_covers_parts_not_the_global_branch():
    torch.manual_seed(0)
    net = build_model("reid", ModelParams(model="resnet18", pcb_n_parts=2, feature_dim=16, feature_global_dim=8,
                                          feature_mask=True), 4, False)
    assert net.mask.fc.out_features == 16
    twin = copy.deepcopy(net)
    with torch.no_grad():
        twin.mask.bn.bias.fill_(50.0)  # sigmoid ≈ 1: mask off
    net.eval(), twin.eval()
    with torch.no_grad():
        a, b = net(_images(2)), twin(_images(2))
    assert not torch.allclose(a[:, :16], b[:, :16]) and torch.allclose(a[:, 16:], b[:, 16:], atol=1e-6)


def test_erase_band_zeroes_one_band_per_sample():
    x = torch.ones(5, 2, 8, 3)
    out = erase_band(x, 0.5, generator=torch.Generator().manual_seed(0))
    for sample in out:
        zero_rows = (sample == 0).all(dim=(0, 2)).nonzero().flatten().tolist()
        assert len(zero_rows) == 4 and zero_rows == list(range(zero_rows[0], zero_rows[0] + 4))
        assert (sample.sum(dim=(0, 2)) > 0).sum() == 4
    assert erase_band(x, 0.1) is x  # int(0.8) = 0 rows


def test_feature_erasing_only_in_training():
    layer = FeatureErasing(0.5)
    x = torch.ones(4, 2, 8, 3)
    assert (layer.train()(x) == 0).any()
    assert layer.eval()(x) is x
    torch.manual_seed(0)
    erasing = build_model("reid", ModelParams(model="resnet18", feature_dim=16, dropout=0.0,
                                              feature_erasing_ratio=0.5), 4, False)
    plain = build_model("reid", ModelParams(model="resnet18", feature_dim=16, dropout=0.0,
                                            feature_erasing_ratio=0.0, feature_mask=False,
                                            spectral_trans=0.0), 4, False)
    plain = PartReidNet(plain.trunk, 512, 4, global_dim=16, dropout=0.0)
    plain.load_state_dict(erasing.state_dict(), strict=True)
    x = _images(4)
    erasing.eval(), plain.eval()
    with torch.no_grad():
        assert torch.allclose(erasing(x), plain(x), atol=1e-6)
    erasing.train(), plain.train()
    torch.manual_seed(1)
    assert not torch.allclose(erasing(x)["features"], plain(x)["features"])


# ---------------------------------------------------------------------------------------------------------------------
# distillation


def test_kd_logit_loss_hand_computed_and_zero_for_equal_logits():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # p_t = (0.75, 0.25), p_s = (0.5, 0.5)
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kd_logit_loss(student, teacher, 1.0, "kl").item() == pytest.approx(kl, rel=1e-5)
    assert kd_logit_loss(student, 2 * teacher, 2.0, "kl").item() == pytest.approx(4 * kl, rel=1e-5)  # T² factor
    m = (0.625, 0.375)
    js = 0.5 * (0.75 * math.log(0.75 / m[0]) + 0.25 * math.log(0.25 / m[1])
                + 0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1]))
    assert kd_logit_loss(student, teacher, 1.0, "js").item() == pytest.approx(js, rel=1e-5)
    x = torch.randn(5, 7)
    for kind in ("kl", "js"):
        assert kd_logit_loss(x, x.clone(), 4.0, kind).abs().item() < 1e-6


def test_kd_feature_losses():
    s, t = torch.randn(6, 16), torch.randn(6, 24)
    assert kd_feature_loss(s, t, "similarity").item() > 0
    assert kd_feature_loss(s, 3 * s, "similarity").item() < 1e-10
    assert kd_feature_loss(s, 2 * s, "cosine").abs().item() < 1e-6
    with pytest.raises(UserError, match="16 wide, the teacher's 24"):
        kd_feature_loss(s, t, "cosine")


def _pcb_teacher(**kw):
    torch.manual_seed(0)
    mp = ModelParams(model="resnet18", pcb_n_parts=2, feature_dim=16, feature_global_dim=8, **kw)
    net = build_model("reid", mp, 4, False)
    net.train()
    net(_images())  # non-trivial BN statistics
    return net.eval()


KD_BOTH = DistillationParams(teacher_checkpoint="t.pth", temperature=3.0, logit_weight=1.0, feature_weight=1.0)


@pytest.mark.parametrize("logit_loss, feature_loss", [("kl", "similarity"), ("js", "cosine")])
def test_kd_is_zero_when_student_equals_teacher(logit_loss, feature_loss):
    teacher = _pcb_teacher(spectral_trans=0.5, feature_mask=True)
    student = copy.deepcopy(teacher)
    kd = KD_BOTH.model_copy(update={"logit_loss": logit_loss, "feature_loss": feature_loss})
    distiller = Distiller(teacher, kd)
    x = _images()
    with torch.no_grad(), training_form(student):
        outputs = student(x)
    comps = distiller(x, outputs)
    assert set(comps) == {"kd_logits", "kd_features"}
    assert all(v.abs().item() < 1e-5 for v in comps.values())


def test_kd_gradients_reach_the_student_not_the_teacher():
    teacher = _pcb_teacher()
    student = build_model("reid", ModelParams(model="resnet18", feature_dim=16, dropout=0.0), 4, False).train()
    distiller = Distiller(teacher, KD_BOTH)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    x = _images()
    comps = distiller(x, student(x))
    sum(comps.values()).backward()
    optimizer.step()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert student.classifier.weight.grad.abs().sum() > 0 and student.embedding.weight.grad.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # weights and BN statistics
    assert not teacher.training and not any(m.training for m in teacher.modules())


def _save_teacher(tmp_path, params_dict, num_classes=4, class_names=CLASS_NAMES):
    params = parse_params(params_dict)
    torch.manual_seed(0)
    net = build_model("reid", params.model_params, num_classes, False, asoftmax_params=params.asoftmax_params)
    path = tmp_path / "teacher.pth"
    torch.save({"format_version": FORMAT_VERSION, "task": "reid",
                "params": params.model_dump(mode="json", exclude={"tri_loss_margin", "tri_loss_lambda_cls"}),
                "task_state": {"num_classes": num_classes, "class_names": list(class_names)},
                "model": net.state_dict()}, path)
    return path, net


def test_distiller_from_a_checkpoint_trains_one_step(tmp_path):
    path, saved = _save_teacher(tmp_path, _params({"model": "resnet34", "pcb_n_parts": 2, "feature_global_dim": 8},
                                                  asoftmax_params={"margin": 0.2}))
    params = parse_params(_params({"spectral_trans": 0.5}, tri_loss_params={"margin": 0.3},
                                  distillation_params={"teacher_checkpoint": str(path), "feature_weight": 0.5}))
    crit = build_criterion(params, 4, CLASS_NAMES)
    teacher = crit.distiller.teacher
    assert type(teacher) is type(saved) and not teacher.training
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), saved.state_dict().values()))
    student = build_model("reid", params.model_params, 4, False).train()
    x = _images()
    with pytest.raises(ValueError, match="images=images"):
        crit(student(x), LABELS8)
    total, comps, _ = crit(student(x), LABELS8, images=x)
    assert {"cls", "spectral", "triplet", "kd_logits", "kd_features"} <= set(comps)
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())


def test_distiller_refusals(tmp_path):
    path, _ = _save_teacher(tmp_path, _params())
    params = parse_params(_params(distillation_params={"teacher_checkpoint": str(path)}))
    with pytest.raises(UserError, match="trained on 4 classes, the training data has 5"):
        build_distiller(params, 5)
    with pytest.raises(UserError, match="other classes"):
        build_distiller(params, 4, ("a", "b", "x", "d"))
    features_only = parse_params(_params(distillation_params={"teacher_checkpoint": str(path),
                                                              "logit_weight": 0.0, "feature_weight": 1.0}))
    assert build_distiller(features_only, 5) is not None  # the feature loss needs no common classes
    assert build_distiller(parse_params(_params()), 4) is None
    with pytest.raises(UserError, match="not found"):
        build_distiller(parse_params(_params(distillation_params={"teacher_checkpoint": str(tmp_path / "no")})), 4)
    with pytest.raises(UserError, match="task 'classification'|trained for task"):
        build_distiller(parse_params({**_params(distillation_params={"teacher_checkpoint": str(path)}),
                                      "task": "classification", "batch_sampling_params": {}}), 4)


# ---------------------------------------------------------------------------------------------------------------------
# load-time refusals


@pytest.mark.parametrize("data, expected", [
    (_params({"spectral_start_accuracy": 0.9}), "gates the spectral transform, which is off"),
    (_params({"spectral_trans": 0.3}, tri_loss_params={"margin": 0.3, "lambda_cls": 0}),
     "lambda_cls is 0, so there is no classification loss, but model_params.spectral_trans=0.3"),
    (_params({"pcb_n_parts": 2, "random_drop_branchs": 2}, tri_loss_params={"margin": 0.3, "lambda_cls": 0}),
     "random_drop_branchs=2 only change that loss"),
    (_params(tri_loss_params={"margin": 0.3, "lambda_cls": 0}, asoftmax_params={"margin": 0.2}),
     "asoftmax_params.margin only change that loss"),
    (_params(asoftmax_params={"margin": [0.1, 0.2], "scale": 0}), "scale must be > 0"),
    (_params(asoftmax_params={"margin": []}), "asoftmax_params.margin"),
    ({**_params({"feature_mask": True}), "task": "classification"}, "feature_mask=True need task 'reid'"),
    ({**_params(asoftmax_params={"margin": 0.2}), "task": "classification"}, "asoftmax_params.margin>0 need task"),
    (_params(distillation_params={"teacher_checkpoint": "t.pth", "logit_weight": 0}), "the teacher would teach "
                                                                                     "nothing"),
    (_params({"feature_erasing_ratio": 1.0}), "model_params.feature_erasing_ratio"),
    (_params(distillation_params={"logit_loss": "mse"}), "distillation_params.logit_loss"),
])
def test_method_refusals_are_clear(data, expected):
    with pytest.raises(ParamsError, match=expected.replace("[", r"\[").replace(".", r"\.").replace("+", r"\+")
                       .replace("(", r"\(").replace(")", r"\)").replace("|", r"\|").replace("*", r"\*")
                       .replace("?", r"\?").replace("^", r"\^").replace("$", r"\$")):
        parse_params(data)


def test_seed_params_of_the_original_load():
    """The original's shipped combination: PCB 6 parts + global 256 + random drop 6 + spectral 0.3, AM-softmax off
    with its scale 0, at 384×128."""
    p = parse_params({"batches_dir": "d", "img_h": 384, "img_w": 128,
                      "asoftmax_params": {"margin": 0, "step": 2000, "scale": 0, "unlabel_fold": 0,
                                          "unlabel_update": 0},
                      "model_params": {"model": "resnet_50", "feature_dim": 1536, "pcb_n_parts": 6,
                                       "random_drop_branchs": 6, "last_conv_stride": 1, "spectral_trans": 0.3,
                                       "feature_mask": False, "feature_gobal_dim": 256}})
    assert p.model_params.feature_global_dim == 256 and p.model_params.pcb_n_parts == 6


# ---------------------------------------------------------------------------------------------------------------------
# every combination builds and trains one step, or is refused


COMBOS = list(itertools.product([False, True], repeat=6))


@pytest.fixture
def tiny_trunk(monkeypatch):
    """The combinations concern the heads and the loss, not the trunk: a two-conv stand-in with the ResNet's overall
    stride 16 (64×32 → a 4×2 map, like resnet18 with last_conv_stride 1) keeps the 64 cases fast."""

    def tiny(name, stride, imagenet_pretrain):
        trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, stride=4, padding=1), torch.nn.BatchNorm2d(16),
                                    torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, stride=4 * stride, padding=1))
        return trunk, 32

    monkeypatch.setattr(factory, "build_resnet_trunk", tiny)


def _combo_params(pcb, glob, spectral, asoftmax, triplet, mask) -> dict:
    model = {"pcb_n_parts": 3 if pcb else 0, "feature_dim": 24, "feature_global_dim": 8 if glob else 0,
             "spectral_trans": 0.5 if spectral else 0.0, "feature_mask": mask}
    return _params(model, tri_loss_params={"margin": 0.3 if triplet else 0.0},
                   asoftmax_params={"margin": [0.1, 0.2] if asoftmax else 0, "step": 1})


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "".join("PGSATM"[i] if on else "-" for i, on in enumerate(c)))
def test_every_combination_trains_one_step_or_is_refused(combo, tiny_trunk):
    pcb, glob, spectral, asoftmax, triplet, mask = combo
    data = _combo_params(*combo)
    if glob and not pcb:
        with pytest.raises(ParamsError, match="feature_global_dim=8 applies to PCB heads, but pcb_n_parts is 0"):
            parse_params(data)
        return
    params = parse_params(data)
    torch.manual_seed(0)
    model = build_model("reid", params.model_params, 4, False, asoftmax_params=params.asoftmax_params).train()
    criterion = build_criterion(params, 4, CLASS_NAMES)
    optimizer = build_optimizer(param_groups(model, 0.01, 0.01), "sgd", 5e-4)
    head_before = [p.detach().clone() for p in model.parameters() if p.ndim == 2]
    criterion.set_global_step(1)
    outputs = model(_images())
    total, comps, accuracy = criterion(outputs, LABELS8)
    assert torch.isfinite(total) and 0.0 <= accuracy <= 1.0
    assert ("triplet" in comps) == triplet and ("spectral" in comps) == spectral and "cls" in comps
    assert len(outputs["logits"]) == (3 if pcb else 1) + (1 if glob else 0)
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(head_before, (p for p in model.parameters() if p.ndim == 2)))
    if asoftmax:
        assert criterion.last_stats["asoftmax_margin"] == pytest.approx(0.2)
    model.eval()
    with torch.no_grad():
        assert model(_images(2)).shape == (2, 24 + (8 if glob else 0))


def test_all_methods_at_once_under_bf16_autocast(tiny_trunk):
    params = parse_params(_params({"pcb_n_parts": 2, "feature_global_dim": 8, "spectral_trans": 0.5,
                                   "spectral_start_accuracy": 0.0, "feature_mask": True,
                                   "feature_erasing_ratio": 0.25, "random_drop_branchs": 2},
                                  tri_loss_params={"margin": "soft_margin", "use_adaptive_weight": True},
                                  asoftmax_params={"margin": 0.2}, focal_loss=True, label_smoothing=0.1))
    torch.manual_seed(0)
    model = build_model("reid", params.model_params, 4, False, asoftmax_params=params.asoftmax_params).train()
    criterion = build_criterion(params, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, comps, _ = criterion(model(_images()), LABELS8)
    assert total.dtype == torch.float32 and torch.isfinite(total)
    assert set(comps) == {"cls", "spectral", "triplet"}
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
