"""Depth-wise cross-correlation, the matching block of the Siamese trackers (SiamFC++, SiamMask): each channel of the
search map is correlated with the same channel of the template kernel of the same pair.

Written as one grouped convolution over the whole batch (search ``(1, B·C, H, W)``, kernel ``(B·C, 1, h, w)``,
``groups = B·C``), which is what cuDNN and oneDNN run fastest. The group count is a number in the graph, so an ONNX
export fixes the batch size it was traced with (the trackers export their search graph at batch 1); ONNX Runtime runs
the convolution with the kernel as a graph input.

The backward pass is written out (:class:`_DepthwiseXcorr`): PyTorch's generic convolution backward computes the
kernel's gradient for B·C groups of one channel very slowly on the CPU (60–90 ms per SiamFC++ TinyConv step of 16
pairs), while the same numbers are a forward grouped convolution of the search map with the output gradient
(~4 ms). The input's gradient is the transposed convolution. Values equal autograd's to float rounding (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _DepthwiseXcorr(torch.autograd.Function):
    @staticmethod
    def forward(ctx, search: torch.Tensor, kernel: torch.Tensor, groups: int) -> torch.Tensor:
        ctx.save_for_backward(search, kernel)
        ctx.groups = groups
        return F.conv2d(search, kernel, groups=groups)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        search, kernel = ctx.saved_tensors
        groups = ctx.groups
        grad_search = grad_kernel = None
        if ctx.needs_input_grad[0]:
            grad_search = F.conv_transpose2d(grad, kernel, groups=groups)
        if ctx.needs_input_grad[1]:
            # d out[g, i, j] / d kernel[g, u, v] = search[g, i + u, j + v]: correlate each search channel with its
            # own output gradient
            grad_kernel = F.conv2d(search, grad.reshape(groups, 1, *grad.shape[2:]), groups=groups)
            grad_kernel = grad_kernel.reshape(kernel.shape)
        return grad_search, grad_kernel, None


def depthwise_xcorr(search: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) ⋆ (B, C, h, w) → (B, C, H − h + 1, W − w + 1)``, no padding."""
    batch, channels = kernel.shape[:2]
    if search.shape[:2] != kernel.shape[:2]:
        raise ValueError(f"depthwise_xcorr: search {tuple(search.shape)} and kernel {tuple(kernel.shape)} must agree "
                         "in batch and channels")
    groups = batch * channels
    flat_search = search.reshape(1, groups, *search.shape[2:])
    flat_kernel = kernel.reshape(groups, 1, *kernel.shape[2:])
    if torch.is_grad_enabled() and (search.requires_grad or kernel.requires_grad) and not torch.jit.is_tracing():
        if torch.is_autocast_enabled(search.device.type):  # run it in the autocast dtype, as F.conv2d would
            dtype = torch.get_autocast_dtype(search.device.type)
            flat_search, flat_kernel = flat_search.to(dtype), flat_kernel.to(dtype)
        with torch.autocast(search.device.type, enabled=False):
            out = _DepthwiseXcorr.apply(flat_search, flat_kernel, groups)
    else:
        out = F.conv2d(flat_search, flat_kernel, groups=groups)
    return out.reshape(batch, channels, *out.shape[2:])
