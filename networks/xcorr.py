"""Depth-wise cross-correlation, the matching block of the Siamese trackers (SiamFC++, SiamMask): each channel of the
search map is correlated with the same channel of the template kernel of the same pair.

Written as one grouped convolution over the whole batch (search ``(1, B·C, H, W)``, kernel ``(B·C, 1, h, w)``,
``groups = B·C``), which is what cuDNN and oneDNN run fastest. The group count is a number in the graph, so an ONNX
export fixes the batch size it was traced with (the trackers export their search graph at batch 1); ONNX Runtime runs
the convolution with the kernel as a graph input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def depthwise_xcorr(search: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) ⋆ (B, C, h, w) → (B, C, H − h + 1, W − w + 1)``, no padding."""
    batch, channels = kernel.shape[:2]
    if search.shape[:2] != kernel.shape[:2]:
        raise ValueError(f"depthwise_xcorr: search {tuple(search.shape)} and kernel {tuple(kernel.shape)} must agree "
                         "in batch and channels")
    out = F.conv2d(search.reshape(1, batch * channels, *search.shape[2:]),
                   kernel.reshape(batch * channels, 1, *kernel.shape[2:]), groups=batch * channels)
    return out.reshape(batch, channels, *out.shape[2:])
