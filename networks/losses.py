"""Training losses: batch-hard / adaptive triplet, focal loss, and the criterion that combines them with the
classification term as configured by ``tri_loss_params``, ``focal_loss``, ``focal_gamma`` and ``label_smoothing``.

All losses are computed in float32 (inputs produced under autocast are upcast first).
"""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.params import TriLossParams

Margin = Union[float, str]

_ACTIVE_THRESHOLD = 1e-3  # an anchor whose own loss exceeds this counts as "active"


def pairwise_euclidean(features: Tensor) -> Tensor:
    """N×N Euclidean distances; the squared distances are clamped at 1e-12 before the square root so that the gradient
    stays finite for identical vectors (and on the diagonal)."""
    features = features.float()
    # outside autocast: the matmul must stay in float32 (bf16/fp16 cancellation would swamp small distances)
    with torch.autocast(device_type=features.device.type, enabled=False):
        squared = features.pow(2).sum(dim=1)
        d2 = squared[:, None] + squared[None, :] - 2.0 * (features @ features.t())
        return d2.clamp(min=1e-12).sqrt()


def triplet_loss(features: Tensor, labels: Tensor, margin: Margin, adaptive: bool) -> tuple[Tensor, dict]:
    """Triplet loss with in-batch mining on raw (not normalised) features.

    Anchors are the samples with at least one positive other than themselves and at least one negative in the batch;
    the others are ignored, so unbalanced or odd batches never fail. Per anchor:

    * batch-hard (``adaptive=False``): ``d_ap`` = largest positive distance, ``d_an`` = smallest negative distance;
    * adaptive: ``d_ap = Σ softmax(d_pos)·d_pos`` over the anchor's positives and ``d_an = Σ softmin(d_neg)·d_neg`` over
      its negatives.

    Self pairs are never positives. Loss: ``margin > 0`` → ``mean(relu(d_ap − d_an + margin))`` (``margin == 0`` gives
    the same form without margin); ``"soft_margin"`` → ``mean(softplus(d_ap − d_an))``. Without any valid anchor the
    loss is 0 and still attached to the graph of ``features``.

    Returns ``(loss, stats)``, stats = ``{"active_fraction": share of valid anchors whose loss > 1e-3,
    "mean_d_ap", "mean_d_an"}`` as Python floats (all 0.0 when there is no valid anchor).
    """
    if isinstance(margin, str):
        if margin != "soft_margin":
            raise ValueError(f"margin must be a number ≥ 0 or 'soft_margin'; found {margin!r}")
    elif margin < 0:
        raise ValueError(f"margin must be ≥ 0; found {margin}")
    if features.dim() != 2 or labels.dim() != 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"expected N×D features and N labels; found {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")

    features = features.float()
    labels = labels.to(features.device)
    n = features.shape[0]
    dist = pairwise_euclidean(features)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=features.device)
    pos_mask = same & ~eye
    neg_mask = ~same
    valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)

    dist, pos_mask, neg_mask = dist[valid], pos_mask[valid], neg_mask[valid]
    if dist.shape[0] == 0:
        zero = features.sum() * 0.0
        return zero, {"active_fraction": 0.0, "mean_d_ap": 0.0, "mean_d_an": 0.0}

    neg_inf = torch.tensor(float("-inf"), device=dist.device)
    if adaptive:
        # Row-wise weights over the valid entries only (masked entries get weight exactly 0).
        w_pos = torch.softmax(torch.where(pos_mask, dist, neg_inf), dim=1)
        w_neg = torch.softmax(torch.where(neg_mask, -dist, neg_inf), dim=1)
        d_ap = (w_pos * dist).sum(dim=1)
        d_an = (w_neg * dist).sum(dim=1)
    else:
        d_ap = torch.where(pos_mask, dist, neg_inf).amax(dim=1)
        d_an = torch.where(neg_mask, -dist, neg_inf).amax(dim=1).neg()

    if margin == "soft_margin":
        per_anchor = F.softplus(d_ap - d_an)
    else:
        per_anchor = F.relu(d_ap - d_an + float(margin))
    loss = per_anchor.mean()

    with torch.no_grad():
        stats = torch.stack([(per_anchor > _ACTIVE_THRESHOLD).float().mean(), d_ap.mean(), d_an.mean()]).tolist()
    return loss, {"active_fraction": stats[0], "mean_d_ap": stats[1], "mean_d_an": stats[2]}


def focal_loss(logits: Tensor, labels: Tensor, gamma: float, label_smoothing: float = 0.0) -> Tensor:
    """Focal loss ``mean(−(1 − p_t)^γ · log p_t)`` from ``log_softmax`` (never ``log(0)``).

    With ``label_smoothing = ε > 0`` the target distribution is ``q = (1 − ε)·onehot + ε/C`` (as in
    ``F.cross_entropy``) and the loss is ``mean(−Σ_c q_c (1 − p_c)^γ log p_c)``; for γ = 0 it equals
    ``F.cross_entropy(logits, labels, label_smoothing=ε)``.
    """
    if gamma < 0:
        raise ValueError(f"focal gamma must be ≥ 0; found {gamma}")
    log_p = F.log_softmax(logits.float(), dim=1)
    # 1 − p = −expm1(log p) is accurate near p = 1; the tiny floor keeps the gradient finite for 0 < γ < 1 at p = 1.
    modulation = (-torch.expm1(log_p)).clamp(min=1e-12).pow(gamma)
    weighted = modulation * log_p
    target = -weighted.gather(1, labels.long().view(-1, 1)).squeeze(1)
    if label_smoothing <= 0:
        return target.mean()
    uniform = -weighted.mean(dim=1)
    return ((1.0 - label_smoothing) * target + label_smoothing * uniform).mean()


class ReidCriterion:
    """Total training loss = ``cls`` + ``triplet``.

    * ``cls = lambda_cls · Σ_heads CE(logits_h, y)`` (focal loss with γ = ``focal_gamma`` when ``focal``; label
      smoothing ε applies to either), present only when ``lambda_cls > 0``;
    * ``triplet = lambda_tri · triplet_loss(outputs["features"], y)``, present only when ``tri.enabled``.

    ``__call__(outputs, labels) -> (total, components, accuracy)`` with ``components`` a dict of the present terms (as
    tensors; ``total`` is their sum) and ``accuracy`` the mean over heads of the batch top-1 accuracy (a float). The
    triplet statistics of the last call are kept in ``last_stats`` (``triplet_active_fraction``, ``triplet_mean_d_ap``,
    ``triplet_mean_d_an``; empty when the triplet term is off).
    """

    def __init__(self, tri: TriLossParams, focal: bool, focal_gamma: float, label_smoothing: float) -> None:
        if tri.lambda_cls <= 0 and not tri.enabled:
            raise ValueError("lambda_cls is 0 and the triplet loss is off: there is no loss to train with")
        self.tri = tri
        self.focal = focal
        self.focal_gamma = focal_gamma
        self.label_smoothing = label_smoothing
        self.last_stats: dict[str, float] = {}

    def _cls(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.focal:
            return focal_loss(logits, labels, self.focal_gamma, self.label_smoothing)
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)

    def __call__(self, outputs: dict, labels: Tensor) -> tuple[Tensor, dict[str, Tensor], float]:
        heads = outputs["logits"]
        if not heads:
            raise ValueError("the model returned no logits")
        labels = labels.to(heads[0].device).long()
        components: dict[str, Tensor] = {}
        if self.tri.lambda_cls > 0:
            components["cls"] = self.tri.lambda_cls * sum(self._cls(h, labels) for h in heads)
        self.last_stats = {}
        if self.tri.enabled:
            tri_value, stats = triplet_loss(outputs["features"], labels, self.tri.margin,
                                            self.tri.use_adaptive_weight)
            components["triplet"] = self.tri.lambda_tri * tri_value
            self.last_stats = {f"triplet_{k}": v for k, v in stats.items()}
        total = sum(components.values())
        with torch.no_grad():
            accuracy = torch.stack([(h.argmax(dim=1) == labels).float().mean() for h in heads]).mean().item()
        return total, components, accuracy
