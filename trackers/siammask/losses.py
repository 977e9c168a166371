"""SiamMask losses (notes ``trackers-and-got10k.md`` §3.4, re-written): selected two-way cross-entropy for the anchor
classes, weighted L1 for the box deltas, soft-margin loss for the masks, and their weighted sum.

Inputs follow the layouts of ``model.py`` and ``targets.py``: classification logits (B, 2k, S, S) with channel
``c · k + a``, regression (B, 4k, S, S) with channel ``d · k + a``, labels (B, k, S, S) in {1, 0, −1}, deltas
(B, 4, k, S, S), delta weights (B, k, S, S), base mask logits (B, 63², S, S), refined masks (N, 127, 127), mask
positions (N, 3) and label windows (N, 127, 127) in {−1, 0, +1}. Everything is computed in float32 whatever the
outputs' dtype (bf16 autocast included). A term with nothing to average over (no positive anchor, no mask location)
is 0, still attached to the graph.

* ``select_cross_entropy``: log-softmax over the two classes of each anchor; the NLL averaged over the positive
  anchors and, separately, over the negative ones; 0.5 · positive + 0.5 · negative. Ignored anchors (−1) do not count.
* ``weighted_l1``: Σ |Δpred − Δtarget| · delta_weight / B (the weights are 1 / #positives of the pair, so this is the
  batch mean of each pair's mean L1 over its positives, summed over the four deltas).
* ``mask_loss``: the soft-margin loss, mean of log(1 + exp(−y · m)) over every pixel of every selected window,
  computed as softplus(−y · m) (the same value, finite for any logit). Base model: the 63 × 63 logits of each
  selected location, upsampled bilinearly with ``align_corners=True`` (the reference's ``UpsamplingBilinear2d``) to
  127 × 127; sharp model: the refine module's 127 × 127 logits directly. Window pixels outside the search crop have
  label 0 and add log 2 with no gradient, as in the reference.
* ``SiamMaskLoss``: w_cls · cls + w_loc · loc + w_mask · mask, the reference's base weights (1, 1.2, 36) by default;
  its sharp stage uses (0, 0, 36) and trains only the mask branch and the refine module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trackers.siammask.anchors import crop_windows
from trackers.siammask.model import SiamMaskOutput
from trackers.siammask.targets import SiamMaskTargets


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp(min=1)


def select_cross_entropy(cls_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """0.5 · mean NLL over positive anchors + 0.5 · mean NLL over negative anchors (two-way log-softmax); a float32
    scalar. ``cls_logits`` (B, 2k, S, S), ``labels`` (B, k, S, S) in {1, 0, −1}."""
    batch, channels, height, width = cls_logits.shape
    log_p = F.log_softmax(cls_logits.float().reshape(batch, 2, channels // 2, height, width), dim=1)
    labels = labels.reshape(batch, channels // 2, height, width)
    return 0.5 * _masked_mean(-log_p[:, 1], labels == 1) + 0.5 * _masked_mean(-log_p[:, 0], labels == 0)


def weighted_l1(loc: torch.Tensor, delta: torch.Tensor, delta_weight: torch.Tensor) -> torch.Tensor:
    """Σ |loc − delta| · delta_weight / B; a float32 scalar. ``loc`` (B, 4k, S, S), ``delta`` (B, 4, k, S, S),
    ``delta_weight`` (B, k, S, S)."""
    batch = loc.shape[0]
    diff = (loc.float().reshape(delta.shape) - delta.float()).abs().sum(dim=1)
    return (diff * delta_weight.float()).sum() / batch


def select_mask_logits(mask_logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The base model's mask logits at ``positions`` (N, 3): (B, M², S, S) → (N, M, M), M = 63."""
    side = int(round(mask_logits.shape[1] ** 0.5))
    return crop_windows(mask_logits, positions, 1, 1, 0).reshape(-1, side, side)


def mask_loss(logits: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Soft-margin loss of mask logits (N, h, w) against label windows (N, H, W); logits of another size (the base
    model's 63 × 63) are first upsampled bilinearly with ``align_corners=True`` to H × W. A float32 scalar, 0 for
    N = 0."""
    logits = logits.float()
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    if logits.shape[-2:] != windows.shape[-2:]:
        logits = F.interpolate(logits[:, None], size=windows.shape[-2:], mode="bilinear", align_corners=True)[:, 0]
    return F.softplus(-windows.float() * logits).mean()


def mask_iou(logits: torch.Tensor, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training monitors of the reference: per window, the IoU of {logit ≥ 0} with {label = 1} (1 when both are
    empty), upsampling the logits as ``mask_loss`` does; returns (mean IoU, fraction > 0.5, fraction > 0.7), NaN-free
    zeros for N = 0. No gradient."""
    with torch.no_grad():
        if logits.shape[0] == 0:
            zero = torch.zeros((), device=logits.device)
            return zero, zero, zero
        logits = logits.float()
        if logits.shape[-2:] != windows.shape[-2:]:
            logits = F.interpolate(logits[:, None], size=windows.shape[-2:], mode="bilinear",
                                   align_corners=True)[:, 0]
        predicted, truth = (logits >= 0).flatten(1), (windows == 1).flatten(1)
        inter = (predicted & truth).sum(1).float()
        union = (predicted | truth).sum(1).float()
        iou = torch.where(union > 0, inter / union.clamp(min=1), 1.0)
        return iou.mean(), (iou > 0.5).float().mean(), (iou > 0.7).float().mean()


@dataclass(frozen=True)
class SiamMaskLoss:
    """Total loss ``w_cls · cls + w_loc · loc + w_mask · mask``.

    Called as ``loss(outputs, targets) -> (total, {"cls": ..., "loc": ..., "mask": ...}, {"mask_iou": ...,
    "mask_iou_5": ..., "mask_iou_7": ...})`` with ``outputs`` a ``model.SiamMaskOutput`` and ``targets`` a
    ``targets.SiamMaskTargets``; the terms are unweighted float32 scalars attached to the graph. ``sharp``: the mask
    term reads ``outputs.refined`` (the refine module's logits at ``targets.mask_positions``) instead of the base
    mask logits. A term whose output is None (the RPN skipped in the sharp stage, ``rpn=False``) is left out, which
    its weight must allow (0)."""

    weights: tuple[float, float, float] = (1.0, 1.2, 36.0)
    sharp: bool = False

    def __call__(self, outputs: SiamMaskOutput, targets: SiamMaskTargets
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        w_cls, w_loc, w_mask = self.weights
        for name, output, weight in (("cls", outputs.cls, w_cls), ("loc", outputs.loc, w_loc)):
            if output is None and weight:
                raise ValueError(f"the {name} loss has weight {weight} but the model did not compute {name} "
                                 "(forward(..., rpn=False))")
        terms: dict[str, torch.Tensor] = {}
        weighted = []
        if outputs.cls is not None:
            terms["cls"] = select_cross_entropy(outputs.cls, targets.cls)
            weighted.append(w_cls * terms["cls"])
        if outputs.loc is not None:
            terms["loc"] = weighted_l1(outputs.loc, targets.delta, targets.delta_weight)
            weighted.append(w_loc * terms["loc"])
        if self.sharp:
            logits = outputs.refined
            if logits is None or logits.shape[0] != targets.mask_positions.shape[0]:
                raise ValueError("sharp mask loss: outputs.refined must hold the refine module's logits at "
                                 "targets.mask_positions (forward(..., refine_at=targets.mask_positions))")
        else:
            if outputs.mask is None:
                raise ValueError("base mask loss: the model did not compute the mask logits (forward(..., "
                                 "mask=False)); use SiamMaskLoss(sharp=True) with refine_at for the sharp stage")
            logits = select_mask_logits(outputs.mask, targets.mask_positions)
        terms["mask"] = mask_loss(logits, targets.mask_windows)
        weighted.append(w_mask * terms["mask"])
        iou, iou_5, iou_7 = mask_iou(logits, targets.mask_windows)
        return sum(weighted), terms, {"mask_iou": iou, "mask_iou_5": iou_5, "mask_iou_7": iou_7}
