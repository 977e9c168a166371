"""SiamFC++ score-map geometry: size and offset of the score map, the crop location of each score, box decoding.

Conventions (see ``data/boxes.py``): continuous pixel coordinates, as in the GOT-10k toolkit. Pixel p covers
[p, p + 1), so its centre is p + 0.5 and a crop of side X is the interval [0, X] with centre X / 2. Boxes are xyxy with
x2 = x + w (no "+1").

Score map (reference: video_analyst ``DenseboxHead``). With unpadded convolutions of total stride ``total_stride`` and
``num_conv3x3`` unpadded 3×3 tower convolutions after the depth-wise cross-correlation,

    score_size   = (x_size - z_size) // total_stride + 1 - 2 * num_conv3x3
    score_offset = (x_size - 1 - (score_size - 1) * total_stride) // 2

(303/127/8/3 → 17×17 at offset 87; GoogLeNet's 2 tower convs: 289 → 17 at offset 80, 303 → 19 at offset 79).

Score (i, j) (row i, column j) looks at search-crop pixel index ``score_offset + j * total_stride`` (x) and
``score_offset + i * total_stride`` (y), as in the reference. Decision: its LOCATION is the centre of that pixel,

    x_j = score_offset + j * total_stride + 0.5,   y_i = score_offset + i * total_stride + 0.5.

Why: the reference's pixel-inclusive convention puts pixel p's centre at coordinate p, ours at p + 0.5, so the same
pixel is the same point in both conventions only with the +0.5. It also centres the grid on the crop: whenever
x_size - 1 - (score_size - 1) * total_stride is even (every configuration above: odd crop side, odd score size), the
middle location is exactly X / 2 (303 → 151.5, 289 → 144.5), so a target at the crop centre maps to the middle score
and the tracker's displacement is ``location - x_size / 2`` with no half-pixel bias.
The same grid is used for the training targets (``targets.py``), for the box decoding below and by the tracker.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

PIXEL_CENTRE = 0.5
"""Offset from a pixel index to the continuous coordinate of that pixel's centre."""


def score_size(x_size: int, z_size: int, total_stride: int, num_conv3x3: int) -> int:
    """Side of the score map for search crops of side ``x_size`` and templates of side ``z_size`` (see module doc)."""
    size = (x_size - z_size) // total_stride + 1 - 2 * num_conv3x3
    if size < 1:
        raise ValueError(f"empty score map for x={x_size}, z={z_size}, stride={total_stride}, convs={num_conv3x3}")
    return size


def score_offset(x_size: int, score_size: int, total_stride: int) -> int:
    """Pixel index (x and y) of the score map's first location in the search crop: the grid centred in the crop."""
    return (x_size - 1 - (score_size - 1) * total_stride) // 2


def location_grid(score_size: int, score_offset: int, total_stride: int) -> NDArray[np.float64]:
    """Crop coordinates (x, y) of every score location, shape (S*S, 2), row-major (index i * S + j, i = row).

    Entry i * S + j is (score_offset + j * total_stride + 0.5, score_offset + i * total_stride + 0.5): pixel centres
    in the continuous convention (see module doc).
    """
    axis = score_offset + total_stride * np.arange(score_size, dtype=np.float64) + PIXEL_CENTRE
    ys, xs = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def location_grid_tensor(score_size: int, score_offset: int, total_stride: int,
                         device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``location_grid`` as a tensor (S*S, 2) for a model buffer; the values (half-integers) are exact in float32."""
    return torch.as_tensor(location_grid(score_size, score_offset, total_stride), dtype=dtype, device=device)


def decode_boxes(offsets: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Boxes xyxy in crop pixels from per-location distances (l, t, r, b) to the four edges, shape (..., S*S, 4).

    ``offsets`` are non-negative distances (the head's ``exp(si * raw + bi) * total_stride``) and ``grid`` the (S*S, 2)
    locations: box = (x - l, y - t, x + r, y + b). The inverse of the targets' (l, t, r, b), so a location's own
    regression and its training target are measured from the same point.
    """
    grid = grid.to(dtype=offsets.dtype, device=offsets.device)
    return torch.cat([grid - offsets[..., :2], grid + offsets[..., 2:]], dim=-1)
