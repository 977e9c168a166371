"""SiamFC++ dense-box training targets: per score location a class label, a centre-ness and the box to regress.

Reference: video_analyst ``make_densebox_target`` with one box per search crop (re-implemented, vectorised over the
batch and the locations, in torch so it can run inside the training step on the device).

Conventions: continuous coordinates, boxes xyxy in search-crop pixels with x2 = x + w (``data/boxes.py``); locations
are the pixel centres of ``geometry.location_grid`` (index + 0.5, see ``geometry``). For a location (x, y) and a box
(x1, y1, x2, y2) the distances to the edges are l = x - x1, t = y - y1, r = x2 - x, b = y2 - y.

* Positive iff the location is strictly inside the box: l, t, r, b all > 0 (a location on an edge is not positive).
  No centre-sampling radius and no scale ranges, as in the reference.
* Centre-ness = sqrt(min(l, r) * min(t, b) / (max(l, r) * max(t, b))) at positives, 0 elsewhere. The reference adds
  1e-5 to the denominator; we do not: at a positive both maxima are > 0, elsewhere the value is not computed, so no
  epsilon is needed and the centre-ness is exactly 1 at the box centre.
* Box target = the absolute gt box xyxy at every location (not l, t, r, b), as in the reference.
* Negative pairs (template and search show different objects): the locations inside the (unrelated) box become
  label 0 (trained as background), every other location -1 (ignored). Decision, unlike the reference: the centre-ness
  target of a negative pair is 0 everywhere, and the centre-ness and IoU losses use only label-1 locations
  (``losses.py``), so a negative pair trains the classifier only. The reference keeps the box's centre-ness and masks
  its centre-ness loss on ``ctr != 0``, so it still trains centre-ness inside a box that is not the template's object.
  The box target of a negative pair is left as the given box; no loss reads it.
"""

from __future__ import annotations

import torch

POSITIVE, NEGATIVE, IGNORED = 1.0, 0.0, -1.0
"""Values of the class target."""


def dense_box_targets(boxes_xyxy: torch.Tensor, negative: torch.Tensor,
                      grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targets for a batch of search crops, each with one box.

    Args:
        boxes_xyxy: (B, 4) gt box of each search crop, xyxy in crop pixels.
        negative: (B,) bool, True for a negative pair.
        grid: (S*S, 2) score locations (x, y) from ``geometry.location_grid(_tensor)``.

    Returns:
        cls (B, S*S) float32 in {1 positive, 0 negative, -1 ignored}; ctr (B, S*S) float32 centre-ness;
        box (B, S*S, 4) float32, the gt box repeated at every location. All on ``boxes_xyxy``'s device.
    """
    boxes = torch.as_tensor(boxes_xyxy, dtype=torch.float32)
    negative = torch.as_tensor(negative, dtype=torch.bool, device=boxes.device)
    grid = torch.as_tensor(grid, dtype=torch.float32, device=boxes.device)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or negative.shape != boxes.shape[:1] or grid.ndim != 2:
        raise ValueError(f"need boxes (B, 4), negative (B,), grid (N, 2); got {tuple(boxes.shape)}, "
                         f"{tuple(negative.shape)}, {tuple(grid.shape)}")
    x, y = grid[None, :, 0], grid[None, :, 1]                           # (1, N)
    x1, y1, x2, y2 = (boxes[:, k, None] for k in range(4))              # (B, 1) each
    l, t, r, b = x - x1, y - y1, x2 - x, y2 - y                          # (B, N) each
    inside = (l > 0) & (t > 0) & (r > 0) & (b > 0)
    ratio = (torch.minimum(l, r) * torch.minimum(t, b)) / torch.where(
        inside, torch.maximum(l, r) * torch.maximum(t, b), torch.ones_like(l))
    ctr = torch.where(inside & ~negative[:, None], ratio.clamp(min=0).sqrt(), torch.zeros_like(l))
    cls = torch.where(negative[:, None],
                      torch.where(inside, NEGATIVE, IGNORED), torch.where(inside, POSITIVE, NEGATIVE))
    box = boxes[:, None, :].expand(-1, grid.shape[0], -1).contiguous()
    return cls, ctr, box
