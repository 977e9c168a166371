"""One H×W×3 uint8 crop as the 1×3×H×W float batch a tracker's network takes, for PyTorch and for ONNX Runtime alike.
Torch is imported only by :func:`torch_batch`, so ONNX-only trackers run without it."""

from __future__ import annotations

import numpy as np


def torch_batch(crop: np.ndarray, device):
    """The crop as a (1, 3, H, W) float32 tensor on `device`. On the CPU it is a view of the 1×H×W×3 crop with
    channels-last strides (in the batch dimension too, which PyTorch's choice of layout looks at): no transposing copy,
    and the network then runs channels-last, where PyTorch's CPU max-pool is ~10× faster than in NCHW (numbers in
    bench/siamfcpp_tracking_fps.py). Other devices get an NCHW batch."""
    import torch

    tensor = torch.from_numpy(crop).reshape(1, *crop.shape).permute(0, 3, 1, 2).float().to(device)
    return tensor if tensor.device.type == "cpu" else tensor.contiguous()


def onnx_batch(crop: np.ndarray) -> np.ndarray:
    """The crop as a C-contiguous (1, 3, H, W) float32 array."""
    return np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32)
