"""SiamFC++ losses: sigmoid focal loss (classification), centre-ness BCE, -log IoU box loss, and their weighted sum.

Reference: video_analyst's training losses (re-implemented). Targets come from ``targets.dense_box_targets``: class
labels {1 positive, 0 negative, -1 ignored}, centre-ness in [0, 1], gt boxes xyxy in crop pixels. Everything is
computed in float32 whatever the dtype of the network outputs (bf16 autocast included). Normalisation is over the
whole batch: a loss is a sum over its locations divided by max(#locations it averages over, 1), so a batch without
positives gives 0 for the centre-ness and IoU terms rather than NaN.

* Classification: RetinaNet's sigmoid focal loss with ignore label -1, summed over non-ignored locations and divided
  by max(#positives, 1). The reference's ``FocalLoss`` and ``SigmoidCrossEntropyRetina`` are this same function (the
  latter written out with a clamped "safe" log); here there is one implementation, made stable with ``logsigmoid``.
* Centre-ness: BCE-with-logits against the centre-ness target minus the target's own entropy (so the minimum is 0,
  reached at sigmoid(logit) = target), averaged over the positive locations.
* Box: -log IoU, averaged over the positive locations, with the CONTINUOUS IoU (area = w * h, w = x2 - x1): our
  metric is GOT-10k's continuous IoU. video_analyst's IoU loss uses the pixel-inclusive "+1" areas
  ((x2 - x1 + 1) * (y2 - y1 + 1)), which inflates small boxes' overlap; we do not.
  The IoU is clamped below at ``MIN_IOU`` = 1e-6 (the loss of one location is at most -log 1e-6 ≈ 13.8): only
  degenerate predictions reach it, since a positive location lies strictly inside the gt box and the decoded
  prediction always contains its own location.

Only label-1 locations train centre-ness and boxes: a negative pair contributes to classification only (see
``targets.py`` for this deliberate departure from the reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

MIN_IOU = 1e-6
"""Lower clamp of the IoU inside -log IoU."""


def sigmoid_focal_loss(logits: torch.Tensor, cls_target: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """RetinaNet focal loss, sum over non-ignored entries / max(#positives, 1); a float32 scalar.

    Per entry with p = sigmoid(logit) and label y ∈ {0, 1}: p_t = p if y = 1 else 1 - p, alpha_t = alpha if y = 1 else
    1 - alpha, loss = -alpha_t * (1 - p_t) ** gamma * log(p_t). Entries labelled -1 contribute nothing. Computed from
    the signed logit z = logit if y = 1 else -logit: log(p_t) = logsigmoid(z), (1 - p_t) ** gamma = exp(gamma *
    logsigmoid(-z)), finite with finite gradients for every finite logit.
    """
    logits = logits.float().reshape(cls_target.shape)
    positive = cls_target == 1
    valid = cls_target != -1
    signed = torch.where(positive, logits, -logits)
    alpha_t = torch.where(positive, alpha, 1.0 - alpha)
    loss = -alpha_t * torch.exp(gamma * F.logsigmoid(-signed)) * F.logsigmoid(signed)
    return torch.where(valid, loss, 0.0).sum() / positive.sum().clamp(min=1)


def centerness_loss(logits: torch.Tensor, ctr_target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits minus the target's entropy, averaged over ``mask`` (the positives); a float32 scalar.

    Per entry: BCE(logit, c) - H(c) with H(c) = -c log c - (1 - c) log(1 - c) (0 log 0 = 0), i.e. the KL divergence
    from Bernoulli(c) to Bernoulli(sigmoid(logit)): >= 0 and 0 iff sigmoid(logit) = c; the gradient is BCE's.
    """
    logits = logits.float().reshape(ctr_target.shape)
    target = ctr_target.float()
    entropy = -(torch.xlogy(target, target) + torch.xlogy(1.0 - target, 1.0 - target))
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none") - entropy
    return torch.where(mask, loss, 0.0).sum() / mask.sum().clamp(min=1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Continuous IoU of xyxy boxes, elementwise over (..., 4); negative sizes count as 0, empty unions give IoU 0."""
    inter_w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    inter_h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    union = area_a + area_b - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


def iou_loss(pred_xyxy: torch.Tensor, gt_xyxy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-log(max(IoU, MIN_IOU)) of predicted vs gt boxes (continuous IoU), averaged over ``mask``; a float32 scalar."""
    iou = box_iou(pred_xyxy.float().reshape(gt_xyxy.shape), gt_xyxy.float())
    loss = -torch.log(iou.clamp(min=MIN_IOU))
    return torch.where(mask, loss, 0.0).sum() / mask.sum().clamp(min=1)


@dataclass(frozen=True)
class SiamFCppLoss:
    """Total SiamFC++ loss = w_cls * focal + w_ctr * centre-ness + w_iou * IoU (reference weights 1, 1, 3).

    Called as ``loss(outputs, targets) -> (total, {"cls": ..., "ctr": ..., "iou": ...})`` (unweighted terms, float32
    scalars, attached to the graph) with ``outputs = (cls_logits (B, S*S), ctr_logits (B, S*S), boxes (B, S*S, 4)
    xyxy crop px)`` in the row-major location order of ``geometry.location_grid`` (a trailing singleton dimension, as
    in the reference's (B, S*S, 1), is accepted) and ``targets = dense_box_targets(...)``.
    """

    alpha: float = 0.25
    gamma: float = 2.0
    weights: tuple[float, float, float] = (1.0, 1.0, 3.0)

    def __call__(self, outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                 targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cls_logits, ctr_logits, boxes = outputs
        cls_target, ctr_target, box_target = targets
        positive = cls_target == 1
        terms = {
            "cls": sigmoid_focal_loss(cls_logits, cls_target, self.alpha, self.gamma),
            "ctr": centerness_loss(ctr_logits, ctr_target, positive),
            "iou": iou_loss(boxes, box_target, positive),
        }
        total = sum(w * term for w, term in zip(self.weights, terms.values()))
        return total, terms
