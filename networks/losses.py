"""Training losses: batch-hard / adaptive triplet, focal loss, and the criterion that combines them with the
classification term as configured by ``tri_loss_params``, ``focal_loss``, ``focal_gamma``, ``label_smoothing``,
``asoftmax_params``, ``model_params.random_drop_branchs`` / ``spectral_start_accuracy`` and ``distillation_params``
(:func:`build_criterion`).

All losses are computed in float32 (inputs produced under autocast are upcast first).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from networks.reid_params import AsoftmaxParams, ReidParams, TriLossParams
from networks.heads import am_softmax_margin

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
    """Total training loss = ``cls`` + ``spectral`` + ``triplet`` + distillation terms.

    * ``cls = lambda_cls · Σ_kept heads CE(logits_h, y)`` over ``outputs["logits"]`` (focal loss with γ = ``focal_gamma``
      when ``focal``; label smoothing ε applies to either), present only when ``lambda_cls > 0``. With
      ``random_drop_branchs = b > 0`` each call draws b head indices uniformly with replacement (torch's global RNG)
      and leaves them out; if every head was drawn, one random head is kept.
    * ``spectral = lambda_cls · Σ_h CE(spectral_logits_h, y)`` when the model returns ``"spectral_logits"`` and this
      batch's accuracy ≥ ``spectral_start_accuracy`` (a pure function of the current batch: no state). Not subject to
      the random head drop.
    * AM-softmax (``asoftmax`` enabled): every head's logits are the classifier's ``s·cosθ``; the loss uses
      ``s·(cosθ − m·[j = y])`` with m = ``asoftmax.margin_at(global_step)``; the accuracy uses ``s·cosθ``.
    * ``triplet = lambda_tri · Σ_sets triplet_loss(set, y)`` over ``outputs["triplet_features"]`` (a list; default
      ``[outputs["features"]]``), present only when ``tri.enabled``.
    * distillation (``distiller`` given): the components returned by ``distiller(images, outputs)`` (e.g.
      ``kd_logits``, ``kd_features``), already weighted.

    ``__call__(outputs, labels, images=None) -> (total, components, accuracy)`` with ``components`` a dict of the
    present terms (as tensors; ``total`` is their sum) and ``accuracy`` the mean over ``outputs["logits"]`` heads of the
    batch top-1 accuracy (a float). ``images`` (the batch the outputs came from) is needed only with a distiller.

    The trainer calls :meth:`set_global_step` with the global iteration before each call (the AM-softmax margin
    schedule). Statistics of the last call are kept in ``last_stats`` (``triplet_active_fraction``,
    ``triplet_mean_d_ap``, ``triplet_mean_d_an`` averaged over the triplet sets; ``heads_kept``, ``spectral_on``,
    ``spectral_self_affinity``, ``asoftmax_margin`` when those methods are on).
    """

    def __init__(self, tri: TriLossParams, focal: bool, focal_gamma: float, label_smoothing: float, *,
                 asoftmax: Optional[AsoftmaxParams] = None, random_drop_branchs: int = 0,
                 spectral_start_accuracy: float = 0.0, distiller: Optional[Callable] = None) -> None:
        if tri.lambda_cls <= 0 and not tri.enabled:
            raise ValueError("lambda_cls is 0 and the triplet loss is off: there is no loss to train with")
        if random_drop_branchs < 0:
            raise ValueError(f"random_drop_branchs must be ≥ 0; found {random_drop_branchs}")
        self.tri = tri
        self.focal = focal
        self.focal_gamma = focal_gamma
        self.label_smoothing = label_smoothing
        self.asoftmax = asoftmax if asoftmax is not None and asoftmax.enabled else None
        self.random_drop_branchs = random_drop_branchs
        self.spectral_start_accuracy = spectral_start_accuracy
        self.distiller = distiller
        self.global_step = 0
        self.last_stats: dict[str, float] = {}

    def set_global_step(self, global_step: int) -> None:
        """The global iteration of the next call (0-based), for the AM-softmax margin schedule."""
        self.global_step = int(global_step)

    @property
    def margin(self) -> float:
        """The AM-softmax margin in force (0 without AM-softmax)."""
        return self.asoftmax.margin_at(self.global_step) if self.asoftmax is not None else 0.0

    def _cls(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.asoftmax is not None:
            logits = am_softmax_margin(logits.float(), labels, self.margin, self.asoftmax.scale)
        if self.focal:
            return focal_loss(logits, labels, self.focal_gamma, self.label_smoothing)
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)

    def kept_heads(self, num_heads: int) -> list[int]:
        """Indices of the heads in this step's classification sum (all of them without random_drop_branchs)."""
        if self.random_drop_branchs == 0 or num_heads == 0:
            return list(range(num_heads))
        drawn = set(torch.randint(num_heads, (self.random_drop_branchs,)).tolist())
        kept = [h for h in range(num_heads) if h not in drawn]
        return kept or [int(torch.randint(num_heads, (1,)))]

    def __call__(self, outputs: dict, labels: Tensor,
                 images: Optional[Tensor] = None) -> tuple[Tensor, dict[str, Tensor], float]:
        heads = outputs["logits"]
        if not heads:
            raise ValueError("the model returned no logits")
        labels = labels.to(heads[0].device).long()
        with torch.no_grad():
            accuracy = torch.stack([(h.argmax(dim=1) == labels).float().mean() for h in heads]).mean().item()
        components: dict[str, Tensor] = {}
        stats: dict[str, float] = {}
        if self.asoftmax is not None:
            stats["asoftmax_margin"] = self.margin
        if self.tri.lambda_cls > 0:
            kept = self.kept_heads(len(heads))
            components["cls"] = self.tri.lambda_cls * sum(self._cls(heads[h], labels) for h in kept)
            if self.random_drop_branchs:
                stats["heads_kept"] = float(len(kept))
            spectral = outputs.get("spectral_logits") or []
            if spectral:
                on = accuracy >= self.spectral_start_accuracy
                stats["spectral_on"] = float(on)
                if "spectral_self_affinity" in outputs:
                    stats["spectral_self_affinity"] = float(outputs["spectral_self_affinity"])
                if on:
                    components["spectral"] = self.tri.lambda_cls * sum(self._cls(h, labels) for h in spectral)
        if self.tri.enabled:
            sets = outputs.get("triplet_features") or [outputs["features"]]
            values, set_stats = [], []
            for features in sets:
                value, st = triplet_loss(features, labels, self.tri.margin, self.tri.use_adaptive_weight)
                values.append(value)
                set_stats.append(st)
            components["triplet"] = self.tri.lambda_tri * sum(values)
            for key in set_stats[0]:
                stats[f"triplet_{key}"] = sum(st[key] for st in set_stats) / len(set_stats)
        if self.distiller is not None:
            if images is None:
                raise ValueError("distillation needs the batch images: call criterion(outputs, labels, images=images)")
            components.update(self.distiller(images, outputs))
        self.last_stats = stats
        total = sum(components.values())
        return total, components, accuracy


def build_criterion(params: ReidParams, num_classes: Optional[int] = None,
                    class_names: Optional[Sequence[str]] = None) -> ReidCriterion:
    """The criterion configured by `params` (triplet, focal, label smoothing, AM-softmax, random head drop, spectral
    gate) with the distiller of ``distillation_params`` attached when a teacher is given (`num_classes` and
    `class_names` of the training data are then checked against the teacher's)."""
    distiller = None
    if params.distillation_params.enabled:
        from networks.distill import build_distiller

        distiller = build_distiller(params, num_classes, class_names)
    m = params.model_params
    return ReidCriterion(params.tri_loss_params, params.focal_loss, params.focal_gamma, params.label_smoothing,
                         asoftmax=params.asoftmax_params, random_drop_branchs=m.random_drop_branchs,
                         spectral_start_accuracy=m.spectral_start_accuracy, distiller=distiller)
