"""Depth-wise cross-correlation: the hand-written backward equals autograd's through the plain grouped convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from networks.xcorr import depthwise_xcorr


def plain(search, kernel):
    """The same correlation left to autograd."""
    b, c = kernel.shape[:2]
    out = F.conv2d(search.reshape(1, b * c, *search.shape[2:]), kernel.reshape(b * c, 1, *kernel.shape[2:]),
                   groups=b * c)
    return out.reshape(b, c, *out.shape[2:])


def test_gradcheck_in_float64():
    torch.manual_seed(0)
    search = torch.randn(2, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(depthwise_xcorr, (search, kernel))


@pytest.mark.parametrize("channels_last", [False, True])
def test_values_and_gradients_equal_autograd(channels_last):
    torch.manual_seed(1)
    search, kernel = torch.randn(4, 8, 17, 17), torch.randn(4, 8, 5, 5)
    if channels_last:
        search, kernel = (t.contiguous(memory_format=torch.channels_last) for t in (search, kernel))
    grad = torch.randn(4, 8, 13, 13)
    results = []
    for function in (plain, depthwise_xcorr):
        s, k = search.clone().requires_grad_(), kernel.clone().requires_grad_()
        out = function(s, k)
        out.backward(grad)
        results.append((out.detach(), s.grad, k.grad))
    for ours, reference in zip(results[1], results[0]):
        assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-4)


def test_only_the_needed_gradient_and_bf16_autocast():
    search = torch.randn(2, 4, 9, 9, requires_grad=True)
    kernel = torch.randn(2, 4, 3, 3)
    depthwise_xcorr(search, kernel).sum().backward()
    assert search.grad is not None and kernel.grad is None
    kernel.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = depthwise_xcorr(search, kernel)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert torch.isfinite(kernel.grad).all() and kernel.grad.dtype == torch.float32


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="must agree in batch and channels"):
        depthwise_xcorr(torch.zeros(2, 4, 9, 9), torch.zeros(2, 3, 3, 3))
