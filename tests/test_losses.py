"""Triplet loss (hand-computed values, odd batches, gradients), focal loss and ReidCriterion."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from networks.reid_params import TriLossParams
from networks.losses import ReidCriterion, focal_loss, triplet_loss

# Four 2-D points on a 3×4 rectangle:      x2 (0,4) ---- x3 (3,4)
#                                           |              |
#                                           x0 (0,0) ---- x1 (3,0)
# distances: d01 = 3, d02 = 4, d03 = 5, d12 = 5, d13 = 4, d23 = 3.
POINTS = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [3.0, 4.0]])
# Case A: labels [0, 0, 0, 1]. x3 has no positive → not an anchor. Anchors x0, x1, x2:
#   x0: positives {d01=3, d02=4}, negatives {d03=5}
#   x1: positives {d10=3, d12=5}, negatives {d13=4}
#   x2: positives {d20=4, d21=5}, negatives {d23=3}
LABELS_A = torch.tensor([0, 0, 0, 1])
# Case B: labels [0, 0, 1, 2]. Only x0 and x1 have a positive:
#   x0: positives {d01=3}, negatives {d02=4, d03=5}
#   x1: positives {d10=3}, negatives {d12=5, d13=4}
LABELS_B = torch.tensor([0, 0, 1, 2])


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_triplet_hard_margin_hand_computed():
    # batch-hard: x0: d_ap = max(3,4) = 4, d_an = 5 → relu(4 − 5 + 1) = 0
    #             x1: d_ap = max(3,5) = 5, d_an = 4 → relu(5 − 4 + 1) = 2
    #             x2: d_ap = max(4,5) = 5, d_an = 3 → relu(5 − 3 + 1) = 3
    # loss = (0 + 2 + 3) / 3 = 5/3; 2 of 3 anchors active; mean d_ap = 14/3, mean d_an = 12/3 = 4
    loss, stats = triplet_loss(POINTS, LABELS_A, 1.0, adaptive=False)
    assert loss.item() == pytest.approx(5 / 3, abs=1e-5)
    assert stats["active_fraction"] == pytest.approx(2 / 3)
    assert stats["mean_d_ap"] == pytest.approx(14 / 3, abs=1e-5)
    assert stats["mean_d_an"] == pytest.approx(4.0, abs=1e-5)
    assert all(isinstance(v, float) for v in stats.values())


def test_triplet_soft_margin_hand_computed():
    # softplus(d_ap − d_an) with the same d_ap/d_an: softplus(−1), softplus(1), softplus(2)
    # = 0.313262 + 1.313262 + 2.126928 = 3.753452; / 3 = 1.251151
    loss, _ = triplet_loss(POINTS, LABELS_A, "soft_margin", adaptive=False)
    expected = (_softplus(-1) + _softplus(1) + _softplus(2)) / 3
    assert expected == pytest.approx(1.251151, abs=1e-6)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_triplet_adaptive_positives_hand_computed():
    # softmax-weighted positives (one negative each, so d_an = that distance):
    #   x0: w = softmax(3, 4) = (1/(1+e), e/(1+e)) = (0.268941, 0.731059); d_ap = 3·0.268941 + 4·0.731059 = 3.731059
    #       relu(3.731059 − 5 + 1) = 0
    #   x1: w = softmax(3, 5) = (1/(1+e²), e²/(1+e²)) = (0.119203, 0.880797); d_ap = 4.761594; relu(4.761594 − 4 + 1)
    #       = 1.761594
    #   x2: w = softmax(4, 5) = (0.268941, 0.731059); d_ap = 4.731059; relu(4.731059 − 3 + 1) = 2.731059
    # loss = (0 + 1.761594 + 2.731059) / 3 = 1.497551
    loss, stats = triplet_loss(POINTS, LABELS_A, 1.0, adaptive=True)
    assert loss.item() == pytest.approx(1.497551, abs=1e-5)
    assert stats["mean_d_ap"] == pytest.approx((3.731059 + 4.761594 + 4.731059) / 3, abs=1e-5)


def test_triplet_adaptive_negatives_hand_computed():
    # softmin-weighted negatives (one positive each, d_ap = 3):
    #   x0: negatives (4, 5): w = softmax(−4, −5) = (0.731059, 0.268941); d_an = 4·0.731059 + 5·0.268941 = 4.268941
    #   x1: negatives (5, 4): same weights on the same values → d_an = 4.268941
    # margin 2: relu(3 − 4.268941 + 2) = 0.731059 for both → loss 0.731059
    loss, stats = triplet_loss(POINTS, LABELS_B, 2.0, adaptive=True)
    assert loss.item() == pytest.approx(0.731059, abs=1e-5)
    assert stats["mean_d_an"] == pytest.approx(4.268941, abs=1e-5)
    # batch-hard on case B: d_an = 4 for both → relu(3 − 4 + 2) = 1
    hard, _ = triplet_loss(POINTS, LABELS_B, 2.0, adaptive=False)
    assert hard.item() == pytest.approx(1.0, abs=1e-5)


def _reference(features, labels, margin, adaptive):
    """Straightforward per-anchor loops."""
    dist = torch.cdist(features.double(), features.double())
    losses = []
    for i in range(len(labels)):
        pos = [dist[i, j] for j in range(len(labels)) if j != i and labels[j] == labels[i]]
        neg = [dist[i, j] for j in range(len(labels)) if labels[j] != labels[i]]
        if not pos or not neg:
            continue
        pos, neg = torch.stack(pos), torch.stack(neg)
        if adaptive:
            d_ap = (torch.softmax(pos, 0) * pos).sum()
            d_an = (torch.softmax(-neg, 0) * neg).sum()
        else:
            d_ap, d_an = pos.max(), neg.min()
        losses.append(F.softplus(d_ap - d_an) if margin == "soft_margin" else F.relu(d_ap - d_an + margin))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("margin", [0.3, "soft_margin"])
@pytest.mark.parametrize("adaptive", [False, True])
def test_triplet_unbalanced_batch_matches_reference(margin, adaptive):
    # identity 2 has a single image (not an anchor, still a negative for the others); identity 0 has 3 images
    torch.manual_seed(0)
    features = torch.randn(7, 5)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3])
    loss, stats = triplet_loss(features, labels, margin, adaptive)
    assert loss.item() == pytest.approx(_reference(features, labels, margin, adaptive).item(), abs=1e-5)
    assert 0.0 <= stats["active_fraction"] <= 1.0


def test_triplet_single_identity_and_singletons_give_zero():
    features = torch.randn(4, 3, requires_grad=True)
    for labels in (torch.tensor([1, 1, 1, 1]), torch.tensor([0, 1, 2, 3]), torch.tensor([5])):
        feats = features[: len(labels)]
        loss, stats = triplet_loss(feats, labels, 0.3, adaptive=False)
        assert loss.item() == 0.0 and loss.requires_grad
        assert stats == {"active_fraction": 0.0, "mean_d_ap": 0.0, "mean_d_an": 0.0}
        loss.backward()
    assert torch.all(features.grad == 0)


@pytest.mark.parametrize("adaptive", [False, True])
def test_triplet_gradients_flow(adaptive):
    features = POINTS.clone().requires_grad_(True)
    loss, _ = triplet_loss(features, LABELS_A, 1.0, adaptive)
    loss.backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
    # duplicated features (zero distances) must not give NaN gradients
    dup = torch.zeros(4, 3, requires_grad=True)
    loss, _ = triplet_loss(dup, torch.tensor([0, 0, 1, 1]), 0.5, adaptive)
    loss.backward()
    assert torch.isfinite(dup.grad).all()


def test_triplet_under_autocast_stays_float32():
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss, _ = triplet_loss(POINTS.bfloat16(), LABELS_A, 1.0, adaptive=False)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(5 / 3, abs=1e-5)


def test_triplet_rejects_bad_margin():
    with pytest.raises(ValueError):
        triplet_loss(POINTS, LABELS_A, "hard", adaptive=False)
    with pytest.raises(ValueError):
        triplet_loss(POINTS, LABELS_A, -1.0, adaptive=False)


# --------------------------------------------------------------------------------------------------------------------
# Focal loss


def test_focal_gamma_zero_is_cross_entropy():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 4) * 3, torch.tensor([0, 1, 2, 3, 0, 1])
    assert focal_loss(logits, labels, 0.0).item() == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-6)
    smoothed = F.cross_entropy(logits, labels, label_smoothing=0.1).item()
    assert focal_loss(logits, labels, 0.0, label_smoothing=0.1).item() == pytest.approx(smoothed, abs=1e-6)


def test_focal_gamma_two_hand_computed():
    # logits (0, ln 3) → p = (1/4, 3/4)
    # row 0, label 1: p_t = 0.75 → −(0.25)²·ln 0.75 = 0.0625 · 0.287682 = 0.017980
    # row 1, label 0: p_t = 0.25 → −(0.75)²·ln 0.25 = 0.5625 · 1.386294 = 0.779791
    # mean = 0.398886
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    loss = focal_loss(logits, torch.tensor([1, 0]), 2.0)
    assert loss.item() == pytest.approx(0.398886, abs=1e-5)


def test_focal_is_finite_for_saturated_logits():
    logits = torch.tensor([[200.0, -200.0], [-200.0, 200.0]], requires_grad=True)
    loss = focal_loss(logits, torch.tensor([1, 1]), 0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


# --------------------------------------------------------------------------------------------------------------------
# ReidCriterion


def _outputs(requires_grad=True):
    torch.manual_seed(0)
    features = torch.randn(6, 8, requires_grad=requires_grad)
    logits = torch.randn(6, 3, requires_grad=requires_grad)
    return {"features": features, "logits": [logits]}, torch.tensor([0, 0, 1, 1, 2, 2])


def test_criterion_cls_only():
    crit = ReidCriterion(TriLossParams(margin=0.0, lambda_cls=2.0), focal=False, focal_gamma=2.0, label_smoothing=0.0)
    outputs, labels = _outputs()
    total, components, acc = crit(outputs, labels)
    assert set(components) == {"cls"}
    assert components["cls"].item() == pytest.approx(2 * F.cross_entropy(outputs["logits"][0], labels).item(),
                                                     rel=1e-6)
    assert total.item() == pytest.approx(components["cls"].item())
    expected_acc = (outputs["logits"][0].argmax(1) == labels).float().mean().item()
    assert acc == pytest.approx(expected_acc) and isinstance(acc, float)
    assert crit.last_stats == {}


def test_criterion_cls_and_triplet_sum():
    tri = TriLossParams(margin=0.3, lambda_tri=0.5, lambda_cls=1.0)
    crit = ReidCriterion(tri, focal=True, focal_gamma=2.0, label_smoothing=0.0)
    outputs, labels = _outputs()
    total, components, _ = crit(outputs, labels)
    assert set(components) == {"cls", "triplet"}
    assert total.item() == pytest.approx(sum(c.item() for c in components.values()), rel=1e-6)
    tri_value, _ = triplet_loss(outputs["features"], labels, 0.3, adaptive=False)
    assert components["triplet"].item() == pytest.approx(0.5 * tri_value.item(), rel=1e-6)
    assert components["cls"].item() == pytest.approx(focal_loss(outputs["logits"][0], labels, 2.0).item(), rel=1e-6)
    assert set(crit.last_stats) == {"triplet_active_fraction", "triplet_mean_d_ap", "triplet_mean_d_an"}


def test_criterion_triplet_alone_trains_features_only():
    tri = TriLossParams(margin="soft_margin", lambda_cls=0.0)
    crit = ReidCriterion(tri, focal=False, focal_gamma=2.0, label_smoothing=0.1)
    outputs, labels = _outputs()
    total, components, acc = crit(outputs, labels)
    assert set(components) == {"triplet"}
    total.backward()
    assert outputs["features"].grad.abs().sum() > 0
    assert outputs["logits"][0].grad is None
    assert 0.0 <= acc <= 1.0


def test_criterion_sums_heads_and_averages_accuracy():
    crit = ReidCriterion(TriLossParams(), focal=False, focal_gamma=2.0, label_smoothing=0.0)
    labels = torch.tensor([0, 1])
    right = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    wrong = torch.tensor([[0.0, 5.0], [5.0, 0.0]])
    total, components, acc = crit({"features": torch.zeros(2, 2), "logits": [right, wrong]}, labels)
    expected = F.cross_entropy(right, labels) + F.cross_entropy(wrong, labels)
    assert components["cls"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert acc == pytest.approx(0.5)


def test_criterion_refuses_empty_loss():
    with pytest.raises(ValueError):
        ReidCriterion(TriLossParams(margin=0.0, lambda_cls=0.0), focal=False, focal_gamma=2.0, label_smoothing=0.0)
